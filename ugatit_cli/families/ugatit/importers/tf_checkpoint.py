"""Read TensorFlow V2 checkpoints without TensorFlow.

A checkpoint is ``<prefix>.index`` plus ``<prefix>.data-NNNNN-of-MMMMM`` shards (TF's ``tensor_bundle``).
The index is a LevelDB-style SSTable (``tensorflow/core/lib/io/table*``): data blocks of prefix-compressed
key/value records, an index block pointing at them, and a 48-byte footer. Its first key, ``""``, holds a
``BundleHeaderProto`` (shard count, endianness); every other key is a tensor name whose value is a
``BundleEntryProto`` (dtype, shape, shard, offset, size, masked crc32c). A tensor's bytes are its raw
little-endian values at ``offset`` in its shard.

The index is parsed from bytes and tensors are read through a ``fetch(shard_name, offset, length)``
function, so the same code reads local files and byte ranges of a remote file. Tensors are read in
chunks into one preallocated buffer, checked against their crc32c, and never the whole shard.
The protobuf messages are decoded by hand: five small messages do not justify a protobuf dependency.
"""

import os
import re
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import torch

from ....core.safety import regular_file
from ....errors import ProcessingError

#: fetch(shard file name, offset, length) -> exactly ``length`` bytes of that data shard
Fetch = Callable[[str, int, int], bytes]

TABLE_MAGIC = 0xDB4775248B80FB57  # leveldb's table magic number, little-endian in the last 8 bytes
FOOTER_SIZE = 48  # two padded BlockHandles (40 bytes) + magic
BLOCK_TRAILER_SIZE = 5  # compression type byte + masked crc32c
MAX_DIMS = 8  # no U-GAT-IT variable has more than 4 dimensions
MAX_INDEX_BYTES = 256 << 20  # the 8 GB selfie2anime release has a ~50 KB index
READ_CHUNK = 16 << 20  # bytes per fetch: bounds memory beyond the tensor itself and paces progress

# tensorflow/core/framework/types.proto DataType -> torch dtype
TF_DTYPES: dict[int, torch.dtype] = {
    1: torch.float32, 2: torch.float64, 3: torch.int32, 4: torch.uint8, 5: torch.int16, 6: torch.int8,
    9: torch.int64, 10: torch.bool, 14: torch.bfloat16, 17: torch.uint16, 19: torch.float16,
    22: torch.uint32, 23: torch.uint64,
}
TF_DTYPE_NAMES = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string", 8: "complex64",
    9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 18: "complex128", 19: "float16", 20: "resource",
    21: "variant", 22: "uint32", 23: "uint64",
}


class TFCheckpointError(ProcessingError):
    """The checkpoint is missing, malformed or corrupted; the message names the file or tensor."""


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives in the data shards, as recorded in the index."""

    name: str
    dtype: int  # TF DataType enum value
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int  # masked, as stored
    sliced: bool = False  # a partitioned variable: its data lives under other keys, which we do not read

    @property
    def dtype_name(self) -> str:
        return TF_DTYPE_NAMES.get(self.dtype, f"dtype {self.dtype}")


@dataclass(frozen=True)
class CheckpointIndex:
    """The parsed ``.index`` file: shard count and every tensor's entry, by name."""

    num_shards: int
    entries: Mapping[str, TensorEntry]

    def shard_name(self, prefix_name: str, shard: int) -> str:
        return f"{prefix_name}.data-{shard:05d}-of-{self.num_shards:05d}"


def masked_crc32c(data: bytes, crc: int = 0) -> int:
    """TF stores crc32c values "masked" (rotated and offset) so that a crc of data containing crcs stays
    well distributed (``tensorflow/core/lib/hash/crc32c.h``)."""
    return _mask(google_crc32c.extend(crc, data))


def _mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# --- protobuf wire format -------------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs: ints for varint/fixed fields, bytes for length-delimited ones."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _varint(buf, pos)
        elif wire_type == 1:
            (value,), pos = struct.unpack_from("<Q", buf, pos), pos + 8
        elif wire_type == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated length-delimited field")
            value, pos = buf[pos : pos + length], pos + length
        elif wire_type == 5:
            (value,), pos = struct.unpack_from("<I", buf, pos), pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        yield field, value


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    """TensorShapeProto: repeated Dim dim = 2 (Dim: int64 size = 1)."""
    dims = []
    for field, value in _proto_fields(buf):
        if field == 2:
            size = 0
            for dim_field, dim_value in _proto_fields(value):
                if dim_field == 1:
                    size = _int64(dim_value)
            dims.append(size)
    return tuple(dims)


