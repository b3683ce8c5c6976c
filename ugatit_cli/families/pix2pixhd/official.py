"""Official pix2pixHD checkpoints: ``{latest,N}_net_{G,D,E}.pth``, ``opt.txt`` and the feature clusters.

Source: NVIDIA/pix2pixHD ``models/base_model.py`` (``save_network``: ``torch.save(net.cpu().state_dict(),
'%s_net_%s.pth' % (epoch, label))`` in ``checkpoints/NAME/``), ``options/base_options.py`` (``opt.txt``: a line
``------------ Options -------------``, then ``name: value`` per option sorted by name, then
``-------------- End ----------------``), ``encode_features.py`` (``features_clustered_010.npy``: ``np.save`` of a
dict label id -> (n_clusters, feat_num) array, i.e. a pickled object array) and ``pix2pixHD_model.py``
(``sample_features``: instance id ``i`` belongs to class ``i`` if ``i < 1000`` else ``i // 1000``).

Every ``.pth`` is read with ``torch.load(weights_only=True)``; ``module.`` prefixes (DataParallel) are removed.
The state-dict keys are those of :mod:`.networks` (identical to the official ones). The cluster file is never
unpickled here: it must be converted once (the refusal message gives the command).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...core.safety import meta_shapes, regular_file, shape_mismatch, strip_wrapper_prefixes
from ...errors import UserError
from .config import Pix2PixHDConfig
from .losses import load_weights_file
from .networks import build_encoder, build_generator

OPT_HEADER = "------------ Options -------------"
OPT_FOOTER = "-------------- End ----------------"
#: opt.txt entries that define the generator/encoder and their types.
MODEL_OPTIONS: dict[str, type] = {
    "label_nc": int, "input_nc": int, "output_nc": int, "netG": str, "ngf": int, "n_downsample_global": int,
    "n_blocks_global": int, "n_local_enhancers": int, "n_blocks_local": int, "norm": str, "no_instance": bool,
    "instance_feat": bool, "label_feat": bool, "feat_num": int, "nef": int, "n_downsample_E": int,
    "n_clusters": int,
}
MAX_OPT_BYTES = 1 << 20  # an official opt.txt is ~2 KB
_CHECKPOINT = re.compile(r"^(latest|\d+)_net_G\.pth$")


def parse_opt_txt(path: str | os.PathLike) -> dict[str, str]:
    """The ``name: value`` lines of an official ``opt.txt`` as strings. Raises :class:`UserError` if the file
    is not in that format (header line first)."""
    path = regular_file(path, "pix2pixHD opt.txt")  # not /dev/zero, a FIFO
    if path.stat().st_size > MAX_OPT_BYTES:
        raise UserError(f"{path}: {path.stat().st_size} bytes is too large for an opt.txt")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    lines = [line.rstrip("\r") for line in text.splitlines()]
    if not lines or lines[0].strip() != OPT_HEADER:
        raise UserError(f"{path}: not an official pix2pixHD opt.txt (the first line should be {OPT_HEADER!r})")
    options = {}
    for line in lines[1:]:
        if line.strip() == OPT_FOOTER:
            break
        name, sep, value = line.partition(": ")
        if not sep:
            name, sep, value = line.partition(":")
        if sep and name.strip():
            options[name.strip()] = value.strip()
    return options


def _typed(path: Path, name: str, value: str, kind: type) -> Any:
    if kind is bool:
        if value not in ("True", "False"):
            raise UserError(f"{path}: option {name} is {value!r}, expected True or False")
        return value == "True"
    if kind is int:
        try:
            return int(value[:32])  # ranges are the config's to check; no 10,000-digit number is parsed
        except ValueError:
            raise UserError(f"{path}: option {name} is {value!r}, expected an integer") from None
    return value


def model_options(path: str | os.PathLike) -> dict[str, Any]:
    """The options of ``opt.txt`` that define the model (:data:`MODEL_OPTIONS`), typed."""
    raw = parse_opt_txt(path)
    return {name: _typed(Path(path), name, raw[name], kind) for name, kind in MODEL_OPTIONS.items() if name in raw}


def strip_module(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DataParallel/DDP ``module.`` and torch.compile ``_orig_mod.`` prefixes
    (``core.safety.strip_wrapper_prefixes``), then a ``module.`` prefix from any key that still has it."""
    return {k.removeprefix("module."): v for k, v in strip_wrapper_prefixes(state).items()}


