"""Official PyTorch checkpoints (znxlwm/UGATIT-pytorch ``*_params_*.pt``).

The official ``save`` pickles a dict ``{genA2B, genB2A, disGA, disGB, disLA, disLB}`` of state_dicts. Our
modules carry the official names, so no key is renamed; the hyper-parameters are read from tensor shapes,
so a user needs no flags to load one.
"""

import os

import torch

from ....core.safety import regular_file, strip_wrapper_prefixes
from ....errors import ProcessingError, UserError, first_line
from ..config import UGATITConfig

NETWORK_NAMES = ("genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB")


def read_official_checkpoint(path: str | os.PathLike) -> dict[str, dict[str, torch.Tensor]]:
    """Unpickle with ``weights_only=True`` (tensors and plain containers only: no code runs). Only a regular
    file is read; every network must be a state_dict; DataParallel/DDP/torch.compile key prefixes (of the
    whole dict or of each network) are removed."""
    path = regular_file(path, "PyTorch checkpoint")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # the unpickler raises anything (IndexError, KeyError, ...) on a foreign file
        raise ProcessingError(f"{path}: not a readable PyTorch checkpoint ({first_line(exc)})") from None
    if isinstance(data, dict):
        data = strip_wrapper_prefixes(data)  # a whole dict saved from a wrapped module
    if not isinstance(data, dict) or not any(name in data for name in NETWORK_NAMES):
        raise UserError(f"{path}: not an official U-GAT-IT checkpoint (expected keys {', '.join(NETWORK_NAMES)})")
    for name in NETWORK_NAMES:
        if name in data and not isinstance(data[name], dict):
            raise ProcessingError(f"{path}: {name} is {type(data[name]).__name__}, not a state_dict")
    return {name: strip_wrapper_prefixes(state) if name in NETWORK_NAMES else state for name, state in data.items()}


def infer_config(generator_state: dict[str, torch.Tensor], discriminators: dict[str, dict] | None = None,
                 default_img_size: int = 256) -> UGATITConfig:
    """Read ch, n_res, light and img_size from a generator's tensor shapes.

    A light model's gamma/beta MLP pools the map first, so its weights do not fix the image size; the
    official default (256) is assumed then, and ``--size`` can change it at translation time.
    """
    if not isinstance(generator_state, dict):
        raise ProcessingError(f"a generator is {type(generator_state).__name__}, not a state_dict")
    generator_state = strip_wrapper_prefixes(generator_state)  # DataParallel/DDP "module." keys
    try:
        ch = generator_state["DownBlock.1.weight"].shape[0]
        fc_in = generator_state["FC.0.weight"].shape[1]
    except KeyError as exc:
        raise UserError(f"not a U-GAT-IT generator state_dict (missing {exc.args[0]})") from None
    except (AttributeError, IndexError, TypeError):
        raise ProcessingError("not a U-GAT-IT generator state_dict (its entries are not weight tensors)") from None
    n_res = sum(1 for key in generator_state if key.startswith("UpBlock1_") and key.endswith(".conv1.weight"))
    dim = ch * 4
    light = fc_in == dim
    img_size = default_img_size if light else int(round((fc_in / dim) ** 0.5)) * 4
    layers = {}
    for name, prefix in (("dis_global_layers", "disGA"), ("dis_local_layers", "disLA")):
        state = (discriminators or {}).get(prefix)
        if state:
            state = strip_wrapper_prefixes(state) if isinstance(state, dict) else {}
            # n_layers - 1 convs in `model`, each stored as spectral-norm `weight_orig`
            layers[name] = 1 + sum(1 for k in state if k.startswith("model.") and k.endswith("weight_orig"))
    try:
        return UGATITConfig(img_size=img_size, ch=ch, n_res=n_res, light=light, **layers)
    except (TypeError, ValueError) as exc:
        raise ProcessingError(f"not a U-GAT-IT generator this tool can build ({exc})") from None


def load_official_checkpoint(path: str | os.PathLike) -> tuple[UGATITConfig, dict[str, dict[str, torch.Tensor]]]:
    """The inferred config and the six networks' state_dicts of an official checkpoint."""
    states = read_official_checkpoint(path)
    generator = next((states[name] for name in ("genA2B", "genB2A") if name in states), None)
    if generator is None:
        raise UserError(f"{path}: checkpoint holds no generator (genA2B/genB2A)")
    try:
        config = infer_config(generator, states)
    except UserError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    return config, states
