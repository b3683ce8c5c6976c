"""TUNIT training data: one folder of images, read recursively; no labels needed.

Each training sample is the official pair (``datasets/datasetgetter.py`` ``DuplicatedCompose``): the plain
view (resize to size x size, random horizontal flip) and the IIC view (random affine, resized crop, colour
jitter, flip: :func:`~ugatit_cli.families.tunit.losses.iic_augmentation`) of the same decoded image, both in
[-1, 1]. The random draws of a sample come from a seed the caller gives (e.g. from the run seed, the
iteration and the position in the batch), so that a resumed run sees the same pairs.

Labels: when every image lies in a first-level subfolder, the subfolder names (sorted) are the classes. They
are used for ``--p-semi`` > 0 (labelled share) and by evaluation (cluster accuracy); otherwise ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ...core.files import walk_once
from ...errors import ProcessingError, UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class TunitData:
    """Images found under ``root`` (sorted relative paths) and, when they are all in class subfolders, the
    class index of each and the class names."""

    root: Path
    files: list[str]
    labels: list[int] | None = None
    classes: list[str] = field(default_factory=list)

    def relative(self) -> dict[str, list[str]]:
        return {"images": list(self.files)}

    def path(self, i: int) -> Path:
        return self.root / self.files[i]


def scan_images(root: str | os.PathLike) -> TunitData:
    """Every image file under ``root`` (recursively, hidden entries and subfolders of this tool's results
    skipped: ``core.files.walk_once``); UserError when ``root`` is not a folder or holds no image."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: not a folder of images")
    files: list[str] = []
    for dirpath, _, filenames in walk_once(root):
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                files.append(Path(dirpath, name).relative_to(root).as_posix())
    if not files:
        raise UserError(f"{root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} in it and its subfolders)")
    files.sort()
    top = [f.split("/", 1)[0] if "/" in f else None for f in files]
    if all(t is not None for t in top) and len(set(top)) >= 2:
        classes = sorted(set(top))
        index = {c: i for i, c in enumerate(classes)}
        return TunitData(root, files, [index[t] for t in top], classes)
    return TunitData(root, files)


def load_rgb(path: Path):
    """The image at ``path`` as an RGB Pillow image; ProcessingError naming the file when unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise ProcessingError(f"{path}: cannot read the image ({exc})") from None


def training_pair(image, size: int, seed: int, color: bool = True):
    """``(x_org, x_tf)``: the plain and the augmented view of ``image`` (PIL or uint8 C x H x W tensor), each
    3 x size x size float in [-1, 1], drawn from ``seed`` (torch's global generator is left as it was)."""
    import torch

    from .losses import iic_augmentation, plain_view

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return plain_view(size)(image), iic_augmentation(size, color=color)(image)
