"""``ugatit train hf://datasets/OWNER/NAME``: datasets the tests write (parquet with image columns, an
imagefolder upload of the official layout), served by the local Hub stand-in over real HTTP and read by the
``datasets`` library's own loading code; then offline from its cache."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ugatit_cli.errors import UserError
from ugatit_cli.train import checkpoint as ckpt
from ugatit_cli.train.run import train

datasets = pytest.importorskip("datasets")

TINY = {"size": 32, "ch": 4, "n_res": 1, "light": True, "workers": 0, "log_every": 1, "decay": False,
        "batch_size": 2, "save_every": 2}
COUNTS = {"trainA": 5, "trainB": 4, "testA": 2, "testB": 2}


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (34 + seed % 5, 40, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


IMAGES = {folder: [_png(100 * k + i) for i in range(n)] for k, (folder, n) in enumerate(COUNTS.items())}


def _parquet(a: list[bytes], b: list[bytes], names: tuple[str, ...] = ("imageA", "imageB"),
             extra: list[bytes] | None = None) -> bytes:
    """A split as the Hub holds it after ``push_to_hub``: parquet with Image features (bytes embedded).
    The columns have one length, so the longer domain's extra rows leave the other's cell empty."""
    n = max(len(a), len(b))
    columns = [a, b] + ([extra[:n]] if extra else [])
    cells = {name: [{"bytes": x, "path": f"{name}{i}.png"} for i, x in enumerate(values)] + [None] * (n - len(values))
             for name, values in zip(names, columns, strict=True)}
    features = dict.fromkeys(names, datasets.Image())
    table = datasets.Dataset.from_dict(cells, features=datasets.Features(features))
    buffer = io.BytesIO()
    table.to_parquet(buffer)
    return buffer.getvalue()


def _repos() -> dict[str, dict[str, bytes]]:
    card = b"---\nlicense: mit\n---\n# test data\n"
    return {
        "datasets/alice/h2z": {"README.md": card,
                               "data/train-00000-of-00001.parquet": _parquet(IMAGES["trainA"], IMAGES["trainB"]),
                               "data/test-00000-of-00001.parquet": _parquet(IMAGES["testA"], IMAGES["testB"])},
        "datasets/alice/folder": {f"{folder}/{i:03d}.png": data for folder, files in IMAGES.items()
                                  for i, data in enumerate(files)},
        "datasets/alice/three": {"README.md": card, "data/train-00000-of-00001.parquet": _parquet(
            IMAGES["trainA"], IMAGES["trainB"], ("photo", "painting", "sketch"), IMAGES["trainA"])},
    }


@pytest.fixture
def hub(tmp_path, monkeypatch):
    import datasets.config
    from hub_server import LocalHub

    with LocalHub(_repos()) as server:
        server.patch_huggingface_hub(monkeypatch, tmp_path / "hub-cache")
        monkeypatch.setattr(datasets.config, "HF_ENDPOINT", server.url)
        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", Path(tmp_path / "datasets-cache"))
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
        yield server


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pixels(image) -> np.ndarray:
    return np.asarray(image.open_rgb() if hasattr(image, "open_rgb") else Image.open(image).convert("RGB"))


def _local_copy(root: Path) -> Path:
    """The same images as a local folder in the official layout, in the dataset's order."""
    for folder, files in IMAGES.items():
        (root / folder).mkdir(parents=True)
        for i, data in enumerate(files):
            (root / folder / f"{i:03d}.png").write_bytes(data)
    return root


