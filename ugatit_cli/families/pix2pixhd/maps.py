"""pix2pixHD's translation inputs as NumPy arrays: label maps, instance maps and photos read, found by name and
sized as the official ``test.py`` runs them (``--resize_or_crop none``: each side rounded to the generator's side
multiple, labels and instance maps NEAREST, photos BICUBIC; see :mod:`.data` for the facts that decide parity).

Importing it imports no torch: translating with a stored ONNX graph reads its inputs here and never does. The
PyTorch translator reads the same arrays; :mod:`.data` and :mod:`.inference` wrap them as tensors.

Instance maps are found by name beside the label maps: same relative path and stem, or the stem with
``labelIds`` replaced by ``instanceIds`` (the Cityscapes names), in the instance folder.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ...core.images import BadImageError, is_image_name, open_rgb, pixels_to_array
from .config import Pix2PixHDConfig

ID_MAP_MODES = frozenset({"1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N"})
INSTANCE_NAME_SWAPS = (("labelIds", "instanceIds"), ("label", "inst"))
PHOTO_NAME_SWAPS = (("gtFine_labelIds", "leftImg8bit"), ("label", "img"))


# --- reading maps -------------------------------------------------------------------------------------------


def read_id_map(path: str | os.PathLike, what: str = "label map") -> np.ndarray:
    """A single-channel PNG of integer ids -> int64 array (H, W). Palette images give their palette indices.

    Raises :class:`BadImageError` (one line: file and reason) for unreadable files and multi-channel images.
    """
    path = Path(path)
    if not path.is_file():
        raise BadImageError(path, "no such file" if not path.exists() else "not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                if img.mode not in ID_MAP_MODES:
                    raise BadImageError(path, f"a {what} must be one channel of integer ids (PNG mode L, P, I "
                                              f"or I;16), this image is mode {img.mode}")
                return np.asarray(img).astype(np.int64, copy=False)
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImageError(path, "image is larger than the decompression-bomb limit (translate --max-pixels N allows "
                                  "larger images)") from None
    except Image.UnidentifiedImageError:
        raise BadImageError(path, "not an image file Pillow can read") from None
    except (OSError, ValueError, SyntaxError, IndexError) as exc:
        raise BadImageError(path, f"unreadable image ({exc or type(exc).__name__})") from None


def resize_ids(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an id map to (width, height) NEAREST (Pillow's, as the official transform), keeping the ids."""
    h, w = ids.shape
    if (w, h) == size:
        return ids
    if ids.min(initial=0) < -(2**31) or ids.max(initial=0) >= 2**31:
        raise ValueError("ids outside the 32-bit range cannot be resized")
    img = Image.fromarray(ids.astype(np.int32), mode="I")
    return np.asarray(img.resize(size, Image.Resampling.NEAREST)).astype(np.int64)


def inference_size(config: Pix2PixHDConfig, size: tuple[int, int], target: int | None = None) -> tuple[int, int]:
    """(width, height) a map of ``size`` runs at: the official test sizing (each side rounded to the side
    multiple), or with ``target`` the width scaled to it, the height kept in proportion, both rounded."""
    w, h = size
    if target is not None:
        w, h = target, max(1, round(target * h / w))
    rh, rw = config.rounded_size(h, w)
    return rw, rh


# --- finding an input's partners by name ----------------------------------------------------------------------


def find_instance_map(inst_dir: str | os.PathLike, label: str | os.PathLike, relative: str | os.PathLike | None = None
                      ) -> Path:
    """The instance map of ``label`` in ``inst_dir``: ``relative`` (the label's path below its input folder,
    default its name) with any image suffix, or its stem with ``labelIds`` -> ``instanceIds``.
    Raises :class:`BadImageError` naming the label map when there is none."""
    return _find_partner(inst_dir, label, relative, INSTANCE_NAME_SWAPS, "instance map")


