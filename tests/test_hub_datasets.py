"""``ugatit train hf://datasets/OWNER/NAME``: datasets the tests write (parquet with image columns, an
imagefolder upload of the official layout, a pix2pixHD parquet with label/photo/instance columns), served by
the local Hub stand-in over real HTTP and read by the ``datasets`` library's own loading code; then offline
from its cache. A Hub dataset must train exactly as the same images in a local folder."""

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
from ugatit_cli.families import get_family
from ugatit_cli.train.run import train

datasets = pytest.importorskip("datasets")

TINY = {"size": 32, "ch": 4, "n_res": 1, "light": True, "workers": 0, "log_every": 1, "decay": False,
        "batch_size": 2, "save_every": 2}
P2P_TINY = {"label_nc": 4, "ngf": 4, "n_downsample_global": 2, "n_blocks_global": 1, "ndf": 8, "num_D": 1,
            "no_vgg_loss": True, "resize_or_crop": "none", "workers": 0, "save_every": 2, "log_every": 1}
COUNTS = {"trainA": 5, "trainB": 4, "testA": 2, "testB": 2}
ROOT = Path(__file__).resolve().parents[1]


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (34 + seed % 5, 40, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


IMAGES = {folder: [_png(100 * k + i) for i in range(n)] for k, (folder, n) in enumerate(COUNTS.items())}
IMAGES["trainB"][1] = _jpeg(7)  # a JPEG among the PNGs keeps its format


def _table(columns: dict[str, list[bytes | None]], features: dict | None = None) -> bytes:
    """A split as the Hub holds it after ``push_to_hub``: parquet with Image features (bytes embedded). Columns
    of different lengths are padded with empty cells."""
    n = max(len(v) for v in columns.values())
    cells = {name: [{"bytes": x, "path": f"{name}{i}.png"} if isinstance(x, bytes) else x
                    for i, x in enumerate(values)] + [None] * (n - len(values)) for name, values in columns.items()}
    table = datasets.Dataset.from_dict(cells, features=datasets.Features(features or dict.fromkeys(columns,
                                                                                                   datasets.Image())))
    buffer = io.BytesIO()
    table.to_parquet(buffer)
    return buffer.getvalue()


def _p2p_example(seed: int, size=(32, 32)) -> tuple[bytes, bytes, bytes]:
    """A label map (ids 0..3, mode L), its photo and its instance map (16-bit), as PNG bytes."""
    w, h = size
    rng = np.random.default_rng(seed)
    labels = np.zeros((h, w), np.uint8)
    labels[:, w // 2:] = 1 + seed % 2
    labels[h // 2:, :] += 1
    photo = np.stack([labels * 60, 255 - labels * 50, rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
    out = []
    for array, mode in ((labels, "L"), (photo, None), (labels.astype(np.uint16) * 1000 + 1, None)):
        buffer = io.BytesIO()
        (Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return tuple(out)


P2P = {"train": [_p2p_example(i) for i in range(3)], "test": [_p2p_example(10 + i, (36, 28)) for i in range(2)]}


def _suffix(data: bytes) -> str:
    return ".jpg" if data.startswith(b"\xff\xd8") else ".png"


def _repos() -> dict[str, dict[str, bytes]]:
    card = b"---\nlicense: mit\n---\n# test data\n"
    p2p = {split: _table({"label": [e[0] for e in ex], "image": [e[1] for e in ex], "instance": [e[2] for e in ex]})
           for split, ex in P2P.items()}
    return {
        "datasets/alice/h2z": {"README.md": card,
                               "data/train-00000-of-00001.parquet": _table({"imageA": IMAGES["trainA"],
                                                                            "imageB": IMAGES["trainB"]}),
                               "data/test-00000-of-00001.parquet": _table({"imageA": IMAGES["testA"],
                                                                           "imageB": IMAGES["testB"]})},
        "datasets/alice/folder": {f"{folder}/{i:03d}{_suffix(data)}": data
                                  for folder, files in IMAGES.items() for i, data in enumerate(files)},
        "datasets/alice/three": {"README.md": card, "data/train-00000-of-00001.parquet": _table(
            {"photo": IMAGES["trainA"], "painting": IMAGES["trainB"], "sketch": IMAGES["trainA"]})},
        "datasets/alice/digits": {"README.md": card, "data/train-00000-of-00001.parquet": _table(
            {"image": IMAGES["trainA"], "digit": [3, 1, 3, 0, 1]},
            {"image": datasets.Image(), "digit": datasets.ClassLabel(names=["zero", "one", "two", "three"])})},
        "datasets/alice/facades-tiny": {"README.md": card, "data/train-00000-of-00001.parquet": _table(
            {"imageA": [e[1] for e in P2P["train"]], "imageB": [e[1] for e in reversed(P2P["train"])]})},
        "datasets/alice/cityscapes-tiny": {"README.md": card, "data/train-00000-of-00001.parquet": p2p["train"],
                                           "data/test-00000-of-00001.parquet": p2p["test"]},
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


pytestmark = pytest.mark.usefixtures("one_thread")


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def _local_copy(root: Path) -> Path:
    """The same images as a local folder in the official layout, in the dataset's order."""
    for folder, files in IMAGES.items():
        (root / folder).mkdir(parents=True)
        for i, data in enumerate(files):
            (root / folder / f"{i:03d}.png").write_bytes(data)
    return root


def _same_weights(a, b) -> None:
    for name in a["nets"]:
        for key in a["nets"][name]:
            assert torch.equal(a["nets"][name][key], b["nets"][name][key]), (name, key)


def test_parquet_columns_become_the_domains_byte_for_byte(hub):
    from ugatit_cli.store.hub_datasets import hub_data_dir

    folder = hub_data_dir("hf://datasets/alice/h2z", get_family("ugatit"))
    for name, images in IMAGES.items():
        files = _files(folder / name)
        assert [p.read_bytes() for p in files] == images, name  # the empty cell of B's shorter column left out
    assert _files(folder / "trainB")[1].name == "000001.jpg"  # its own format, its row in the name
    assert any(r.route == "resolve" and r.path.endswith(".parquet") for r in hub.requests())  # over HTTP
    data = get_family("ugatit").scan_data(folder)  # the family's own reader
    assert data.relative()["A"][:2] == ["trainA/000000.png", "trainA/000001.png"]
    assert hub_data_dir("hf://datasets/alice/h2z", get_family("ugatit")) == folder  # written once


def test_an_imagefolder_upload_of_the_official_layout(hub):
    from ugatit_cli.store.hub_datasets import hub_data_dir

    folder = hub_data_dir("hf://datasets/alice/folder", get_family("ugatit"))
    for name, images in IMAGES.items():  # label values trainA ... testB are the family's folders
        assert [p.read_bytes() for p in _files(folder / name)] == images, name


def test_ambiguous_columns_ask_for_the_mapping_in_one_line_and_an_explicit_one_works(hub):
    from ugatit_cli.store.hub_datasets import hub_data_dir

    family = get_family("ugatit")
    with pytest.raises(UserError) as info:
        hub_data_dir("hf://datasets/alice/three", family)
    message = str(info.value)
    assert "\n" not in message and "painting (image)" in message and "photo (image)" in message
    assert "sketch (image)" in message and "--domain-column" in message
    folder = hub_data_dir("hf://datasets/alice/three", family, domain_columns=["photo", "painting"])
    assert [p.read_bytes() for p in _files(folder / "trainB")] == IMAGES["trainB"]
    with pytest.raises(UserError, match="no column 'nope'"):
        hub_data_dir("hf://datasets/alice/three", family, domain_columns=["nope", "painting"])
    with pytest.raises(UserError, match="no split 'validation'; it has train"):
        hub_data_dir("hf://datasets/alice/three", family, split="validation")
    with pytest.raises(UserError, match="alice/missing"):
        hub_data_dir("hf://datasets/alice/missing", family)


def test_training_equals_the_local_folder_and_resumes_exactly(hub, tmp_path):
    local = _local_copy(tmp_path / "h2z")
    from_folder = train(local, {**TINY, "iterations": 4}, output=tmp_path / "local", device="cpu", progress=False)
    straight = train("hf://datasets/alice/h2z", {**TINY, "iterations": 4, "sample_every": 4},
                     output=tmp_path / "straight", device="cpu", progress=False)
    _same_weights(from_folder.trainer.state_dict(), straight.trainer.state_dict())  # same images, same order
    train("hf://datasets/alice/h2z", {**TINY, "iterations": 2}, output=tmp_path / "split", device="cpu",
          progress=False)
    resumed = train("hf://datasets/alice/h2z", {"iterations": 4, "workers": 2}, output=tmp_path / "split",
                    resume=True, device="cpu", progress=False)
    _same_weights(straight.trainer.state_dict(), resumed.trainer.state_dict())
    config = json.loads((tmp_path / "split" / "config.json").read_text())
    assert config["data_dir"] == "hf://datasets/alice/h2z" and config["data_name"] == "h2z"
    assert json.loads((tmp_path / "split" / "data.json").read_text())["train"]["B"][1] == "trainB/000001.jpg"
    with Image.open(tmp_path / "straight" / "samples" / "A2B_00000004.png") as grid:  # 5 train + 2 test images
        assert grid.size[0] == 7 * 32


def test_pix2pixhd_label_photo_and_instance_columns_train_as_the_local_folder(hub, tmp_path):
    from ugatit_cli.store.hub_datasets import hub_data_dir

    folder = hub_data_dir("hf://datasets/alice/cityscapes-tiny", get_family("pix2pixhd"))
    for split in ("train", "test"):
        for role, index in (("label", 0), ("img", 1), ("inst", 2)):
            assert [p.read_bytes() for p in _files(folder / f"{split}_{role}")] == [e[index] for e in P2P[split]]
    local = tmp_path / "local-data"
    for split, examples in P2P.items():
        for i, example in enumerate(examples):
            for role, data in zip(("label", "img", "inst"), example, strict=True):
                (local / f"{split}_{role}").mkdir(parents=True, exist_ok=True)
                (local / f"{split}_{role}" / f"city_{i:02d}.png").write_bytes(data)
    settings = {**P2P_TINY, "iterations": 2}
    a = train(local, settings, arch="pix2pixhd", output=tmp_path / "local", device="cpu", progress=False)
    b = train("hf://datasets/alice/cityscapes-tiny", settings, arch="pix2pixhd", output=tmp_path / "hub",
              device="cpu", progress=False)
    _same_weights(a.trainer.state_dict(), b.trainer.state_dict())
    assert json.loads((tmp_path / "hub" / "config.json").read_text())["model"]["no_instance"] is False


def test_a_family_with_one_image_column_and_classes_gets_class_subfolders(hub):
    """TUNIT's hook: its image column at the top of DATA_DIR, a ClassLabel column as class subfolders, which
    TUNIT's own reader turns into its classes."""
    from types import SimpleNamespace

    from ugatit_cli.families.base import get_family
    from ugatit_cli.families.tunit.data import scan_images
    from ugatit_cli.store.hub_datasets import hub_data_dir

    data = scan_images(hub_data_dir("hf://datasets/alice/digits", get_family("tunit")))
    assert data.classes == ["one", "three", "zero"]  # the classes the rows have
    assert data.files == ["one/000001.png", "one/000004.png", "three/000000.png", "three/000002.png",
                          "zero/000003.png"]
    assert [data.path(i).read_bytes() for i in (2, 0, 3, 4, 1)] == IMAGES["trainA"]
    no_hub = SimpleNamespace(name="none", title="No-hub", hub_columns=None)
    with pytest.raises(UserError, match="No-hub models do not train from Hub datasets"):
        hub_data_dir("hf://datasets/alice/digits", no_hub)


def test_pix2pixhd_with_photo_inputs_gets_its_photo_layout(hub):
    """--label-nc 0 (photo -> photo): the family's hook for these settings writes train_A/ train_B/, which its
    reader takes as RGB inputs."""
    from ugatit_cli.families.pix2pixhd.hyper import Pix2PixHDHyperParams
    from ugatit_cli.store.hub_datasets import hub_data_dir

    family = get_family("pix2pixhd")
    folder = hub_data_dir("hf://datasets/alice/facades-tiny", family, hyper=Pix2PixHDHyperParams(label_nc=0))
    assert sorted(p.name for p in folder.iterdir()) == ["train_A", "train_B"]
    data = family.scan_data(folder)
    assert [s.label_range for s in data.train] == [None] * 3  # read as photos, not label maps
    assert [s.image.read_bytes() for s in data.train] == [e[1] for e in reversed(P2P["train"])]
    with pytest.raises(UserError, match="cannot tell which columns hold label and image and inst"):
        hub_data_dir("hf://datasets/alice/facades-tiny", family, hyper=Pix2PixHDHyperParams(label_nc=35))


def test_cli_offline_from_the_cache(hub, tmp_path):
    """Read once over HTTP, stop the Hub, train through the CLI with HF_HUB_OFFLINE=1: the folder written
    online is found again."""
    from ugatit_cli.store.hub_datasets import hub_data_dir

    folder = hub_data_dir("hf://datasets/alice/folder", get_family("ugatit"))
    hub.__exit__(None, None, None)  # nothing answers any more
    env = {**os.environ, **hub.environ(tmp_path / "hub-cache"), "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-m", "ugatit_cli", "train", "hf://datasets/alice/folder", "--iterations", "1",
            "--size", "32", "--ch", "4", "--n-res", "1", "--light", "--workers", "0", "--quiet"]
    offline = subprocess.run([*args, "--output", str(tmp_path / "offline")], capture_output=True, text=True,
                             timeout=600, env=env)
    assert offline.returncode == 0, offline.stderr
    assert offline.stderr == ""  # --quiet: nor the datasets library's bars and notes
    recorded = json.loads((tmp_path / "offline" / "data.json").read_text())
    assert recorded == {"root": str(folder.resolve()), "train": get_family("ugatit").scan_data(folder).relative()}
    bad = subprocess.run([*args, "--output", str(tmp_path / "bad"), "--domain-column", "label=trainA,nothing"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert bad.returncode == 2 and "no value 'nothing'" in bad.stderr and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and not (tmp_path / "bad").exists()


def test_without_datasets_the_hint_names_the_extra(monkeypatch):
    from ugatit_cli.store.hub_datasets import hub_data_dir

    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(UserError, match=r'pip install "ugatit-cli\[hub\]"'):
        hub_data_dir("hf://datasets/alice/h2z", get_family("ugatit"))


def test_hub_options_with_a_local_folder_and_bad_specs_are_usage_errors(tmp_path):
    local = _local_copy(tmp_path / "h2z")
    with pytest.raises(UserError, match="--domain-column: only for Hub datasets"):
        train(local, {**TINY, "iterations": 1}, output=tmp_path / "run", device="cpu", progress=False,
              domain_columns=["imageA", "imageB"])
    assert not (tmp_path / "run").exists()
    with pytest.raises(UserError, match="expected hf://datasets/OWNER/NAME"):
        train("hf://datasets/just-a-name", {**TINY, "iterations": 1}, output=tmp_path / "run", device="cpu",
              progress=False)
