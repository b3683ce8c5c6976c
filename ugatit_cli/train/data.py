"""Training data as the official PyTorch loaders prepare it, with a data order that survives a restart.

Layout: ``DATA_DIR/trainA trainB testA testB`` (znxlwm/UGATIT-pytorch ``dataset.py``). Every training image
goes through the official train transform: random horizontal flip, bilinear resize to ``size + 30``
square, random ``size`` crop, scale to [-1, 1]; sample images through the test transform (resize to
``size``). A and B are two independent shuffled streams that restart with a new order at every epoch.

The batch of iteration ``k`` is a pure function of ``(seed, stream, epoch, position)``: the order of an epoch
is a permutation seeded from ``(seed, stream, epoch)`` and each image's flip and crop from
``(seed, stream, epoch, position)``. A resumed run therefore continues both streams exactly where they
were, whatever the number of loader workers, without replaying them; ranks of a distributed run take
interleaved shards of each permutation (like ``DistributedSampler``).
"""

import math
import os
import signal
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from ..images import BadImageError, collect_images, image_to_tensor, open_rgb

STREAMS = ("A", "B")
RESIZE_MARGIN = 30  # official: Resize((size + 30, size + 30)) before RandomCrop(size)


class SkippedImagesWarning(UserWarning):
    """Training images that cannot be read; they are left out of the run."""


@dataclass(frozen=True)
class TrainingData:
    """The readable images of each domain (sorted paths) and the sample images' folders."""

    root: Path
    train: dict[str, list[Path]]  # "A" / "B" -> readable training images
    test: dict[str, Path | None]  # "A" / "B" -> testA / testB when present

    def relative(self) -> dict[str, list[str]]:
        """The file lists relative to the data folder, as a run folder records them."""
        return {s: [p.relative_to(self.root).as_posix() for p in files] for s, files in self.train.items()}


def open_source(item) -> Image.Image:
    """An RGB image from a training source: a file (:class:`~pathlib.Path`) or an object with ``open_rgb()``
    (a Hub dataset's image, :class:`ugatit_cli.hub_datasets.HubImage`); BadImageError when unusable."""
    return item.open_rgb() if hasattr(item, "open_rgb") else open_rgb(item)


def _readable(path: Path) -> BadImageError | None:
    try:
        open_rgb(path)
    except BadImageError as exc:
        return exc
    return None


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, in name order (the official ``make_dataset`` walks too)."""
    found, _ = collect_images([folder])
    return [image.path for image in found]


def _domain_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder; DATA_DIR must hold trainA/ and trainB/ "
                        f"(and testA/ testB/ for samples), like the official datasets")
    files = list_images(folder)
    if not files:
        raise UserError(f"{folder}: folder contains no images")
    return files


def scan_training_data(data_dir: str | os.PathLike, threads: int | None = None) -> TrainingData:
    """Find and fully decode every training image once; unreadable ones are named in one warning and left out.

    Decoding (threads: Pillow releases the GIL) costs a few seconds per thousand images once per start, and
    means a run never meets a bad file mid-way.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise UserError(f"{root}: no such data folder")
    candidates = {stream: _domain_files(root / f"train{stream}") for stream in STREAMS}
    everything = [path for files in candidates.values() for path in files]
    with ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 1)) as pool:
        problems = dict(zip(everything, pool.map(_readable, everything), strict=True))
    bad = [problems[p] for p in everything if problems[p] is not None]
    if bad:
        listing = "; ".join(f"{Path(e.path).relative_to(root).as_posix()} ({e.reason})" for e in bad)
        warnings.warn(f"skipping {len(bad)} unreadable training image(s): {listing}", SkippedImagesWarning,
                      stacklevel=2)
    train = {stream: [p for p in files if problems[p] is None] for stream, files in candidates.items()}
    for stream, files in train.items():
        if not files:
            raise UserError(f"{root / f'train{stream}'}: none of its {len(candidates[stream])} images can be read")
    test = {stream: (root / f"test{stream}") if (root / f"test{stream}").is_dir() else None for stream in STREAMS}
    return TrainingData(root, train, test)


def _seed(*parts: int) -> np.random.Generator:
    """An independent generator for a tuple of non-negative integers (NumPy's SeedSequence mixes them)."""
    return np.random.default_rng([int(p) for p in parts])


