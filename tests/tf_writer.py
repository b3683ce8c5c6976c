"""A minimal writer of TF V2 checkpoints (float32 tensors only), for tests and benchmarks.

It writes what TF's ``BundleWriter`` writes: data shards of raw little-endian tensors and an ``.index``
SSTable (one data block, no prefix compression, an empty meta-index block, an index block, the footer).
The official fixtures prove the reader on files TF itself wrote; this writer only makes shapes TF was
not run for (several shards, release-sized generators) cheap to produce.
"""

import struct
from collections.abc import Mapping
from pathlib import Path

import torch

from ugatit_cli.families.ugatit import Generator
from ugatit_cli.families.ugatit.importers.tf_checkpoint import TABLE_MAGIC, masked_crc32c
from ugatit_cli.families.ugatit.importers.tf_convert import CHANNEL, CONV, DENSE, DENSE_FROM_NHWC, tf_variable_map

DT_FLOAT = 1


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_varint(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _field_bytes(field: int, value: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(value)) + value


def _entry_proto(shape: tuple[int, ...], shard: int, offset: int, size: int, crc: int) -> bytes:
    shape_proto = b"".join(_field_bytes(2, _field_varint(1, dim)) for dim in shape)
    return (_field_varint(1, DT_FLOAT) + _field_bytes(2, shape_proto) + (_field_varint(3, shard) if shard else b"")
            + (_field_varint(4, offset) if offset else b"") + _field_varint(5, size)
            + _varint(6 << 3 | 5) + struct.pack("<I", crc))


def _block(records: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in records)
    return body + struct.pack("<II", 0, 1)  # one restart point, at offset 0


def _with_trailer(block: bytes) -> bytes:
    return block + b"\0" + struct.pack("<I", masked_crc32c(block + b"\0"))


def write_checkpoint(prefix: Path, tensors: Mapping[str, torch.Tensor], num_shards: int = 1) -> None:
    """Write ``tensors`` (float32) as ``<prefix>.index`` + ``<prefix>.data-0000N-of-0000M``; tensors are
    spread over the shards round-robin in name order."""
    names = sorted(tensors)
    shard_files = [open(f"{prefix}.data-{i:05d}-of-{num_shards:05d}", "wb") for i in range(num_shards)]
    records = [(b"", _field_varint(1, num_shards) + _field_bytes(3, _field_varint(1, 1)))]
    try:
        for position, name in enumerate(names):
            shard = position % num_shards
            data = tensors[name].detach().to(torch.float32).contiguous().numpy().tobytes()
            offset = shard_files[shard].tell()
            shard_files[shard].write(data)
            entry = _entry_proto(tuple(tensors[name].shape), shard, offset, len(data), masked_crc32c(data))
            records.append((name.encode(), entry))
    finally:
        for file in shard_files:
            file.close()

    data_block = _with_trailer(_block(records))
    meta_block = _with_trailer(_block([]))
    meta_offset = len(data_block)
    index_offset = meta_offset + len(meta_block)
    index_block = _with_trailer(_block([(records[-1][0], _varint(0) + _varint(len(data_block) - 5))]))
    handles = (_varint(meta_offset) + _varint(len(meta_block) - 5)
               + _varint(index_offset) + _varint(len(index_block) - 5))
    footer = handles.ljust(40, b"\0") + struct.pack("<Q", TABLE_MAGIC)
    Path(f"{prefix}.index").write_bytes(data_block + meta_block + index_block + footer)


def tf_generator_tensors(generator: Generator, scope: str) -> dict[str, torch.Tensor]:
    """A TF-variant generator's weights under the official TF names and layouts (the import's inverse)."""
    config, state = generator.config, generator.state_dict()
    side, channels = config.img_size // 4, config.ch * 4
    inverse = {
        CONV: lambda t: t.permute(2, 3, 1, 0),  # OIHW -> HWIO
        DENSE: lambda t: t.t(),
        DENSE_FROM_NHWC: lambda t: t.reshape(-1, channels, side, side).permute(2, 3, 1, 0).reshape(-1, t.shape[0]),
        CHANNEL: lambda t: t.reshape(-1),
    }
    return {f"{scope}/{name}": inverse.get(kind, lambda t: t)(state[key])
            for name, (key, kind) in tf_variable_map(config).items()}