def _parse_entry(name: str, buf: bytes) -> TensorEntry:
    """BundleEntryProto: dtype=1, shape=2, shard_id=3, offset=4, size=5, crc32c=6 (fixed32), slices=7."""
    values: dict[str, object] = {"dtype": 0, "shape": (), "shard": 0, "offset": 0, "size": 0, "crc32c": 0}
    sliced = False
    for field, value in _proto_fields(buf):
        if field == 1:
            values["dtype"] = value
        elif field == 2:
            values["shape"] = _parse_shape(value)
        elif field == 3:
            values["shard"] = value
        elif field == 4:
            values["offset"] = _int64(value)
        elif field == 5:
            values["size"] = _int64(value)
        elif field == 6:
            values["crc32c"] = value
        elif field == 7:
            sliced = True
    return TensorEntry(name=name, sliced=sliced, **values)  # type: ignore[arg-type]


# --- SSTable ---------------------------------------------------------------------------------------------


def _block_handle(buf: bytes, pos: int) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def _read_block(data: bytes, offset: int, size: int) -> bytes:
    end = offset + size
    if end + BLOCK_TRAILER_SIZE > len(data):
        raise ValueError("block runs past the end of the file")
    contents, compression = data[offset:end], data[end]
    (stored_crc,) = struct.unpack_from("<I", data, end + 1)
    if masked_crc32c(data[offset : end + 1]) != stored_crc:
        raise ValueError(f"block at offset {offset} fails its crc32c check")
    if compression != 0:
        raise ValueError(f"block at offset {offset} is compressed (type {compression}); TF never writes that")
    return contents


