"""Official TUNIT checkpoints (clovaai/tunit ``main.py`` ``save_model``): ``model_N.ckpt``.

The file is a ``torch.save`` pickle of a dict: ``epoch`` (int), ``C_state_dict``, ``C_EMA_state_dict``,
``G_state_dict``, ``G_EMA_state_dict``, ``D_state_dict`` (state dicts; with DDP every key starts with
``module.``) and ``c_optimizer``, ``g_optimizer``, ``d_optimizer``. It is read with
``torch.load(weights_only=True, mmap=True)`` (no code runs; tensors stay on disk until copied), and every
tensor's shape is checked against networks built on the meta device before anything is allocated.

The architecture comes from the shapes: ``sty_dim`` = rows of ``cont.weight``, K = rows of
``disc.weight``, ``nf`` = rows of ``cnt_encoder.model.0.conv.weight``, ``n_downs`` = the content
encoder's stride-2 convolutions (size = 16 * 2**n_downs), ``n_res`` = its residual blocks.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ...core.safety import check_tensors, regular_file, strip_wrapper_prefixes
from ...errors import UserError
from .config import TunitConfig
from .networks import build

#: official names of the networks in a checkpoint (``<name>_state_dict``)
NET_NAMES = ("G", "G_EMA", "C", "C_EMA", "D")
#: what inference needs
INFERENCE_NETS = ("G_EMA", "C_EMA")
_ADAIN_BUFFER = re.compile(r"^decoder\..*\.norm\.running_(mean|var)$")
_NAME = re.compile(r"^model_\d+\.ckpt$")


def looks_official(path: Path) -> bool:
    """Cheap recognition for MODEL arguments: a file named like ``model_4568.ckpt``, or any ``.ckpt``
    zip archive holding ``data.pkl`` (torch's format). Never raises."""
    try:
        path = Path(path)
        if not path.is_file():
            return False
        if _NAME.match(path.name):
            return True
        if path.suffix != ".ckpt" or not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist())
    except OSError:
        return False


