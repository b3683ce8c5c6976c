"""Reading and writing image files safely: every way a file can be bad becomes a one-line reason.

Shared by translation, training data and evaluation, so a file that one command rejects is rejected by
all of them with the same words. Importing it imports no torch (translating with a stored ONNX graph never
does); the tensor helpers import it when called.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from ..errors import ProcessingError
from .files import atomic_file, walk_once

if TYPE_CHECKING:  # pragma: no cover
    import torch

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


class BadImageError(ProcessingError):
    """An input file that cannot be used as an image; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency onto ``background``."""
    if img.mode in _SIXTEEN_BIT_MODES:
        # Pillow's convert("L") clips 16-bit values at 255 instead of scaling them.
        img = img.point(lambda v: v / 257).convert("L")
    elif img.mode == "F":
        img = img.point(lambda v: v * 255).convert("L")
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def open_rgb(path: str | os.PathLike, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Decode an image fully into RGB (first frame of animations, EXIF orientation applied).

    Raises :class:`BadImageError` for empty, truncated, unreadable, oversized or missing files.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise BadImageError(path, "broken symbolic link")
    if not path.exists():
        raise BadImageError(path, "no such file")
    if path.is_dir():
        raise BadImageError(path, "is a folder, not an image file")
    if not path.is_file():  # a device (/dev/zero), a FIFO or a socket would be read forever or block
        raise BadImageError(path, "not a regular file (a device, pipe or socket)")
    if path.stat().st_size == 0:
        raise BadImageError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.seek(0)
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img, background)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImageError(
            path, f"image is larger than the decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} pixels "
                  "(translate --max-pixels N allows larger images)"
        ) from None
    except Image.UnidentifiedImageError:
        raise BadImageError(path, "not an image file Pillow can read") from None
    except OSError as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower():
            reason = "truncated or corrupt image data"
        raise BadImageError(path, reason) from None
    except (ValueError, SyntaxError, IndexError, MemoryError) as exc:  # Pillow plugins raise these on bad data
        raise BadImageError(path, f"corrupt image data ({type(exc).__name__}: {exc})") from None


def save_image_atomic(img: Image.Image, path: str | os.PathLike) -> None:
    """Write ``img`` (format from the suffix) via a temporary file in the same folder, then rename.

    A crash or a full disk never leaves a half-written file under the final name.
    """
    with atomic_file(path) as tmp:
        img.save(tmp, format=Image.registered_extensions().get(Path(path).suffix.lower(), "PNG"))


@dataclass(frozen=True)
class InputImage:
    """An image to process and the relative path its outputs keep under the output folder."""

    path: Path
    relative: Path


@dataclass(frozen=True)
class InputProblem:
    """An input argument that yields nothing to process, with the reason."""

    path: str
    reason: str


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _folder_images(folder: Path, left_out: list[Path] | None = None) -> list[Path]:
    """Image-named files under ``folder`` (recursive, sorted); broken links are kept so they get reported.
    Subfolders of this tool's results are left out (``walk_once``), and appended to ``left_out`` when given."""
    found = []
    for root, _, files in walk_once(folder, left_out):
        found += [Path(root) / f for f in sorted(files) if not f.startswith(".") and is_image_name(Path(f))]
    return found


def glob_base(pattern: str) -> Path:
    """The leading folders of a glob pattern before its first wildcard (``shots/**/*.jpg`` -> ``shots``)."""
    parts = Path(pattern).parts
    fixed = list(parts[: next((i for i, p in enumerate(parts) if glob.has_magic(p)), len(parts))])
    return Path(*fixed) if fixed else Path()


def glob_relative(match: Path, pattern: str, stable_layout: bool) -> Path:
    """Where a glob's match goes under an output folder: with ``stable_layout`` its path after the pattern's
    fixed leading folders (so ``shots/**/*.jpg`` keeps ``day1/a.jpg`` and ``day2/a.jpg`` apart), else its name."""
    base = glob_base(pattern)
    return match.relative_to(base) if stable_layout and match.is_relative_to(base) else Path(match.name)


def folder_prefix(folder: Path, several: bool) -> Path:
    """The prefix a folder argument's files keep: its own name with ``several`` (the stable layout: always)."""
    return Path(folder.resolve().name) if several else Path()


def collect_images(inputs: Sequence[str | os.PathLike], *, stable_layout: bool = False,
                   left_out: list[Path] | None = None) -> tuple[list[InputImage], list[InputProblem]]:
    """Expand files, folders (recursively) and glob patterns into images with output-relative paths.

    A single folder's images keep their paths relative to it; with several inputs each folder's name is
    kept as a prefix so outputs of different folders cannot collide. ``stable_layout`` (translate's rule)
    always prefixes a folder's name and keeps a glob's matches relative to the pattern's fixed leading
    folders, so a path never depends on the other inputs. Duplicates are dropped; folders that links make
    loop are walked once. A folder's subfolders that hold this tool's results (``translate``, ``cluster``:
    :data:`~ugatit_cli.core.files.OUTPUT_MARK`) are not read; they are appended to ``left_out`` when given.
    """
    images: list[InputImage] = []
    problems: list[InputProblem] = []
    several = len(inputs) > 1 or stable_layout
    for raw in inputs:
        arg = Path(raw)
        if arg.is_dir():
            files = _folder_images(arg, left_out)
            if not files:
                problems.append(InputProblem(str(raw), "folder contains no images"))
            prefix = folder_prefix(arg, several)
            images += [InputImage(f, prefix / f.relative_to(arg)) for f in files]
        elif arg.exists() or arg.is_symlink():
            images.append(InputImage(arg, Path(arg.name)))
        elif glob.has_magic(str(raw)):
            matches = sorted(Path(m) for m in glob.glob(str(raw), recursive=True))
            files = [m for m in matches if not m.is_dir()]
            if not files:
                problems.append(InputProblem(str(raw), "pattern matches no files"))
            images += [InputImage(m, glob_relative(m, str(raw), stable_layout)) for m in files]
        else:
            problems.append(InputProblem(str(raw), "no such file or folder"))
    return _dedupe(images), problems


