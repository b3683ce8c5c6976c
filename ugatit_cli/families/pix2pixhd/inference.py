"""pix2pixHD inference: label (and instance) maps in, photos out, as the official ``test.py`` runs the model.

Source: NVIDIA/pix2pixHD ``test.py`` and ``Pix2PixHDModel.inference``: the inputs go through the test
transform (``--resize_or_crop none``: sides rounded to the generator's multiple, labels and instance maps
NEAREST, photos BICUBIC), the one-hot + edge encoding, and with instance features either the encoder on a real
photo (``--use_encoded_image``) or one cluster centre per instance (``sample_features``); the output is
``tensor2im`` of the generator's [-1, 1] image. Here outputs are rounded to 8 bits where the official
``tensor2im`` truncates (at most one grey level apart).

Instance maps are found by name beside the label maps: same relative path and stem, or the stem with
``labelIds`` replaced by ``instanceIds`` (the Cityscapes names), in the instance folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...core.images import BadImageError, is_image_name
from .config import Pix2PixHDConfig
from .data import encode_input, inference_size, prepare_instance, prepare_label, prepare_photo
from .features import sample_feature_map

INSTANCE_NAME_SWAPS = (("labelIds", "instanceIds"), ("label", "inst"))
PHOTO_NAME_SWAPS = (("gtFine_labelIds", "leftImg8bit"), ("label", "img"))


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


def prepare(config: Pix2PixHDConfig, label_path: str | os.PathLike, inst_path: str | os.PathLike | None = None,
            size: tuple[int, int] | None = None, photo_path: str | os.PathLike | None = None
            ) -> dict[str, torch.Tensor]:
    """The tensors one label map needs, batch of one: ``label`` (ids or RGB), ``inst`` (ids; the label map
    itself with ``no_instance`` models that still need regions for features), ``image`` (a real photo for
    ``encode-image``). ``size`` (width, height) overrides the official test sizing. Raises
    :class:`BadImageError` for unusable files."""
    label, original = prepare_label(config, label_path, size)
    target = (label.shape[-1], label.shape[-2])
    out = {"label": label}
    if not config.no_instance or config.instance_feat:
        if inst_path is None:
            raise BadImageError(label_path, "this model needs an instance map for each label map (--instance-maps DIR)")
        out["inst"] = prepare_instance(inst_path, target)
    if photo_path is not None:
        out["image"] = prepare_photo(photo_path, target)
    out["original_size"] = torch.tensor(original)
    return out


@torch.no_grad()
def generate(config: Pix2PixHDConfig, net_g: nn.Module, batch: Mapping[str, torch.Tensor],
             net_e: nn.Module | None = None, clusters: Mapping[int, np.ndarray] | None = None,
             generator: torch.Generator | None = None, *, seed: int | None = None,
             choice: int | None = None) -> torch.Tensor:
    """The generated image ``(B, output_nc, H, W)`` in [-1, 1] for a prepared batch (official ``inference``).

    With features: ``batch["image"]`` + ``net_e`` encode a real photo, else ``clusters`` give one sampled centre
    per instance (``generator``, or ``seed`` per image, seeds the draw; ``choice`` K takes centre K of each class;
    see :func:`.features.sample_feature_map`). Raises ``ValueError`` when the model needs what is missing.
    """
    device = next(net_g.parameters()).device
    label = batch["label"].to(device)
    inst = batch.get("inst")
    inst = inst.to(device) if inst is not None else None
    x = encode_input(config, label, inst)
    if config.use_features:
        regions = label if config.label_feat else inst
        if batch.get("image") is not None and net_e is not None:
            feat = net_e(batch["image"].to(device), regions)
        elif clusters is not None:
            feat = sample_feature_map(clusters, regions, config.feat_num, generator, seed=seed,
                                          choice=choice).to(device)
        else:
            raise ValueError("this model uses instance features: give feature clusters or a real photo to encode")
        x = torch.cat([x, feat.to(x.dtype)], dim=1)
    return net_g(x)


def output_size(config: Pix2PixHDConfig, original: tuple[int, int], size: int | None) -> tuple[int, int]:
    """(width, height) the model runs at for a map of ``original`` size and an optional ``--size`` width."""
    return inference_size(config, original, size)
