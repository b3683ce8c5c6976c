"""The pure-Python TF checkpoint reader, on checkpoints written by the official TF code."""

import shutil

import pytest
import torch
from tf_fixtures import tf_fixture

from ugatit_cli.errors import UserError
from ugatit_cli.families.ugatit.importers import tf_checkpoint
from ugatit_cli.families.ugatit.importers.tf_checkpoint import (
    TFCheckpointError,
    find_prefix,
    open_local_checkpoint,
    parse_index,
    read_tensor,
)


@pytest.fixture
def full():
    return tf_fixture("full")


def copy_checkpoint(fixture, tmp_path):
    target = tmp_path / fixture.checkpoint_dir.name
    shutil.copytree(fixture.checkpoint_dir, target)
    target.chmod(0o755)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


@pytest.mark.parametrize("kind", ["full", "light"])
def test_index_lists_every_variable_with_its_shape(kind):
    fixture = tf_fixture(kind)
    checkpoint = open_local_checkpoint(fixture.checkpoint_dir)
    assert checkpoint.prefix_name == fixture.prefix
    assert checkpoint.index.num_shards == 1
    assert {name: list(e.shape) for name, e in checkpoint.entries.items()} == fixture.variables()
    assert {e.dtype_name for e in checkpoint.entries.values()} == {"float32"}
    # The entries tile the data shard exactly: every byte belongs to one tensor.
    spans = sorted((e.offset, e.size) for e in checkpoint.entries.values())
    position = 0
    for offset, size in spans:
        assert offset == position
        position += size
    assert position == fixture.data_file.stat().st_size


def test_reads_tensors_and_verifies_every_crc(full):
    checkpoint = open_local_checkpoint(full.checkpoint_dir)
    tensors = checkpoint.read(checkpoint.entries)  # raises on any crc mismatch
    kernel = tensors["generator_B/conv/conv2d/kernel"]
    assert kernel.dtype == torch.float32 and kernel.shape == (7, 7, 3, 4)
    # README: kernels ~ N(0, 1/fan_in), gammas ~ 1 + N(0, 0.2): real values, not zeros.
    assert 0.05 < kernel.std().item() < 0.3
    assert abs(tensors["generator_B/ins_norm/gamma"].mean().item() - 1) < 0.5


def test_large_tensors_are_read_in_bounded_chunks(full, monkeypatch):
    checkpoint = open_local_checkpoint(full.checkpoint_dir)
    entry = checkpoint.entries["generator_B/MLP/linear_0/dense/kernel"]  # 16384 x 16 floats = 1 MiB
    whole = read_tensor(entry, lambda offset, length: checkpoint.fetch(full.data_file.name, offset, length))

    requests = []

    def fetch(offset, length):
        requests.append((offset, length))
        return checkpoint.fetch(full.data_file.name, offset, length)

    monkeypatch.setattr(tf_checkpoint, "READ_CHUNK", 100_000)
    progress = []
    chunked = read_tensor(entry, fetch, on_bytes=progress.append)
    assert torch.equal(whole, chunked)
    assert max(length for _, length in requests) == 100_000
    assert requests[0][0] == entry.offset
    assert sum(length for _, length in requests) == entry.size == sum(progress)


def test_corrupted_tensor_is_named(full, tmp_path):
    target = copy_checkpoint(full, tmp_path)
    checkpoint = open_local_checkpoint(target)
    victim = checkpoint.entries["generator_B/MLP/gamma/dense/kernel"]
    data_file = target / full.data_file.name
    data = bytearray(data_file.read_bytes())
    data[victim.offset + victim.size // 2] ^= 0x01
    data_file.write_bytes(data)

    with pytest.raises(TFCheckpointError, match=r"generator_B/MLP/gamma/dense/kernel fails its crc32c check"):
        checkpoint.read(["generator_B/MLP/gamma/dense/kernel"])
    # The corruption is local: the neighbouring tensors still read.
    checkpoint.read(["generator_B/MLP/beta/dense/kernel", "generator_B/MLP/linear_0/dense/kernel"])


def test_truncated_data_shard_is_reported(full, tmp_path):
    target = copy_checkpoint(full, tmp_path)
    checkpoint = open_local_checkpoint(target)
    last = max(checkpoint.entries.values(), key=lambda e: e.offset)
    data_file = target / full.data_file.name
    data_file.write_bytes(data_file.read_bytes()[: last.offset + 1])
    with pytest.raises(TFCheckpointError, match=rf"{last.name} claims bytes .* truncated"):
        checkpoint.read([last.name])


def test_corrupted_index_is_rejected(full):
    data = bytearray(full.index_file.read_bytes())
    data[100] ^= 0x01  # inside the first data block
    with pytest.raises(TFCheckpointError, match="crc32c"):
        parse_index(bytes(data), origin="x.index")
    with pytest.raises(TFCheckpointError, match="bad table magic"):
        parse_index(bytes(data[:-1]) + b"\0", origin="x.index")
    with pytest.raises(TFCheckpointError, match="too short"):
        parse_index(b"", origin="x.index")


def test_find_prefix_accepts_folder_index_file_and_prefix(full, tmp_path):
    prefix = full.checkpoint_dir / full.prefix
    assert find_prefix(full.checkpoint_dir) == prefix  # via its `checkpoint` file
    assert find_prefix(full.index_file) == prefix
    assert find_prefix(prefix) == prefix

    # Without a `checkpoint` state file the only .index is used.
    target = copy_checkpoint(full, tmp_path)
    (target / "checkpoint").unlink()
    assert find_prefix(target) == target / full.prefix

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no TensorFlow checkpoint"):
        find_prefix(empty)
