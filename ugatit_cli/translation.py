"""Translate image files with a U-GAT-IT generator: ``ugatit translate`` and :func:`translate`.

The work is a three-stage pipeline. A few worker threads decode and resize the next images (Pillow releases
the GIL while it does) while the main thread runs the generator on the current batch; the same workers
resize, colour-map and PNG-encode the results. Each output is written under a temporary name and renamed,
so an interrupted run never leaves a half-written file, and a bad input is reported and skipped without
stopping the others. Preprocessing is the official test transform (RGB, bilinear resize to size x size,
[-1, 1]); postprocessing clamps and rounds to 8 bits.
"""

import contextlib
import os
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .devices import autocast, check_precision, select_device
from .errors import UserError
from .hardware import SlowPrecisionWarning, auto_backend, auto_precision, bf16_note, onnxruntime_available
from .hub import check_direction
from .images import (
    BadImageError,
    InputImage,
    collect_images,
    heatmap_to_image,
    open_rgb,
    pixels_to_tensor,
    resized_pixels,
    save_image_atomic,
    tensor_to_pixels,
)
from .loading import resolve_model
from .model import Generator, UGATITConfig
from .onnx_backend import OnnxGenerator, cached_graph, cached_graph_path, is_onnx_folder, onnx_folder_graph
from .progress import count_progress, progress_disabled
from .sharding import Shard, device_for_shard, shard_from_env

#: Images per forward pass when none is given. On CPUs one image per pass is fastest (measured on a 2-core
#: Xeon: 1.9 img/s at 1, 1.7 at 4, 1.3 at 8 for a light 256 px model: activations stay in cache); GPUs want
#: batches.
CPU_BATCH_SIZE = 1
ACCELERATOR_BATCH_SIZE = 8
#: Model streams on a CPU: each runs whole images with its share of torch's threads. Two single-threaded
#: streams beat one two-threaded forward by ~15-20% (no barrier per op, one core's cache per image) and
#: degrade far less when other processes take a core.
MAX_CPU_STREAMS = 4
BACKENDS = ("auto", "torch", "onnxruntime")
#: ``--backend auto`` exports a model to ONNX on a CPU only when there are at least this many images to
#: translate (or its graph is cached already): the one-time export (~35 s for a light ch64 generator, ~70 s for
#: the full one, on a busy 2-core Xeon) then costs less than what onnxruntime saves (~0.3 s per image there).
AUTO_ONNX_MIN_IMAGES = 100
EXISTS_REASON = "output exists (pass --overwrite to replace it)"


@dataclass(frozen=True)
class Translated:
    """An input and the files written for it (``heatmap`` only with ``heatmap=True``)."""

    source: Path
    output: Path
    heatmap: Path | None = None


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
    precision: str = ""  # "fp32", "bf16" or "fp16" (what "auto" chose)
    shard: Shard = field(default_factory=Shard)

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
            "counts": {"done": len(self.done), "skipped": len(self.skipped), "failed": len(self.failed)},
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 3),
            "done": [{"input": str(t.source), "output": str(t.output),
                      **({"heatmap": str(t.heatmap)} if t.heatmap else {})} for t in self.done],
            "skipped": [{"input": str(s.source), "output": str(s.output), "reason": s.reason} for s in self.skipped],
            "failed": [{"input": f.source, "reason": f.reason} for f in self.failed],
            "backend": self.backend or None,
            "precision": self.precision or None,
            "shard": self.shard.to_dict(),
        }


