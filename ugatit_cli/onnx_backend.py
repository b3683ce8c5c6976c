"""Run a model's ONNX graph with ONNX Runtime: ``translate --backend onnxruntime`` (and ``eval --backend``).

:class:`OnnxTranslator` wraps the family's own :class:`~ugatit_cli.families.base.Translator`: inputs are read
and prepared by it (:meth:`Translator.read`), the batch is fed to the graph as the family's
:class:`~ugatit_cli.families.base.OnnxIO` declared its inputs (:meth:`Translator.onnx_feeds`: an image, label
and instance maps, a style code), and the graph's outputs are handed back by name
(:meth:`Translator.onnx_outputs`), so the translate pipeline (decode workers, model streams, writers,
progress, errors) is the same for both backends. The graph comes from

- an ONNX export folder given as MODEL (``ugatit export ... --format onnx``, fp32, ``--half`` or
  ``--quantize int8``): ``config.json`` with ``family`` and an ``onnx`` section, and the family's
  ``onnx_name(key)`` graphs;
- any other MODEL: its network is exported once (:func:`ugatit_cli.export.export_onnx` of
  ``family.onnx_io(model, key)``) into a cache folder keyed by a hash of the family, its config and every
  weight (``$XDG_CACHE_HOME/ugatit-cli/onnx/<key>/``, default ``~/.cache/ugatit-cli/onnx``) and read from
  there on every later run.

Session options, measured with ``benchmarks/translate.py`` on a 2-core Xeon: ``ORT_ENABLE_ALL`` graph
optimisations (conv + activation fusion, constant folding of the weight casts of ``--half`` graphs),
sequential execution, no memory pattern (see :func:`session_options`), and intra-op threads = the pipeline's
threads per model stream (1 on a CPU: several single-threaded streams, as for PyTorch, each calling ``run``
on the shared session, which is thread-safe; with one intra-op thread ONNX Runtime computes on the calling
thread).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .core.files import atomic_file
from .core.hardware import release_memory, return_large_buffers
from .core.images import array_to_pixels, pixels_to_array
from .errors import UserError
from .families.base import Direction, Family, Model, Translator, get_family
from .families.model_folder import CONFIG_NAME, read_config

if TYPE_CHECKING:  # pragma: no cover
    import torch

ONNX_RUNTIME_HINT = 'pip install "ugatit-cli[onnx]"'
#: bump when the exported graph of the same weights changes (exporter settings, graph surgery), so old
#: cache entries are not used
GRAPH_VERSION = 3  # 3: weights in an external data file
#: ONNX tensor element types -> NumPy dtypes of the inputs we feed
_ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
                "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise UserError(f"--backend onnxruntime needs the optional package onnxruntime: {ONNX_RUNTIME_HINT}") from None
    return onnxruntime


def low_memory() -> bool:
    """``UGATIT_ORT_LOW_MEMORY=1``: sessions without ONNX Runtime's CPU arena, large buffers returned to the OS
    (lower peak RSS, slower; see :func:`session_options`)."""
    return os.environ.get("UGATIT_ORT_LOW_MEMORY", "") == "1"


def rewrites_enabled() -> bool:
    """False when ``UGATIT_ORT_REWRITE=0``: float32 graphs then run as exported, without the CPU rewrites of
    :mod:`ugatit_cli.graph_rewrites` (which are faster, with a slightly larger rounding error)."""
    return os.environ.get("UGATIT_ORT_REWRITE", "") != "0"


#: graphs whose file (weights held inside it) is larger than this run as exported: rewriting means parsing and
#: re-serialising them in Python, two passing copies of the weights (e.g. a full 256 px U-GAT-IT exported by
#: ``ugatit export --format onnx``, 1.1 GB); graphs with an external weights file, as the cache keeps them,
#: are rewritten at any size
REWRITE_MAX_INLINE_BYTES = 256 << 20


#: float32 graphs with more bytes of weights than this run without ONNX Runtime's pre-packing of weights: for the
#: full 256 px U-GAT-IT generator it copies the 1.07 GB gamma/beta matrix (a product with one row per image, bound
#: by memory, not arithmetic), which raised the session's peak RSS by 870 MB for no speed (1.07 s per image with
#: it, 0.98 s without; one thread). Small graphs keep it (light ch64: 0.89 s with, 0.95 s without). int8 graphs
#: always keep it: without it their int8 convolutions pack their weights again on every run (full 256 px int8
#: generator, one thread: 0.59 s per image without, 0.42 s with, for 139 MB more peak RSS).
PREPACK_MAX_BYTES = 256 << 20


def external_data_path(path: Path) -> Path:
    """The weights file of a graph saved with external data (:func:`ugatit_cli.export.export_onnx`)."""
    return path.with_name(f"{path.name}.data")


def graph_bytes(path: Path) -> int:
    """Bytes of an ONNX graph file and of its external weights file, if any."""
    data = external_data_path(path)
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def session_options(threads: int = 1, *, prepack: bool = True) -> Any:
    """CPU session options: all graph optimisations, ``threads`` intra-op threads, no inter-op pool;
    ``prepack=False`` leaves the weights unpacked (see :data:`PREPACK_MAX_BYTES`)."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    # The memory pattern pre-plans one block per concurrent run; with two model streams it raised the peak RSS
    # by ~250 MB (light ch64, 256 px) for no measurable speed, so buffers come from the arena as needed.
    options.enable_mem_pattern = False
    # The CPU arena keeps every buffer of every concurrent run for the session's life. Without it, and with
    # large buffers mmapped (core.hardware.return_large_buffers), translate's peak RSS fell from 1.06 GB to
    # 0.84 GB (light ch64, 256 px, two streams; the plain PyTorch loop: 0.71 GB) but it ran ~20% slower, so
    # the arena stays on unless UGATIT_ORT_LOW_MEMORY=1 asks for the smaller footprint.
    options.enable_cpu_mem_arena = not low_memory()
    options.log_severity_level = 4  # fatal only: its errors reach the user as the exception's one line
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    return options