def _block_records(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Key/value records of one block; each key shares a prefix with the previous one."""
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * num_restarts
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_length, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_length]
        pos += value_length


def _table_records(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(data) < FOOTER_SIZE:
        raise ValueError("too short to be a checkpoint index")
    footer = data[-FOOTER_SIZE:]
    (magic,) = struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)
    if magic != TABLE_MAGIC:
        raise ValueError("not a TensorFlow checkpoint index (bad table magic number)")
    _, _, pos = _block_handle(footer, 0)  # the meta-index block: empty in checkpoints
    index_offset, index_size, _ = _block_handle(footer, pos)
    for _, handle in _block_records(_read_block(data, index_offset, index_size)):
        offset, size, _ = _block_handle(handle, 0)
        yield from _block_records(_read_block(data, offset, size))


def parse_index(data: bytes, origin: str = "checkpoint index") -> CheckpointIndex:
    """Parse the bytes of a ``.index`` file; ``origin`` names it in errors."""
    num_shards, entries = 1, {}
    try:
        for key, value in _table_records(data):
            if key == b"":  # BundleHeaderProto: num_shards = 1, endianness = 2 (0 little, 1 big)
                header = dict(_proto_fields(value))
                num_shards = int(header.get(1, 1))
                if header.get(2, 0) != 0:
                    raise ValueError("big-endian checkpoints are not supported")
                continue
            name = key.decode("utf-8")
            entries[name] = _parse_entry(name, value)
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        raise TFCheckpointError(f"{origin}: unreadable TensorFlow checkpoint index ({exc})") from None
    return CheckpointIndex(num_shards=num_shards, entries=entries)


# --- tensors ---------------------------------------------------------------------------------------------


def _tensor_dtype(entry: TensorEntry, origin: str) -> torch.dtype:
    if entry.sliced:
        raise TFCheckpointError(f"{origin}: {entry.name} is a partitioned variable, which is not supported")
    dtype = TF_DTYPES.get(entry.dtype)
    if dtype is None:
        raise TFCheckpointError(f"{origin}: {entry.name} has unsupported dtype {entry.dtype_name}")
    if len(entry.shape) > MAX_DIMS or any(dim < 0 for dim in entry.shape) or entry.offset < 0 or entry.size < 0:
        raise TFCheckpointError(f"{origin}: {entry.name} has an impossible shape {list(entry.shape)}, offset "
                                f"{entry.offset} or size {entry.size}")
    numel = 1
    for dim in entry.shape:
        numel *= dim
    if numel * dtype.itemsize != entry.size:
        raise TFCheckpointError(f"{origin}: {entry.name} records {entry.size} bytes for shape {list(entry.shape)}")
    return dtype


def _chunks(size: int) -> list[tuple[int, int]]:
    """(start, length) pieces of at most ``READ_CHUNK`` bytes covering ``size`` bytes."""
    return [(start, min(READ_CHUNK, size - start)) for start in range(0, size, READ_CHUNK)]


def _fetch_chunk(
    entry: TensorEntry, start: int, length: int, fetch: Callable[[int, int], bytes],
    on_bytes: Callable[[int], None] | None, origin: str,
) -> bytes:
    chunk = fetch(entry.offset + start, length)
    if len(chunk) != length:
        raise TFCheckpointError(f"{origin}: data shard ends inside {entry.name} (truncated download or file?)")
    if on_bytes is not None:
        on_bytes(length)
    return chunk


def _assemble(entry: TensorEntry, dtype: torch.dtype, chunks: Iterable[bytes], origin: str) -> torch.Tensor:
    """Copy the tensor's chunks, in order, into one buffer while checking its crc32c; each chunk can be
    freed as soon as it is copied."""
    buffer = bytearray(entry.size)
    view = memoryview(buffer)
    crc, position = 0, 0
    for chunk in chunks:
        crc = google_crc32c.extend(crc, chunk)
        view[position : position + len(chunk)] = chunk
        position += len(chunk)
    if _mask(crc) != entry.crc32c:
        raise TFCheckpointError(f"{origin}: tensor {entry.name} fails its crc32c check (corrupted data shard)")
    if entry.size == 0:
        return torch.empty(entry.shape, dtype=dtype)
    return torch.frombuffer(buffer, dtype=dtype).reshape(entry.shape)


def read_tensor(
    entry: TensorEntry, fetch: Callable[[int, int], bytes], on_bytes: Callable[[int], None] | None = None,
    origin: str = "checkpoint",
) -> torch.Tensor:
    """Read one tensor through ``fetch(offset, length)`` on its shard, verifying its crc32c.

    The bytes are fetched ``READ_CHUNK`` at a time into one buffer of the tensor's size, so reading a 1 GB
    kernel needs 1 GB plus one chunk, whatever the shard's size.
    """
    dtype = _tensor_dtype(entry, origin)
    chunks = (_fetch_chunk(entry, start, length, fetch, on_bytes, origin) for start, length in _chunks(entry.size))
    return _assemble(entry, dtype, chunks, origin)


def _results_in_order(futures: list[Future]) -> Iterator[bytes]:
    """Each future's result, dropping the future (and so its chunk) once the result is taken."""
    while futures:
        yield futures.pop(0).result()


class TFCheckpoint:
    """A parsed index and a way to fetch byte ranges of its data shards (local files or a remote store)."""

    def __init__(self, index: CheckpointIndex, prefix_name: str, fetch: Fetch, origin: str,
                 shard_size: Callable[[str], int | None] | None = None):
        self.index = index
        self.prefix_name = prefix_name  # file-name prefix of the shards, e.g. "UGATIT.model-1000000"
        self.fetch = fetch
        self.origin = origin
        self.shard_size = shard_size  # a shard's real size in bytes (None: unknown), checked before reading

    def check_entries(self, entries: Iterable[TensorEntry]) -> None:
        """Every entry's dtype, shape and byte range are possible and lie inside its shard's real size, so
        a hostile index cannot make us allocate what the data file does not hold."""
        for entry in entries:
            _tensor_dtype(entry, self.origin)
            if not 0 <= entry.shard < self.index.num_shards:
                raise TFCheckpointError(f"{self.origin}: {entry.name} is in shard {entry.shard} of "
                                        f"{self.index.num_shards}")
            size = self.shard_size(self.shard_name(entry.shard)) if self.shard_size else None
            if size is not None and entry.offset + entry.size > size:
                raise TFCheckpointError(f"{self.origin}: {entry.name} claims bytes {entry.offset}..."
                                        f"{entry.offset + entry.size} but {self.shard_name(entry.shard)} holds "
                                        f"{size} (a truncated or hostile checkpoint)")

    @property
    def entries(self) -> Mapping[str, TensorEntry]:
        return self.index.entries

    def shard_name(self, shard: int) -> str:
        return self.index.shard_name(self.prefix_name, shard)

    def nbytes(self, names: Iterable[str]) -> int:
        return sum(self.entries[name].size for name in names)

    def read(self, names: Iterable[str], on_bytes: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
        return dict(self.iter_read(names, on_bytes))

    def _shard_fetch(self, entry: TensorEntry) -> Callable[[int, int], bytes]:
        shard = self.shard_name(entry.shard)
        return lambda offset, length: self.fetch(shard, offset, length)

    def iter_read(
        self, names: Iterable[str], on_bytes: Callable[[int], None] | None = None, workers: int = 1
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) in shard-offset order, so a caller can convert and drop each tensor as it comes.

        ``workers > 1`` fetches that many chunks at once (and ``fetch`` must then be thread-safe): over
        HTTP, parallel range requests hide each request's latency and lift per-connection throughput.
        Fetched chunks wait in memory until their tensor's turn, so memory stays within the requested
        tensors' total either way.
        """
        names = list(names)
        missing = [name for name in names if name not in self.entries]
        if missing:
            raise TFCheckpointError(f"{self.origin}: no tensor {missing[0]} in the checkpoint")
        entries = sorted((self.entries[name] for name in names), key=lambda e: (e.shard, e.offset))
        self.check_entries(entries)
        if workers <= 1:
            for entry in entries:
                yield entry.name, read_tensor(entry, self._shard_fetch(entry), on_bytes, origin=self.origin)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tf-checkpoint") as pool:
            try:
                pending: deque[tuple[TensorEntry, torch.dtype, list[Future]]] = deque()
                for entry in entries:
                    dtype, fetch = _tensor_dtype(entry, self.origin), self._shard_fetch(entry)
                    futures = [pool.submit(_fetch_chunk, entry, start, length, fetch, on_bytes, self.origin)
                               for start, length in _chunks(entry.size)]
                    pending.append((entry, dtype, futures))
                while pending:
                    entry, dtype, futures = pending.popleft()
                    yield entry.name, _assemble(entry, dtype, _results_in_order(futures), self.origin)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)  # on error or early exit: stop fetching


def find_prefix(path: str | os.PathLike) -> Path:
    """The checkpoint prefix for a folder (its ``checkpoint`` file, else its only ``.index``), an
    ``.index`` file, or a prefix itself; raise ``TFCheckpointError`` when there is none."""
    path = Path(path)
    if path.is_dir():
        named = _prefix_from_state_file(path / "checkpoint")
        if named is not None and named.with_name(named.name + ".index").is_file():
            return named
        indexes = sorted(path.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        if not indexes:
            raise TFCheckpointError(f"{path}: no TensorFlow checkpoint (*.index) in this folder")
        raise TFCheckpointError(f"{path}: several checkpoints ({', '.join(i.name for i in indexes)}); pass one")
    prefix = _prefix_of_file(path)
    if prefix is not None:
        return prefix
    raise TFCheckpointError(f"{path}: not a TensorFlow checkpoint (no {path.name}.index)")


_DATA_SHARD = re.compile(r"\.data-\d{5}-of-\d{5}$")


def _prefix_of_file(path: Path) -> Path | None:
    """The checkpoint prefix a non-folder path names, in every form TF tools use: the prefix itself
    (``UGATIT.model-1000000``, what TF's ``checkpoint`` file records), its ``.index``, a ``.data-*`` shard,
    its ``.meta`` graph, or the folder's ``checkpoint`` state file; None when no ``.index`` is there."""
    name = path.name
    shard = _DATA_SHARD.search(name)
    if shard:
        prefix = path.with_name(name[: shard.start()])
    elif name.endswith((".index", ".meta")):
        prefix = path.with_name(name.rsplit(".", 1)[0])
    elif name == "checkpoint" and path.is_file():
        prefix = _prefix_from_state_file(path)
    else:
        prefix = path
    if prefix is not None and prefix.with_name(prefix.name + ".index").exists():
        return prefix
    return None


def is_tf_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a folder holding a TF checkpoint index, or names one (see ``_prefix_of_file``)."""
    if path.is_dir():
        return any(path.glob("*.index"))
    return _prefix_of_file(path) is not None


def _prefix_from_state_file(state_file: Path) -> Path | None:
    """The ``model_checkpoint_path`` of TF's ``checkpoint`` text file, taken relative to its folder
    (TF may have written an absolute path from the training machine)."""
    try:
        text = state_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model_checkpoint_path":
            return state_file.parent / Path(value.strip().strip('"')).name
    return None


def open_local_checkpoint(path: str | os.PathLike) -> TFCheckpoint:
    """Open a checkpoint on disk: the index is parsed now, shards are read lazily by byte range."""
    prefix = find_prefix(path)
    index_path = regular_file(prefix.with_name(prefix.name + ".index"), "TensorFlow checkpoint index",
                              error=TFCheckpointError)  # not /dev/zero, a FIFO, ...
    if index_path.stat().st_size > MAX_INDEX_BYTES:
        raise TFCheckpointError(f"{index_path}: {index_path.stat().st_size} bytes is too large for a checkpoint index")
    try:
        index = parse_index(index_path.read_bytes(), origin=str(index_path))
    except OSError as exc:
        raise TFCheckpointError(f"{index_path}: cannot read ({exc.strerror or exc})") from None

    def shard_size(shard_name: str) -> int | None:
        return regular_file(prefix.parent / shard_name, "checkpoint data shard", error=TFCheckpointError).stat().st_size

    def fetch(shard_name: str, offset: int, length: int) -> bytes:
        shard_path = prefix.parent / shard_name
        try:
            with open(shard_path, "rb") as file:
                file.seek(offset)
                return file.read(length)
        except OSError as exc:
            raise TFCheckpointError(f"{shard_path}: cannot read ({exc.strerror or exc})") from None

    return TFCheckpoint(index, prefix.name, fetch, origin=str(prefix), shard_size=shard_size)