def find_photo(photo_dir: str | os.PathLike, label: str | os.PathLike, relative: str | os.PathLike | None = None
               ) -> Path:
    """The real photo of ``label`` in ``photo_dir`` (``--encode-image``): the same name with any image suffix,
    or its stem with ``gtFine_labelIds`` -> ``leftImg8bit`` (Cityscapes) or ``label`` -> ``img``.
    Raises :class:`BadImageError` naming the label map when there is none."""
    return _find_partner(photo_dir, label, relative, PHOTO_NAME_SWAPS, "photo")


def _find_partner(folder_root: str | os.PathLike, label: str | os.PathLike, relative: str | os.PathLike | None,
                  swaps: tuple[tuple[str, str], ...], what: str) -> Path:
    folder_root = Path(folder_root)
    rel = Path(relative) if relative is not None else Path(Path(label).name)
    stems = [rel.with_suffix("")]
    for old, new in swaps:
        if old in rel.stem:
            stems.append(rel.with_name(rel.stem.replace(old, new)))
    for stem in stems:
        folder = folder_root / stem.parent
        if not folder.is_dir():
            continue
        for candidate in sorted(folder.glob(f"{stem.name}.*")):
            if is_image_name(candidate) and candidate.is_file():
                return candidate
    raise BadImageError(label, f"no {what} for it in {folder_root} (looked for "
                               f"{', '.join(s.as_posix() + '.png' for s in stems)})")


# --- inference inputs -------------------------------------------------------------------------------------------


def label_array(config: Pix2PixHDConfig, path: str | os.PathLike, size: tuple[int, int] | None = None,
                width: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """A label map file -> (``(1, H, W)`` int64 ids, or ``(3, H, W)`` float32 in [-1, 1] for label_nc 0; its
    original (width, height)), resized to ``size`` (width, height), else to the official test size of the map,
    or of the map scaled to ``width`` wide (:func:`inference_size`). Raises :class:`BadImageError` for
    unreadable files and ids >= label_nc."""
    if config.label_nc == 0:
        img = open_rgb(path)
        return _rgb_array(img, size or inference_size(config, img.size, width)), img.size
    ids = read_id_map(path, "label map")
    if ids.size and (ids.min() < 0 or ids.max() >= config.label_nc):
        raise BadImageError(path, f"label ids {int(ids.min())}..{int(ids.max())} but this model has label_nc "
                                  f"{config.label_nc} (ids must be < label_nc)")
    original = (ids.shape[1], ids.shape[0])
    return resize_ids(ids, size or inference_size(config, original, width))[None], original


def instance_array(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """An instance map file -> ``(1, H, W)`` int64 ids at ``size`` (width, height; NEAREST)."""
    return resize_ids(read_id_map(path, "instance map"), size)[None]


def photo_array(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """A photo -> ``(3, H, W)`` float32 in [-1, 1] at ``size`` (width, height; BICUBIC, as the official test
    transform)."""
    return _rgb_array(open_rgb(path), size)


def _rgb_array(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    if img.size != size:
        img = img.resize(size, Image.Resampling.BICUBIC)
    return pixels_to_array(np.asarray(img, dtype=np.uint8))


def prepare_arrays(config: Pix2PixHDConfig, label_path: str | os.PathLike, inst_path: str | os.PathLike | None = None,
                   size: tuple[int, int] | None = None, photo_path: str | os.PathLike | None = None,
                   width: int | None = None) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
    """The arrays one label map needs, without a batch axis, and the map's original (width, height): ``label``
    (:func:`label_array`: sized by ``size`` or ``width``), ``inst`` (:func:`instance_array`, models that take
    instance maps or need their regions for features), ``image`` (:func:`photo_array` of a real photo for
    ``--encode-image``), all at the label's size. Raises :class:`BadImageError` for unusable files and a
    missing instance map."""
    label, original = label_array(config, label_path, size, width)
    target = (label.shape[-1], label.shape[-2])
    arrays = {"label": label}
    if not config.no_instance or config.instance_feat:
        if inst_path is None:
            raise BadImageError(label_path, "this model needs an instance map for each label map (--instance-maps DIR)")
        arrays["inst"] = instance_array(inst_path, target)
    if photo_path is not None:
        arrays["image"] = photo_array(photo_path, target)
    return arrays, original