class OnnxSession:
    """An ONNX Runtime CPU session on one graph: named arrays in, named NumPy arrays out. ``quantized``: an int8
    graph (always pre-packed, see :data:`PREPACK_MAX_BYTES`). The graph's float32 convolutions are rewritten for the
    CPU in memory (:func:`ugatit_cli.graph_rewrites.rewrite_for_cpu`; the file is not changed) unless
    ``UGATIT_ORT_REWRITE=0``, ``UGATIT_ORT_LOW_MEMORY=1`` (the Winograd weights take 4x the memory of the
    convolutions' own) or :data:`REWRITE_MAX_INLINE_BYTES`; ``rewritten`` counts the convolutions each rewrite
    changed (empty when none ran).

    Raises UserError when the file is not a readable ONNX graph.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int = 1, quantized: bool = False):
        ort = require_onnxruntime()
        self.path = Path(path)
        if low_memory():
            return_large_buffers()
        try:
            options = session_options(threads, prepack=quantized or graph_bytes(self.path) <= PREPACK_MAX_BYTES)
            rewritten = _rewritten_session(self.path, options) if rewrites_enabled() and not low_memory() else None
            if rewritten is None:
                self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
                self.rewritten: dict[str, int] = {}
            else:
                self.session, self.rewritten = rewritten
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            problem = _external_data_problem(self.path)  # its message names the graph and a C++ source line
            if problem is not None:
                raise UserError(problem) from None
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            first = first if len(first) <= 200 else first[:200] + "..."
            raise UserError(f"{self.path}: not a usable ONNX graph ({first})") from None
        # Building the session (the parsed graph, the optimiser's and the pre-packing's copies of the weights)
        # leaves ~100 MB (light ch64 generator) of freed memory in glibc's free lists, which the arena's later
        # buffers do not reuse: giving it back lowered translate's peak RSS by ~95 MB (benchmarks/translate.py).
        release_memory()
        self.inputs = {i.name: _ONNX_DTYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def input_names(self) -> list[str]:
        return list(self.inputs)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run the graph on ``feeds`` (arrays, or CPU tensors; each cast to the dtype the graph declares for it)."""
        arrays = {name: np.ascontiguousarray(_array(value), dtype=self.inputs.get(name, np.float32))
                  for name, value in feeds.items()}
        results = self.session.run(self.output_names, arrays)
        return dict(zip(self.output_names, results, strict=True))


