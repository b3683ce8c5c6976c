"""Run a generator's ONNX graph with ONNX Runtime: ``translate --backend onnxruntime``.

:class:`OnnxGenerator` is called like :class:`~ugatit_cli.model.Generator`: a ``B x 3 x H x W`` float tensor
in [-1, 1] in, ``(image, cam_logit, heatmap)`` tensors out, so the translate pipeline (decode workers, model
streams, writers, progress, errors) is the same for both backends. The graph comes from

- an ONNX export folder given as MODEL (``ugatit export ... --format onnx``, fp32, ``--half`` or
  ``--quantize int8``): ``config.json`` with an ``onnx`` section and ``generator_<direction>.onnx``;
- any other MODEL: its generator is exported once (``ugatit_cli.export.export_onnx``) into a cache folder
  keyed by a hash of its config and weights (``$XDG_CACHE_HOME/ugatit-cli/onnx/<key>/``, default
  ``~/.cache/ugatit-cli/onnx``) and read from there on every later run.

Session options, measured with ``benchmarks/translate.py`` on a 2-core Xeon: ``ORT_ENABLE_ALL`` graph
optimisations (conv + activation fusion, constant folding of the weight casts of ``--half`` graphs),
sequential execution, no memory pattern (see ``session_options``), and intra-op threads = the pipeline's
threads per model stream (1 on a CPU: several single-threaded streams, as for PyTorch, each calling ``run``
on the shared session, which is thread-safe; with one intra-op thread ONNX Runtime computes on the calling
thread).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .hub import CONFIG_NAME, check_direction
from .model import Generator, UGATITConfig

ONNX_RUNTIME_HINT = 'pip install "ugatit-cli[onnx]"'
#: bump when the exported graph of the same weights changes (exporter settings, graph surgery), so old
#: cache entries are not used
GRAPH_VERSION = 1


def onnx_graph_name(direction: str) -> str:
    return f"generator_{direction}.onnx"


def require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise UserError(f"--backend onnxruntime needs the optional package onnxruntime: {ONNX_RUNTIME_HINT}") from None
    return onnxruntime


def session_options(threads: int = 1) -> Any:
    """CPU session options: all graph optimisations, ``threads`` intra-op threads, no inter-op pool."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    # The memory pattern pre-plans one block per concurrent run; with two model streams it raised the peak RSS
    # by ~250 MB (light ch64, 256 px) for no measurable speed, so buffers come from the arena as needed.
    options.enable_mem_pattern = False
    options.log_severity_level = 3  # errors only: no per-node warnings on stderr
    return options


class OnnxGenerator:
    """An ONNX Runtime session that behaves like a generator for inference.

    ``config`` is the architecture the graph was exported from (for the size rules); ``quantization`` is
    the ``config.json`` description of an int8 graph, or None. Raises UserError when the file is not a
    readable ONNX graph.
    """

    def __init__(self, path: str | os.PathLike, config: UGATITConfig, *, threads: int = 1,
                 quantization: dict[str, Any] | None = None):
        ort = require_onnxruntime()
        self.path = Path(path)
        self.config = config
        self.quantization = quantization
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{self.path}: not a usable ONNX graph ({first})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x``: B x 3 x H x W float32 in [-1, 1]; returns (image B x 3 x H x W, cam_logit B x 2, heatmap
        B x 1 x H/4 x W/4) as CPU tensors, like ``Generator.forward``."""
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        image, cam_logit, heatmap = self.session.run(self.output_names, {self.input_name: array})
        return torch.from_numpy(image), torch.from_numpy(cam_logit), torch.from_numpy(heatmap)

    def eval(self) -> OnnxGenerator:
        return self


# --- ONNX export folders as MODEL ------------------------------------------------------------------------


def is_onnx_folder(path: Path) -> bool:
    """A folder written by ``ugatit export --format onnx``: config.json with an ``onnx`` section and a graph."""
    if not (path.is_dir() and (path / CONFIG_NAME).is_file()):
        return False
    if not any((path / onnx_graph_name(d)).is_file() for d in ("a2b", "b2a")):
        return False
    try:
        return "onnx" in json.loads((path / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class OnnxFolderGraph:
    """One direction's graph of an ONNX export folder and what its config.json says about it."""

    path: Path
    config: UGATITConfig
    quantization: dict[str, Any] | None


def onnx_folder_graph(folder: Path, direction: str) -> OnnxFolderGraph:
    """The graph of ``direction`` in the ONNX export ``folder``; UserError when it is missing or the config
    is unreadable."""
    check_direction(direction)
    try:
        data = json.loads((folder / CONFIG_NAME).read_text())
        config = UGATITConfig.from_dict(data)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{folder}: invalid {CONFIG_NAME} ({exc})") from None
    path = folder / onnx_graph_name(direction)
    if not path.is_file():
        raise UserError(f"{folder}: ONNX export has no {path.name} (direction {direction})")
    quantization = data.get("onnx", {}).get("quantization")
    return OnnxFolderGraph(path, config, quantization)


# --- graphs exported on first use ------------------------------------------------------------------------


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ugatit-cli" / "onnx"


def weights_key(generator: Generator) -> str:
    """A hash of the generator's architecture and every weight (names, shapes, dtypes, bytes)."""
    from .export import ONNX_OPSET

    digest = hashlib.blake2b(digest_size=16)
    facts = {"config": generator.config.to_dict(), "opset": ONNX_OPSET, "graph_version": GRAPH_VERSION}
    digest.update(json.dumps(facts, sort_keys=True).encode())
    for name, tensor in sorted(generator.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def cached_graph_path(generator: Generator, cache_dir: str | os.PathLike | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / weights_key(generator) / "generator.onnx"


def cached_graph(generator: Generator, cache_dir: str | os.PathLike | None = None, *,
                 path: Path | None = None) -> Path:
    """The ONNX graph of ``generator`` from the cache, exported into it first when missing (``path``: the
    :func:`cached_graph_path` already computed, to hash the weights once).

    The export is written under a temporary name and renamed, so a crash leaves no half graph and two
    processes exporting at once (torchrun ranks) both end with a complete file.
    """
    from .export import _require_onnx, export_onnx

    path = path or cached_graph_path(generator, cache_dir)
    if path.is_file():
        return path
    _require_onnx()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{path.parent}: cannot create the ONNX cache folder ({exc.strerror or exc}); "
                        "set XDG_CACHE_HOME to a writable folder") from None
    export_onnx(generator.to("cpu").eval(), path)
    return path
