"""Network helpers every family uses: strict weight loading with a clear error, EMA copies, the DDP/compile
wrapping of a training network. torch only; no model knowledge."""

import copy
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import UserError


def load_strict(net: nn.Module, state: Mapping[str, torch.Tensor], origin: str, what: str = "weights",
                *, verb: str = "do not match", hint: str = "its config", to_float: bool = False) -> nn.Module:
    """``net.load_state_dict(state, strict=True)``; a mismatch is a UserError naming ``origin``: "<origin>:
    <what> <verb> <hint> (<the first missing/unexpected key or wrong shape>)". ``to_float`` casts stored
    fp16/bf16 tensors back to float32 first. Returns ``net``."""
    if to_float:
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        # torch's message: "Error(s) in loading state_dict for X:" then one line per problem
        reason = lines[1] if len(lines) > 1 else lines[0] if lines else "mismatch"
        raise UserError(f"{origin}: {what} {verb} {hint} ({reason})") from None
    return net


def ema_copy(net: nn.Module) -> nn.Module:
    """A frozen copy of ``net`` in eval mode to average into."""
    ema = copy.deepcopy(net).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: Mapping[str, nn.Module], live: Mapping[str, nn.Module], decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * live`` for every parameter of each named net (buffers copied)."""
    for name, average in ema.items():
        net = live[name]
        torch._foreach_lerp_(list(average.parameters()), list(net.parameters()), 1.0 - decay)
        for average_buffer, buffer in zip(average.buffers(), net.buffers(), strict=True):
            average_buffer.copy_(buffer)


def wrap_for_training(net: nn.Module, device: torch.device, *, distributed: bool, compile: bool) -> nn.Module:
    """What a training step calls: ``net`` in DistributedDataParallel (one device per process) when
    ``distributed``, then ``torch.compile`` d when ``compile``. The process group must be initialised."""
    if distributed:
        if not torch.distributed.is_available() or not torch.distributed.is_initialized():
            raise RuntimeError("distributed training needs torch.distributed.init_process_group() first")
        device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(net, device_ids=device_ids)
    if compile:
        net = torch.compile(net)
    return net
