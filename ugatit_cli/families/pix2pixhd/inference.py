"""pix2pixHD inference: label (and instance) maps in, photos out, as the official ``test.py`` runs the model.

Source: NVIDIA/pix2pixHD ``test.py`` and ``Pix2PixHDModel.inference``: the inputs go through the test
transform (``--resize_or_crop none``: sides rounded to the generator's multiple, labels and instance maps
NEAREST, photos BICUBIC), the one-hot + edge encoding, and with instance features either the encoder on a real
photo (``--use_encoded_image``) or one cluster centre per instance (``sample_features``); the output is
``tensor2im`` of the generator's [-1, 1] image. Here outputs are rounded to 8 bits where the official
``tensor2im`` truncates (at most one grey level apart).

The inputs are read, found by name and sized by :mod:`.maps` (NumPy, no torch); :func:`prepare` gives its arrays
as tensors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from .config import Pix2PixHDConfig
from .data import encode_input
from .features import sample_feature_map
from .maps import find_instance_map as find_instance_map  # these two re-exported: they were here before .maps
from .maps import find_photo as find_photo
from .maps import prepare_arrays


def prepare(config: Pix2PixHDConfig, label_path: str | os.PathLike, inst_path: str | os.PathLike | None = None,
            size: tuple[int, int] | None = None, photo_path: str | os.PathLike | None = None
            ) -> dict[str, torch.Tensor]:
    """The tensors one label map needs, batch of one (:func:`.maps.prepare_arrays`): ``label`` (ids or RGB),
    ``inst`` (ids; the label map itself with ``no_instance`` models that still need regions for features),
    ``image`` (a real photo for ``encode-image``), and ``original_size``, the map's (width, height). ``size``
    (width, height) overrides the official test sizing. Raises :class:`BadImageError` for unusable files."""
    arrays, original = prepare_arrays(config, label_path, inst_path, size, photo_path)
    return {key: torch.from_numpy(value)[None] for key, value in arrays.items()} | {
        "original_size": torch.tensor(original)}


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
