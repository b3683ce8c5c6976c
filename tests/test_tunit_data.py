"""TUNIT training data: recursive scan, class subfolders, seeded training pairs from real image files."""

import numpy as np
import pytest
import torch
from PIL import Image

import ugatit_cli
from ugatit_cli.errors import ProcessingError, UserError
from ugatit_cli.families.tunit.data import load_rgb, scan_images, training_pair
from ugatit_cli.families.ugatit import Generator, UGATITConfig
from ugatit_cli.families.ugatit.family import UGATITModel


def _image(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)


def test_scan_reads_subfolders_recursively_and_labels_classes(tmp_path):
    _image(tmp_path / "cats" / "a.png", 0)
    _image(tmp_path / "cats" / "deep" / "b.jpg", 1)
    _image(tmp_path / "dogs" / "c.png", 2)
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    _image(tmp_path / ".hidden" / "d.png", 3)
    data = scan_images(tmp_path)
    assert data.files == ["cats/a.png", "cats/deep/b.jpg", "dogs/c.png"]
    assert data.classes == ["cats", "dogs"] and data.labels == [0, 0, 1]
    _image(tmp_path / "loose.png", 4)  # an image outside any subfolder: no labels
    data = scan_images(tmp_path)
    assert data.labels is None and "loose.png" in data.files


def test_scan_leaves_out_a_folder_of_translate_results_inside_the_data(tmp_path):
    _image(tmp_path / "cats" / "a.png", 0)
    _image(tmp_path / "dogs" / "b.png", 1)
    config = UGATITConfig(img_size=32, ch=4, n_res=1, light=True)
    model = UGATITModel(config, {d: Generator(config).eval() for d in ("a2b", "b2a")})
    report = ugatit_cli.translate(tmp_path / "cats", model, output=tmp_path / "out", device="cpu", progress=False)
    assert len(report.done) == 1
    data = scan_images(tmp_path)  # "out" is no third class and its image no training image
    assert data.files == ["cats/a.png", "dogs/b.png"] and data.classes == ["cats", "dogs"]
    assert scan_images(tmp_path / "out").files == ["cats/a.png"]  # named directly, it is read


def test_scan_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        scan_images(tmp_path / "missing")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(UserError, match="no images found"):
        scan_images(tmp_path)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ProcessingError, match="bad.png: cannot read the image"):
        load_rgb(bad)


def test_training_pairs_are_seeded_and_leave_the_global_generator_alone(tmp_path):
    _image(tmp_path / "a.png", 0)
    image = load_rgb(tmp_path / "a.png")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    x, x_tf = training_pair(image, 32, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    x2, x_tf2 = training_pair(image, 32, seed=7)
    assert torch.equal(x, x2) and torch.equal(x_tf, x_tf2)
    _, x_tf3 = training_pair(image, 32, seed=8)
    assert not torch.equal(x_tf, x_tf3)
    for t in (x, x_tf):
        assert t.shape == (3, 32, 32) and t.min() >= -1 and t.max() <= 1
    # the plain view is the resized image, possibly flipped
    resized = torch.from_numpy(np.array(image.resize((32, 32), Image.BILINEAR))).permute(2, 0, 1).float() / 127.5 - 1
    assert min((x - resized).abs().mean(), (x.flip(2) - resized).abs().mean()) < 0.05
