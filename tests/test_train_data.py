"""Training data: the official transform, two independent streams, a data order fixed by (seed, epoch, position)."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ugatit_cli.core.images import image_to_tensor
from ugatit_cli.data.streams import (
    SkippedImagesWarning,
    TrainingStreams,
    train_transform,
    training_loader,
)
from ugatit_cli.errors import UserError
from ugatit_cli.families.ugatit.data import scan_training_data


def make_domain(folder, count, offset=0, size=(40, 36)):
    """Flat-coloured PNGs whose grey level names the file: level = 10 * (offset + i)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", size, (10 * (offset + i),) * 3).save(folder / f"img{i:02d}.png")


def level(batch):
    """The grey level each image of a batch was made with."""
    return [round((float(img.mean()) + 1) * 127.5 / 10) * 10 for img in batch]


@pytest.fixture
def data(tmp_path):
    make_domain(tmp_path / "trainA", 7)
    make_domain(tmp_path / "trainB", 4, offset=10)
    return tmp_path


def test_train_transform_is_flip_resize_crop_in_range():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (50, 44, 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    resized = image_to_tensor(img, 62)
    flipped = image_to_tensor(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 62)
    seen_flip, offsets = set(), []
    for seed in range(40):
        out = train_transform(img, 32, np.random.default_rng(seed))
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32
        assert -1.0 <= out.min() and out.max() <= 1.0
        # the output is exactly one 32x32 window of the (possibly flipped) 62x62 resize
        matches = [(flip, top, left) for flip, source in ((False, resized), (True, flipped))
                   for top in range(31) for left in range(31)
                   if torch.equal(source[:, top:top + 32, left:left + 32], out)]
        assert len(matches) == 1
        seen_flip.add(matches[0][0])
        offsets += matches[0][1:]
    assert seen_flip == {False, True}
    assert min(offsets) <= 3 and max(offsets) >= 27


def test_streams_are_independent_shuffled_epochs(data):
    found = scan_training_data(data)
    streams = TrainingStreams(found.train, size=32, batch_size=1, seed=3)
    a_levels = [level(streams.batch("A", k))[0] for k in range(14)]
    b_levels = [level(streams.batch("B", k))[0] for k in range(8)]
    everything_a, everything_b = [10 * i for i in range(7)], [10 * (10 + i) for i in range(4)]
    # every epoch visits every image once, in a new order
    assert sorted(a_levels[:7]) == sorted(a_levels[7:]) == everything_a
    assert sorted(b_levels[:4]) == sorted(b_levels[4:]) == everything_b
    assert a_levels[:7] != a_levels[7:]
    # A's order does not depend on B's images: another B folder leaves A's stream unchanged
    other = TrainingStreams({"A": found.train["A"], "B": found.train["A"][:2]}, size=32, batch_size=1, seed=3)
    assert all(torch.equal(other.batch("A", k), streams.batch("A", k)) for k in range(9))
    assert [level(TrainingStreams(found.train, 32, 1, seed=4).batch("A", k))[0] for k in range(7)] != a_levels[:7]


def test_batches_are_a_function_of_seed_and_position_whatever_the_workers(data):
    found = scan_training_data(data)
    streams = TrainingStreams(found.train, size=32, batch_size=3, seed=0)
    straight = list(training_loader(streams, 0, 6, workers=0))
    # a fresh object (a resumed run) starting at iteration 4 with two worker processes: the same batches
    resumed = list(training_loader(TrainingStreams(found.train, 32, 3, seed=0), 4, 6, workers=2))
    for (a1, b1), (a2, b2) in zip(straight[4:], resumed, strict=True):
        assert torch.equal(a1, a2) and torch.equal(b1, b2)
    # the last batch of an epoch is smaller (7 = 3 + 3 + 1), as with the official DataLoader
    assert [a.shape[0] for a, _ in straight] == [3, 3, 1, 3, 3, 1]
    assert [b.shape[0] for _, b in straight] == [3, 1, 3, 1, 3, 1]


def test_ranks_take_disjoint_shards_of_each_epoch(data):
    found = scan_training_data(data)
    shards = [TrainingStreams(found.train, 32, batch_size=2, seed=1, rank=r, world_size=2) for r in range(2)]
    seen = [sum((level(s.batch("A", k)) for k in range(s.batches_per_epoch("A"))), []) for s in shards]
    assert len(seen[0]) == len(seen[1]) == 4  # 7 images padded to 8, 4 per rank
    assert sorted(set(seen[0] + seen[1])) == [10 * i for i in range(7)]
    positions = [set(p for k in range(2) for p in s.positions("A", k)[1]) for s in shards]
    assert not positions[0] & positions[1]


def test_bad_files_are_named_in_one_warning_and_left_out(data):
    (data / "trainA" / "empty.png").write_bytes(b"")
    (data / "trainB" / "text.jpg").write_text("not an image")
    with pytest.warns(SkippedImagesWarning) as caught:
        found = scan_training_data(data)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "2 unreadable" in message and "trainA/empty.png" in message and "trainB/text.jpg" in message
    assert len(found.train["A"]) == 7 and len(found.train["B"]) == 4
    assert found.test == {"A": None, "B": None}


def test_an_image_that_goes_bad_mid_run_is_replaced_not_fatal(data):
    found = scan_training_data(data)
    streams = TrainingStreams(found.train, 32, batch_size=7, seed=0)
    found.train["A"][2].write_bytes(b"\x89PNG broken")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = streams.batch("A", 0)
    assert batch.shape == (7, 3, 32, 32)
    assert any("img02.png" in str(w.message) for w in caught)


@pytest.mark.parametrize(("prepare", "message"), [
    (lambda root: None, "trainA: no such folder"),
    (lambda root: (root / "trainA").mkdir(), "trainA: folder contains no images"),
    (lambda root: (make_domain(root / "trainA", 2), (root / "trainB").mkdir(), (root / "trainB" / "x.png")
                   .write_bytes(b"")), "trainB: none of its 1 images can be read"),
])
def test_missing_or_empty_domains_are_one_line_errors(tmp_path, prepare, message):
    prepare(tmp_path)
    with pytest.raises(UserError, match=message) as caught, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scan_training_data(tmp_path)
    assert "\n" not in str(caught.value)


def test_missing_data_folder(tmp_path):
    with pytest.raises(UserError, match="no such data folder"):
        scan_training_data(tmp_path / "nope")
