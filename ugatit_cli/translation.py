"""Translate image files with a model of any family: ``ugatit translate`` and :func:`translate`.

The family hands a :class:`~ugatit_cli.families.base.Translator` (input size, per-input preparation, forward
pass) and the files to write per input (:class:`~ugatit_cli.families.base.OutputSpec`). The work is a
three-stage pipeline. A few worker threads decode and resize the next images (Pillow releases the GIL while
it does) while the main thread runs the model on the current batch; the same workers resize, colour-map and
PNG-encode the results. Each output is written under a temporary name and renamed,
so an interrupted run never leaves a half-written file, and a bad input is reported and skipped without
stopping the others. Preprocessing is the official test transform (RGB, bilinear resize to size x size,
[-1, 1]); postprocessing clamps and rounds to 8 bits.

A call that can run a stored ONNX graph with ONNX Runtime on the CPU (an ONNX export folder, or a model folder
whose graph an earlier run cached, with a family whose :meth:`~ugatit_cli.families.base.Family.graph_translator`
needs no network) never imports torch: it is ~500 MB of the process's memory with a CUDA build of PyTorch.
Everything else imports it when the model is loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .core.faces import DEFAULT_FACE_SCALE, DEFAULT_MIN_FACE
from .core.files import mark_output_folder
from .core.hardware import (
    SlowPrecisionWarning,
    auto_backend,
    auto_precision,
    bf16_note,
    cpu_threads,
    onnxruntime_available,
    release_memory,
    surely_cpu_only,
)
from .core.images import (
    BadImageError,
    InputImage,
    collect_images,
    is_image_name,
    jet_image,
    pixels_to_tensor,
    save_image_atomic,
    tensor_to_pixels,
)
from .core.progress import count_progress, progress_disabled
from .core.safety import remove_stale_temporaries
from .core.sharding import Shard, device_for_shard, shard_from_env
from .errors import UserError
from .families.base import Direction, Family, Model, OutputSpec, Translator, families
from .media import (
    FaceOptions,
    VideoOptions,
    check_extras,
    split_videos,
    translate_face_images,
    translate_videos,
    translator_batches,
)
from .onnx_backend import (
    FolderFiles,
    GraphTranslator,
    OnnxSession,
    OnnxTranslator,
    StoredGraph,
    cached_graph,
    cached_graph_path,
    discard_cached_graph,
    find_graph,
    network_key,
    onnx_export_family,
    read_onnx_export,
    remember_graph,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Images per forward pass on GPUs when none is given (GPUs want batches).
ACCELERATOR_BATCH_SIZE = 8
#: Model streams on a CPU: each runs whole images, one per forward pass, with its share of the threads. Two
#: single-threaded streams beat one two-threaded forward by ~15-20% (no barrier per op, one core's cache per
#: image) and degrade far less when other processes take a core. A CPU gains nothing from batches, so a
#: ``batch_size`` above 1 does not change how the model runs there: on a 2-core Xeon a light 256 px model in
#: PyTorch ran at 1.9 img/s at batch 1, 1.7 at 4 and 1.3 at 8 (activations fall out of the cache), and the full
#: 256 px ch64 generator with onnxruntime (model alone, 2 threads) at 2.34 img/s and 1.58 GB peak RSS one image
#: per stream, 2.07 img/s and 1.44 GB one image in one 2-thread stream, 1.88 img/s and 1.93 GB batch 4 in one
#: stream, 2.32 img/s and 2.55 GB batch 4 per stream.
MAX_CPU_STREAMS = 4
BACKENDS = ("auto", "torch", "onnxruntime")
#: ``--backend auto`` exports a model to ONNX on a CPU only when there are at least this many images to
#: translate (or its graph is cached already): the one-time export (~35 s for a 256 px ch64 generator
#: of ~10 M parameters, ~70 s for one of ~279 M, on a busy 2-core Xeon) then costs less than what onnxruntime saves
#: (~0.3 s per image there).
AUTO_ONNX_MIN_IMAGES = 100
EXISTS_REASON = "output exists (pass --overwrite to replace it)"
INSIDE_OUTPUT_REASON = "inside the output folder (earlier results are not inputs)"
RESULTS_FOLDER_REASON = "a folder of earlier ugatit results (name it to read it)"
NONFINITE_REASON = ("the model produced NaN or infinite values (nothing written): a diverged model, or an "
                    "overflow in reduced precision (try --precision fp32)")


@dataclass(frozen=True)
class Translated:
    """An input and the files written for it: ``output`` (the image) and ``extras``, the family's other
    outputs by key (its ``OutputSpec``s, e.g. an attention map), also readable as attributes."""

    source: Path
    output: Path
    extras: dict[str, Path] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Path:
        extras = self.__dict__.get("extras") or {}
        if name in extras:
            return extras[name]
        raise AttributeError(name)


@dataclass(frozen=True)
class Skipped:
    """An input whose outputs all exist already."""

    source: Path
    output: Path
    reason: str = EXISTS_REASON


@dataclass(frozen=True)
class Failed:
    """An input (file, folder or pattern) that produced nothing, and why."""

    source: str
    reason: str


@dataclass
class TranslationReport:
    """What :func:`translate` did. ``seconds`` is the whole call, ``translate_seconds`` the part after the
    model was loaded (the images/s figure is over that part)."""

    output_dir: Path
    done: list[Translated] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    seconds: float = 0.0
    translate_seconds: float = 0.0
    backend: str = ""  # "torch" or "onnxruntime": what ran (empty when nothing had to be translated)
    precision: str = ""  # "fp32", "bf16", "fp16" (what "auto" chose), or "int8" for a quantized graph
    shard: Shard = field(default_factory=Shard)
    model: str | None = None  # what was loaded, when the source can say (a run's checkpoint, EMA or raw)

    @property
    def images_per_second(self) -> float:
        return len(self.done) / self.translate_seconds if self.translate_seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """The CLI's exit status: 0 when everything was done or skipped, 1 when some input failed."""
        return 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": str(self.output_dir),
            "model": self.model,
            "counts": {"done": len(self.done), "skipped": len(self.skipped), "failed": len(self.failed)},
            "seconds": round(self.seconds, 3),  # the whole call, model loading included
            "translate_seconds": round(self.translate_seconds, 3),  # after the model was loaded
            "images_per_second": round(self.images_per_second, 3),  # done / translate_seconds
            "done": [{"input": str(t.source), "output": str(t.output),
                      **{key: str(path) for key, path in t.extras.items()}} for t in self.done],
            "skipped": [{"input": str(s.source), "output": str(s.output), "reason": s.reason} for s in self.skipped],
            "failed": [{"input": f.source, "reason": f.reason} for f in self.failed],
            "backend": self.backend or None,  # both null when nothing had to be translated
            "precision": (self.precision or None) if self.backend else None,
            "shard": self.shard.to_dict(),
        }