def _external_data_problem(path: Path) -> str | None:
    """Why the external weights file of the graph ``path`` cannot serve it (missing, or shorter than the
    graph's tensors need: a copy or download cut short), naming that file; None when it can, or when the graph
    keeps its weights inside or cannot be parsed (ONNX Runtime's error then stands)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None
    needed: dict[str, int] = {}
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        facts = {entry.key: entry.value for entry in tensor.external_data}
        try:
            end = int(facts.get("offset", 0)) + int(facts.get("length", 0))
        except ValueError:
            continue
        name = facts.get("location", "")
        needed[name] = max(needed.get(name, 0), end)
    for name, end in needed.items():
        data = path.parent / name
        if not data.is_file():
            return f"{data}: missing (the weights file of {path.name})"
        size = data.stat().st_size
        if size < end:
            return f"{data}: truncated ({size:,} bytes; the weights of {path.name} need {end:,})"
    return None


def _rewritten_session(path: Path, options: Any) -> tuple[Any, dict[str, int]] | None:
    """A session on the graph of ``path`` rewritten for the CPU (weights left in their external file, if any) and
    the counts of :func:`~ugatit_cli.graph_rewrites.rewrite_for_cpu`; None when nothing was rewritten, the file
    is too large to rewrite, or the graph cannot be parsed or its rewrite cannot be run: the session is then
    built from the file as it is (and ONNX Runtime says what is wrong with it, if anything). A rewrite is an
    optimisation; it never makes a usable graph unusable."""
    import onnx

    from .graph_rewrites import rewrite_for_cpu

    ort = require_onnxruntime()
    try:
        if path.stat().st_size > REWRITE_MAX_INLINE_BYTES:
            return None
        model = onnx.load(str(path), load_external_data=False)
        counts = rewrite_for_cpu(model)
        if not any(counts.values()):
            return None
        graph = model.SerializeToString()
        del model
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(path.parent))
        return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"]), counts
    except Exception:  # a file ONNX Runtime cannot read either, or a graph the rewrite does not suit
        return None


def _array(value: Any) -> Any:
    """A tensor's values as an array (detached, on the CPU); anything else as it is."""
    return value.detach().cpu().numpy() if hasattr(value, "detach") else value


def _tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    import torch

    return {name: torch.from_numpy(array) for name, array in arrays.items()}


class _OnSession:
    """A family translator's reading, sizes and outputs, with an ONNX Runtime session for the forward pass;
    ``quantization`` is the ``config.json`` description of an int8 graph, or None."""

    def __init__(self, translator: Translator, session: OnnxSession, quantization: Mapping[str, Any] | None = None):
        self.base = translator
        self.session = session
        self.quantization = dict(quantization) if quantization else None
        self.outputs = translator.outputs

    @property
    def size(self) -> int:
        return self.base.size

    def read(self, source: Path) -> tuple[dict[str, Any], tuple[int, int]]:
        return self.base.read(source)

    def prepare(self, source: Path, pixels: Any) -> dict[str, Any]:
        return self.base.prepare(source, pixels)

    def _outputs(self, results: Mapping[str, Any]) -> dict[str, Any]:
        """The family's :meth:`Translator.onnx_outputs`; its UserError (a graph without the outputs the family
        reads) names the graph file."""
        try:
            return self.base.onnx_outputs(results)
        except UserError as exc:
            raise UserError(f"{self.session.path}: {exc}") from None