def train_transform(img: Image.Image, size: int, rng: np.random.Generator) -> torch.Tensor:
    """The official train transform: flip with p=0.5, bilinear resize to size+30, random crop, [-1, 1]."""
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    big = size + RESIZE_MARGIN
    img = img.resize((big, big), Image.Resampling.BILINEAR)
    top, left = (int(v) for v in rng.integers(0, RESIZE_MARGIN + 1, size=2))
    return image_to_tensor(img.crop((left, top, left + size, top + size)))


class TrainingStreams(Dataset):
    """Item ``k`` is the pair of batches ``(real_A, real_B)`` of training iteration ``k`` (0-based) on this rank.

    Every epoch of a stream is one permutation of its images; with ``world_size`` ranks, rank ``r`` takes
    positions ``r, r + world_size, ...`` of it (padded by wrapping so every rank has as many), cut into
    batches of ``batch_size`` (the last one of an epoch may be smaller, as with the official loaders).
    """

    def __init__(self, files: dict[str, Sequence[Path]], size: int, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        if seed < 0:
            raise UserError(f"--seed must be >= 0, got {seed}")
        self.files = {stream: list(files[stream]) for stream in STREAMS}
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    def per_rank(self, stream: str) -> int:
        """Images of one epoch of ``stream`` that each rank sees."""
        return math.ceil(len(self.files[stream]) / self.world_size)

    def batches_per_epoch(self, stream: str) -> int:
        return math.ceil(self.per_rank(stream) / self.batch_size)

    def _order(self, stream_id: int, epoch: int) -> np.ndarray:
        key = (stream_id, epoch)
        if key not in self._orders:
            if len(self._orders) > 4:  # the epochs in use; workers hold their own copies
                self._orders.clear()
            n = len(self.files[STREAMS[stream_id]])
            self._orders[key] = _seed(self.seed, stream_id, epoch).permutation(n)
        return self._orders[key]

    def positions(self, stream: str, iteration: int) -> tuple[int, list[int]]:
        """(epoch, positions in that epoch's permutation) of ``stream``'s batch at ``iteration``."""
        epoch, batch = divmod(iteration, self.batches_per_epoch(stream))
        mine = range(self.rank, self.per_rank(stream) * self.world_size, self.world_size)
        return epoch, list(mine[batch * self.batch_size:(batch + 1) * self.batch_size])

    def batch(self, stream: str, iteration: int) -> torch.Tensor:
        stream_id = STREAMS.index(stream)
        epoch, positions = self.positions(stream, iteration)
        order = self._order(stream_id, epoch)
        tensors = [self._image(stream, order, position, _seed(self.seed, stream_id, epoch, position))
                   for position in positions]
        return torch.stack(tensors)

    def _image(self, stream: str, order: np.ndarray, position: int, rng: np.random.Generator) -> torch.Tensor:
        """The transformed image at ``position``; a file that went bad after the scan is replaced by the next one
        of the permutation (deterministically), so the run goes on."""
        files = self.files[stream]
        for offset in range(len(files)):
            path = files[int(order[(position + offset) % len(files)])]
            try:
                return train_transform(open_source(path), self.size, rng)
            except BadImageError as exc:
                warnings.warn(f"skipping {exc} (it became unreadable during the run)", SkippedImagesWarning,
                              stacklevel=2)
        raise UserError(f"train{stream}: no image can be read any more")

    def __getitem__(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch("A", iteration), self.batch("B", iteration)


def _worker_init(_: int) -> None:
    # Ctrl-C reaches the whole process group: the main process stops the run cleanly, workers must not die first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def training_loader(streams: TrainingStreams, start: int, stop: int, workers: int,
                    pin_memory: bool = False) -> DataLoader:
    """The batch pairs of iterations ``start .. stop - 1``, prepared by ``workers`` processes."""
    return DataLoader(streams, batch_size=None, sampler=range(start, stop), num_workers=workers,
                      pin_memory=pin_memory, worker_init_fn=_worker_init if workers else None,
                      prefetch_factor=2 if workers else None)


def sample_images(files: Sequence[Path], size: int, count: int) -> torch.Tensor:
    """The first ``count`` readable images of ``files`` through the official test transform (resize to
    ``size``), as one batch; unreadable ones are passed over."""
    tensors = []
    for path in files:
        if len(tensors) == count:
            break
        try:
            tensors.append(image_to_tensor(open_source(path), size))
        except BadImageError:
            continue
    return torch.stack(tensors) if tensors else torch.empty(0, 3, size, size)
