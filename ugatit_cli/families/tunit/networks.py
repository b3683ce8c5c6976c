"""TUNIT networks: guiding network, generator and multi-task discriminator, written from the paper and the
facts of the official code.

References: Baek et al., "Rethinking the Truly Unsupervised Image-to-Image Translation", ICCV 2021
(arXiv:2006.06500); official code clovaai/tunit (``models/guidingNet.py`` MIT; ``models/generator.py``,
``models/discriminator.py``, ``models/blocks.py`` CC BY-NC-SA / CC BY-NC, from FUNIT and StarGAN v2: nothing
of them is copied here, only layer counts, kernel sizes, formulas and the state_dict key names needed to
load official checkpoints).

Numerics that decide parity with the official networks:

- Guiding network: VGG11 with batch norm (conv 3x3 pad 1, BN, ReLU; max-pool 2 after the 1st, 2nd, 4th,
  6th and 8th conv), adaptive average pool to 1x1, ``disc`` Linear(512, K) and ``cont`` Linear(512,
  sty_dim). ``style(x)`` is the official ``C(x, sty=True)`` / ``C.moco(x)``, ``logits(x)`` is ``C.iic(x)``.
  Each call is a full forward (in training, every call updates the batch-norm running statistics).
- Generator: base width ``nf`` = 64 below 256 px, 32 from 256 px; ``n_downs = log2(size / 16)``.
  Content encoder: reflect-pad 3 + conv 7x7, then ``n_downs`` reflect-pad 1 + conv 4x4 stride 2, each with
  instance norm (no affine, biased variance, eps 1e-5) and ReLU; then 2 residual blocks. Every residual
  block (encoder and decoder) returns ``x + 0.1 * F(x)``, F = conv3x3-norm-ReLU-conv3x3-norm, reflect pad 1.
  Decoder: 2 AdaIN residual blocks, then per level nearest 2x upsampling + reflect-pad 2 + conv 5x5
  (halving the channels) + AdaIN + ReLU, then reflect-pad 3 + conv 7x7 to 3 channels + tanh. AdaIN is
  instance normalisation with the biased variance and eps 1e-5, then ``* weight + bias`` per sample.
- AdaIN parameters: the MLP (Linear sty_dim->256, ReLU, Linear 256->256, ReLU, Linear 256->N) emits, for
  each AdaIN layer in module order (decoder residual blocks first, conv 1 then conv 2, then the upsampling
  levels), first C values used as the **bias** (official "mean"), then C values used as the **weight**
  (official "std").
- Discriminator: base width 64 below 256 px, 32 from 256; conv 3x3 to the base width; ``log2(size) - 2``
  stages of two pre-activation residual blocks (the second doubles the channels, capped at 1024, and
  halves the map by 2x2 average pooling after its first conv and on the shortcut); the blocks normalise
  with FRN (``x * rsqrt(mean_hw(x^2) + 1e-6)``, then ``max(gamma * x + beta, tau)`` — the TLU is the
  only non-linearity inside a block); the 1x1 shortcut conv (no bias) exists when the channels change;
  the output is ``(shortcut + residual) / sqrt(2)``. Then LeakyReLU 0.2, conv 4x4 (valid), LeakyReLU 0.2,
  conv 1x1 to K logits; the output for an image is the logit of its domain label.
- Initialisation (official): generator and discriminator convs and linears Kaiming-normal (fan-in, a=0),
  biases 0; guiding network convs Kaiming-normal (fan-out), BN weight 1 bias 0, linears N(0, 0.01).

State dict keys are the official ones (``cnt_encoder.model.0.conv.weight``, ``decoder.model.2.conv.bias``,
``mlp.model.2.fc.weight``, ``features.0.weight``, ``main.1.norm1.tau`` ...), so an official
``G_EMA_state_dict`` / ``C_EMA_state_dict`` / ``D_state_dict`` loads after two documented changes
(:func:`ugatit_cli.families.tunit.official.to_ours`): the DDP prefix ``module.`` is removed, and the
official AdaIN layers' ``running_mean`` / ``running_var`` buffers (never updated: the official layer
normalises with statistics of the input only) are dropped.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import TunitConfig, default_nf

#: VGG11 layer plan: channel counts, "M" = 2x2 max-pool (Simonyan & Zisserman, configuration A)
VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
ADAIN_EPS = 1e-5
INSTANCE_NORM_EPS = 1e-5
FRN_EPS = 1e-6
RESIDUAL_SCALE = 0.1
MLP_WIDTH = 256


# --- guiding network ------------------------------------------------------------------------------------------


class GuidingNet(nn.Module):
    """E in the paper: pseudo-domain logits and style code of an image.

    Input B x 3 x H x W in [-1, 1] (H, W >= 32). ``forward(x)`` returns ``{"cont": B x sty_dim, "disc":
    B x K}``; ``forward(x, sty=True)`` only the style code (as the official ``C(x, sty=True)``).
    """

    def __init__(self, k: int = 10, sty_dim: int = 128):
        super().__init__()
        # Own loop rather than torchvision.models.vgg11_bn: that builds (and initialises) the 120M-parameter
        # ImageNet classifier too, and its layer builder is not public API.
        layers: list[nn.Module] = []
        channels = 3
        for item in VGG11:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU()]
            channels = item
        self.features = nn.Sequential(*layers)
        self.disc = nn.Linear(512, k)
        self.cont = nn.Linear(512, sty_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def k(self) -> int:
        return self.disc.out_features

    @property
    def sty_dim(self) -> int:
        return self.cont.out_features

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """B x 512 features after global average pooling."""
        return self.features(x).mean(dim=(2, 3))

    def style(self, x: torch.Tensor) -> torch.Tensor:
        """B x sty_dim style code (official ``C.moco(x)``)."""
        return self.cont(self.pooled(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """B x K pseudo-domain logits (official ``C.iic(x)``)."""
        return self.disc(self.pooled(x))

    def forward(self, x: torch.Tensor, sty: bool = False):
        h = self.pooled(x)
        if sty:
            return self.cont(h)
        return {"cont": self.cont(h), "disc": self.disc(h)}


# --- generator ------------------------------------------------------------------------------------------------


class _Conv(nn.Module):
    """Reflection padding + convolution; normalisation and activation are applied by the owner.
    (Its only parameter holder is ``conv``, which gives the official key ``...conv.weight``.)"""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, pad: int = 0):
        super().__init__()
        self.pad = pad
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (self.pad,) * 4, mode="reflect")
        return self.conv(x)


def _instance_norm(x: torch.Tensor) -> torch.Tensor:
    return F.instance_norm(x, eps=INSTANCE_NORM_EPS)


def _adain(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Instance-normalise ``x`` (biased variance, eps 1e-5), then scale by ``weight`` and shift by ``bias``,
    both B x C (one set per sample, from the style code)."""
    return torch.addcmul(bias[:, :, None, None], F.instance_norm(x, eps=ADAIN_EPS), weight[:, :, None, None])