def test_parquet_columns_become_the_domains(hub):
    from ugatit_cli.hub_datasets import scan_hub_dataset

    data = scan_hub_dataset("hf://datasets/alice/h2z")
    assert data.mapping.images == {"A": "imageA", "B": "imageB"}
    assert [len(data.train[s]) for s in "AB"] == [5, 4]  # the empty cell of B's shorter column is left out
    for stream, folder in (("A", "trainA"), ("B", "trainB"), ("A", "testA")):
        images = data.train[stream] if folder.startswith("train") else data.test[stream]
        for image, encoded in zip(images, IMAGES[folder], strict=True):
            np.testing.assert_array_equal(_pixels(image), np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB")))
    assert data.relative()["A"][:2] == ["train[0].imageA", "train[1].imageA"]
    assert any(r.route == "resolve" and r.path.endswith(".parquet") for r in hub.requests())  # over HTTP


def test_an_imagefolder_upload_of_the_official_layout(hub):
    from ugatit_cli.hub_datasets import scan_hub_dataset

    data = scan_hub_dataset("hf://datasets/alice/folder")
    assert data.mapping.label == "label" and data.mapping.values == {"A": "trainA", "B": "trainB"}
    for stream in "AB":
        assert [_pixels(i).tobytes() for i in data.train[stream]] == \
               [np.asarray(Image.open(io.BytesIO(x)).convert("RGB")).tobytes() for x in IMAGES[f"train{stream}"]]
        assert len(data.test[stream]) == 2


def test_ambiguous_columns_ask_for_the_mapping_and_an_explicit_one_works(hub):
    from ugatit_cli.hub_datasets import scan_hub_dataset

    with pytest.raises(UserError) as info:
        scan_hub_dataset("hf://datasets/alice/three")
    message = str(info.value)
    assert "\n" not in message and "painting (image)" in message and "photo (image)" in message
    assert "--domain-column" in message
    data = scan_hub_dataset("hf://datasets/alice/three", domain_columns=["photo", "painting"])
    assert data.mapping.images == {"A": "photo", "B": "painting"} and len(data.train["B"]) == 4
    with pytest.raises(UserError, match="no column 'nope'"):
        scan_hub_dataset("hf://datasets/alice/three", domain_columns=["nope", "painting"])
    with pytest.raises(UserError, match="alice/missing"):
        scan_hub_dataset("hf://datasets/alice/missing")


def test_training_equals_the_local_folder_and_resumes_exactly(hub, tmp_path):
    local = _local_copy(tmp_path / "h2z")
    from_folder = train(local, {**TINY, "iterations": 4}, output=tmp_path / "local", device="cpu", progress=False)
    straight = train("hf://datasets/alice/h2z", {**TINY, "iterations": 4, "sample_every": 4},
                     output=tmp_path / "straight",
                     device="cpu", progress=False)
    assert ckpt.load_checkpoint(straight.checkpoint)["nets"].keys() == ckpt.load_checkpoint(
        from_folder.checkpoint)["nets"].keys()
    a, b = from_folder.trainer.state_dict(), straight.trainer.state_dict()
    for name in a["nets"]:  # the same images in the same order: the same run
        for key in a["nets"][name]:
            assert torch.equal(a["nets"][name][key], b["nets"][name][key]), (name, key)
    train("hf://datasets/alice/h2z", {**TINY, "iterations": 2}, output=tmp_path / "split", device="cpu",
          progress=False)
    resumed = train("hf://datasets/alice/h2z", {"iterations": 4, "workers": 2}, output=tmp_path / "split", resume=True,
                    device="cpu", progress=False)
    c = resumed.trainer.state_dict()
    for name in b["nets"]:
        for key in b["nets"][name]:
            assert torch.equal(b["nets"][name][key], c["nets"][name][key]), (name, key)
    recorded = json.loads((tmp_path / "split" / "data.json").read_text())
    assert recorded["root"] == "hf://datasets/alice/h2z" and recorded["train"]["B"][0] == "train[0].imageB"
    with Image.open(tmp_path / "straight" / "samples" / "A2B_00000004.png") as grid:  # 5 train + 2 test images
        assert grid.size[0] == 7 * 32


def test_cli_offline_from_the_cache(hub, tmp_path):
    """Read once over HTTP, stop the Hub, train through the CLI with HF_HUB_OFFLINE=1."""
    env = {**os.environ, **hub.environ(tmp_path / "hub-cache"), "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = [sys.executable, "-m", "ugatit_cli", "train", "hf://datasets/alice/folder", "--iterations", "1",
            "--size", "32", "--ch", "4", "--n-res", "1", "--light", "--workers", "0", "--quiet"]
    online = subprocess.run([*args, "--output", str(tmp_path / "online")], capture_output=True, text=True,
                            timeout=600, env=env)
    assert online.returncode == 0, online.stderr
    hub.__exit__(None, None, None)  # nothing answers any more
    offline = subprocess.run([*args, "--output", str(tmp_path / "offline")], capture_output=True, text=True,
                             timeout=600, env={**env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0, offline.stderr
    assert json.loads((tmp_path / "offline" / "data.json").read_text())["train"] == \
           json.loads((tmp_path / "online" / "data.json").read_text())["train"]
    bad = subprocess.run([*args, "--output", str(tmp_path / "bad"), "--domain-column", "label=trainA,nothing"],
                         capture_output=True, text=True, timeout=600, env={**env, "HF_HUB_OFFLINE": "1"})
    assert bad.returncode == 2 and "no value 'nothing'" in bad.stderr and "Traceback" not in bad.stderr


def test_without_datasets_the_hint_names_the_extra(monkeypatch):
    from ugatit_cli.hub_datasets import scan_hub_dataset

    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(UserError, match=r'pip install "ugatit-cli\[hub-datasets\]"'):
        scan_hub_dataset("hf://datasets/alice/h2z")


def test_hub_options_with_a_local_folder_and_bad_specs_are_usage_errors(tmp_path):
    local = _local_copy(tmp_path / "h2z")
    with pytest.raises(UserError, match="only for Hub datasets"):
        train(local, {**TINY, "iterations": 1}, output=tmp_path / "run", device="cpu", progress=False,
              domain_columns=["imageA", "imageB"])
    assert not (tmp_path / "run").exists()
    with pytest.raises(UserError, match="expected hf://datasets/OWNER/NAME"):
        train("hf://datasets/just-a-name", {**TINY, "iterations": 1}, output=tmp_path / "run", device="cpu",
              progress=False)
