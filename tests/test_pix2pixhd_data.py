"""pix2pixHD inputs: one-hot labels, edge maps, the dataset layout's checks and the official transforms."""

import numpy as np
import pytest
import torch
from PIL import Image
from pix2pixhd_reference import ref_onehot_edges

from ugatit_cli.core.images import BadImageError
from ugatit_cli.errors import UserError
from ugatit_cli.families.pix2pixhd.config import Pix2PixHDConfig, Pix2PixHDTrainConfig
from ugatit_cli.families.pix2pixhd.data import (
    PairedBatches,
    edge_map,
    encode_input,
    one_hot,
    prepare_instance,
    prepare_label,
    raise_problems,
    read_id_map,
    scan_dataset,
    training_size_problems,
)


def test_edge_map_marks_both_pixels_of_every_4_neighbour_change():
    inst = torch.tensor([[0, 0, 0, 0],
                         [0, 5, 5, 0],
                         [0, 0, 0, 0],
                         [7, 7, 7, 7]]).view(1, 1, 4, 4)
    expected = torch.tensor([[0, 1, 1, 0],
                             [1, 1, 1, 1],
                             [1, 1, 1, 1],
                             [1, 1, 1, 1]], dtype=torch.float32).view(1, 1, 4, 4)
    assert torch.equal(edge_map(inst), expected)
    # diagonal neighbours do not count
    diag = torch.tensor([[1, 2], [2, 1]]).view(1, 1, 2, 2)
    assert edge_map(diag).sum() == 4
    assert edge_map(torch.full((1, 1, 3, 3), 9)).sum() == 0


def test_one_hot_and_encoded_input_equal_the_official_encoding():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 6, (2, 1, 8, 12), generator=g)
    inst = torch.randint(0, 3, (2, 1, 8, 12), generator=g)
    cfg = Pix2PixHDConfig(label_nc=6)
    assert torch.equal(encode_input(cfg, label, inst), ref_onehot_edges(label, inst, 6))
    assert torch.equal(one_hot(label, 6).argmax(1, keepdim=True), label)
    assert one_hot(label, 6).sum(1).eq(1).all()
    with pytest.raises(ValueError, match=r"label ids must be in \[0, 5\)"):
        one_hot(label, 5)
    with pytest.raises(ValueError, match="takes instance maps"):
        encode_input(cfg, label, None)
    rgb = torch.rand(1, 3, 8, 8)
    assert torch.equal(encode_input(Pix2PixHDConfig(label_nc=0, no_instance=True), rgb, None), rgb)


