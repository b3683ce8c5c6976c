"""Official PyTorch checkpoints (znxlwm/UGATIT-pytorch ``*_params_*.pt``).

The official ``save`` pickles a dict ``{genA2B, genB2A, disGA, disGB, disLA, disLB}`` of state_dicts. Our
modules carry the official names, so no key is renamed; the hyper-parameters are read from tensor shapes,
so a user needs no flags to load one.
"""

import os
import pickle
import zipfile
from pathlib import Path

import torch

from ....errors import ProcessingError, UserError, first_line
from ..config import UGATITConfig

NETWORK_NAMES = ("genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB")


def read_official_checkpoint(path: str | os.PathLike) -> dict[str, dict[str, torch.Tensor]]:
    """Unpickle with ``weights_only=True`` (tensors and plain containers only: no code runs)."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError) as exc:
        raise ProcessingError(f"{path}: not a readable PyTorch checkpoint ({first_line(exc)})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(data, dict) or not any(name in data for name in NETWORK_NAMES):
        raise UserError(f"{path}: not an official U-GAT-IT checkpoint (expected keys {', '.join(NETWORK_NAMES)})")
    return data


def infer_config(generator_state: dict[str, torch.Tensor], discriminators: dict[str, dict] | None = None,
                 default_img_size: int = 256) -> UGATITConfig:
    """Read ch, n_res, light and img_size from a generator's tensor shapes.

    A light model's gamma/beta MLP pools the map first, so its weights do not fix the image size; the
    official default (256) is assumed then, and ``--size`` can change it at translation time.
    """
    try:
        ch = generator_state["DownBlock.1.weight"].shape[0]
        fc_in = generator_state["FC.0.weight"].shape[1]
    except KeyError as exc:
        raise UserError(f"not a U-GAT-IT generator state_dict (missing {exc.args[0]})") from None
    n_res = sum(1 for key in generator_state if key.startswith("UpBlock1_") and key.endswith(".conv1.weight"))
    dim = ch * 4
    light = fc_in == dim
    img_size = default_img_size if light else int(round((fc_in / dim) ** 0.5)) * 4
    layers = {}
    for name, prefix in (("dis_global_layers", "disGA"), ("dis_local_layers", "disLA")):
        state = (discriminators or {}).get(prefix)
        if state:
            # n_layers - 1 convs in `model`, each stored as spectral-norm `weight_orig`
            layers[name] = 1 + sum(1 for k in state if k.startswith("model.") and k.endswith("weight_orig"))
    return UGATITConfig(img_size=img_size, ch=ch, n_res=n_res, light=light, **layers)


def load_official_checkpoint(path: str | os.PathLike) -> tuple[UGATITConfig, dict[str, dict[str, torch.Tensor]]]:
    """The inferred config and the six networks' state_dicts of an official checkpoint."""
    states = read_official_checkpoint(path)
    generator = states.get("genA2B") or states.get("genB2A")
    if generator is None:
        raise UserError(f"{path}: checkpoint holds no generator (genA2B/genB2A)")
    try:
        config = infer_config(generator, states)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return config, states