def _dedupe(images: Iterable[InputImage]) -> list[InputImage]:
    seen: set[Path] = set()
    unique = []
    for image in images:
        key = image.path.absolute()
        if key not in seen:
            seen.add(key)
            unique.append(image)
    return unique


# Pixels <-> tensors, the official way. Translation, training samples and evaluation all use these, so an
# image is prepared and rendered identically everywhere.


def resized_pixels(img: Image.Image, size: int | None = None) -> np.ndarray:
    """RGB image -> uint8 array (H, W, 3), resized to size x size with Pillow's bilinear filter first.

    That filter is what the official test transform (torchvision ``Resize((size, size))`` on a PIL image) runs.
    """
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def pixels_to_array(pixels: np.ndarray) -> np.ndarray:
    """uint8 array (..., H, W, 3) -> float32 array (..., 3, H, W) in [-1, 1], contiguous: what
    :func:`pixels_to_tensor` computes, for an ONNX graph's input."""
    return np.ascontiguousarray(np.moveaxis(pixels, -1, -3), dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


def array_to_pixels(values: np.ndarray) -> np.ndarray:
    """Float array (..., 3, H, W) in [-1, 1] -> uint8 array (..., H, W, 3), clamped and rounded as
    :func:`tensor_to_pixels` does (same float32 arithmetic, so both give the same bytes)."""
    scaled = (values.astype(np.float32, copy=False) + np.float32(1.0)) * np.float32(127.5)
    return np.ascontiguousarray(np.moveaxis(np.rint(np.clip(scaled, 0, 255)).astype(np.uint8), -3, -1))


def pixels_to_tensor(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 tensor (..., H, W, 3) -> float tensor (..., 3, H, W) in [-1, 1] (``ToTensor`` + ``Normalize(0.5, 0.5)``).

    The result is a channels-last view of the pixels' memory, which is what convolutions prefer anyway.
    """
    return pixels.movedim(-1, -3).float().div_(127.5).sub_(1.0)


def image_to_tensor(img: Image.Image, size: int | None = None) -> torch.Tensor:
    """RGB image -> float tensor (3, H, W) in [-1, 1]; ``size`` resizes to size x size first, as the official test."""
    import torch

    return pixels_to_tensor(torch.from_numpy(resized_pixels(img, size).copy()))


def tensor_to_pixels(tensor: torch.Tensor) -> torch.Tensor:
    """Float tensor (..., 3, H, W) in [-1, 1] -> uint8 tensor (..., H, W, 3) on the same device, clamped and rounded."""
    import torch

    return tensor.detach().float().add(1.0).mul_(127.5).clamp_(0, 255).round_().to(torch.uint8).movedim(-3, -1)


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """Float tensor (3, H, W) in [-1, 1] -> RGB image; values are clamped and rounded to 8 bits."""
    return Image.fromarray(tensor_to_pixels(tensor).cpu().numpy(), mode="RGB")


def jet_image(values: torch.Tensor | np.ndarray, size: tuple[int, int]) -> Image.Image:
    """A one-channel map (h, w) (a tensor or an array) -> a jet-coloured RGB image of ``size`` (width, height),
    like the official U-GAT-IT ``cam`` drawing of attention maps.

    As in that code the map is min-max normalised to 8 bits (truncated), resized bilinearly, then colour-mapped.
    """
    if hasattr(values, "detach"):  # a tensor
        values = values.detach().float().cpu().numpy()
    values = np.asarray(values, dtype=np.float32).squeeze()
    values = values - values.min()
    peak = values.max()
    if peak > 0:
        values = values / peak
    gray = Image.fromarray((values * 255).astype(np.uint8), mode="L")
    return gray.resize(size, Image.Resampling.BILINEAR).convert("RGB").point(_JET_LUT)


def _jet(x: float, centre: float) -> int:
    """One channel of the jet colour map: a trapezoid of width 1.5 around ``centre`` on a 0..4 scale."""
    return round(255 * min(1.0, max(0.0, 1.5 - abs(4 * x - centre))))


# Jet as a Pillow point table (R, G and B curves over 0..255): dark blue (low) to dark red (high).
_JET_LUT = ([_jet(i / 255, 3) for i in range(256)] + [_jet(i / 255, 2) for i in range(256)]
            + [_jet(i / 255, 1) for i in range(256)])