def _save_ids(path, ids, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(ids.astype(np.uint16)).save(path)
    else:
        Image.fromarray(ids.astype(np.uint8), mode="L").save(path)


def _save_photo(path, size, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _cityscapes_like(root, n=3, size=(64, 32), label_nc=5):
    w, h = size
    rng = np.random.default_rng(1)
    for i in range(n):
        name = f"city_{i:06d}_000019"
        labels = rng.integers(0, label_nc, (h, w))
        _save_ids(root / "train_label" / f"{name}_gtFine_labelIds.png", labels)
        _save_ids(root / "train_inst" / f"{name}_gtFine_instanceIds.png", labels * 1000 + 26001 % 7, "I;16")
        _save_photo(root / "train_img" / f"{name}_leftImg8bit.png", size, seed=i)
    return root


def test_scan_pairs_the_official_layout_and_reads_16_bit_instances(tmp_path):
    root = _cityscapes_like(tmp_path)
    samples = scan_dataset(root, Pix2PixHDConfig(label_nc=5))
    assert len(samples) == 3
    assert all(s.label.name.split("_gtFine")[0] == s.image.name.split("_leftImg8bit")[0] == s.inst.name.split(
        "_gtFine")[0] for s in samples)
    assert samples[0].size == (64, 32)
    inst = read_id_map(samples[0].inst, "instance map")
    assert inst.dtype == np.int64 and inst.max() >= 1000  # ids beyond 8 bits survive
    # label_nc 0: train_A / train_B, no instance maps
    for i in range(2):
        _save_photo(tmp_path / "rgb" / "train_A" / f"{i}.png", (32, 32), seed=i)
        _save_photo(tmp_path / "rgb" / "train_B" / f"{i}.jpg", (32, 32), seed=10 + i)
    assert len(scan_dataset(tmp_path / "rgb", Pix2PixHDConfig(label_nc=0, no_instance=True))) == 2


def test_scan_names_every_bad_file_with_its_reason(tmp_path):
    root = _cityscapes_like(tmp_path, n=4)
    cfg = Pix2PixHDConfig(label_nc=5)
    # a label id >= label_nc
    bad = root / "train_label" / "city_000001_000019_gtFine_labelIds.png"
    _save_ids(bad, np.full((32, 64), 9))
    # a photo of another size
    _save_photo(root / "train_img" / "city_000002_000019_leftImg8bit.png", (48, 32))
    # a missing partner
    (root / "train_inst" / "city_000003_000019_gtFine_instanceIds.png").unlink()
    with pytest.raises(UserError) as err:  # all three at once, one per line under its kind
        scan_dataset(root, cfg)
    lines = str(err.value).splitlines()
    assert lines[0].endswith("3 problem(s) in the data (all of them; fix these, then run again):")
    assert [line.strip() for line in lines[1:]] == [
        "files without a partner (1):", "train_label/city_000003_000019_gtFine_labelIds.png: no partner in train_inst/",
        "label ids >= label_nc (1):", "train_label/city_000001_000019_gtFine_labelIds.png: label ids 9..9 but "
                                      "label_nc is 5",
        "sizes that differ from the label map's (1):", "train_img/city_000002_000019_leftImg8bit.png: 48x32 but its "
                                                       "label map train_label/city_000002_000019_gtFine_labelIds.png "
                                                       "is 64x32"]
    problems = []
    kept = scan_dataset(root, cfg, problems=problems)
    assert len(problems) == 3
    # kept: the good pair, and the one whose instance map is missing (it matters only to settings that use
    # instance maps, which check_data decides); the bad label map and the mis-sized photo are not
    assert [(s.label.name.split("_")[1], s.inst is not None) for s in kept] == [("000000", True), ("000003", False)]
    # a missing folder
    import shutil

    shutil.rmtree(root / "train_inst")
    with pytest.raises(UserError, match=r"train_inst: no such folder.*--no-instance"):
        scan_dataset(root, cfg)


def test_scan_refuses_rgb_label_maps(tmp_path):
    _save_photo(tmp_path / "train_label" / "a.png", (32, 32))
    _save_photo(tmp_path / "train_img" / "a.png", (32, 32))
    with pytest.raises(UserError, match=r"train_label/a.png: a label map must be one channel.*mode RGB"):
        scan_dataset(tmp_path, Pix2PixHDConfig(label_nc=5, no_instance=True))


def test_training_transform_is_deterministic_and_applies_one_draw_to_all_three(tmp_path):
    root = tmp_path
    _save_ids(root / "train_label" / "a.png", np.tile(np.arange(8).repeat(8), (32, 1)))  # 64x32, id = column / 8
    _save_ids(root / "train_inst" / "a.png", np.tile(np.arange(8).repeat(8), (32, 1)) + 100, "I;16")
    grad = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (32, 1, 3))
    (root / "train_img").mkdir()
    Image.fromarray(grad).save(root / "train_img" / "a.png")
    model = Pix2PixHDConfig(label_nc=8, ngf=4, n_downsample_global=2)
    train = Pix2PixHDTrainConfig(model=model, resize_or_crop="scale_width_and_crop", load_size=32, fine_size=16)
    samples = scan_dataset(root, model)
    assert training_size_problems(train, samples, root) == []
    batches = PairedBatches(train, samples)
    flips = set()
    for it in range(8):
        item = batches[it]
        assert item["label"].shape == (1, 1, 16, 16) and item["image"].shape == (1, 3, 16, 16)
        assert torch.equal(item["inst"] - 100, item["label"])  # same crop and flip for label and instances
        # label ids increase with the photo's brightness unless flipped; both flipped together
        left_to_right = item["label"][0, 0, 0, -1] >= item["label"][0, 0, 0, 0]
        brighter = item["image"][0, 0, 0, -1] >= item["image"][0, 0, 0, 0]
        assert bool(left_to_right) == bool(brighter)
        flips.add(bool(left_to_right))
        assert torch.equal(batches[it]["image"], item["image"])  # a pure function of the iteration
    assert flips == {True, False}
    # a size the generator cannot take is named before training
    bad = Pix2PixHDTrainConfig(model=model, resize_or_crop="scale_width", load_size=36)
    with pytest.raises(UserError, match=r"a.png: 64x32 becomes 36x18 .* multiples of 4"):
        raise_problems(root, training_size_problems(bad, samples, root))


def test_inference_inputs_round_to_the_generator_multiple(tmp_path):
    ids = np.zeros((40, 56), dtype=np.int64)
    ids[:, 28:] = 3
    _save_ids(tmp_path / "l.png", ids)
    cfg = Pix2PixHDConfig(label_nc=4)  # multiple 16: 56 -> 64 (3.5 -> 4), 40 -> 32 (2.5 -> 2)
    label, original = prepare_label(cfg, tmp_path / "l.png")
    assert original == (56, 40) and label.shape == (1, 1, 32, 64)
    assert set(label.unique().tolist()) == {0, 3}  # NEAREST: no new ids
    assert prepare_instance(tmp_path / "l.png", (64, 32)).shape == (1, 1, 32, 64)
    with pytest.raises(BadImageError, match="label ids 0..3 but this model has label_nc 3"):
        prepare_label(Pix2PixHDConfig(label_nc=3), tmp_path / "l.png")