class _Stack(nn.Module):
    """A numbered list of sub-modules under the attribute ``model`` (the official key path ``.model.N``)."""

    def __init__(self, modules: list[nn.Module]):
        super().__init__()
        self.model = nn.ModuleList(modules)


class _ResBlock(_Stack):
    """Two 3x3 convolutions; ``x + 0.1 * residual``. Normalisation: instance norm, or AdaIN when the caller
    passes per-sample parameters."""

    def __init__(self, channels: int):
        super().__init__([_Conv(channels, channels, 3, 1, 1), _Conv(channels, channels, 3, 1, 1)])

    def forward(self, x: torch.Tensor, adain: list[tuple[torch.Tensor, torch.Tensor]] | None = None):
        first, second = self.model
        if adain is None:
            h = F.relu(_instance_norm(first(x)))
            h = _instance_norm(second(h))
        else:
            h = F.relu(_adain(first(x), *adain[0]))
            h = _adain(second(h), *adain[1])
        return x + RESIDUAL_SCALE * h


class _ResBlocks(_Stack):
    def __init__(self, n: int, channels: int):
        super().__init__([_ResBlock(channels) for _ in range(n)])


class ContentEncoder(_Stack):
    """B x 3 x H x W -> B x (nf * 2**n_downs) x H/2**n_downs x W/2**n_downs."""

    def __init__(self, nf: int, n_downs: int, n_res: int):
        layers: list[nn.Module] = [_Conv(3, nf, 7, 1, 3)]
        for i in range(n_downs):
            layers.append(_Conv(nf * 2**i, nf * 2 ** (i + 1), 4, 2, 1))
        layers.append(_ResBlocks(n_res, nf * 2**n_downs))
        super().__init__(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *convs, res = self.model
        for conv in convs:
            x = F.relu(_instance_norm(conv(x)))
        for block in res.model:
            x = block(x)
        return x


class Decoder(_Stack):
    """Content code + per-sample AdaIN parameters -> image in [-1, 1].

    Official index layout of ``model``: 0 the residual blocks, then per level an upsampling slot (no
    parameters; kept so that the convolution indices match the official keys) and the 5x5 convolution,
    then the final 7x7 convolution.
    """

    def __init__(self, channels: int, n_downs: int, n_res: int):
        layers: list[nn.Module] = [_ResBlocks(n_res, channels)]
        c = channels
        for _ in range(n_downs):
            layers += [nn.Identity(), _Conv(c, c // 2, 5, 1, 2)]
            c //= 2
        layers.append(_Conv(c, 3, 7, 1, 3))
        super().__init__(layers)

    def adain_channels(self) -> list[int]:
        """Channels of each AdaIN layer in the official assignment order."""
        res, *rest = self.model
        sizes = [blk.model[0].conv.out_channels for blk in res.model for _ in range(2)]
        sizes += [m.conv.out_channels for m in rest[1:-1:2]]
        return sizes

    def forward(self, content: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        layers = self.adain_channels()
        if params.shape[1] != 2 * sum(layers):
            raise ValueError(f"expected {2 * sum(layers)} AdaIN parameters, got {params.shape[1]}")
        pairs = []
        offset = 0
        for c in layers:  # bias ("mean") first, then weight ("std")
            pairs.append((params[:, offset + c:offset + 2 * c], params[:, offset:offset + c]))
            offset += 2 * c
        res, *rest = self.model
        x = content
        for i, block in enumerate(res.model):
            x = block(x, pairs[2 * i:2 * i + 2])
        levels = rest[1:-1:2]
        for j, conv in enumerate(levels):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            weight, bias = pairs[2 * len(res.model) + j]
            x = F.relu(_adain(conv(x), weight, bias))
        return torch.tanh(rest[-1](x))


class _Linear(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.fc = nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class StyleMLP(_Stack):
    """Style code B x sty_dim -> all AdaIN parameters B x N (256-wide, 3 layers, ReLU between)."""

    def __init__(self, sty_dim: int, n_out: int, width: int = MLP_WIDTH):
        super().__init__([_Linear(sty_dim, width), _Linear(width, width), _Linear(width, n_out)])

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        h = s.reshape(s.shape[0], -1)
        for i, layer in enumerate(self.model):
            h = layer(h)
            if i < len(self.model) - 1:
                h = F.relu(h)
        return h


def _kaiming_fan_in(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """G(x, s): translate ``x`` (B x 3 x H x W in [-1, 1], H and W multiples of ``2**n_downs``) into the
    style ``s`` (B x sty_dim, from :meth:`GuidingNet.style`); returns B x 3 x H x W in [-1, 1]."""

    def __init__(self, size: int = 128, sty_dim: int = 128, nf: int | None = None, n_res: int = 2):
        super().__init__()
        nf = nf if nf is not None else default_nf(size)
        n_downs = int(math.log2(size // 16))
        self.cnt_encoder = ContentEncoder(nf, n_downs, n_res)
        self.decoder = Decoder(nf * 2**n_downs, n_downs, n_res)
        self.mlp = StyleMLP(sty_dim, 2 * sum(self.decoder.adain_channels()))
        _kaiming_fan_in(self)

    @classmethod
    def from_config(cls, config: TunitConfig) -> Generator:
        return cls(config.size, config.sty_dim, config.width, config.n_res)

    def decode(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.decoder(content, self.mlp(style))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.decode(self.cnt_encoder(x), style)


# --- discriminator --------------------------------------------------------------------------------------------


class FRN(nn.Module):
    """Filter response normalisation with a thresholded linear unit (Singh & Krishnan, CVPR 2020):
    ``max(gamma * x / sqrt(mean_hw(x^2) + eps) + beta, tau)``; parameters shaped 1 x C x 1 x 1."""

    def __init__(self, channels: int, eps: float = FRN_EPS):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.tau = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nu2 = x.square().mean(dim=(2, 3), keepdim=True)
        return torch.maximum(self.gamma * (x * torch.rsqrt(nu2 + self.eps)) + self.beta, self.tau)


class PreActBlock(nn.Module):
    """FRN -> conv 3x3 -> [avg-pool 2] -> FRN -> conv 3x3, plus a [1x1 conv] [avg-pool] shortcut, summed and
    divided by sqrt(2)."""

    def __init__(self, c_in: int, c_out: int, downsample: bool):
        super().__init__()
        self.downsample = downsample
        self.norm1 = FRN(c_in)
        self.conv1 = nn.Conv2d(c_in, c_in, 3, 1, 1)
        self.norm2 = FRN(c_in)
        self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.learned_shortcut = c_in != c_out
        if self.learned_shortcut:
            self.conv1x1 = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.norm1(x))
        shortcut = self.conv1x1(x) if self.learned_shortcut else x
        if self.downsample:
            h = F.avg_pool2d(h, 2)
            shortcut = F.avg_pool2d(shortcut, 2)
        h = self.conv2(self.norm2(h))
        return (shortcut + h) * (1.0 / math.sqrt(2.0))


class Discriminator(nn.Module):
    """Multi-task discriminator: one real/fake logit per pseudo-domain.

    ``forward(x, y)``: x B x 3 x size x size in [-1, 1], y B domain indices (long) -> B logits, each for the
    image's own domain. :meth:`all_logits` gives B x K.
    """

    def __init__(self, size: int = 128, k: int = 10, nf: int | None = None, max_channels: int = 1024):
        super().__init__()
        c = nf if nf is not None else default_nf(size)
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, 1, 1)]
        for _ in range(int(math.log2(size)) - 2):
            c_next = min(2 * c, max_channels)
            layers += [PreActBlock(c, c, False), PreActBlock(c, c_next, True)]
            c = c_next
        layers += [nn.LeakyReLU(0.2), nn.Conv2d(c, c, 4, 1, 0), nn.LeakyReLU(0.2), nn.Conv2d(c, k, 1, 1, 0)]
        self.main = nn.Sequential(*layers)
        _kaiming_fan_in(self)

    @classmethod
    def from_config(cls, config: TunitConfig) -> Discriminator:
        return cls(config.size, config.k, config.width)

    def all_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).flatten(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.all_logits(x)
        return out.gather(1, y.view(-1, 1).to(out.device, torch.long)).squeeze(1)


def build(config: TunitConfig, name: str) -> nn.Module:
    """A freshly initialised network by its official name: ``G``/``G_EMA``, ``C``/``C_EMA`` or ``D``."""
    if name in ("G", "G_EMA"):
        return Generator.from_config(config)
    if name in ("C", "C_EMA"):
        return GuidingNet(config.k, config.sty_dim)
    if name == "D":
        return Discriminator.from_config(config)
    raise KeyError(f"unknown TUNIT network {name!r}; expected G, G_EMA, C, C_EMA or D")
