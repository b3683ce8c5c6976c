"""What the CPU runs fast, and the choices that follow: bf16 warnings, ``--precision auto``, ``--backend auto``.

Measured (light ch64 generator, 256 px, one image per pass): on an Intel Xeon with AVX-512 BF16 but without
AMX (``avx512_bf16`` present, ``amx_bf16`` absent, as this KVM guest of a recent Xeon shows them) PyTorch's
bf16 autocast ran at ~0.75x fp32 per image, and at 0.46x on an Ice Lake Xeon (no bf16 instructions at all,
issue 15): the convolutions gain little or nothing while every normalisation pays for the casts. The issue
also reports 2.26x on a CPU with bf16 support, which we take to be an AMX machine (not measured here). Hence
the rule: bf16 on a CPU counts as fast only with AMX; elsewhere ``--precision bf16`` still runs, with a
one-line warning (it is not refused: its outputs are valid, only slower, and a user may want them to compare
with a bf16 machine).

The check reads PyTorch's own CPU probe (``torch.backends.cpu.get_cpu_capability`` and the private
``torch.cpu._is_*_supported`` helpers, which ask the same cpuinfo library oneDNN uses) and falls back to the
flags of ``/proc/cpuinfo``. Tests replace :func:`cpu_features` to play other machines.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: one line, shown once per run when bf16 is asked for on a CPU without AMX
SLOW_BF16 = ("bf16 on this CPU ({reason}) is slower than fp32 (measured 0.46-0.75x); its outputs are valid, but "
             "use fp32 (the default) for speed")


class SlowPrecisionWarning(UserWarning):
    """The requested precision runs, but slower than fp32 on this hardware."""


@dataclass(frozen=True)
class CpuFeatures:
    """The instruction sets that decide which precision and backend are fast on this CPU."""

    capability: str  # PyTorch's dispatch level: "DEFAULT", "AVX2", "AVX512"
    avx512_bf16: bool  # bf16 dot products in AVX-512 (Cooper Lake, Sapphire Rapids, Zen 4)
    amx_bf16: bool  # AMX tiles with bf16 (Sapphire Rapids and later): what makes bf16 fast
    vnni: bool  # int8 dot products (AVX512-VNNI or AVX-VNNI): what makes int8 fast

    @property
    def fast_bf16(self) -> bool:
        return self.amx_bf16

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _probe(name: str) -> bool | None:
    import torch

    check = getattr(torch.cpu, name, None)
    try:
        return bool(check()) if check is not None else None
    except Exception:  # a private helper that changed: fall back to /proc/cpuinfo
        return None


def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """The CPU's relevant features, probed once per process."""
    flags = _cpuinfo_flags()

    def has(probe: str, *names: str) -> bool:
        found = _probe(probe)
        return found if found is not None else any(n in flags for n in names)

    import torch  # its probe asks the cpuinfo library oneDNN uses

    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:
        capability = "unknown"
    return CpuFeatures(
        capability=capability,
        avx512_bf16=has("_is_avx512_bf16_supported", "avx512_bf16"),
        amx_bf16=has("_is_amx_tile_supported", "amx_bf16"),
        vnni=has("_is_vnni_supported", "avx512_vnni", "avx_vnni"),
    )


def bf16_note(device: torch.device) -> str | None:
    """The warning for bf16 on ``device``, or None when bf16 is fast there (GPUs, CPUs with AMX)."""
    if device.type != "cpu":
        return None
    features = cpu_features()
    if features.fast_bf16:
        return None
    reason = "AVX-512 BF16 but no AMX" if features.avx512_bf16 else "no AVX-512 BF16 and no AMX"
    return SLOW_BF16.format(reason=reason)


def auto_precision(device: torch.device) -> str:
    """``--precision auto``: bf16 where it is both fast and well supported (CUDA GPUs with bf16, CPUs with
    AMX), fp32 elsewhere (MPS, older GPUs, CPUs without AMX)."""
    if device.type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_features().fast_bf16 else "fp32"
    return "fp32"


def onnxruntime_available() -> bool:
    """Whether the ``onnx`` extra is installed: onnxruntime to run graphs, onnx and onnxscript to export them."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx", "onnxscript"))


def auto_backend(device: torch.device | str, precision: str) -> str:
    """``--backend auto``: onnxruntime for fp32 on a CPU when the ``onnx`` extra is installed (it measured
    1.3x PyTorch's per-image speed there, see README), PyTorch everywhere else (GPUs, reduced precisions,
    no onnxruntime). ``UGATIT_BACKEND=torch`` in the environment turns the choice off."""
    wanted = os.environ.get("UGATIT_BACKEND", "").strip()
    if wanted in ("torch", "onnxruntime"):
        return wanted
    if getattr(device, "type", device) == "cpu" and precision == "fp32" and onnxruntime_available():
        return "onnxruntime"
    return "torch"


#: device nodes and driver files that mean ``--device auto`` may find a GPU (NVIDIA, ROCm/AMD, WSL's GPU bridge)
_ACCELERATOR_PATHS = ("/proc/driver/nvidia/version", "/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


def surely_cpu_only() -> bool:
    """Whether PyTorch's ``--device auto`` would surely pick the CPU, known without importing torch: Linux
    with no NVIDIA or AMD GPU driver and no WSL GPU bridge. False on macOS (MPS) and other systems, and
    wherever a driver is present (a CPU-only PyTorch build there is for PyTorch itself to tell)."""
    return sys.platform.startswith("linux") and not any(os.path.exists(p) for p in _ACCELERATOR_PATHS)


def cpu_threads() -> int:
    """The threads compute may use, as PyTorch counts them, without importing it: its own setting when a caller
    imported it already (``torch.set_num_threads``), else ``OMP_NUM_THREADS`` (what it would read), else the
    CPUs this process may run on."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        return torch.get_num_threads()
    wanted = os.environ.get("OMP_NUM_THREADS", "").strip()
    if wanted.isdigit() and int(wanted) > 0:
        return int(wanted)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# --- memory -----------------------------------------------------------------------------------------------


def _libc():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def release_memory() -> None:
    """Give freed memory back to the OS (glibc's ``malloc_trim``; elsewhere only a garbage collection), e.g.
    after the PyTorch weights were dropped for an ONNX Runtime session's own copy, so that the process's peak
    RSS does not hold both."""
    import gc

    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE_BUFFER_BYTES = 1 << 20


@functools.lru_cache(maxsize=1)
def return_large_buffers() -> bool:
    """Make glibc serve allocations of ``LARGE_BUFFER_BYTES`` and more with their own mmap, returned to the
    OS when freed (``mallopt(M_MMAP_THRESHOLD)``; this also stops glibc from raising the threshold after the
    first frees, which is what parks freed activation buffers in per-thread heaps). Process-wide, once; used
    by ONNX Runtime sessions without their arena (``UGATIT_ORT_LOW_MEMORY=1``). False where it does not
    apply (not glibc)."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES))
