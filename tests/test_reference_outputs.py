"""Outputs stay what ugatit-cli 0.1.0 wrote: a model folder of that version loads and translates to the same
pixels, and the same tiny training run gives the same losses and weights (tests/fixtures/reference was
written by main at 4d26972; see make_reference.py there)."""

import json

import numpy as np
import pytest
import torch
from conftest import TEST_FIXTURES
from PIL import Image
from reference_data import SETTINGS, make_data
from safetensors.torch import load_file

REFERENCE = TEST_FIXTURES / "reference"
OLD_FOLDER = TEST_FIXTURES / "ugatit_model_0.1.0"


# the references were made with one thread; more threads sum in another order
pytestmark = pytest.mark.usefixtures("one_thread")


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_a_model_folder_of_0_1_0_has_no_family_and_translates_to_the_same_pixels(tmp_path):
    from ugatit_cli import translate

    assert "family" not in json.loads((OLD_FOLDER / "config.json").read_text())
    report = translate([REFERENCE / "input.png"], str(OLD_FOLDER), output=tmp_path, direction="a2b", heatmap=True,
                       device="cpu", progress=False)
    assert not report.failed and len(report.done) == 1
    for name in ("input.png", "input_heatmap.png"):
        got, want = pixels(tmp_path / name), pixels(REFERENCE / f"a2b_{name}")
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1, name  # float noise may move one rounding by one level


def test_the_reference_training_run_gives_the_same_losses_and_weights(tmp_path):
    from ugatit_cli.train.run import train

    data = make_data(tmp_path / "data")
    train(data, SETTINGS, output=tmp_path / "run", device="cpu", progress=False)
    got = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    want = json.loads((REFERENCE / "losses.json").read_text())
    assert [r["iteration"] for r in got] == [r["iteration"] for r in want] == [1, 2, 3]
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for key in w:
            if key not in ("time", "it_per_s"):
                assert g[key] == pytest.approx(w[key], rel=1e-5, abs=1e-6), (g["iteration"], key)
    checkpoint = tmp_path / "run" / "checkpoints" / "step_00000003"
    for direction, name in (("a2b", "genA2B"), ("b2a", "genB2A")):
        trained = load_file(str(checkpoint / f"{name}.safetensors"))
        exported = load_file(str(OLD_FOLDER / f"generator_{direction}.safetensors"))
        assert trained.keys() == exported.keys()
        for key, value in exported.items():
            torch.testing.assert_close(trained[key], value, rtol=1e-5, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")
    # exported, the run gives 0.1.0's model folder: same card, same config plus family and format_version
    from ugatit_cli import __version__
    from ugatit_cli.export import export_model

    export_model(tmp_path / "run", tmp_path / "exported", show_progress=False)
    card = (tmp_path / "exported" / "README.md").read_text().replace(f"ugatit-cli {__version__}", "ugatit-cli 0.1.0")
    assert card == (OLD_FOLDER / "README.md").read_text()
    config = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert config.pop("family") == "ugatit" and config.pop("format_version") == 1
    assert config == json.loads((OLD_FOLDER / "config.json").read_text())
