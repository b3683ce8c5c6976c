"""U-GAT-IT generator and discriminator.

References:
1) the paper: Kim, Kim, Kang, Lee, "U-GAT-IT: Unsupervised Generative Attentional Networks with Adaptive
   Layer-Instance Normalization for Image-to-Image Translation", ICLR 2020 (arXiv:1907.10830);
2) the official PyTorch implementation, znxlwm/UGATIT-pytorch (``networks.py``);
3) the official TensorFlow implementation, taki0112/UGATIT (``UGATIT.py``, ``ops.py``).

Modules are named like the official PyTorch ones (``DownBlock``, ``gap_fc``, ``UpBlock1_1``, ...), so an
official ``state_dict`` loads without renaming. Numerics follow the official PyTorch code: AdaLIN and LIN
use the unbiased variance, and the discriminator's attention weights are the spectral-norm ``weight_orig``.

``UGATITConfig.variant == "tf"`` builds the generator of the official TF graph instead (the pretrained
selfie2anime release): a bias on every conv and dense layer, affine encoder instance norms, one CAM logit
layer shared by both poolings whose kernel + bias rescale the map, a gamma/beta MLP ``ch * n_res`` wide,
AdaLIN rho starting at 1.0 (``smoothing``: used as clip(rho - 0.1, 0, 1)), biased variances everywhere,
and TF's asymmetric reflection padding in the stride-2 convs. The full model's first MLP layer reads the
map flattened as (C, H, W) in both variants; the TF importer permutes TF's (H, W, C) kernel to match.
Only the generator has a TF variant: the discriminators are the PyTorch ones whatever the variant (the
release ships no discriminator anyone needs for translation).
This module does no file or network IO.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .config import UGATITConfig

N_DOWNSAMPLING = 2  # the encoder halves the image twice, the decoder doubles it twice


def _instance_layer_norm(x: torch.Tensor, rho: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float,
                         unbiased: bool) -> torch.Tensor:
    """(rho * InstanceNorm(x) + (1 - rho) * LayerNorm(x)) * gamma + beta; gamma, beta: (B or 1, C, 1, 1).

    ``unbiased`` picks the variance: the official PyTorch code uses ``torch.var`` (unbiased), the official TF
    code ``tf.nn.moments`` (biased). Both normalisations are affine per (image, channel), so they fold into
    one scale and shift: the big map is read once instead of some ten times (a sixth of a light generator's
    CPU time), and the layer statistics come from the instance ones (total variance = mean within-channel
    variance + variance of the channel means) instead of a second pass.
    """
    channels, pixels = x.shape[1], x.shape[2] * x.shape[3]
    in_var, in_mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)  # (B, C, 1, 1), biased
    ln_mean = in_mean.mean(dim=1, keepdim=True)  # (B, 1, 1, 1)
    ln_var = (in_var + (in_mean - ln_mean).square()).mean(dim=1, keepdim=True)  # biased
    if unbiased:
        in_var = in_var * (pixels / (pixels - 1))
        ln_var = ln_var * (channels * pixels / (channels * pixels - 1))
    in_rstd, ln_rstd = torch.rsqrt(in_var + eps), torch.rsqrt(ln_var + eps)
    scale = (rho * in_rstd + (1 - rho) * ln_rstd) * gamma
    shift = beta - (rho * in_mean * in_rstd + (1 - rho) * ln_mean * ln_rstd) * gamma
    return torch.addcmul(shift, x, scale)


class AdaLIN(nn.Module):
    """Adaptive Layer-Instance Normalization: gamma and beta come from the attention MLP, per image.

    Defaults are the official PyTorch ones. The TF release starts rho at 1.0, uses biased variances and,
    with ``smoothing``, mixes with clip(rho - 0.1, 0, 1) so that no layer is purely instance-normalised.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, *, rho_init: float = 0.9, unbiased: bool = True,
                 smoothing: bool = False):
        super().__init__()
        self.eps = eps
        self.unbiased = unbiased
        self.smoothing = smoothing
        self.rho = nn.Parameter(torch.full((1, num_features, 1, 1), rho_init))

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        rho = (self.rho - 0.1).clamp(0.0, 1.0) if self.smoothing else self.rho
        return _instance_layer_norm(x, rho, gamma[:, :, None, None], beta[:, :, None, None], self.eps,
                                    self.unbiased)  # gamma, beta: (B, C)


class LIN(nn.Module):
    """Layer-Instance Normalization with learned gamma and beta, used in the decoder's upsampling blocks."""

    def __init__(self, num_features: int, eps: float = 1e-5, *, unbiased: bool = True):
        super().__init__()
        self.eps = eps
        self.unbiased = unbiased
        self.rho = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.gamma = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, num_features, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _instance_layer_norm(x, self.rho, self.gamma, self.beta, self.eps, self.unbiased)


def _reflection_pad(kernel: int, stride: int, pad: int, tf: bool) -> nn.ReflectionPad2d:
    """PyTorch pads every side by ``pad``; TF's ``conv`` pads top/left by ``pad`` and bottom/right by
    ``kernel - stride - pad`` when ``kernel - stride`` is odd (the stride-2 3x3 convs: 1 before, 0 after).

    On even-sized maps both give the same output (the stride-2 windows never reach the last padded row);
    on odd-sized ones TF's output is one pixel smaller.
    """
    if tf and (kernel - stride) % 2:
        after = kernel - stride - pad
        return nn.ReflectionPad2d((pad, after, pad, after))  # (left, right, top, bottom)
    return nn.ReflectionPad2d(pad)


class ResnetBlock(nn.Module):
    """Encoder residual block: two 3x3 convs with biased instance norm (affine, convs with bias in TF)."""

    def __init__(self, dim: int, tf: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=tf), nn.InstanceNorm2d(dim, affine=tf), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=tf), nn.InstanceNorm2d(dim, affine=tf),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetAdaLINBlock(nn.Module):
    """Decoder residual block: two 3x3 convs, each followed by AdaLIN with the image's gamma and beta."""

    def __init__(self, dim: int, tf: bool = False, smoothing: bool = False):
        super().__init__()
        norm_args = {"rho_init": 1.0, "unbiased": False, "smoothing": smoothing} if tf else {}
        self.pad1 = nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(dim, dim, 3, bias=tf)
        self.norm1 = AdaLIN(dim, **norm_args)
        self.relu1 = nn.ReLU(True)
        self.pad2 = nn.ReflectionPad2d(1)
        self.conv2 = nn.Conv2d(dim, dim, 3, bias=tf)
        self.norm2 = AdaLIN(dim, **norm_args)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.norm1(self.conv1(self.pad1(x)), gamma, beta))
        out = self.norm2(self.conv2(self.pad2(out)), gamma, beta)
        return out + x