@dataclass(frozen=True)
class _Plan:
    """How the model runs: where, in which precision and layout, how many images per pass, in how many
    parallel streams of how many torch threads each."""

    device: torch.device
    dtype: torch.dtype | None
    memory_format: torch.memory_format
    batch_size: int
    streams: int
    threads_per_stream: int

    @classmethod
    def for_device(cls, device: torch.device, dtype: torch.dtype | None, batch_size: int | None) -> "_Plan":
        cpu = device.type == "cpu"
        # channels_last is the fast layout of oneDNN's bf16 convolutions and of cuDNN; for fp32 on a CPU
        # the encoder's instance norms convert it back and forth, which costs ~8%.
        memory_format = torch.contiguous_format if cpu and dtype is None else torch.channels_last
        if not cpu:
            return cls(device, dtype, memory_format, batch_size or ACCELERATOR_BATCH_SIZE, 1, 0)
        threads = torch.get_num_threads()
        streams = max(1, min(threads, MAX_CPU_STREAMS))
        return cls(device, dtype, memory_format, batch_size or CPU_BATCH_SIZE, streams, max(1, threads // streams))


@dataclass(frozen=True)
class _Job:
    """One input to translate; ``write_*`` is False for an output that exists and must be kept."""

    source: Path
    output: Path
    heatmap: Path | None
    write_output: bool
    write_heatmap: bool


@dataclass(frozen=True)
class _Decoded:
    job: _Job
    pixels: np.ndarray  # (size, size, 3) uint8
    original_size: tuple[int, int]  # (width, height) after EXIF orientation


def translate(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    model: str | os.PathLike | Generator,
    *,
    output: str | os.PathLike = "translated",
    direction: str = "a2b",
    size: int | None = None,
    keep_size: bool = False,
    batch_size: int | None = None,
    device: str | torch.device | None = "auto",
    precision: str = "fp32",
    heatmap: bool = False,
    overwrite: bool = False,
    revision: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    backend: str = "auto",
    compile: bool = False,
    shard: Shard | None = None,
) -> TranslationReport:
    """Translate image files, folders (recursively) and glob patterns into one PNG each under ``output``.

    ``model`` is a MODEL source (registered name, Hub repo id, model folder or checkpoint; loaded only when
    there is something to translate) or an already loaded :class:`~ugatit_cli.model.Generator`, used as is
    (``direction`` and ``revision`` then do not apply): it is put in eval mode and the memory format that
    is fastest for the device and precision and, unless ``device`` is None, moved to ``device``, in place.
    ``size`` defaults to the model's training size; a full model runs only at that size, a light one at any
    multiple of 4. ``keep_size`` scales each result back to its input's size. ``heatmap`` also writes the
    attention map as ``<name>_heatmap.png``. Existing outputs are kept and counted as skipped unless ``overwrite``.
    ``batch_size`` defaults to 1 on a CPU (fastest there) and 8 on a GPU. ``workers`` is the number of
    decode/encode threads; ``progress`` shows a Rich bar on stderr.

    ``precision`` is ``fp32``, ``bf16``, ``fp16`` (GPUs) or ``auto`` (bf16 on GPUs that support it and on
    CPUs with AMX, else fp32); bf16 on a CPU without AMX runs with a :class:`SlowPrecisionWarning`.
    ``backend`` is ``torch``, ``onnxruntime`` (CPU, fp32: the generator's ONNX graph, exported once into a
    cache, see :mod:`ugatit_cli.onnx_backend`; an ONNX export folder as ``model`` always runs this way) or
    ``auto``: onnxruntime for fp32 on a CPU when it is installed and the graph is cached or there are at
    least ``AUTO_ONNX_MIN_IMAGES`` images, PyTorch otherwise. ``compile`` runs the PyTorch generator
    through ``torch.compile``. ``shard`` (default: from torchrun's ``RANK``/``WORLD_SIZE``) translates only
    this process's round-robin share of the sorted inputs (:mod:`ugatit_cli.sharding`).

    Bad inputs are listed in ``report.failed`` with their reason and never stop the others; problems with
    the call itself (unknown device, bad size, model not found) raise :class:`~ugatit_cli.errors.UserError`.
    """
    start = time.perf_counter()
    sources = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not sources:
        raise UserError("no input given: name image files, folders or glob patterns")
    check_direction(direction)
    if batch_size is not None and batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    if workers is not None and workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    if size is not None:
        _check_size_shape(size)
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; use {', '.join(BACKENDS)}")
    shard = shard_from_env() if shard is None else shard
    if device is None:
        target = next(model.parameters()).device if isinstance(model, Generator) else select_device("auto")
    else:
        target = select_device(device_for_shard(device, shard)) if isinstance(device, str) else torch.device(device)
    workers = _default_workers(target, shard) if workers is None else workers
    if precision == "auto":
        precision = auto_precision(target)
    dtype = check_precision(precision, target)
    if precision == "bf16" and (note := bf16_note(target)):
        warnings.warn(note, SlowPrecisionWarning, stacklevel=2)
    onnx_model = not isinstance(model, Generator) and is_onnx_folder(Path(str(model)).expanduser())
    if onnx_model or backend == "onnxruntime":
        _check_onnxruntime_settings(target, precision, compile, onnx_model, backend)
    output_dir = Path(output)
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"{output_dir}: output exists and is not a folder")

    report = TranslationReport(output_dir, precision=precision, shard=shard)
    images, problems = collect_images(sources)
    if shard.is_main:  # every rank finds the same missing paths; one of them names them
        report.failed += [Failed(p.path, p.reason) for p in problems]
    jobs = _name_outputs(_outside(images, output_dir), output_dir, heatmap, overwrite, report, shard)
    if jobs:
        plan = _Plan.for_device(target, dtype, batch_size)
        with contextlib.nullcontext() if progress else progress_disabled():  # also a first download's bar
            generator, report.backend = _prepare_generator(model, direction, revision, plan, backend, compile,
                                                           onnx_model, len(jobs), progress)
        if isinstance(generator, OnnxGenerator) and generator.quantization:
            report.precision = generator.quantization.get("dtype", "int8")
        size = _check_size(generator.config, size)
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{output_dir}: cannot create the output folder ({exc.strerror or exc})") from None
        loaded = time.perf_counter()
        _run(jobs, generator, plan, size, keep_size, workers, progress, report)
        report.translate_seconds = time.perf_counter() - loaded
    report.seconds = time.perf_counter() - start
    return report


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


def _check_size_shape(size: int) -> None:
    if size % 4 or size < 16:
        raise UserError(f"size must be a multiple of 4 and at least 16, got {size}")


def _check_size(config: UGATITConfig, size: int | None) -> int:
    """The model's training size by default; a full model's gamma/beta MLP is sized by it, so only it works."""
    if size is None:
        return config.img_size
    if not config.light and size != config.img_size:
        raise UserError(f"size {size}: this full (non-light) model runs only at its training size {config.img_size} "
                        "(its gamma/beta MLP is sized by it); leave the size out, or use a light model")
    return size


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


def choose_backend(generator: Generator, device: torch.device, precision: str, images: int) -> str:
    """What ``backend="auto"`` runs ``generator`` with for ``images`` inputs: onnxruntime on a CPU for fp32
    when it is installed and the graph is cached or there are at least ``AUTO_ONNX_MIN_IMAGES`` images (the
    one-time export then pays for itself), PyTorch otherwise (see :func:`ugatit_cli.hardware.auto_backend`)."""
    backend = auto_backend(device, precision)
    if backend == "onnxruntime" and images < AUTO_ONNX_MIN_IMAGES and not cached_graph_path(generator).is_file():
        return "torch"
    return backend


def _prepare_generator(model: str | os.PathLike | Generator, direction: str, revision: str | None, plan: _Plan,
                       backend: str, compile: bool, onnx_model: bool, images: int, progress: bool = False
                       ) -> tuple[Generator | OnnxGenerator, str]:
    """The callable that runs the model, and its backend's name."""
    threads = plan.threads_per_stream or 1
    if onnx_model:
        graph = onnx_folder_graph(Path(str(model)).expanduser(), direction)
        return OnnxGenerator(graph.path, graph.config, threads=threads, quantization=graph.quantization), "onnxruntime"
    if isinstance(model, Generator):
        generator = model
        if backend == "auto":
            backend = "torch"  # a module the caller built is run as it is
    else:
        generator = resolve_model(model, (direction,), revision).generators[direction]
    if backend == "auto":
        backend = choose_backend(generator, plan.device, "fp32" if plan.dtype is None else "bf16", images)
    if backend == "onnxruntime":
        config = generator.config
        path = cached_graph_path(generator)
        if progress and not path.is_file():
            from rich.console import Console

            Console(stderr=True, highlight=False).print(
                f"exporting the generator to ONNX for onnxruntime (once; cached in {path.parent})")
        path = cached_graph(generator, path=path)
        del generator  # the session holds its own copy of the weights
        return OnnxGenerator(path, config, threads=threads), "onnxruntime"
    generator = generator.to(plan.device, memory_format=plan.memory_format).eval()
    if compile:
        compiled = torch.compile(generator)
        compiled.config = generator.config
        return compiled, "torch"
    return generator, "torch"


def _outside(images: list[InputImage], output_dir: Path) -> list[InputImage]:
    """Drop images that live under the output folder: earlier results are not inputs of a re-run."""
    out = output_dir.resolve()
    return [image for image in images if not image.path.resolve().is_relative_to(out)]


def _name_outputs(images: Iterable[InputImage], output_dir: Path, heatmap: bool, overwrite: bool,
                  report: TranslationReport, shard: Shard | None = None) -> list[_Job]:
    """Output names for each image (``photo.jpg`` -> ``photo.png``); existing outputs become skips.

    When two inputs would share a name (``a.jpg`` and ``a.png``) both keep their suffix (``a.jpg.png``,
    ``a.png.png``); an input whose name is still taken fails with the reason. With a ``shard`` of several,
    names are chosen over all inputs (so every rank names alike) and only this rank's share of the inputs,
    sorted by path, is kept (jobs, skips and name clashes).
    """
    images = list(images)
    shard = shard or Shard()
    mine = {image.path for image in shard.take(sorted(images, key=lambda image: str(image.path)))}
    short_names: dict[Path, int] = {}
    for image in images:
        short = image.relative.with_suffix(".png")
        short_names[short] = short_names.get(short, 0) + 1
    claimed: dict[Path, Path] = {}  # output path -> the input that writes it
    jobs = []
    for image in images:
        relative = image.relative.with_suffix(".png")
        if short_names[relative] > 1:
            relative = image.relative.with_name(image.relative.name + ".png")
        out = output_dir / relative
        heat = out.with_name(f"{out.stem}_heatmap.png") if heatmap else None
        taken = [p for p in (out, heat) if p is not None and p in claimed]
        if taken:
            if image.path in mine:
                report.failed.append(Failed(str(image.path), f"output {taken[0]} would also be written for "
                                                             f"{claimed[taken[0]]}; translate them separately"))
            continue
        claimed.update({p: image.path for p in (out, heat) if p is not None})
        if image.path not in mine:
            continue
        write_output = overwrite or not out.exists()
        write_heatmap = heat is not None and (overwrite or not heat.exists())
        if not (write_output or write_heatmap):
            report.skipped.append(Skipped(image.path, out))
            continue
        jobs.append(_Job(image.path, out, heat, write_output, write_heatmap))
    return jobs


def _decode(job: _Job, size: int) -> _Decoded | Failed:
    """Worker: read one input and resize it like the official test transform."""
    try:
        img = open_rgb(job.source)
        return _Decoded(job, resized_pixels(img, size), img.size)
    except BadImageError as exc:
        return Failed(str(job.source), exc.reason)
    except Exception as exc:  # whatever else a Pillow plugin raises on one file must not stop the others
        return Failed(str(job.source), f"cannot decode ({type(exc).__name__}: {exc})")


def _decoded_in_order(jobs: Sequence[_Job], size: int, pool: ThreadPoolExecutor,
                      ahead: int) -> Iterator[_Decoded | Failed]:
    """Decode ``jobs`` on the pool, at most ``ahead`` images in flight, yielding results in input order."""
    pending: deque[Future] = deque()
    remaining = iter(jobs)
    for job in remaining:
        pending.append(pool.submit(_decode, job, size))
        if len(pending) >= ahead:
            break
    while pending:
        result = pending.popleft().result()
        job = next(remaining, None)
        if job is not None:
            pending.append(pool.submit(_decode, job, size))
        yield result


def _batches(items: Iterator[_Decoded | Failed], batch_size: int, report: TranslationReport,
             advance: Callable[[], None]) -> Iterator[list[_Decoded]]:
    """Group decoded images into batches; decode failures go straight to the report."""
    batch: list[_Decoded] = []
    for item in items:
        if isinstance(item, Failed):
            report.failed.append(item)
            advance()
            continue
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _forward(generator: Generator, batch: list[_Decoded], plan: _Plan,
             heatmap: bool) -> tuple[np.ndarray, torch.Tensor | None]:
    """Run one batch: uint8 pixels in, uint8 pixels (B, H, W, 3) and optionally heatmaps (B, 1, h, w) out.

    Runs on a model stream's thread, hence its own inference mode and autocast (both are per thread). The
    uint8 pixels travel to the device (a quarter of the bytes of floats) and are scaled there; on CUDA from
    pinned memory, asynchronously.
    """
    device = plan.device
    pixels = torch.from_numpy(np.stack([item.pixels for item in batch]))  # (B, H, W, 3)
    if device.type == "cuda":
        pixels = pixels.pin_memory().to(device, non_blocking=True)
    else:
        pixels = pixels.to(device)
    x = pixels_to_tensor(pixels).contiguous(memory_format=plan.memory_format)  # (B, 3, H, W)
    try:
        with torch.inference_mode(), autocast(device, plan.dtype):
            image, _, attention = generator(x)
            out = tensor_to_pixels(image).contiguous().cpu().numpy()
            return out, attention.float().cpu() if heatmap else None
    except torch.cuda.OutOfMemoryError:
        raise UserError(f"out of memory on {device} with a batch of {len(batch)} images of {x.shape[-1]} px; "
                        "lower the batch size") from None


def _save(item: _Decoded, pixels: np.ndarray, attention: torch.Tensor | None, keep_size: bool) -> None:
    """Worker: write one result (and its heatmap), each under a temporary name first."""
    job = item.job
    img = Image.fromarray(pixels, mode="RGB")
    if keep_size and img.size != item.original_size:
        img = img.resize(item.original_size, Image.Resampling.BICUBIC)
    for path, write, make in ((job.output, job.write_output, lambda: img),
                              (job.heatmap, job.write_heatmap, lambda: heatmap_to_image(attention, img.size))):
        if path is not None and write:
            try:
                save_image_atomic(make(), path)
            except OSError as exc:
                raise BadImageError(job.source, f"cannot write {path} ({exc.strerror or exc})") from None


def _run(jobs: list[_Job], generator: Generator, plan: _Plan, size: int, keep_size: bool, workers: int,
         progress: bool, report: TranslationReport) -> None:
    """Decode on the IO pool, run batches on the model streams, encode on the IO pool; results in input order."""
    heatmap = jobs[0].heatmap is not None
    ahead = 2 * plan.batch_size * plan.streams + workers  # images decoded ahead, and results not yet written
    io_pool = ThreadPoolExecutor(workers, thread_name_prefix="ugatit-io")
    model_pool = ThreadPoolExecutor(plan.streams, thread_name_prefix="ugatit-model")
    forwards: deque[tuple[list[_Decoded], Future]] = deque()
    writes: deque[tuple[_Decoded, Future]] = deque()
    threads = torch.get_num_threads()

    def write_oldest_batch(advance: Callable[[], None]) -> None:
        batch, future = forwards.popleft()
        pixels, attention = future.result()
        for i, item in enumerate(batch):
            write = io_pool.submit(_save, item, pixels[i], None if attention is None else attention[i], keep_size)
            write.add_done_callback(lambda _: advance())
            writes.append((item, write))

    def finish_oldest_write() -> None:
        item, future = writes.popleft()
        try:
            future.result()
        except BadImageError as exc:
            report.failed.append(Failed(str(item.job.source), exc.reason))
            return
        job = item.job
        report.done.append(Translated(job.source, job.output, job.heatmap))

    try:
        if plan.threads_per_stream:
            torch.set_num_threads(plan.threads_per_stream)  # global; the streams' threads read it
        with count_progress("translating", len(jobs), "images", enabled=progress) as advance:
            decoded = _decoded_in_order(jobs, size, io_pool, ahead)
            for batch in _batches(decoded, plan.batch_size, report, advance):
                forwards.append((batch, model_pool.submit(_forward, generator, batch, plan, heatmap)))
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
        torch.set_num_threads(threads)