def find_generator_file(path: str | os.PathLike) -> Path:
    """``path`` itself if it is a ``*_net_G.pth`` file; for a folder its ``latest_net_G.pth``, else the highest
    ``N_net_G.pth``. Raises :class:`UserError` when there is none."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"{path}: no such file or folder")
    if (path / "latest_net_G.pth").is_file():
        return path / "latest_net_G.pth"
    numbered = sorted((int(m.group(1)), p) for p in path.iterdir()
                      if (m := _CHECKPOINT.match(p.name)) and m.group(1) != "latest")
    if not numbered:
        raise UserError(f"{path}: no latest_net_G.pth or N_net_G.pth in this folder")
    return numbered[-1][1]


def is_official_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like an official pix2pixHD generator file or checkpoints folder."""
    path = Path(path)
    if path.is_file():
        return bool(_CHECKPOINT.match(path.name))
    return path.is_dir() and any(_CHECKPOINT.match(p.name) for p in path.iterdir())


def _count(keys: set[str], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := regex.match(k))})


def infer_shapes(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What the generator's tensor shapes decide: netG, ngf, n_downsample_global, n_blocks_global,
    n_local_enhancers, n_blocks_local, norm, output_nc, and the total input channels (``netG_input_nc``)."""
    keys = set(state)
    local = _count(keys, r"^model(\d+)_1\.")
    convs = sorted((int(m.group(1)), k) for k in keys if (m := re.match(r"^model\.(\d+)\.weight$", k))
                   and state[k].ndim == 4)
    blocks = sorted({int(m.group(1)) for k in keys if (m := re.match(r"^model\.(\d+)\.conv_block\.", k))})
    if not convs or "model.1.weight" not in keys:
        raise ValueError("no model.1.weight: not a pix2pixHD generator state dict")
    first_block = blocks[0] if blocks else None
    found: dict[str, Any] = {"netG": "local" if local else "global", "n_blocks_global": len(blocks)}
    if first_block is not None:
        found["n_downsample_global"] = sum(1 for i, _ in convs if 1 < i < first_block)
    else:
        found["n_downsample_global"] = sum(1 for _, k in convs if state[k].shape[-1] == 3) // 2
    found["norm"] = "batch" if any(k.endswith("running_mean") for k in keys) else "instance"
    if local:
        found["n_local_enhancers"] = local
        found["n_blocks_local"] = _count(keys, rf"^model{local}_2\.(\d+)\.conv_block\.")
        found["ngf"] = int(state[f"model{local}_1.1.weight"].shape[0])
        found["netG_input_nc"] = int(state[f"model{local}_1.1.weight"].shape[1])
        last = max((int(m.group(1)), k) for k in keys if (m := re.match(rf"^model{local}_2\.(\d+)\.weight$", k)))
        found["output_nc"] = int(state[last[1]].shape[0])
    else:
        found["ngf"] = int(state["model.1.weight"].shape[0])
        found["netG_input_nc"] = int(state["model.1.weight"].shape[1])
        found["output_nc"] = int(state[convs[-1][1]].shape[0])
    return found


@dataclass
class OfficialModel:
    """An official checkpoint read: the config, the generator (and encoder) weights, where they came from."""

    config: Pix2PixHDConfig
    generator: dict[str, torch.Tensor]
    encoder: dict[str, torch.Tensor] | None
    generator_path: Path
    opt_path: Path | None

    def build(self) -> tuple[nn.Module, nn.Module | None]:
        """netG (and netE when the model uses features) with these weights, in eval mode."""
        net_g = build_generator(self.config)
        net_g.load_state_dict(self.generator)
        net_e = None
        if self.encoder is not None:
            net_e = build_encoder(self.config)
            net_e.load_state_dict(self.encoder)
        return net_g.eval(), (net_e.eval() if net_e is not None else None)


def _fill_batchnorm_counters(expected: dict[str, torch.Size], state: dict[str, torch.Tensor]
                             ) -> dict[str, torch.Tensor]:
    """Old PyTorch (< 0.4.1) BatchNorm state dicts lack ``num_batches_tracked``; it is not used at inference."""
    state = dict(state)
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.tensor(0, dtype=torch.long)
    return state


def _check_against(expected: dict[str, torch.Size], state: dict[str, torch.Tensor], origin: Path,
                   what: str) -> None:
    """Keys and shapes of ``state`` against those of the network the config describes (built on the meta
    device), before anything of that size is allocated."""
    mismatch = shape_mismatch(expected, {k: v.shape for k, v in state.items()})
    if mismatch:
        raise UserError(f"{origin}: does not match {what} ({mismatch})")


def read_official(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> OfficialModel:
    """Read an official generator (file or ``checkpoints/NAME/`` folder), its ``opt.txt`` and, with features,
    the ``*_net_E.pth`` beside it.

    The config comes from ``opt.txt`` when present, then ``overrides`` (user flags, official names), then what
    the shapes decide; whatever is still unknown (label_nc, no_instance, instance_feat) raises
    :class:`UserError` with one line naming the flags to give. Shapes that contradict ``opt.txt`` or the
    flags are reported the same way.
    """
    g_path = find_generator_file(path)
    state = strip_module(load_weights_file(g_path, "pix2pixHD generator"))
    try:
        shapes = infer_shapes(state)
    except ValueError as exc:
        raise UserError(f"{g_path}: {exc}") from None
    opt_path = g_path.parent / "opt.txt"
    options: dict[str, Any] = model_options(opt_path) if opt_path.exists() else {}  # a device is refused
    options.update(overrides or {})
    known = dict(options)
    for name in ("netG", "ngf", "n_downsample_global", "n_blocks_global", "norm", "output_nc",
                 "n_local_enhancers", "n_blocks_local"):
        if name not in shapes:
            continue
        if name in known and known[name] != shapes[name] and not (name == "n_local_enhancers"
                                                                   and shapes["netG"] == "global"):
            source = "opt.txt" if name not in (overrides or {}) else "the flags"
            raise UserError(f"{g_path}: {source} says {name} {known[name]} but the weights have "
                            f"{name} {shapes[name]}")
        known[name] = shapes[name]
    total = shapes["netG_input_nc"]
    if "label_nc" not in known:
        raise UserError(f"{g_path}: no opt.txt beside it and its {total} input channels do not say how many are "
                        f"labels; put the training's opt.txt beside it, or one with the line 'label_nc: N' "
                        f"(--label-nc N; and no_instance / instance_feat as it was trained)")
    label_channels = known["label_nc"] if known["label_nc"] != 0 else known.get("input_nc", 3)
    rest = total - label_channels
    if "no_instance" not in known or ("instance_feat" not in known and "label_feat" not in known):
        feat_num = known.get("feat_num", 3)
        guesses = {0: (True, False), 1: (False, False), feat_num: (True, True), feat_num + 1: (False, True)}
        if rest not in guesses:
            raise UserError(f"{g_path}: {total} input channels do not fit label_nc {known['label_nc']} "
                            f"(+1 edge map, +feat_num {feat_num} features); check --label-nc / --feat-num")
        no_instance, features = guesses[rest]
        known.setdefault("no_instance", no_instance)
        if "instance_feat" not in known and "label_feat" not in known:
            known["instance_feat"] = features
    try:
        config = Pix2PixHDConfig.from_dict(known)
    except ValueError as exc:
        raise UserError(f"{g_path}: {exc}") from None
    if config.netG_input_nc != total:
        raise UserError(f"{g_path}: the weights take {total} input channels but label_nc {config.label_nc}, "
                        f"no_instance {config.no_instance}, features {config.use_features} make "
                        f"{config.netG_input_nc}; check --label-nc, --no-instance, --instance-feat")
    expected = meta_shapes(lambda: build_generator(config))  # no memory: a hostile opt.txt cannot exhaust it
    state = _fill_batchnorm_counters(expected, state)
    _check_against(expected, state, g_path, f"a pix2pixHD {config.netG} generator")
    encoder = None
    if config.use_features:
        e_path = g_path.with_name(g_path.name.replace("_net_G.pth", "_net_E.pth"))
        if not e_path.is_file():
            raise UserError(f"{g_path}: the model uses instance features but {e_path.name} is not beside it")
        encoder = strip_module(load_weights_file(e_path, "pix2pixHD encoder"))
        if "model.1.weight" in encoder:
            config.nef = int(encoder["model.1.weight"].shape[0])
            n_down = sum(1 for k, v in encoder.items() if re.match(r"^model\.\d+\.weight$", k) and v.ndim == 4
                         and v.shape[-1] == 3) // 2
            config.n_downsample_E = n_down
        try:
            config.validate()
        except ValueError as exc:
            raise UserError(f"{e_path}: {exc}") from None
        expected_e = meta_shapes(lambda: build_encoder(config))
        encoder = _fill_batchnorm_counters(expected_e, encoder)
        _check_against(expected_e, encoder, e_path, f"a pix2pixHD encoder with feat_num {config.feat_num}")
    return OfficialModel(config, state, encoder, g_path, opt_path if opt_path.is_file() else None)


# --- feature clusters -------------------------------------------------------------------------------------------

CONVERT_RECIPE = (
    "python -c \"import numpy as n; d = n.load('features_clustered_010.npy', allow_pickle=True, "
    "encoding='latin1').item(); n.savez('features_clustered_010.npz', **{str(k): v for k, v in d.items()})\""
)


def read_feature_clusters(path: str | os.PathLike, feat_num: int) -> dict[int, np.ndarray]:
    """Cluster centres per class: label id -> float32 array (n_clusters, feat_num).

    Reads ``.npz`` archives of plain arrays keyed by label id (numpy ``allow_pickle=False``), the form the
    conversion recipe writes. The official ``features_clustered_010.npy`` is a pickled dict, which this function
    refuses (:class:`UserError` with the one-line conversion command to run where the file is trusted) rather
    than unpickle. Shapes are checked against ``feat_num``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file (feature clusters)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise UserError(f"{path}: this is a pickled dict (the official np.save format), which is not read "
                            f"here because unpickling can run code; convert it once where you trust it: "
                            f"{CONVERT_RECIPE.replace('features_clustered_010', path.stem)}") from None
        raise UserError(f"{path}: not a NumPy file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise UserError(f"{path}: not a NumPy file ({exc})") from None
    if isinstance(loaded, np.ndarray):
        raise UserError(f"{path}: a single array; expected a .npz archive of one (n_clusters, {feat_num}) array "
                        f"per label id")
    clusters = {}
    with loaded:
        for key in loaded.files:
            if not key.lstrip("-").isdigit():
                raise UserError(f"{path}: entry {key!r} is not a label id")
            array = loaded[key]
            if array.ndim != 2 or array.shape[1] != feat_num or array.dtype.kind != "f":
                raise UserError(f"{path}: entry {key} has shape {array.shape} ({array.dtype}); expected "
                                f"(n_clusters, {feat_num}) floats")
            if array.shape[0]:
                clusters[int(key)] = array.astype(np.float32)
    return clusters
