"""An independent re-statement of the official TUNIT forward passes, written against the official state_dict
key layout (clovaai/tunit checkpoints), for parity tests. Plain functions over a dict of tensors: no module
of ugatit_cli is used, so a test comparing the two can fail.

Facts restated (from the official code, see ugatit_cli/families/tunit/networks.py): reflection padding;
instance statistics with the biased variance and eps 1e-5; residual blocks add 0.1 x the residual; the MLP
emits per AdaIN layer (decoder order) C "means" used as bias, then C "stds" used as weight; FRN eps 1e-6
with a TLU; (shortcut + residual) / sqrt(2); VGG11-BN with eval-mode batch norm (eps 1e-5).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

VGG11_PLAN = [64, "pool", 128, "pool", 256, 256, "pool", 512, 512, "pool", 512, 512, "pool"]


def _instance_stats(h: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = h.mean(dim=(2, 3), keepdim=True)
    var = ((h - mean) ** 2).mean(dim=(2, 3), keepdim=True)
    return (h - mean) / torch.sqrt(var + eps)


def _conv(sd, key, h, stride=1, pad=0):
    if pad:
        h = F.pad(h, [pad, pad, pad, pad], mode="reflect")
    return F.conv2d(h, sd[key + ".conv.weight"], sd[key + ".conv.bias"], stride=stride)


def generator(sd: dict, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Official ``Generator.forward(x, s)`` from an official-layout state dict (AdaIN buffers may be there)."""
    encoder_convs = [k for k in sd if k.startswith("cnt_encoder.model.") and k.count(".") == 4]
    n_downs = sum(k.endswith("conv.weight") for k in encoder_convs) - 1
    res_index = n_downs + 1
    n_res = len({k.split(".")[4] for k in sd if k.startswith(f"cnt_encoder.model.{res_index}.model.")})

    # content encoder
    h = torch.relu(_instance_stats(_conv(sd, "cnt_encoder.model.0", x, 1, 3)))
    for i in range(1, n_downs + 1):
        h = torch.relu(_instance_stats(_conv(sd, f"cnt_encoder.model.{i}", h, 2, 1)))
    for b in range(n_res):
        base = f"cnt_encoder.model.{res_index}.model.{b}.model"
        r = torch.relu(_instance_stats(_conv(sd, f"{base}.0", h, 1, 1)))
        r = _instance_stats(_conv(sd, f"{base}.1", r, 1, 1))
        h = h + 0.1 * r

    # style MLP
    p = s
    for i in range(3):
        p = F.linear(p, sd[f"mlp.model.{i}.fc.weight"], sd[f"mlp.model.{i}.fc.bias"])
        if i < 2:
            p = torch.relu(p)

    # AdaIN parameters in the official assignment order
    adain_layers = [f"decoder.model.0.model.{b}.model.{j}" for b in range(n_res) for j in (0, 1)]
    adain_layers += [f"decoder.model.{2 + 2 * i}" for i in range(n_downs)]
    params = {}
    for key in adain_layers:
        c = sd[key + ".conv.weight"].shape[0]
        params[key] = (p[:, :c], p[:, c:2 * c])  # (mean -> bias, std -> weight)
        p = p[:, 2 * c:]
    assert p.shape[1] == 0

    def adain(key, t):
        bias, weight = params[key]
        return _instance_stats(t) * weight[:, :, None, None] + bias[:, :, None, None]

    for b in range(n_res):
        base = f"decoder.model.0.model.{b}.model"
        r = torch.relu(adain(f"{base}.0", _conv(sd, f"{base}.0", h, 1, 1)))
        r = adain(f"{base}.1", _conv(sd, f"{base}.1", r, 1, 1))
        h = h + 0.1 * r
    for i in range(n_downs):
        key = f"decoder.model.{2 + 2 * i}"
        h = h.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest 2x
        h = torch.relu(adain(key, _conv(sd, key, h, 1, 2)))
    return torch.tanh(_conv(sd, f"decoder.model.{1 + 2 * n_downs}", h, 1, 3))


def guiding(sd: dict, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Official ``GuidingNet(x)`` in eval mode: ``{"cont", "disc"}``."""
    h = x
    idx = 0
    for item in VGG11_PLAN:
        if item == "pool":
            h = F.max_pool2d(h, 2)
            idx += 1
            continue
        h = F.conv2d(h, sd[f"features.{idx}.weight"], sd[f"features.{idx}.bias"], padding=1)
        bn = f"features.{idx + 1}"
        h = (h - sd[bn + ".running_mean"][:, None, None]) / torch.sqrt(sd[bn + ".running_var"][:, None, None] + 1e-5)
        h = torch.relu(h * sd[bn + ".weight"][:, None, None] + sd[bn + ".bias"][:, None, None])
        idx += 3
    flat = h.mean(dim=(2, 3))
    return {"cont": F.linear(flat, sd["cont.weight"], sd["cont.bias"]),
            "disc": F.linear(flat, sd["disc.weight"], sd["disc.bias"])}


def discriminator(sd: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Official ``Discriminator(x, y)[0]``: the logit of each image's domain."""

    def frn(key, t):
        t = t / torch.sqrt((t * t).mean(dim=(2, 3), keepdim=True) + 1e-6)
        return torch.max(sd[key + ".gamma"] * t + sd[key + ".beta"], sd[key + ".tau"])

    h = F.conv2d(x, sd["main.0.weight"], sd["main.0.bias"], padding=1)
    n_blocks = len({int(k.split(".")[1]) for k in sd if k.split(".")[2:3] == ["norm1"]})
    for i in range(1, n_blocks + 1):
        key = f"main.{i}"
        downsample = i % 2 == 0  # the second block of each stage
        r = F.conv2d(frn(key + ".norm1", h), sd[key + ".conv1.weight"], sd[key + ".conv1.bias"], padding=1)
        if downsample:
            r = F.avg_pool2d(r, 2)
        r = F.conv2d(frn(key + ".norm2", r), sd[key + ".conv2.weight"], sd[key + ".conv2.bias"], padding=1)
        sc = F.conv2d(h, sd[key + ".conv1x1.weight"]) if key + ".conv1x1.weight" in sd else h
        if downsample:
            sc = F.avg_pool2d(sc, 2)
        h = (sc + r) / math.sqrt(2)
    j = n_blocks + 1
    h = F.leaky_relu(h, 0.2)
    h = F.conv2d(h, sd[f"main.{j + 1}.weight"], sd[f"main.{j + 1}.bias"])
    h = F.leaky_relu(h, 0.2)
    h = F.conv2d(h, sd[f"main.{j + 3}.weight"], sd[f"main.{j + 3}.bias"])
    logits = h.reshape(h.shape[0], -1)
    return logits[torch.arange(len(y)), y]


def randomise(sd: dict, seed: int = 0) -> dict:
    """Random values in every float tensor of a state dict (weights ~ N(0, 0.05), 1-d ~ U(-0.5, 0.5);
    batch-norm variances U(0.5, 1.5)), so that no initialisation coincidence hides a mismatch."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            out[k] = v.clone()
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=g) + 0.5
        elif v.dim() > 1 and k.split(".")[-1] not in ("gamma", "beta", "tau"):
            out[k] = torch.randn(v.shape, generator=g) * 0.05
        else:
            out[k] = torch.rand(v.shape, generator=g) - 0.5 + (1.0 if k.endswith("gamma") else 0.0)
    return out
