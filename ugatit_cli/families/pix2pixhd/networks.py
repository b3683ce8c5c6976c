"""pix2pixHD networks: global generator, local enhancer, instance-wise feature encoder, multi-scale discriminator.

References:
1) Wang, Liu, Zhu, Tao, Kautz, Catanzaro, "High-Resolution Image Synthesis and Semantic Manipulation with
   Conditional GANs", CVPR 2018 (arXiv:1711.11585);
2) the official code, NVIDIA/pix2pixHD (BSD): ``models/networks.py`` (modules), ``models/pix2pixHD_model.py``
   (how they are wired), ``options/*.py`` (defaults).

State-dict keys are the official ones, index for index (``model.1.weight``, ``model.13.conv_block.5.weight``,
``model1_1.1.weight``, ``scale1_layer3.0.weight``, ...): an official ``*_net_G.pth``/``*_net_D.pth``/
``*_net_E.pth`` loads with ``load_state_dict`` and no renaming (after stripping a ``module.`` prefix). Padding
layers, activations and the tanh occupy their official indices although they hold no weights.

Numerics that decide parity with the official code (each confirmed in the official files):

- Generators and encoder: 7x7 convs after ``ReflectionPad2d(3)``; stride-2 3x3 convs with zero padding 1;
  transposed 3x3 convs, stride 2, padding 1, output_padding 1; residual blocks are ReflectionPad2d(1), conv,
  norm, ReLU, ReflectionPad2d(1), conv, norm, plus the input (no ReLU after the sum). Every conv has a bias.
- ``norm instance`` (default) is ``InstanceNorm2d(affine=False)``: biased variance, eps 1e-5, no running
  statistics, no weights. Here it is computed as ``group_norm`` with one group per channel (the same formula;
  PyTorch's CPU kernel for it is about twice as fast). ``norm batch`` is ``BatchNorm2d(affine=True)``.
- Local enhancer: the global generator is built at ``ngf * 2**n_local_enhancers`` and cut before its last
  three layers (pad, conv, tanh); the input pyramid uses ``AvgPool2d(3, stride=2, padding=1,
  count_include_pad=False)``; enhancer ``n``'s front end output is **added** to the coarser level's features.
- Side multiple: 2**n_downsample_global (times 2**n_local_enhancers for netG local); other sizes change shape.
- Encoder E: the same conv stack as a global generator without residual blocks (``nef`` filters,
  ``n_downsample_E`` levels, tanh, ``feat_num`` outputs), then every channel is replaced by its mean over each
  instance of each image (official ``Encoder.forward``; gradients spread evenly over the instance).
- Discriminator: ``num_D`` PatchGANs; scale ``num_D - 1`` sees the full image, each next one the previous
  input average-pooled by the same ``AvgPool2d(3, 2, 1, count_include_pad=False)``; outputs are listed from the
  finest scale. Each PatchGAN: 4x4 convs with zero padding ceil(3/2) = 2, the first stride 2 without norm, then
  ``n_layers_D - 1`` stride-2 convs with norm, one stride-1 conv with norm (channels doubling, capped at 512),
  LeakyReLU(0.2) after each, and a stride-1 conv to one channel. With feature matching (the default) every
  layer's output is returned (keys ``scale{i}_layer{j}``), else only the last (keys ``layer{i}``).
- ``no_lsgan``: the official code appends a Sigmoid to each PatchGAN, but with feature matching on it is never
  run (only ``n_layers_D + 2`` layers are registered), and ``nn.BCELoss`` then receives logits. This module
  never applies the sigmoid; the loss uses BCE on logits, the loss the official option means.
- Init (official ``weights_init``): conv and transposed-conv weights N(0, 0.02), biases PyTorch's default;
  BatchNorm weights N(1, 0.02), biases 0.

This module does no file or network IO.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import Pix2PixHDConfig


class InstanceNorm(nn.Module):
    """``InstanceNorm2d(affine=False)``: per image and channel, (x - mean) / sqrt(biased var + eps).

    No parameters or buffers (official state dicts have none here). Computed with ``F.group_norm`` (groups =
    channels), which is the same formula with a faster CPU kernel than ``instance_norm``'s.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_features, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def norm_layer(kind: str, channels: int) -> nn.Module:
    """Official ``get_norm_layer``: ``instance`` (no affine) or ``batch`` (affine)."""
    if kind == "instance":
        return InstanceNorm(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=True)
    raise ValueError(f"unknown norm {kind!r}; expected instance or batch")


def _down(c_in: int, c_out: int, norm: str) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), norm_layer(norm, c_out), nn.ReLU(True)]


def _up(c_in: int, c_out: int, norm: str) -> list[nn.Module]:
    return [nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1), norm_layer(norm, c_out),
            nn.ReLU(True)]


def _front(c_in: int, c_out: int, norm: str) -> list[nn.Module]:
    return [nn.ReflectionPad2d(3), nn.Conv2d(c_in, c_out, 7), norm_layer(norm, c_out), nn.ReLU(True)]


def _head(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.ReflectionPad2d(3), nn.Conv2d(c_in, c_out, 7), nn.Tanh()]