class Generator(nn.Module):
    """ResNet generator with CAM attention and an AdaLIN decoder (official ``ResnetGenerator``).

    With ``config.variant == "tf"`` it is the official TF ``generator`` (see the module docstring); the CAM
    layer is then ``cam_fc`` instead of ``gap_fc``/``gmp_fc``, and the other module names stay the same.
    """

    def __init__(self, config: UGATITConfig):
        super().__init__()
        self.config = config
        tf = config.variant == "tf"
        ch, n_res = config.ch, config.n_res
        mult = 2**N_DOWNSAMPLING
        dim = ch * mult  # channels of the bottleneck feature map
        mlp_width = ch * n_res if tf else dim  # TF sizes it ch * n_res; the config keeps it equal to dim

        down: list[nn.Module] = [
            _reflection_pad(7, 1, 3, tf), nn.Conv2d(config.img_ch, ch, 7, bias=tf),
            nn.InstanceNorm2d(ch, affine=tf), nn.ReLU(True),
        ]
        for i in range(N_DOWNSAMPLING):
            c = ch * 2**i
            down += [_reflection_pad(3, 2, 1, tf), nn.Conv2d(c, c * 2, 3, stride=2, bias=tf),
                     nn.InstanceNorm2d(c * 2, affine=tf), nn.ReLU(True)]
        down += [ResnetBlock(dim, tf) for _ in range(n_res)]
        self.DownBlock = nn.Sequential(*down)

        # Class activation map: one logit per pooling; the logit layer's weights rescale the map's channels.
        # PyTorch has a bias-free layer per pooling; TF shares one layer and adds its bias to the weights.
        if tf:
            self.cam_fc = nn.Linear(dim, 1, bias=True)
        else:
            self.gap_fc = nn.Linear(dim, 1, bias=False)
            self.gmp_fc = nn.Linear(dim, 1, bias=False)
        self.conv1x1 = nn.Conv2d(dim * 2, dim, 1, bias=True)
        self.relu = nn.ReLU(True)

        # gamma/beta MLP: light models pool the map first; full models flatten it (img_size/4)^2 * dim wide.
        fc_in = dim if config.light else (config.img_size // mult) ** 2 * dim
        self.FC = nn.Sequential(nn.Linear(fc_in, mlp_width, bias=tf), nn.ReLU(True),
                                nn.Linear(mlp_width, mlp_width, bias=tf), nn.ReLU(True))
        self.gamma = nn.Linear(mlp_width, mlp_width, bias=tf)
        self.beta = nn.Linear(mlp_width, mlp_width, bias=tf)

        for i in range(n_res):
            setattr(self, f"UpBlock1_{i + 1}", ResnetAdaLINBlock(dim, tf, config.smoothing))

        up: list[nn.Module] = []
        for i in range(N_DOWNSAMPLING):
            c = ch * 2 ** (N_DOWNSAMPLING - i)
            up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                   nn.Conv2d(c, c // 2, 3, bias=tf), LIN(c // 2, unbiased=not tf), nn.ReLU(True)]
        up += [nn.ReflectionPad2d(3), nn.Conv2d(ch, config.img_ch, 7, bias=tf), nn.Tanh()]
        self.UpBlock2 = nn.Sequential(*up)

    def _cam_layers(self) -> tuple[nn.Linear, nn.Linear, torch.Tensor, torch.Tensor]:
        """(GAP logit layer, GMP logit layer, GAP channel weights, GMP channel weights), weights (1, dim)."""
        if self.config.variant == "tf":
            weights = self.cam_fc.weight + self.cam_fc.bias  # TF's bias_add(kernel, bias)
            return self.cam_fc, self.cam_fc, weights, weights
        return self.gap_fc, self.gmp_fc, self.gap_fc.weight, self.gmp_fc.weight

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, 3, H, W) in [-1, 1] -> (image (B, 3, H, W), cam_logit (B, 2), heatmap (B, 1, H/4, W/4))."""
        x = self.DownBlock(x)  # (B, dim, H/4, W/4)

        gap_fc, gmp_fc, gap_weight, gmp_weight = self._cam_layers()
        gap_logit = gap_fc(F.adaptive_avg_pool2d(x, 1).flatten(1))  # (B, 1)
        gmp_logit = gmp_fc(F.adaptive_max_pool2d(x, 1).flatten(1))  # (B, 1)
        gap = x * gap_weight[:, :, None, None]  # weight (1, dim) -> (1, dim, 1, 1)
        gmp = x * gmp_weight[:, :, None, None]
        cam_logit = torch.cat([gap_logit, gmp_logit], 1)  # (B, 2)
        x = self.relu(self.conv1x1(torch.cat([gap, gmp], 1)))  # (B, dim, H/4, W/4)
        heatmap = x.sum(dim=1, keepdim=True)  # (B, 1, H/4, W/4)

        pooled = F.adaptive_avg_pool2d(x, 1) if self.config.light else x
        style = self.FC(pooled.flatten(1))  # (B, mlp_width), flattened as (C, H, W)
        gamma, beta = self.gamma(style), self.beta(style)

        for i in range(self.config.n_res):
            x = getattr(self, f"UpBlock1_{i + 1}")(x, gamma, beta)
        return self.UpBlock2(x), cam_logit, heatmap


def _sn(module: nn.Module) -> nn.Module:
    """Spectral norm with the classic hook API: its ``weight_orig``/``weight_u``/``weight_v`` keys match
    the official checkpoints, and ``weight_orig`` is what the official CAM uses as attention weights."""
    return nn.utils.spectral_norm(module)


class Discriminator(nn.Module):
    """PatchGAN discriminator with CAM attention (official ``Discriminator``); ``n_layers`` 7 global, 5 local."""

    def __init__(self, config: UGATITConfig, n_layers: int):
        super().__init__()
        ch = config.ch
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), _sn(nn.Conv2d(config.img_ch, ch, 4, stride=2)),
                                   nn.LeakyReLU(0.2, True)]
        for i in range(1, n_layers - 2):
            c = ch * 2 ** (i - 1)
            layers += [nn.ReflectionPad2d(1), _sn(nn.Conv2d(c, c * 2, 4, stride=2)), nn.LeakyReLU(0.2, True)]
        c = ch * 2 ** (n_layers - 3)
        layers += [nn.ReflectionPad2d(1), _sn(nn.Conv2d(c, c * 2, 4, stride=1)), nn.LeakyReLU(0.2, True)]
        self.model = nn.Sequential(*layers)

        dim = ch * 2 ** (n_layers - 2)
        self.gap_fc = _sn(nn.Linear(dim, 1, bias=False))
        self.gmp_fc = _sn(nn.Linear(dim, 1, bias=False))
        self.conv1x1 = nn.Conv2d(dim * 2, dim, 1, bias=True)
        self.leaky_relu = nn.LeakyReLU(0.2, True)
        self.pad = nn.ReflectionPad2d(1)
        self.conv = _sn(nn.Conv2d(dim, 1, 4, bias=False))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, 3, H, W) -> (patch logits (B, 1, h, w), cam_logit (B, 2), heatmap (B, 1, h', w'))."""
        x = self.model(x)
        gap_logit = self.gap_fc(F.adaptive_avg_pool2d(x, 1).flatten(1))  # uses the normalised weight
        gmp_logit = self.gmp_fc(F.adaptive_max_pool2d(x, 1).flatten(1))
        gap = x * self.gap_fc.weight_orig[:, :, None, None]  # the official quirk: the un-normalised weight
        gmp = x * self.gmp_fc.weight_orig[:, :, None, None]
        cam_logit = torch.cat([gap_logit, gmp_logit], 1)
        x = self.leaky_relu(self.conv1x1(torch.cat([gap, gmp], 1)))
        heatmap = x.sum(dim=1, keepdim=True)
        return self.conv(self.pad(x)), cam_logit, heatmap


def clip_rho_(module: nn.Module) -> None:
    """Clamp every AdaLIN/LIN ``rho`` to [0, 1] in place (the official ``RhoClipper``)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (AdaLIN, LIN)):
                m.rho.clamp_(0.0, 1.0)


def build_discriminators(config: UGATITConfig) -> dict[str, Discriminator]:
    """The four discriminators under their official names: global/local for domains A and B."""
    return {
        "disGA": Discriminator(config, config.dis_global_layers),
        "disGB": Discriminator(config, config.dis_global_layers),
        "disLA": Discriminator(config, config.dis_local_layers),
        "disLB": Discriminator(config, config.dis_local_layers),
    }
