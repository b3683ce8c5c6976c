"""pix2pixHD losses: multi-scale GAN loss, discriminator feature matching, VGG19 perceptual loss.

Source: NVIDIA/pix2pixHD ``models/networks.py`` (``GANLoss``, ``VGGLoss``, ``Vgg19``) and
``models/pix2pixHD_model.py`` (``forward``: the feature-matching weights). Facts that decide parity:

- GAN loss: summed (not averaged) over the ``num_D`` scales, each the mean over the scale's last map; LSGAN
  (default) is the MSE to 1 (real) or 0 (fake); ``no_lsgan`` is binary cross-entropy (on logits here, see
  ``networks``). The discriminator's loss is 0.5 * (real + fake); the generator's GAN + feature matching + VGG.
- Feature matching: for each scale i and each layer j except the last, the L1 mean between the features of the
  generated and of the real image (the latter detached), weighted (1 / num_D) * (4 / (n_layers_D + 1)) *
  lambda_feat (10).
- VGG: torchvision's VGG19 ``features`` cut after relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 (indices 1, 6,
  11, 20, 29); inputs are the [-1, 1] images as they are (no ImageNet normalisation); L1 means of the five maps
  weighted 1/32, 1/16, 1/8, 1/4, 1 (real features detached); the total times lambda_feat. Weights frozen.

VGG19 weights: torchvision's ImageNet weights (``VGG19_Weights.IMAGENET1K_V1``) through torchvision's own
download and cache (``TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``), or ``vgg_weights=PATH``: a state dict
(``.pth`` read with ``torch.load(weights_only=True)``, or ``.safetensors``) with torchvision's key layout
(``features.N.weight`` as in ``vgg19().state_dict()``, or ``N.weight`` for the features alone).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UserError

#: VGG19 ``features`` up to relu5_1: "M" a 2x2 max pool, numbers the 3x3 conv widths (each conv + ReLU).
_VGG19_TO_RELU5_1 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)
VGG_SLICE_ENDS = (2, 7, 12, 21, 30)  # official Vgg19 slices end after features[1, 6, 11, 20, 29]
VGG_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


def gan_loss(predictions: Sequence[Sequence[torch.Tensor]], target_is_real: bool, use_lsgan: bool = True
             ) -> torch.Tensor:
    """Official ``GANLoss`` over a multi-scale output: sum over scales of the loss of each scale's last map."""
    total = predictions[0][-1].new_zeros(())
    for scale in predictions:
        logits = scale[-1]
        target = torch.full_like(logits, 1.0 if target_is_real else 0.0)
        if use_lsgan:
            total = total + F.mse_loss(logits, target)
        else:
            total = total + F.binary_cross_entropy_with_logits(logits, target)
    return total


def feature_matching_loss(fake: Sequence[Sequence[torch.Tensor]], real: Sequence[Sequence[torch.Tensor]],
                          n_layers_D: int, num_D: int, lambda_feat: float) -> torch.Tensor:  # noqa: N803
    """Official GAN feature matching: weighted L1 over every scale and every layer but the last."""
    weight = (1.0 / num_D) * (4.0 / (n_layers_D + 1)) * lambda_feat
    total = fake[0][0].new_zeros(())
    for fake_scale, real_scale in zip(fake, real, strict=True):
        for f, r in zip(fake_scale[:-1], real_scale[:-1], strict=True):
            total = total + weight * F.l1_loss(f, r.detach())
    return total


def _vgg19_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG19_TO_RELU5_1:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=True)]
            channels = int(item)
    return nn.Sequential(*layers)  # indices 0..29, torchvision's vgg19().features[:30]


def load_weights_file(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch pickle under ``weights_only=True``.

    Raises :class:`UserError` with one line naming the file for a missing or non-regular file, a pickle that
    would run code (the weights-only unpickler refuses it), a file that holds no tensors, tensors that claim
    more bytes than the file stores (stride-0 views) or NaN/inf values. Wrapper key prefixes (``module.``,
    ``_orig_mod.``) are removed.
    """
    from ...core.safety import check_tensors, regular_file, strip_wrapper_prefixes

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file ({what})")
    regular_file(path, what)  # not a folder, /dev/zero, a FIFO
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"{path}: not a readable safetensors file ({what}): {exc}") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise UserError(f"{path}: refusing to load {what}: the file is a pickle that would run code or build "
                            f"objects other than tensors (torch.load weights_only=True refused it); save a plain "
                            f"state_dict or a .safetensors file") from None
        except Exception as exc:  # the unpickler raises anything (IndexError, KeyError, ...) on a foreign file
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"{path}: not a readable PyTorch weights file ({what}): {reason}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: not a state dict of tensors ({what})")
    # DataParallel/DDP/torch.compile prefixes removed; stride-0 views and NaN/inf refused before any use
    return check_tensors(strip_wrapper_prefixes(state), f"{path} ({what})", error=UserError)


class VGG19Features(nn.Module):
    """Frozen VGG19 ``features`` to relu5_1; ``forward(x)`` -> the five maps relu1_1 ... relu5_1.

    ``x``: (B, 3, H, W), here the [-1, 1] images unnormalised (as the official loss feeds them).
    """

    def __init__(self):
        super().__init__()
        self.features = _vgg19_features()
        self.requires_grad_(False)

    @classmethod
    def pretrained(cls, weights_path: str | os.PathLike | None = None, progress: bool = False) -> VGG19Features:
        """torchvision's ImageNet VGG19 weights: from ``weights_path`` if given, else torchvision's download.

        Raises :class:`UserError` when the file is unusable or the download fails (one line with the fix).
        """
        net = cls()
        if weights_path is not None:
            state = load_weights_file(weights_path, "VGG19 weights")
            source = str(weights_path)
        else:
            from torchvision.models import VGG19_Weights
            try:
                state = VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=progress, check_hash=True,
                                                                    weights_only=True)
            except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise UserError(f"could not get torchvision's VGG19 ImageNet weights for the VGG loss ({reason}); "
                                f"pass --vgg-weights PATH (a vgg19 state dict) or --no-vgg-loss") from None
            source = "torchvision VGG19_Weights.IMAGENET1K_V1"
        net.load_vgg_state(state, source)
        return net

    def load_vgg_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Copy ``features.N.*`` (or ``N.*``) tensors of a torchvision VGG19 state dict; checks every shape."""
        own = self.features.state_dict()
        picked = {}
        for key, value in own.items():
            tensor = state.get(f"features.{key}", state.get(key))
            if tensor is None:
                raise UserError(f"{source}: not a VGG19 state dict: key features.{key} is missing")
            if tuple(tensor.shape) != tuple(value.shape):
                raise UserError(f"{source}: not a VGG19 state dict: features.{key} has shape "
                                f"{tuple(tensor.shape)}, expected {tuple(value.shape)}")
            picked[key] = tensor.to(value.dtype)
        self.features.load_state_dict(picked)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        start = 0
        for end in VGG_SLICE_ENDS:
            for i in range(start, end):
                x = self.features[i](x)
            outputs.append(x)
            start = end
        return outputs


def vgg_loss(vgg: VGG19Features, fake: torch.Tensor, real: torch.Tensor, lambda_feat: float,
             real_features: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Official ``VGGLoss(fake, real) * lambda_feat``; ``real_features`` may be given precomputed."""
    fake_features = vgg(fake)
    if real_features is None:
        with torch.no_grad():
            real_features = vgg(real)
    total = fake.new_zeros(())
    for w, f, r in zip(VGG_LAYER_WEIGHTS, fake_features, real_features, strict=True):
        total = total + w * F.l1_loss(f, r.detach())
    return total * lambda_feat
