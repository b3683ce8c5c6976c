"""Device and precision choices shared by translate, train and eval."""

import contextlib
from collections.abc import Iterator

import torch

from ..errors import UserError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def select_device(spec: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; explicit devices are checked to exist."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {spec!r} asked for, but this PyTorch build sees no CUDA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {spec!r} asked for, but only {torch.cuda.device_count()} GPU(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("device 'mps' asked for, but Apple MPS is not available here")
    return device


def check_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (None for fp32); fp16 autocast needs a GPU."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; use fp32, bf16 or fp16")
    if precision == "fp16" and device.type == "cpu":
        raise UserError("fp16 autocast needs a GPU; use --precision bf16 on the CPU")
    return PRECISIONS[precision]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` when a reduced precision was asked for, otherwise nothing."""
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield
