"""The official-TF fixtures in ../shared/fixtures/tf_official (see its README): paths and expected outputs.

They live outside the repository, so a source distribution lacks them; tests that need them skip.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "tf_official"
OFFICIAL_FOLDER = "UGATIT_selfie2anime_lsgan_4resblock_6dis_1_1_10_10_1000_sn_smoothing"
OFFICIAL_PREFIX = "UGATIT.model-1000000"
ATOL = 1e-4


@dataclass(frozen=True)
class TFFixture:
    root: Path  # e.g. .../full_128px_ch4
    checkpoint_dir: Path  # the official checkpoint folder inside it
    prefix: str  # the checkpoint's file-name prefix

    @property
    def data_file(self) -> Path:
        return self.checkpoint_dir / f"{self.prefix}.data-00000-of-00001"

    @property
    def index_file(self) -> Path:
        return self.checkpoint_dir / f"{self.prefix}.index"

    def expected(self) -> dict[str, np.ndarray]:
        with np.load(self.root / "expected.npz") as data:
            return dict(data)

    def variables(self) -> dict[str, list[int]]:
        """variables.txt: every variable's name and shape, as the official TF graph created them."""
        lines = (self.root / "variables.txt").read_text().splitlines()
        return {name: json.loads(shape) for name, shape in (line.split("\t") for line in lines if line)}


def tf_fixture(kind: str) -> TFFixture:
    """``kind`` "full" or "light"; skips the test when the shared fixtures are absent."""
    light = kind == "light"
    root = FIXTURES / f"{kind}_128px_ch4"
    if not root.is_dir():
        pytest.skip(f"official TF fixtures not found at {FIXTURES} (absent from source distributions)")
    name = "UGATIT_light" if light else "UGATIT"
    folder = OFFICIAL_FOLDER.replace("UGATIT", name, 1)
    return TFFixture(root=root, checkpoint_dir=root / folder, prefix=f"{name}.model-1000000")


def run_generator(generator: torch.nn.Module, input_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """The generator's outputs in the fixture's layout: image NHWC, cam_logit, squeezed heatmap."""
    with torch.no_grad():
        image, cam_logit, heatmap = generator(torch.from_numpy(input_nhwc).permute(0, 3, 1, 2))
    return {"out": image.permute(0, 2, 3, 1).numpy(), "cam": cam_logit.numpy(), "heatmap": heatmap[0, 0].numpy()}


def assert_matches_official(generator: torch.nn.Module, fixture: TFFixture, direction: str) -> None:
    expected = fixture.expected()
    outputs = run_generator(generator, expected["input_nhwc"])
    for name, value in outputs.items():
        want = expected[f"{name}_{direction}"]
        assert value.shape == want.shape, (name, value.shape, want.shape)
        np.testing.assert_allclose(value, want, rtol=0, atol=ATOL, err_msg=f"{name}_{direction}")