class ResnetBlock(nn.Module):
    """x + (pad, conv3x3, norm, ReLU, pad, conv3x3, norm)(x); key layout ``conv_block.{1,2,5,6}``."""

    def __init__(self, dim: int, norm: str = "instance"):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), norm_layer(norm, dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), norm_layer(norm, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _global_layers(input_nc: int, output_nc: int, ngf: int, n_downsampling: int, n_blocks: int,
                   norm: str) -> list[nn.Module]:
    layers = _front(input_nc, ngf, norm)
    for i in range(n_downsampling):
        layers += _down(ngf * 2**i, ngf * 2 ** (i + 1), norm)
    layers += [ResnetBlock(ngf * 2**n_downsampling, norm) for _ in range(n_blocks)]
    for i in range(n_downsampling, 0, -1):
        layers += _up(ngf * 2**i, ngf * 2 ** (i - 1), norm)
    return layers + _head(ngf, output_nc)


class GlobalGenerator(nn.Module):
    """G1: ``(B, input_nc, H, W)`` -> ``(B, output_nc, H, W)`` in [-1, 1]; H, W multiples of 2**n_downsampling.

    Official ``GlobalGenerator`` (one ``model`` Sequential, same indices).
    """

    def __init__(self, input_nc: int, output_nc: int, ngf: int = 64, n_downsampling: int = 4, n_blocks: int = 9,
                 norm: str = "instance"):
        super().__init__()
        self.model = nn.Sequential(*_global_layers(input_nc, output_nc, ngf, n_downsampling, n_blocks, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LocalEnhancer(nn.Module):
    """G = {G1, G2, ...}: ``(B, input_nc, H, W)`` -> ``(B, output_nc, H, W)``; H, W multiples of
    2**(n_downsample_global + n_local_enhancers).

    Official ``LocalEnhancer``: ``model`` is G1 at ``ngf * 2**n_local_enhancers`` without its last three layers,
    ``model{n}_1`` enhancer n's front end, ``model{n}_2`` its residual blocks and back end.
    """

    def __init__(self, input_nc: int, output_nc: int, ngf: int = 32, n_downsample_global: int = 4,
                 n_blocks_global: int = 9, n_local_enhancers: int = 1, n_blocks_local: int = 3,
                 norm: str = "instance"):
        super().__init__()
        self.n_local_enhancers = n_local_enhancers
        coarse = _global_layers(input_nc, output_nc, ngf * 2**n_local_enhancers, n_downsample_global,
                                n_blocks_global, norm)
        self.model = nn.Sequential(*coarse[:-3])
        for n in range(1, n_local_enhancers + 1):
            width = ngf * 2 ** (n_local_enhancers - n)
            front = _front(input_nc, width, norm) + _down(width, width * 2, norm)
            back: list[nn.Module] = [ResnetBlock(width * 2, norm) for _ in range(n_blocks_local)]
            back += _up(width * 2, width, norm)
            if n == n_local_enhancers:
                back += _head(ngf, output_nc)
            setattr(self, f"model{n}_1", nn.Sequential(*front))
            setattr(self, f"model{n}_2", nn.Sequential(*back))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pyramid = [x]
        for _ in range(self.n_local_enhancers):
            pyramid.append(self.downsample(pyramid[-1]))
        out = self.model(pyramid[-1])
        for n in range(1, self.n_local_enhancers + 1):
            front = getattr(self, f"model{n}_1")
            back = getattr(self, f"model{n}_2")
            out = back(front(pyramid[self.n_local_enhancers - n]) + out)
        return out


def instance_mean(features: torch.Tensor, inst: torch.Tensor) -> torch.Tensor:
    """Replace every channel of ``features`` (B, C, H, W) by its mean over each instance of ``inst``.

    ``inst``: (B, 1, H, W) instance ids (any numeric dtype; equal values are one instance, per image).
    Official ``Encoder.forward`` loops over instances, images and channels; this is one segment mean
    (scatter-add over ``unique`` ids), the same values and gradients.
    """
    b, c, h, w = features.shape
    ids = inst.reshape(b, h * w)
    _, inverse = torch.unique(ids, return_inverse=True)  # one id space for the batch
    n_ids = int(inverse.max()) + 1 if inverse.numel() else 0
    seg = inverse + torch.arange(b, device=ids.device)[:, None] * n_ids  # (B, HW): per image and instance
    flat = features.reshape(b, c, h * w).transpose(1, 2).reshape(b * h * w, c)
    seg = seg.reshape(-1)
    sums = flat.new_zeros(b * n_ids, c).index_add_(0, seg, flat)
    counts = torch.bincount(seg, minlength=b * n_ids).clamp_min(1).to(flat.dtype)
    means = sums / counts[:, None]
    return means[seg].reshape(b, h * w, c).transpose(1, 2).reshape(b, c, h, w)


class Encoder(nn.Module):
    """E: image ``(B, 3, H, W)`` and instance map ``(B, 1, H, W)`` -> instance-wise features
    ``(B, feat_num, H, W)`` in [-1, 1]; H, W multiples of 2**n_downsampling. Official ``Encoder``."""

    def __init__(self, input_nc: int, output_nc: int, ngf: int = 16, n_downsampling: int = 4,
                 norm: str = "instance"):
        super().__init__()
        self.output_nc = output_nc
        layers = _front(input_nc, ngf, norm)
        for i in range(n_downsampling):
            layers += _down(ngf * 2**i, ngf * 2 ** (i + 1), norm)
        for i in range(n_downsampling, 0, -1):
            layers += _up(ngf * 2**i, ngf * 2 ** (i - 1), norm)
        self.model = nn.Sequential(*layers, *_head(ngf, output_nc))

    def forward(self, image: torch.Tensor, inst: torch.Tensor) -> torch.Tensor:
        return instance_mean(self.model(image), inst)


def _patch_layers(input_nc: int, ndf: int, n_layers: int, norm: str) -> list[nn.Sequential]:
    pad = math.ceil((4 - 1) / 2)
    layers = [nn.Sequential(nn.Conv2d(input_nc, ndf, 4, stride=2, padding=pad), nn.LeakyReLU(0.2, True))]
    nf = ndf
    for n in range(1, n_layers + 1):
        nf_prev, nf = nf, min(nf * 2, 512)
        stride = 2 if n < n_layers else 1
        layers.append(nn.Sequential(nn.Conv2d(nf_prev, nf, 4, stride=stride, padding=pad), norm_layer(norm, nf),
                                    nn.LeakyReLU(0.2, True)))
    layers.append(nn.Sequential(nn.Conv2d(nf, 1, 4, stride=1, padding=pad)))
    return layers


class MultiscaleDiscriminator(nn.Module):
    """``num_D`` PatchGANs on an image pyramid. Input ``(B, input_nc, H, W)`` (labels + edges + image).

    Returns a list over scales, finest first, of lists of feature maps: all ``n_layers + 2`` layer outputs when
    ``get_interm_feat`` (official ``getIntermFeat``, on unless ``no_ganFeat_loss``), else the last one only; the
    last is the logit map. Official ``MultiscaleDiscriminator`` + ``NLayerDiscriminator`` (keys
    ``scale{i}_layer{j}.*`` or ``layer{i}.*``).
    """

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "instance", num_D: int = 2,  # noqa: N803
                 get_interm_feat: bool = True):
        super().__init__()
        self.num_D = num_D
        self.n_layers = n_layers
        self.get_interm_feat = get_interm_feat
        for i in range(num_D):
            layers = _patch_layers(input_nc, ndf, n_layers, norm)
            if get_interm_feat:
                for j, layer in enumerate(layers):
                    setattr(self, f"scale{i}_layer{j}", layer)
            else:
                setattr(self, f"layer{i}", nn.Sequential(*[m for layer in layers for m in layer]))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def scale_layers(self, i: int) -> list[nn.Module]:
        """The layers of PatchGAN ``i`` (0 = coarsest), in order."""
        if self.get_interm_feat:
            return [getattr(self, f"scale{i}_layer{j}") for j in range(self.n_layers + 2)]
        return [getattr(self, f"layer{i}")]

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        result = []
        for k in range(self.num_D):
            feats = []
            h = x
            for layer in self.scale_layers(self.num_D - 1 - k):
                h = layer(h)
                feats.append(h)
            result.append(feats)
            if k != self.num_D - 1:
                x = self.downsample(x)
        return result


def init_weights(module: nn.Module) -> None:
    """Official ``weights_init``: conv weights N(0, 0.02); BatchNorm weights N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def build_generator(config: Pix2PixHDConfig) -> nn.Module:
    """netG for ``config`` (official ``define_G``), initialised as the official code does."""
    if config.netG == "global":
        net: nn.Module = GlobalGenerator(config.netG_input_nc, config.output_nc, config.ngf,
                                         config.n_downsample_global, config.n_blocks_global, config.norm)
    else:
        net = LocalEnhancer(config.netG_input_nc, config.output_nc, config.ngf, config.n_downsample_global,
                            config.n_blocks_global, config.n_local_enhancers, config.n_blocks_local, config.norm)
    init_weights(net)
    return net


def build_encoder(config: Pix2PixHDConfig) -> Encoder:
    """netE (official ``define_G(output_nc, feat_num, nef, 'encoder', n_downsample_E, norm)``)."""
    net = Encoder(config.output_nc, config.feat_num, config.nef, config.n_downsample_E, config.norm)
    init_weights(net)
    return net


def build_discriminator(config: Pix2PixHDConfig, ndf: int = 64, n_layers_D: int = 3, num_D: int = 2,  # noqa: N803
                        get_interm_feat: bool = True) -> MultiscaleDiscriminator:
    """netD (official ``define_D``): input = label channels (+ edge map) + output_nc image channels."""
    input_nc = config.label_channels + (0 if config.no_instance else 1) + config.output_nc
    net = MultiscaleDiscriminator(input_nc, ndf, n_layers_D, config.norm, num_D, get_interm_feat)
    init_weights(net)
    return net