@dataclass(frozen=True)
class _Plan:
    """How the model runs: where, in which precision and layout, how many images per pass, in how many
    parallel streams of how many threads each. ``device`` None: a stored ONNX graph on the CPU (no torch)."""

    device: torch.device | None
    dtype: torch.dtype | None
    memory_format: Any  # a torch.memory_format; None without torch
    batch_size: int
    streams: int
    threads_per_stream: int

    @classmethod
    def for_device(cls, device: torch.device, dtype: torch.dtype | None, batch_size: int | None) -> _Plan:
        import torch

        cpu = device.type == "cpu"
        # channels_last is the fast layout of oneDNN's bf16 convolutions and of cuDNN; for fp32 on a CPU
        # the encoder's instance norms convert it back and forth, which costs ~8%.
        memory_format = torch.contiguous_format if cpu and dtype is None else torch.channels_last
        if not cpu:
            return cls(device, dtype, memory_format, batch_size or ACCELERATOR_BATCH_SIZE, 1, 0)
        return cls._on_cpu(device, dtype, memory_format, torch.get_num_threads())

    @classmethod
    def for_graph(cls) -> _Plan:
        """A stored graph with ONNX Runtime: the CPU's threads (:func:`~ugatit_cli.core.hardware.cpu_threads`)."""
        return cls._on_cpu(None, None, None, cpu_threads())

    @classmethod
    def _on_cpu(cls, device: Any, dtype: Any, memory_format: Any, threads: int) -> _Plan:
        """One image per forward pass whatever the batch size asked, in parallel streams (:data:`MAX_CPU_STREAMS`)."""
        streams = max(1, min(threads, MAX_CPU_STREAMS))
        return cls(device, dtype, memory_format, 1, streams, max(1, threads // streams))


@dataclass(frozen=True)
class _Job:
    """One input to translate: each output's spec, path, and whether to write it (False for an output that
    exists and must be kept). The first output is the image."""

    source: Path
    outputs: tuple[tuple[OutputSpec, Path, bool], ...]

    @property
    def output(self) -> Path:
        return self.outputs[0][1]


@dataclass(frozen=True)
class _Decoded:
    job: _Job
    arrays: dict[str, np.ndarray]  # Translator.read's: "pixels" (H, W, 3) uint8 and the family's extras
    original_size: tuple[int, int]  # (width, height) after EXIF orientation

    def shapes(self) -> tuple:
        return tuple((key, value.shape) for key, value in self.arrays.items())


def translate(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    model: str | os.PathLike | Model | torch.nn.Module,
    *,
    output: str | os.PathLike = "translated",
    direction: str | None = None,
    size: int | None = None,
    keep_size: bool = False,
    batch_size: int | None = None,
    device: str | torch.device | None = "auto",
    precision: str = "fp32",
    overwrite: bool = False,
    revision: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    faces: str | None = None,
    face_scale: float = DEFAULT_FACE_SCALE,
    min_face: int = DEFAULT_MIN_FACE,
    crf: int | None = None,
    codec: str | None = None,
    blend: float = 0.0,
    backend: str = "auto",
    compile: bool = False,
    shard: Shard | None = None,
    max_pixels: int | None = None,
    **options: Any,
) -> TranslationReport:
    """Translate image files, folders (recursively) and glob patterns into one PNG each under ``output``.

    ``model`` is a MODEL source (registered name, Hub repo id, model folder or checkpoint; loaded only when
    there is something to translate), a loaded :class:`~ugatit_cli.families.base.Model`, or one network with a
    ``config`` of a family's config class (a generator), used as is for ``direction``
    (``revision`` then does not apply): the networks are put in eval mode and the memory format that is
    fastest for the device and precision and, unless ``device`` is None, moved to ``device``, in place.
    ``direction`` is one of the family's directions (default its first; families with one way take none).
    ``size`` defaults to the model's training size; the family's config says which others work.
    ``keep_size`` scales each result back to its input's size. ``options`` are the family's translate
    options (``Family.translate_options``, e.g. a flag that also writes an extra output).
    Existing outputs are kept and counted as skipped unless ``overwrite``.
    ``batch_size``: images per forward pass on a GPU (default 8); a CPU runs one image per pass in parallel
    streams whatever it says (faster and smaller there, see :data:`MAX_CPU_STREAMS`). ``workers`` is the number of
    decode/encode threads; ``progress`` shows a Rich bar on stderr.

    Video files (and the videos in folders) become ``RELATIVE.mp4`` at the clip's size
    (:mod:`ugatit_cli.core.video`: H.264 at ``crf``, or ``codec``; frame rate, timestamps and audio kept;
    ``blend`` mixes that share of the previous output frame into each, against flicker).
    ``faces`` (``"composite"`` or ``"crops"``) translates the
    faces of each photo and frame (:mod:`ugatit_cli.core.faces`: ``face_scale`` times the detector's box,
    faces narrower than ``min_face`` pixels ignored) instead of the whole picture; a photo without a face is
    skipped with "no face found".

    ``precision`` is ``fp32``, ``bf16``, ``fp16`` (GPUs) or ``auto`` (bf16 on GPUs that support it and on
    CPUs with AMX, else fp32); bf16 on a CPU without AMX runs with a one-line
    :class:`~ugatit_cli.core.hardware.SlowPrecisionWarning`. ``backend`` is ``torch``, ``onnxruntime`` (CPU,
    fp32: the family's ONNX graph, exported once into a cache, see :mod:`ugatit_cli.onnx_backend`; an ONNX
    export folder as ``model``, int8 included, always runs this way) or ``auto``: for a MODEL source,
    onnxruntime for fp32 on a CPU when it is installed and the graph is cached or there are at least
    ``AUTO_ONNX_MIN_IMAGES`` images, PyTorch otherwise; a loaded Model or network runs with PyTorch.
    ``compile`` runs the PyTorch networks through ``torch.compile``. ``shard`` (default: from torchrun's
    ``RANK``/``WORLD_SIZE``) translates only this process's round-robin share of the sorted inputs
    (:mod:`ugatit_cli.core.sharding`). ``report.backend`` and ``report.precision`` say what ran.

    ``max_pixels`` raises (or lowers) Pillow's decompression-bomb limit (89,478,485 pixels) for this call,
    e.g. for 100 MP camera files.

    Outputs follow one rule whatever the other inputs are (``output_relative``). Inputs inside ``output``
    fail by name (a folder) or are counted as skipped (earlier results found in a folder). ``output`` is
    marked as a folder of results (:data:`~ugatit_cli.core.files.OUTPUT_MARK`): any later command reading a
    folder above it recursively leaves it out; translate counts each such folder as skipped. SIGTERM
    interrupts like Ctrl-C (KeyboardInterrupt; writes in flight finish or remove their temporary), and
    temporaries a killed run left in the output folders are removed. Results with NaN/inf values fail
    instead of being written as black pictures.

    Bad inputs are listed in ``report.failed`` with their reason and never stop the others; problems with
    the call itself (unknown device, bad size, model not found) raise :class:`~ugatit_cli.errors.UserError`.
    """
    if max_pixels is not None:  # Pillow's limit is global: set for this call, then put back
        if max_pixels < 1:
            raise UserError(f"--max-pixels must be at least 1, got {max_pixels}")
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            return translate(inputs, model, output=output, direction=direction, size=size, keep_size=keep_size,
                             batch_size=batch_size, device=device, precision=precision, overwrite=overwrite,
                             revision=revision, workers=workers, progress=progress, faces=faces,
                             face_scale=face_scale, min_face=min_face, crf=crf, codec=codec, blend=blend,
                             backend=backend, compile=compile, shard=shard, **options)
        finally:
            Image.MAX_IMAGE_PIXELS = previous
    start = time.perf_counter()
    sources = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not sources:
        raise UserError("no input given: name image files, folders or glob patterns")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    if workers is not None and workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; use {', '.join(BACKENDS)}")
    shard = shard_from_env() if shard is None else shard
    stored, graph, files = None, None, None  # a graph to run without torch, its family's translator for it, and
    # a model folder's files (to index its graph once exported)
    if isinstance(model, (str, os.PathLike)) and _graph_may_run(device, precision, backend, compile):
        with contextlib.nullcontext() if progress else progress_disabled():  # a Hub download's bar
            search = find_graph(str(model), direction, revision)
        files = search.files
        if search.found is not None and not (search.found.cached and precision == "auto"):
            # (a model folder with auto may mean bf16 with PyTorch on AMX, which torch's setup decides)
            graph = _graph_base(search.found, direction, size, options)
            stored = search.found if graph is not None else None
    if stored is not None:
        precision = "fp32"  # what "auto" means for a graph (an int8 one says so below)
        target, dtype, onnx_family, family = None, None, None, stored.family
        workers = _default_workers(None, shard) if workers is None else workers
    else:
        target, dtype, precision, model, onnx_family, family = _torch_setup(model, direction, device, precision,
                                                                            backend, compile, shard)
        workers = _default_workers(target, shard) if workers is None else workers
    output_dir = Path(output)
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"{output_dir}: output exists and is not a folder")
    if family is not None:
        direction = _direction(family, direction)
        options = family.check_options(options)

    face_options = FaceOptions(faces, face_scale, min_face) if faces else None
    video_options = VideoOptions(crf, codec, blend=blend)

    report = TranslationReport(output_dir, precision=precision, shard=shard)
    out = output_dir.resolve()
    inside = [src for src in sources if Path(src).exists() and Path(src).resolve().is_relative_to(out)]
    if shard.is_main:  # every rank finds the same bad arguments; one of them names them
        report.failed += [Failed(str(src), f"is inside the output folder {output_dir}: its images would be read "
                                           "back as inputs; choose another --output") for src in inside]
    sources, videos = split_videos([src for src in sources if src not in inside])
    left_out: list[Path] = []
    images, problems = collect_images(sources, stable_layout=True, left_out=left_out) if sources else ([], [])
    if shard.is_main:
        report.failed += [Failed(p.path, p.reason) for p in problems]
        report.skipped += [Skipped(folder, folder, RESULTS_FOLDER_REASON) for folder in left_out]
    images, videos = _outside(images, output_dir, report), _outside(videos, output_dir, report)
    videos = _mine(videos, shard)
    face_images, images = (_mine(images, shard), []) if face_options else ([], images)
    check_extras(face_options, videos, video_options)
    if (images or face_images or videos) and family is None:  # a Hub repo: its config.json says the family
        with contextlib.nullcontext() if progress else progress_disabled():  # also a first download's bar
            model = _load(model, None, revision)
        family = model.family
        direction = _direction(family, direction)
        options = family.check_options(options)
    jobs = _name_outputs(images, output_dir, family.outputs(options) if family else (), overwrite, report, shard)
    if jobs or face_images or videos:
        count = len(jobs) + len(face_images) + len(videos)
        if stored is not None:
            plan = _Plan.for_graph()
            translator = _graph_translator(stored, graph, plan)
        else:
            plan = _Plan.for_device(target, dtype, batch_size)
            with contextlib.nullcontext() if progress else progress_disabled():  # also a first download's bar
                if onnx_family is not None:
                    translator = _onnx_export_translator(Path(str(model)).expanduser(), direction, size, options,
                                                         plan)
                else:
                    owned = not isinstance(model, Model)  # loaded here: its weights may go for a session's
                    loaded_model = _load(model, direction, revision)
                    report.model = loaded_model.card.get("loaded")  # which checkpoint, EMA or not (training runs)
                    translator = _prepare_translator(loaded_model, direction, size, options, plan, backend, compile,
                                                     owned, count, progress, files)
                    del loaded_model  # an onnxruntime session holds its own weights
        onnx = isinstance(translator, (OnnxTranslator, GraphTranslator))
        report.backend = "onnxruntime" if onnx else "torch"
        if onnx and translator.quantization:
            report.precision = translator.quantization.get("dtype", "int8")
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{output_dir}: cannot create the output folder ({exc.strerror or exc})") from None
        mark_output_folder(output_dir, "translate")
        folders = {output_dir} | {path.parent for job in jobs for _, path, _ in job.outputs}
        folders |= {output_dir / image.relative.parent for image in [*face_images, *videos]}
        for folder in folders:
            remove_stale_temporaries(folder)  # what a run killed by an uncatchable signal left (pid gone)
        loaded = time.perf_counter()
        with _terminate_as_interrupt():
            if jobs:
                _run(jobs, translator, plan, keep_size, workers, progress, report)
            if face_images or videos:
                _faces_and_videos(face_images, videos, translator, plan, output_dir, face_options, video_options,
                                  overwrite=overwrite, progress=progress, report=report)
        report.translate_seconds = time.perf_counter() - loaded
    report.seconds = time.perf_counter() - start
    return report


def _graph_may_run(device: Any, precision: str, backend: str, compile: bool) -> bool:
    """Whether a stored ONNX graph could run this call without torch: fp32 (or auto) on the CPU (``cpu``, or
    ``auto`` on a machine where PyTorch would surely pick it), backend onnxruntime or auto (unless
    ``UGATIT_BACKEND=torch``), onnxruntime installed, no ``--compile``."""
    on_cpu = device == "cpu" or (device == "auto" and surely_cpu_only())
    wanted = backend == "onnxruntime" or (backend == "auto" and auto_backend("cpu", "fp32") == "onnxruntime")
    return on_cpu and wanted and precision in ("fp32", "auto") and not compile and onnxruntime_available()


def _graph_base(found: StoredGraph, direction: str | None, size: int | None,
                options: dict[str, Any]) -> Translator | None:
    """The family's translator for ``found`` without networks (:meth:`Family.graph_translator`), or None."""
    family = found.family
    return family.graph_translator(found.config, _direction(family, direction), size, family.check_options(options))


def _graph_translator(stored: StoredGraph, base: Translator, plan: _Plan) -> GraphTranslator:
    """A stored graph in an ONNX Runtime session with its family's graph translator ``base``."""
    threads = plan.threads_per_stream
    session = (_cached_session(stored.graph, threads) if stored.cached  # the cache holds fp32 graphs only
               else OnnxSession(stored.graph, threads=threads, quantized=stored.quantization is not None))
    if not base.can_feed_onnx(session.input_names):
        raise UserError(f"{stored.graph}: its inputs {', '.join(session.input_names)} cannot be fed with these "
                        "options")
    return GraphTranslator(base, session, stored.quantization)


def _cached_session(path: Path, threads: int) -> OnnxSession:
    """A session on a graph of the ONNX cache. A damaged entry must not fail every later run: it is removed
    (ours to remove) with the one-line error, so the next run exports it anew."""
    try:
        return OnnxSession(path, threads=threads)
    except UserError as exc:
        discard_cached_graph(path)
        raise UserError(f"{exc}; the cached graph is removed, so the next run exports it anew") from None


def _torch_setup(model: Any, direction: str | None, device: Any, precision: str, backend: str, compile: bool,
                 shard: Shard) -> tuple[torch.device, torch.dtype | None, str, Any, Family | None, Family | None]:
    """The device, autocast dtype, precision (``auto`` resolved), model (a network made a Model), ONNX export
    family (or None) and family (or None: a Hub repo, whose config says it when loaded) of a call that runs with
    torch loaded."""
    import torch

    from .core.devices import check_precision, select_device
    from .store.sources import peek_family

    if isinstance(model, torch.nn.Module):
        model = _model_of_net(model, direction)
    onnx_family = None if isinstance(model, Model) else onnx_export_family(Path(str(model)).expanduser())
    if device is None:
        target = next(next(iter(model.nets.values())).parameters()).device if isinstance(model, Model) \
            else select_device("auto")
    else:
        target = select_device(device_for_shard(device, shard)) if isinstance(device, str) else torch.device(device)
    if precision == "auto":  # a graph computes in float32 (or the int8 it was exported in)
        precision = "fp32" if onnx_family is not None or backend == "onnxruntime" else auto_precision(target)
    dtype = check_precision(precision, target)
    if precision == "bf16" and (note := bf16_note(target)):
        warnings.warn(note, SlowPrecisionWarning, stacklevel=3)
    if onnx_family is not None or backend == "onnxruntime":
        _check_onnxruntime_settings(target, precision, compile, onnx_family is not None, backend)
    family = model.family if isinstance(model, Model) else onnx_family or peek_family(model)
    return target, dtype, precision, model, onnx_family, family


def _faces_and_videos(face_images: list[InputImage], videos: list[InputImage], translator: Translator, plan: _Plan,
                      output_dir: Path, face_options: FaceOptions | None, video_options: VideoOptions, *,
                      overwrite: bool, progress: bool, report: TranslationReport) -> None:
    """Photos with ``--faces`` and video clips, through :mod:`ugatit_cli.media`; results go to ``report``.
    Clips keep their size, and their frames go through the model ``plan.batch_size`` at a time."""
    batches = translator_batches(translator, device=plan.device, dtype=plan.dtype, memory_format=plan.memory_format)
    callbacks = {
        "done": lambda d: report.done.append(Translated(d.source, d.output, d.extras)),
        "skipped": lambda source, out, reason: report.skipped.append(Skipped(source, out, reason)),
        "failed": lambda source, reason: report.failed.append(Failed(source, reason)),
    }
    if face_images:
        extras = [(spec.key, spec.suffix) for spec in translator.outputs[1:]]
        translate_face_images(face_images, output_dir, batches, face_options, extras=extras, overwrite=overwrite,
                              progress=progress, **callbacks)
    if videos:
        options = dataclasses.replace(video_options, batch_size=video_options.batch_size or plan.batch_size)
        translate_videos(videos, output_dir, batches, options, face_options, keep_size=True,
                         overwrite=overwrite, progress=progress, **callbacks)


#: seconds between the pipeline's checks for a deferred Ctrl-C or SIGTERM
INTERRUPT_POLL_S = 0.1


@contextlib.contextmanager
def _deferred_interrupts(interrupted: threading.Event) -> Iterator[None]:
    """While the image pipeline runs, SIGINT (Ctrl-C) and SIGTERM set ``interrupted`` and the main thread raises
    KeyboardInterrupt at its next wait instead of wherever the signal lands: raised between a Future's lock
    being taken and its ``with`` block being entered, the exception leaves that lock held, and shutting the
    pools down then waited forever (seen once in ~20 Ctrl-Cs). A signal that comes as the last wait returns is
    raised on the way out."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def defer(signum, frame):
        interrupted.set()

    previous = {sig: signal.signal(sig, defer) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if interrupted.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a container stop) raises KeyboardInterrupt like Ctrl-C, so the writes in flight
    finish or remove their temporary files instead of the process vanishing mid-write."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _default_workers(device: torch.device | None = None, shard: Shard | None = None) -> int:
    """Enough threads to keep decoding ahead of a GPU, few enough not to crowd a CPU the model is using.

    On a CPU at most 8 (the model streams need the cores). On a GPU, decoding and resizing photos with
    Pillow on the CPU is what limits the rate (not measured here: no GPU was available), so up to 32
    threads, the machine's CPUs shared among the torchrun processes of this node (one per GPU).
    """
    cpus = os.cpu_count() or 1
    if device is not None and device.type == "cuda":
        local = os.environ.get("LOCAL_WORLD_SIZE", "1")
        per_node = max(1, int(local)) if shard and shard.world_size > 1 and local.isdigit() else 1
        return max(1, min(32, cpus // per_node))
    return max(1, min(8, cpus))


def _mine(items: list[InputImage], shard: Shard) -> list[InputImage]:
    """This rank's round-robin share of ``items`` sorted by path (all of them outside torchrun)."""
    if shard.world_size == 1:
        return items
    return shard.take(sorted(items, key=lambda item: str(item.path)))


def _check_onnxruntime_settings(device: torch.device, precision: str, compile: bool, onnx_model: bool,
                                backend: str) -> None:
    what = "an ONNX export folder" if onnx_model else "--backend onnxruntime"
    if onnx_model and backend == "torch":
        raise UserError("MODEL is an ONNX export folder: it runs with --backend onnxruntime (or auto), not torch")
    if device.type != "cpu":
        raise UserError(f"{what} runs on the CPU with ONNX Runtime; use --device cpu (or --backend torch on {device})")
    if precision != "fp32":
        raise UserError(f"{what} computes in float32 (or int8 when exported with --quantize int8); "
                        f"--precision {precision} applies to --backend torch")
    if compile:
        raise UserError("--compile applies to --backend torch")
    if not onnxruntime_available():
        raise UserError('--backend onnxruntime needs onnxruntime, onnx and onnxscript: pip install "ugatit-cli[onnx]"')


def choose_backend(model: Model, direction: str | None, device: torch.device, precision: str, images: int) -> str:
    """What ``backend="auto"`` runs ``model`` with for ``images`` inputs: onnxruntime on a CPU for fp32
    when it is installed and the graph is cached or there are at least ``AUTO_ONNX_MIN_IMAGES`` images (the
    one-time export then pays for itself), PyTorch otherwise (see :func:`ugatit_cli.core.hardware.auto_backend`)."""
    backend = auto_backend(device, precision)
    if backend == "onnxruntime" and images < AUTO_ONNX_MIN_IMAGES:
        key = network_key(model.family, direction)
        if not cached_graph_path(model, key).is_file():
            return "torch"
    return backend


def _direction(family: Family, direction: str | None) -> str | None:
    """The checked direction (the family's default when None); None for families without directions."""
    if not family.directions:
        if direction is not None:
            Direction.parse(direction, family)  # raises: the family has no directions
        return None
    return Direction.parse(direction or family.default_direction, family)[0].name


def _model_of_net(net: torch.nn.Module, direction: str | None) -> Model:
    """A loaded network as a one-network Model of the family whose config class its ``config`` is."""
    config = getattr(net, "config", None)
    for family in families().values():
        if isinstance(config, family.model_config):
            key = _direction(family, direction) or family.keys_for(None)[0]
            return Model(family, config, {key: net})
    raise UserError(f"{type(net).__name__}: not a network of a known model family (it needs a .config of one)")


def _load(model: str | os.PathLike | Model, direction: str | None, revision: str | None) -> Model:
    if isinstance(model, Model):
        return model
    from .store.sources import resolve_model

    return resolve_model(model, None if direction is None else (direction,), revision)


def _prepare_translator(model: Model, direction: str | None, size: int | None, options: dict[str, Any],
                        plan: _Plan, backend: str = "torch", compile: bool = False, owned: bool = False,
                        images: int = 0, progress: bool = False, files: FolderFiles | None = None
                        ) -> Translator | GraphTranslator:
    """The family's translator on the plan's device, or with ``backend`` onnxruntime its graph in a session
    (with the family's graph translator when it has one, so the forward pass is the one a torch-free run uses).

    ``owned``: the model was loaded for this call, so once a session holds the weights the PyTorch copy is
    freed (moved to the meta device) and the memory given back, which keeps the peak RSS down. ``auto``
    resolves here for a loaded source (see :func:`choose_backend`); a caller's Model runs with PyTorch.
    ``files``: the model folder the model was read from; its graph is indexed (:func:`remember_graph`) so that
    later runs find it without loading the weights.
    """
    translator = model.family.translator(model, direction, size, options)
    chosen = backend == "auto"
    if chosen:
        backend = choose_backend(model, direction, plan.device, "fp32" if plan.dtype is None else "bf16", images) \
            if owned else "torch"
    if backend == "onnxruntime" and not _feeds_graph(model, direction, translator):
        if not chosen:
            raise UserError(f"--backend onnxruntime: this {model.family.title} model's ONNX graph "
                            f"({model.family.onnx_name(network_key(model.family, direction))}) cannot be fed "
                            f"with these options; use --backend torch")
        backend = "torch"  # the summary says what ran
    if backend == "onnxruntime":
        key = network_key(model.family, direction)
        path = cached_graph_path(model, key)
        if progress and not path.is_file():
            from rich.console import Console

            Console(stderr=True, highlight=False).print(
                f"exporting the model to ONNX for onnxruntime (once; cached in {path.parent})")
        path = cached_graph(model, key, path=path)
        if files is not None:
            remember_graph(files, key, path)
        if owned:  # the graph's network only: others the translator calls itself stay (e.g. a style encoder)
            model.nets[key].to("meta")
            release_memory()
        session = _cached_session(path, plan.threads_per_stream or 1)
        graph = model.family.graph_translator(model.config, direction, size, options)
        return OnnxTranslator(translator, session) if graph is None else GraphTranslator(graph, session)
    for module in translator.modules():
        module.to(plan.device, memory_format=plan.memory_format).eval()
        if compile:
            module.compile()
    return translator


def _feeds_graph(model: Model, direction: str | None, translator: Translator) -> bool:
    """Whether ``translator`` can feed the family's ONNX graph of ``direction`` (asked before any export or
    cached graph is used, so a family or option set that cannot run with onnxruntime never picks it)."""
    io = model.family.onnx_io(model, network_key(model.family, direction))
    return io is not None and translator.can_feed_onnx(io.input_names)


def _onnx_export_translator(folder: Path, direction: str | None, size: int | None, options: dict[str, Any],
                            plan: _Plan) -> OnnxTranslator | GraphTranslator:
    """The translator of an ONNX export folder: the family's graph translator, or its own translator (on meta
    networks) for reading and sizes; the folder's graph for the forward pass."""
    export = read_onnx_export(folder)
    key = network_key(export.family, direction)
    graph = export.family.graph_translator(export.config, direction, size, options)
    if graph is not None:
        export.check_has((key,))
        return _graph_translator(StoredGraph(export.family, export.config, key, export.graphs[key],
                                             export.quantization), graph, plan)
    model = export.model((key,))
    translator = export.family.translator(model, direction, size, options)
    session = OnnxSession(export.graphs[key], threads=plan.threads_per_stream or 1,
                          quantized=export.quantization is not None)
    if not translator.can_feed_onnx(session.input_names):
        raise UserError(f"{folder}: the inputs {', '.join(session.input_names)} of {export.graphs[key].name} "
                        "cannot be fed with these options")
    return OnnxTranslator(translator, session, export.quantization)


def _outside(images: list[InputImage], output_dir: Path, report: TranslationReport) -> list[InputImage]:
    """Leave out images under the output folder (earlier results are not inputs of a re-run), each counted
    as skipped with that reason."""
    out = output_dir.resolve()
    kept = []
    for image in images:
        if image.path.resolve().is_relative_to(out):
            report.skipped.append(Skipped(image.path, image.path, INSIDE_OUTPUT_REASON))
        else:
            kept.append(image)
    return kept


def output_relative(image: InputImage, suffix: str = ".png") -> Path:
    """Where an input's result goes under --output: one rule for every family, whatever the other inputs are.

    ``collect_images(stable_layout=True)`` gives each image its path as the argument names it: a file
    argument its name, a folder argument the folder's name then the path inside it, a glob the path after
    the pattern's fixed leading folders. The image suffix becomes ``suffix``; when the input's folder holds
    another image of the same stem (``a.jpg`` and ``a.png``) both keep their suffix (``a.jpg.png``,
    ``a.png.png``). Adding an input never renames another's output; two inputs that would still share one
    (two folders of the same name) fail, never overwrite each other.
    """
    if _stem_shared(image.path):
        return image.relative.with_name(image.relative.name + suffix)
    return image.relative.with_suffix(suffix)


def _stem_shared(path: Path) -> bool:
    try:
        return any(other.name != path.name and other.stem == path.stem and is_image_name(other)
                   for other in path.parent.iterdir())
    except OSError:
        return False


def _name_outputs(images: Iterable[InputImage], output_dir: Path, specs: Sequence[OutputSpec], overwrite: bool,
                  report: TranslationReport, shard: Shard | None = None) -> list[_Job]:
    """Output names for each image (see ``output_relative``); existing outputs become skips. An input whose
    output another input already claims fails with the reason. With a ``shard`` of several, only this
    rank's share of the inputs, sorted by path, is kept (jobs, skips and name clashes); names do not depend
    on the other inputs, so every rank names alike."""
    images = list(images)
    mine = {image.path for image in _mine(images, shard or Shard())}
    claimed: dict[Path, Path] = {}  # output path -> the input that writes it
    jobs = []
    for image in images:
        out = output_dir / output_relative(image)
        paths = [out.with_name(f"{out.stem}{spec.suffix}.png") for spec in specs]
        taken = [p for p in paths if p in claimed]
        if taken:
            if image.path in mine:
                report.failed.append(Failed(str(image.path), f"output {taken[0]} would also be written for "
                                                             f"{claimed[taken[0]]}; translate them separately"))
            continue
        claimed.update({p: image.path for p in paths})
        if image.path not in mine:
            continue
        writes = [overwrite or not p.exists() for p in paths]
        if not any(writes):
            report.skipped.append(Skipped(image.path, out))
            continue
        jobs.append(_Job(image.path, tuple(zip(specs, paths, writes, strict=True))))
    return jobs


def _decode(job: _Job, translator: Translator) -> _Decoded | Failed:
    """Worker: read one input as the translator wants it (by default the official test transform)."""
    try:
        arrays, original_size = translator.read(job.source)
        return _Decoded(job, arrays, original_size)
    except BadImageError as exc:
        return Failed(str(job.source), exc.reason)
    except Exception as exc:  # whatever else a Pillow plugin raises on one file must not stop the others
        return Failed(str(job.source), f"cannot decode ({type(exc).__name__}: {exc})")


def _decoded_in_order(jobs: Sequence[_Job], translator: Translator, pool: ThreadPoolExecutor,
                      ahead: int, wait: Callable[[Future], Any]) -> Iterator[_Decoded | Failed]:
    """Decode ``jobs`` on the pool, at most ``ahead`` images in flight, yielding results in input order."""
    pending: deque[Future] = deque()
    remaining = iter(jobs)
    for job in remaining:
        pending.append(pool.submit(_decode, job, translator))
        if len(pending) >= ahead:
            break
    while pending:
        result = wait(pending.popleft())
        job = next(remaining, None)
        if job is not None:
            pending.append(pool.submit(_decode, job, translator))
        yield result


def _batches(items: Iterator[_Decoded | Failed], batch_size: int, report: TranslationReport,
             advance: Callable[..., None]) -> Iterator[list[_Decoded]]:
    """Group decoded images into batches of one shape; decode failures go straight to the report."""
    batch: list[_Decoded] = []
    for item in items:
        if isinstance(item, Failed):
            report.failed.append(item)
            advance(False)
            continue
        if batch and item.shapes() != batch[0].shapes():
            yield batch
            batch = []
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _forward(translator: Translator, batch: list[_Decoded], plan: _Plan) -> dict[str, Any]:
    """Run one batch: uint8 pixels in; per output key, uint8 pixels (B, H, W, 3) for images, float tensors
    for one-channel maps.

    Runs on a model stream's thread, hence its own inference mode and autocast (both are per thread). The
    uint8 pixels travel to the device (a quarter of the bytes of floats) and are scaled there; on CUDA from
    pinned memory, asynchronously.
    """
    import torch

    from .core.devices import autocast

    device = plan.device
    stacked = {key: torch.from_numpy(np.stack([item.arrays[key] for item in batch])) for key in batch[0].arrays}
    if device.type == "cuda":
        stacked = {key: value.pin_memory().to(device, non_blocking=True) for key, value in stacked.items()}
    else:
        stacked = {key: value.to(device) for key, value in stacked.items()}
    pixels = stacked.pop("pixels", None)  # (B, H, W, 3)
    x = None if pixels is None else pixels_to_tensor(pixels).contiguous(memory_format=plan.memory_format)
    extras = stacked
    try:
        with torch.inference_mode(), autocast(device, plan.dtype):
            outputs = translator.forward(x, extras)
            # per image, whether every output is finite (NaN/inf would be saved as black pictures)
            finite = torch.stack([torch.isfinite(outputs[spec.key]).flatten(1).all(1)
                                  for spec in translator.outputs]).all(0).cpu().tolist()
            return {FINITE: finite} | {
                spec.key: tensor_to_pixels(outputs[spec.key]).contiguous().cpu().numpy() if spec.kind == "image"
                else outputs[spec.key].float().cpu() for spec in translator.outputs}
    except torch.cuda.OutOfMemoryError:
        raise UserError(f"out of memory on {device} with a batch of {len(batch)} images; lower the batch size"
                        ) from None


def _forward_graph(translator: GraphTranslator, batch: list[_Decoded], plan: _Plan) -> dict[str, Any]:
    """:func:`_forward` for an ONNX Runtime graph translator, in NumPy: the same results (and finiteness)."""
    outputs = translator.forward_arrays({key: np.stack([item.arrays[key] for item in batch])
                                         for key in batch[0].arrays})
    finite = np.ones(len(batch), dtype=bool)
    for spec in translator.outputs:
        finite &= np.isfinite(outputs[spec.key]).reshape(len(batch), -1).all(1)
    return {FINITE: finite.tolist()} | translator.render(outputs)


FINITE = "\0finite"  # the key of _forward's per-image finiteness (no family's output key)


def _save(item: _Decoded, results: dict[str, Any], keep_size: bool) -> None:
    """Worker: write one input's outputs, each under a temporary name first. Heatmaps are drawn at the size
    of the (first) image."""
    job = item.job
    images: dict[str, Image.Image] = {}
    for spec, _, _ in job.outputs:
        if spec.kind == "image":
            img = Image.fromarray(results[spec.key], mode="RGB")
            if keep_size and img.size != item.original_size:
                img = img.resize(item.original_size, Image.Resampling.BICUBIC)
            images[spec.key] = img
    size = next(iter(images.values())).size
    for spec, path, write in job.outputs:
        if not write:
            continue
        picture = images[spec.key] if spec.kind == "image" else jet_image(results[spec.key], size)
        try:
            save_image_atomic(picture, path)
        except OSError as exc:
            raise BadImageError(job.source, f"cannot write {path} ({exc.strerror or exc})") from None


def _run(jobs: list[_Job], translator: Translator, plan: _Plan, keep_size: bool, workers: int,
         progress: bool, report: TranslationReport) -> None:
    """Decode on the IO pool, run batches on the model streams, encode on the IO pool; results in input order."""
    ahead = 2 * plan.batch_size * plan.streams + workers  # images decoded ahead, and results not yet written
    io_pool = ThreadPoolExecutor(workers, thread_name_prefix="ugatit-io")
    model_pool = ThreadPoolExecutor(plan.streams, thread_name_prefix="ugatit-model")
    forwards: deque[tuple[list[_Decoded], Future]] = deque()
    writes: deque[tuple[_Decoded, Future]] = deque()
    forward = _forward_graph if isinstance(translator, GraphTranslator) else _forward
    torch = None if plan.device is None else importlib.import_module("torch")  # a stored graph's run never does
    threads = torch.get_num_threads() if torch else 0

    interrupted = threading.Event()

    def wait(future: Future) -> Any:
        """``future.result()``, raising KeyboardInterrupt within ``INTERRUPT_POLL_S`` of a signal (see
        :func:`_deferred_interrupts`)."""
        while True:
            if interrupted.is_set():
                raise KeyboardInterrupt
            try:
                return future.result(timeout=INTERRUPT_POLL_S)
            except TimeoutError:
                continue

    def write_oldest_batch(advance: Callable[..., None]) -> None:
        batch, future = forwards.popleft()
        results = wait(future)
        finite = results.pop(FINITE)
        for i, item in enumerate(batch):
            if not finite[i]:
                report.failed.append(Failed(str(item.job.source), NONFINITE_REASON))
                advance(False)
                continue
            write = io_pool.submit(_save, item, {key: value[i] for key, value in results.items()}, keep_size)
            write.add_done_callback(lambda f: advance(not f.cancelled() and f.exception() is None))
            writes.append((item, write))

    def finish_oldest_write() -> None:
        item, future = writes.popleft()
        try:
            wait(future)
        except BadImageError as exc:
            report.failed.append(Failed(str(item.job.source), exc.reason))
            return
        job = item.job
        report.done.append(Translated(job.source, job.output, {spec.key: path for spec, path, _ in job.outputs[1:]}))

    try:
        if torch and plan.threads_per_stream:
            torch.set_num_threads(plan.threads_per_stream)  # global; the streams' threads read it
        with _deferred_interrupts(interrupted), count_progress("translating", len(jobs), "images",
                                                               enabled=progress) as advance:
            decoded = _decoded_in_order(jobs, translator, io_pool, ahead, wait)
            for batch in _batches(decoded, plan.batch_size, report, advance):
                forwards.append((batch, model_pool.submit(forward, translator, batch, plan)))
                if len(forwards) > plan.streams:  # keep every stream busy, and no more batches in memory
                    write_oldest_batch(advance)
                while len(writes) > ahead:
                    finish_oldest_write()
            while forwards:
                write_oldest_batch(advance)
            while writes:
                finish_oldest_write()
    finally:
        model_pool.shutdown(wait=True, cancel_futures=True)
        io_pool.shutdown(wait=True, cancel_futures=True)
        if torch:
            torch.set_num_threads(threads)