class GraphTranslator(_OnSession):
    """The family's graph translator (:meth:`Family.graph_translator`: reading, sizes, feeds and outputs that
    need no network) with an ONNX Runtime session: the whole forward pass in NumPy, so that translating
    with it never imports torch."""

    def render(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """:meth:`forward_arrays`'s outputs as written: images as uint8 pixels (B, H, W, 3) (clamped and rounded
        as for PyTorch's), maps as float32."""
        return {spec.key: array_to_pixels(outputs[spec.key]) if spec.kind == "image"
                else np.asarray(outputs[spec.key], dtype=np.float32) for spec in self.outputs}

    def forward_arrays(self, stacked: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One batch: ``stacked`` is :meth:`read`'s arrays stacked per key (``pixels`` B x H x W x 3 uint8, as
        the graph's image input in [-1, 1]). Returns the graph's outputs per :attr:`outputs` key (images
        B x 3 x H x W in [-1, 1], maps as the graph gives them)."""
        extras = {key: value for key, value in stacked.items() if key != "pixels"}
        x = pixels_to_array(stacked["pixels"]) if "pixels" in stacked else None
        return self._outputs(self.session.run(self.base.onnx_feeds(x, extras, self.session.input_names)))


class OnnxTranslator(_OnSession, Translator):
    """The family's ``translator`` with its forward pass replaced by an ONNX Runtime session.

    Reading, preparing, sizes and outputs are the family translator's; ``forward`` feeds the graph what
    :meth:`Translator.onnx_feeds` gives and returns :meth:`Translator.onnx_outputs`.
    """

    def modules(self) -> Sequence[torch.nn.Module]:
        return []  # nothing for translate to move: the session holds the weights

    def forward(self, x, extras):
        x = None if x is None else x.float()
        feeds = self.base.onnx_feeds(x, extras, self.session.input_names)
        return self._outputs(_tensors(self.session.run(feeds)))


# --- ONNX export folders as MODEL ------------------------------------------------------------------------


@dataclass(frozen=True)
class OnnxExport:
    """An ONNX export folder: its family, config, graphs by network key and what config.json says of them."""

    folder: Path
    family: Family
    config: Any
    graphs: dict[str, Path]
    quantization: dict[str, Any] | None

    def model(self, keys: Sequence[str]) -> Model:
        """A Model whose networks ``keys`` are built on the meta device (no memory): the family's translator
        needs them as objects, the session holds the weights."""
        import torch

        self.check_has(keys)
        with torch.device("meta"):
            nets = {key: self.family.build_net(self.config, key) for key in keys}
        return Model(self.family, self.config, nets | self.companions(keys))

    def check_has(self, keys: Sequence[str]) -> None:
        """UserError naming the graphs of ``keys`` the folder lacks."""
        missing = [key for key in keys if key not in self.graphs]
        if missing:
            names = ", ".join(self.family.onnx_name(k) for k in missing)
            raise UserError(f"{self.folder}: ONNX export has no {names}")

    def companions(self, skip: Sequence[str] = ()) -> dict[str, torch.nn.Module]:
        """The folder's other networks the family's translator or assigner may call (not ``skip``): those
        stored as safetensors beside the graphs (e.g. per-domain codes), loaded; graphs the family wraps as
        modules (:meth:`Family.onnx_net`, e.g. a style encoder), each run by its own session."""
        from .families.model_folder import net_from_state, read_safetensors

        nets: dict[str, torch.nn.Module] = {}
        for key, name in self.family.weight_files(self.config).items():
            if key in skip:
                continue
            if (self.folder / name).is_file():
                path = self.folder / name
                nets[key] = net_from_state(self.family, self.config, key, read_safetensors(path), str(path))
            elif key in self.graphs:
                net = self.family.onnx_net(self.config, key, _LazySession(self.graphs[key]))
                if net is not None:
                    nets[key] = net
        return nets


class _LazySession:
    """Runs a graph with an :class:`OnnxSession` made on the first call (a translate that never needs the
    network, e.g. a style encoder when stored codes suffice, never loads it)."""

    def __init__(self, path: Path):
        self.path = path
        self.session: OnnxSession | None = None
        self._lock = threading.Lock()

    def __call__(self, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with self._lock:
            if self.session is None:
                self.session = OnnxSession(self.path)
        return _tensors(self.session.run(feeds))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def onnx_export_family(path: Path) -> Family | None:
    """The family of an ONNX export folder (``config.json`` with an ``onnx`` section, none named: the default
    family, and at least one of the family's graphs), or None when ``path`` is not one. Never raises for a folder
    that is not an export; UserError for an unknown family."""
    if not path.is_dir() or not (path / CONFIG_NAME).is_file():
        return None
    data = _read_json(path / CONFIG_NAME)
    if data is None or "onnx" not in data or data.get("format") is not None:
        return None
    family = get_family(data.get("family"))
    names = {family.onnx_name(key) for key in family.weight_files(None)}
    return family if any((path / name).is_file() for name in names) else None


def read_onnx_export(folder: Path) -> OnnxExport:
    """The ONNX export in ``folder`` (see :func:`onnx_export_family`); UserError for an invalid config.json."""
    data = _read_json(folder / CONFIG_NAME)
    if data is None:
        raise UserError(f"{folder}: unreadable {CONFIG_NAME}")
    family, config, _ = read_config(data, str(folder))
    graphs = {key: folder / family.onnx_name(key) for key in family.weight_files(None)
              if (folder / family.onnx_name(key)).is_file()}
    quantization = data.get("onnx", {}).get("quantization") if isinstance(data.get("onnx"), dict) else None
    return OnnxExport(folder, family, config, graphs, quantization)


# --- graphs exported on first use ------------------------------------------------------------------------


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ugatit-cli" / "onnx"


def weights_key(model: Model, key: str) -> str:
    """A hash of the family, the architecture, the export settings and every weight of network ``key``
    (names, shapes, dtypes, bytes)."""
    from .export import ONNX_OPSET

    digest = hashlib.blake2b(digest_size=16)
    facts = {"family": model.family.name, "key": key, "config": model.config.to_dict(), "opset": ONNX_OPSET,
             "graph_version": GRAPH_VERSION}
    digest.update(json.dumps(facts, sort_keys=True, default=str).encode())
    import torch

    for name, tensor in sorted(model.nets[key].state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        if tensor.numel():  # the tensor's own bytes, not a copy (a full generator holds a 1 GB matrix)
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def cached_graph_path(model: Model, key: str, cache_dir: str | os.PathLike | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / weights_key(model, key) / model.family.onnx_name(key)


def discard_cached_graph(path: Path) -> None:
    """Remove a cache entry (the graph and its weights file), e.g. one ONNX Runtime cannot load."""
    path.unlink(missing_ok=True)
    external_data_path(path).unlink(missing_ok=True)


def cached_graph(model: Model, key: str, cache_dir: str | os.PathLike | None = None, *,
                 path: Path | None = None) -> Path:
    """The ONNX graph of network ``key`` of ``model`` from the cache, exported into it first when missing
    (``path``: the :func:`cached_graph_path` already computed, to hash the weights once).

    The graph and its weights (an external data file, which ONNX Runtime maps instead of parsing) are written
    under temporary names and renamed, weights first, so a crash leaves no half graph and two processes
    exporting at once (torchrun ranks) both end with complete files.
    """
    from .export import _require_onnx, export_onnx

    path = path or cached_graph_path(model, key, cache_dir)
    if path.is_file() and external_data_path(path).is_file():
        return path
    _require_onnx()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{path.parent}: cannot create the ONNX cache folder ({exc.strerror or exc}); "
                        "set XDG_CACHE_HOME to a writable folder") from None
    on_cpu = model.with_(nets={k: net.to("cpu").eval() for k, net in model.nets.items()})
    export_onnx(model.family.onnx_io(on_cpu, key), path, external_data=True)  # weights mapped, not parsed
    return path


# --- graphs found without loading the weights (translate then never imports torch) -----------------------

#: the cache's index of model folders whose graphs it holds, by the files' status (``<cache>/sources/``)
SOURCES_FOLDER = "sources"


@dataclass(frozen=True)
class FolderFiles:
    """A model folder's ``config.json`` and the weights file of one network (local, or in the Hub cache)."""

    config: Path
    weights: Path

    def signature(self) -> dict[str, list[int]]:
        """What identifies the files' contents without reading them: device, inode, size and the modification and
        status-change times in ns of each (the status-change time cannot be set back: a file replaced by another,
        even with the same size and modification time, changes it)."""
        def facts(path: Path) -> list[int]:
            st = path.stat()
            return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]

        return {"config": facts(self.config), "weights": facts(self.weights)}


def _index_entry(files: FolderFiles, key: str, cache_dir: str | os.PathLike | None) -> Path:
    where = f"{files.config.resolve()}|{files.weights.resolve()}|{key}"
    name = hashlib.blake2b(where.encode(), digest_size=16).hexdigest()
    return Path(cache_dir or default_cache_dir()) / SOURCES_FOLDER / f"{name}.json"


def remember_graph(files: FolderFiles, key: str, graph: Path, cache_dir: str | os.PathLike | None = None) -> None:
    """Record in the cache that ``graph`` (a cache entry of :func:`cached_graph`) is the graph of network ``key``
    of the model folder whose files are ``files``, so that a later run finds it by :func:`indexed_graph` without
    loading and hashing the weights. Best effort: a cache that cannot be written only costs that later run the
    load."""
    root = Path(cache_dir or default_cache_dir())
    entry = {"graph_version": GRAPH_VERSION, "graph": graph.relative_to(root).as_posix(), **files.signature()}
    path = _index_entry(files, key, root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            Path(tmp).write_text(json.dumps(entry), encoding="utf-8")
    except OSError:
        pass


def indexed_graph(files: FolderFiles, key: str, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The cached graph :func:`remember_graph` recorded for these files, when they are unchanged since and the
    graph and its weights are still there; None otherwise."""
    root = Path(cache_dir or default_cache_dir())
    entry = _read_json(_index_entry(files, key, root))
    try:
        if entry is None or entry.get("graph_version") != GRAPH_VERSION:
            return None
        if {k: entry.get(k) for k in ("config", "weights")} != files.signature():
            return None
    except OSError:
        return None
    relative = entry.get("graph")
    if not isinstance(relative, str) or Path(relative).is_absolute() or ".." in Path(relative).parts:
        return None
    graph = root / relative
    return graph if graph.is_file() and external_data_path(graph).is_file() else None


@dataclass(frozen=True)
class StoredGraph:
    """What translating MODEL with ONNX Runtime needs when it can be had without loading weights: the family,
    its config, the direction's network key and graph, and ``quantization`` (an int8 export's, else None)."""

    family: Family
    config: Any
    key: str
    graph: Path
    quantization: dict[str, Any] | None = None
    cached: bool = False  # a cache entry (ours to remove when damaged), not an export folder's graph


@dataclass(frozen=True)
class GraphSearch:
    """:func:`find_graph`'s answer: the graph when one is at hand (``found``), and a model folder's files (for
    :func:`remember_graph` once a run has exported its graph), each None when there is none."""

    found: StoredGraph | None = None
    files: FolderFiles | None = None


def find_graph(source: str, direction: str | None, revision: str | None = None) -> GraphSearch:
    """The ONNX graph that translates ``direction`` (None: the family's default) with MODEL ``source``, found
    without importing torch: an ONNX export folder's own graph, or, for a local model folder, a Hub repo id or
    a registered name whose weights are on this machine already (:attr:`RegisteredModel.local_folder`), the
    graph an earlier run exported into the cache (:func:`indexed_graph`; a Hub repo's files come from
    huggingface_hub's cache, or are downloaded as loading them would). Sources it cannot read that way
    (training runs, official checkpoints, damaged folders) give an empty answer, and loading the model
    reports what is wrong with them. UserError for a direction the family does not have, or a Hub
    repo that cannot be reached."""
    from huggingface_hub import hf_hub_download

    from .families.model_folder import folder_family, hub_errors, hub_reachable, is_hub_repo_id
    from .store.registry import registered_models

    named = registered_models().get(source)
    if named is not None:  # a pretrained model: its folder of converted weights, once a run made it
        key = _checked_key(get_family(named.family), direction)
        folder = named.local_folder(key, revision) if named.local_folder else None
        if folder is None:
            return GraphSearch()
        source = str(folder)
    path = Path(source).expanduser()
    export = onnx_export_family(path)
    if export is not None:
        found = read_onnx_export(path)
        key = _checked_key(found.family, direction)
        found.check_has((key,))
        return GraphSearch(StoredGraph(found.family, found.config, key, found.graphs[key], found.quantization))
    local = path.exists()
    if local and folder_family(path) is None:
        return GraphSearch()
    if not local and not is_hub_repo_id(source):
        return GraphSearch()  # loading it says what it is

    def file(name: str) -> Path:
        if local:
            return path / name
        with hub_errors(source, revision):  # downloaded as loading would (the cache only when offline)
            return Path(hf_hub_download(repo_id=source, filename=name, revision=revision,
                                        local_files_only=not hub_reachable()))

    config_path = file(CONFIG_NAME)
    data = _read_json(config_path)
    try:
        family, config, _ = read_config(data, source) if data is not None else (None, None, None)
    except UserError:
        family = None
    if family is None:
        return GraphSearch()  # loading it says what is wrong
    key = _checked_key(family, direction)
    name = family.weight_files(config).get(key)
    weights = file(name) if name is not None else None
    if weights is None or not weights.is_file():
        return GraphSearch()
    files = FolderFiles(config_path, weights)
    graph = indexed_graph(files, key)
    return GraphSearch(StoredGraph(family, config, key, graph, cached=True) if graph else None, files)


def _checked_key(family: Family, direction: str | None) -> str:
    """:func:`network_key` of a user's ``--direction``, checked as everywhere (:meth:`Direction.parse`)."""
    return network_key(family, None if direction is None else Direction.parse(direction, family)[0].name)


def network_key(family: Family, direction: str | None) -> str:
    """The network that translates ``direction`` (families without directions: their first network)."""
    return family.keys_for(None if direction is None else (direction,))[0]