def to_ours(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """An official network state dict in our key names: the DDP prefix ``module.`` (and torch.compile's
    ``_orig_mod.``) removed, the official AdaIN layers' constant ``running_mean`` / ``running_var`` buffers
    dropped. Everything else is 1:1."""
    out: dict[str, torch.Tensor] = {}
    for key, value in strip_wrapper_prefixes(state).items():
        if key.startswith("module."):
            key = key[len("module."):]
        if _ADAIN_BUFFER.match(key):
            continue
        out[key] = value
    return out


def infer_config(states: Mapping[str, Mapping[str, torch.Tensor]], source: str) -> TunitConfig:
    """The architecture of the nets in ``states`` (our key names) from tensor shapes; UserError naming
    ``source`` when a tensor the rule needs is missing or makes no sense."""
    g = states.get("G_EMA") or states.get("G")
    c = states.get("C_EMA") or states.get("C")
    if g is None or c is None:
        raise UserError(f"{source}: a TUNIT checkpoint needs a generator and a guiding network "
                        f"(G_EMA_state_dict and C_EMA_state_dict)")

    def shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
        if key not in state or not isinstance(state[key], torch.Tensor):
            raise UserError(f"{source}: not a TUNIT checkpoint ({key} is missing)")
        return tuple(state[key].shape)

    sty_dim = shape(c, "cont.weight")[0]
    k = shape(c, "disc.weight")[0]
    nf = shape(g, "cnt_encoder.model.0.conv.weight")[0]
    n_downs = 0
    while f"cnt_encoder.model.{n_downs + 1}.conv.weight" in g:
        n_downs += 1
    res = f"cnt_encoder.model.{n_downs + 1}.model"
    n_res = len({key.split(".")[4] for key in g if key.startswith(res + ".")})
    if not 1 <= n_downs <= 6:
        raise UserError(f"{source}: the generator has {n_downs} downsampling convolutions; TUNIT models have "
                        f"1 to 6 (32 to 1024 px)")
    try:
        return TunitConfig(size=16 * 2**n_downs, k=k, sty_dim=sty_dim, nf=nf, n_res=n_res)
    except ValueError as exc:
        raise UserError(f"{source}: {exc}") from None


def check_shapes(config: TunitConfig, name: str, state: Mapping[str, Any], source: str) -> None:
    """UserError naming ``source`` unless ``state`` has exactly the keys and shapes of network ``name``
    (built on the meta device: no memory is allocated)."""
    with torch.device("meta"):
        expected = build(config, name).state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        detail = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise UserError(f"{source}: {name}_state_dict does not fit a TUNIT {name} network of {config.size} px, "
                        f"K={config.k}, sty_dim={config.sty_dim} ({detail}; {len(missing)} missing, "
                        f"{len(unexpected)} unexpected)")
    for key, ref in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(ref.shape):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise UserError(f"{source}: {name}_state_dict[{key}] has shape {got}, expected {tuple(ref.shape)}")
        if not value.is_floating_point() and ref.is_floating_point():
            raise UserError(f"{source}: {name}_state_dict[{key}] is {value.dtype}, expected a float tensor")


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw dict of an official checkpoint (tensors memory-mapped); UserError when it is not one."""
    path = Path(path)
    if path.exists():
        regular_file(path, "TUNIT checkpoint")  # not /dev/zero, a FIFO
    try:
        # memory-map the zip format (torch >= 1.6); the legacy format cannot be mapped
        mmap = zipfile.is_zipfile(path)
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({first[:200]})") from None
    except Exception as exc:  # the unpickler raises its own types for files that are not pickles
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not any(f"{n}_state_dict" in data for n in NET_NAMES):
        keys = ", ".join(sorted(map(str, data))[:6]) if isinstance(data, dict) else type(data).__name__
        raise UserError(f"{path}: not an official TUNIT checkpoint (expected G_EMA_state_dict, C_EMA_state_dict, "
                        f"...; found {keys})")
    return data


def load_official(path: str | os.PathLike, nets: Sequence[str] = INFERENCE_NETS,
                  device: str | torch.device = "cpu") -> tuple[TunitConfig, dict[str, torch.nn.Module], int | None]:
    """Networks ``nets`` (official names) of an official checkpoint, weights loaded, in eval mode.

    Returns ``(config, {name: module}, epoch)``. UserError (one line naming the file) when the file is not
    a TUNIT checkpoint, lacks a network asked for, or a tensor has the wrong shape.
    """
    path = Path(path)
    data = read_checkpoint(path)
    states: dict[str, dict[str, torch.Tensor]] = {}
    for name in NET_NAMES:
        raw = data.get(f"{name}_state_dict")
        if raw is None:
            continue
        if not isinstance(raw, Mapping):
            raise UserError(f"{path}: {name}_state_dict is not a state dict")
        # stride-0 views that claim more than the file stores, and NaN/inf weights, refused before any use
        states[name] = check_tensors(to_ours(raw), f"{path} [{name}_state_dict]", error=UserError)
    config = infer_config(states, str(path))
    modules: dict[str, torch.nn.Module] = {}
    for name in nets:
        if name not in states:
            raise UserError(f"{path}: the checkpoint has no {name}_state_dict")
        check_shapes(config, name, states[name], str(path))
    for name in nets:
        net = build(config, name)
        net.load_state_dict({k: v.float() for k, v in states[name].items()})
        modules[name] = net.to(device).eval()
    epoch = data.get("epoch")
    return config, modules, epoch if isinstance(epoch, int) else None


def official_state_dict(net: torch.nn.Module, name: str, ddp: bool = False) -> dict[str, torch.Tensor]:
    """Our network's weights in the official layout (for writing checkpoints the official code loads):
    adds the official AdaIN buffers (zeros / ones) of a generator, and ``module.`` with ``ddp``."""
    state = dict(net.state_dict())
    if name in ("G", "G_EMA"):
        for path, module in net.named_modules():
            if path.startswith("decoder.") and hasattr(module, "conv") and _has_adain(net, path):
                c = module.conv.out_channels
                state[f"{path}.norm.running_mean"] = torch.zeros(c)
                state[f"{path}.norm.running_var"] = torch.ones(c)
    if ddp:
        state = {f"module.{k}": v for k, v in state.items()}
    return state


def _has_adain(net: torch.nn.Module, path: str) -> bool:
    """Whether the decoder convolution at ``path`` is followed by AdaIN (all but the final 7x7 one)."""
    decoder = net.decoder
    last = f"decoder.model.{len(decoder.model) - 1}"
    return path != last
