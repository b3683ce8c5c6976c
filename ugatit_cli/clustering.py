"""Sort images into a model's (pseudo-)domains: ``ugatit cluster`` and :func:`cluster`.

The family hands a :class:`~ugatit_cli.families.base.DomainAssigner` (input size, reading, the probabilities of
each domain); this module finds the images, decodes them on worker threads, runs the batches and writes the
results: a table (CSV or JSON) of each image's domain and its probability, and optionally the images linked or
copied into ``domain_<k>/`` folders under the output (paths as ``translate`` lays out its outputs: a folder's
images under its name). Every file is written under a
temporary name and renamed; an existing file is never replaced without ``overwrite``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .core.devices import select_device
from .core.files import atomic_file, mark_output_folder
from .core.images import BadImageError, InputImage, collect_images, pixels_to_tensor
from .core.progress import count_progress
from .errors import UserError
from .families.base import Model
from .store.sources import resolve_model

PLACE_MODES = ("link", "copy")
TABLE_FORMATS = ("csv", "json")
DEFAULT_BATCH = 16


@dataclass(frozen=True)
class Assignment:
    """One image's domain and the model's probability for it; ``placed``: its link or copy, if any."""

    source: Path
    relative: Path
    domain: int
    probability: float
    placed: Path | None = None


@dataclass
class ClusterReport:
    """What :func:`cluster` did: ``k`` domains, each image's assignment, the inputs that failed and why."""

    k: int
    assigned: list[Assignment] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    table: Path | None = None
    seconds: float = 0.0

    @property
    def counts(self) -> list[int]:
        counts = [0] * self.k
        for a in self.assigned:
            counts[a.domain] += 1
        return counts

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def rows(self) -> list[dict[str, Any]]:
        return [{"image": str(a.source), "domain": a.domain, "probability": round(a.probability, 6),
                 **({"placed": str(a.placed)} if a.placed else {})} for a in self.assigned]

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "counts": self.counts, "images": self.rows(),
                "failed": [{"input": s, "reason": r} for s, r in self.failed],
                "table": str(self.table) if self.table else None, "seconds": round(self.seconds, 3)}

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["image", "domain", "probability"])
        for a in self.assigned:
            writer.writerow([str(a.source), a.domain, f"{a.probability:.6f}"])
        return out.getvalue()


def _onnx_export_model(model: str | os.PathLike) -> Model | None:
    """An ONNX export folder's networks for the assigner (graphs run by ONNX Runtime), or None for any
    other MODEL."""
    from .onnx_backend import onnx_export_family, read_onnx_export

    folder = Path(str(model)).expanduser()
    if onnx_export_family(folder) is None:
        return None
    export = read_onnx_export(folder)
    return Model(export.family, export.config, export.companions())


def cluster(inputs, model: str | os.PathLike | Model, *, output: str | os.PathLike | None = None,
            place: str | None = None, table_format: str = "csv", size: int | None = None,
            batch_size: int | None = None, device: str = "auto", revision: str | None = None,
            overwrite: bool = False, workers: int | None = None, progress: bool = True) -> ClusterReport:
    """The domain of every image of ``inputs`` (files, folders read recursively, glob patterns) under ``model``.

    With ``output``, writes ``domains.csv`` (or ``domains.json``, ``table_format``) there, and with ``place``
    (``"link"``: symbolic links, ``"copy"``) puts each image into ``output/domain_<k>/<relative path>``.
    ``size`` defaults to the model's. Unreadable images are reported in ``failed`` and never stop the others;
    a problem with the call itself (model, options) raises :class:`~ugatit_cli.errors.UserError`.
    """
    start = time.perf_counter()
    if place is not None and place not in PLACE_MODES:
        raise UserError(f"unknown placement {place!r}; expected link or copy")
    if table_format not in TABLE_FORMATS:
        raise UserError(f"unknown table format {table_format!r}; expected csv or json")
    if place is not None and output is None:
        raise UserError(f"--{place} needs --output DIR (the domain_<k>/ folders go there)")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    sources = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not sources:
        raise UserError("no input given: name image files, folders or glob patterns")
    out_dir = Path(output) if output is not None else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: output exists and is not a folder")
    table = out_dir / f"domains.{table_format}" if out_dir is not None else None
    if table is not None and table.exists() and not overwrite:
        raise UserError(f"{table}: exists (pass --overwrite to replace it, or choose another --output)")
    images, problems = collect_images(sources, stable_layout=True)  # translate's rule: out/FOLDER/...
    if out_dir is not None:  # earlier results are not inputs of a re-run
        resolved = out_dir.resolve()
        images = [i for i in images if not i.path.resolve().is_relative_to(resolved)]
    loaded = model if isinstance(model, Model) else _onnx_export_model(model) or resolve_model(model, None, revision)
    assigner = loaded.family.assigner(loaded, size)
    target = select_device(device)
    for module in assigner.modules():
        module.to(target).eval()
    report = ClusterReport(assigner.k, failed=[(p.path, p.reason) for p in problems])
    batch_size = batch_size or DEFAULT_BATCH

    def read(image: InputImage):
        try:
            return image, assigner.read(image.path)
        except BadImageError as exc:
            return image, exc

    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool, \
            count_progress("sorting", len(images), "images", enabled=progress) as advance:
        batch: list[tuple[InputImage, np.ndarray]] = []
        for image, pixels in pool.map(read, images):
            if isinstance(pixels, BadImageError):
                report.failed.append((str(image.path), pixels.reason))
                advance()
                continue
            batch.append((image, pixels))
            if len(batch) == batch_size:
                _run(assigner, batch, target, report)
                for _ in batch:
                    advance()
                batch = []
        if batch:
            _run(assigner, batch, target, report)
            for _ in batch:
                advance()
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{out_dir}: cannot create the output folder ({exc.strerror or exc})") from None
        if place is not None:
            mark_output_folder(out_dir, "cluster")  # the domain_<k>/ folders hold copies of inputs, no new data
            report.assigned = [_place(a, out_dir, place, overwrite, report) for a in report.assigned]
        with atomic_file(table) as tmp:
            text = report.to_csv() if table_format == "csv" else json.dumps(report.to_dict(), indent=2) + "\n"
            Path(tmp).write_text(text, encoding="utf-8")
            os.chmod(tmp, 0o666 & ~_umask())  # the temporary file is private; the table is an ordinary file
        report.table = table
    report.seconds = time.perf_counter() - start
    return report


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _run(assigner, batch, device: torch.device, report: ClusterReport) -> None:
    pixels = torch.from_numpy(np.stack([p for _, p in batch])).to(device)
    with torch.inference_mode():
        probs = assigner.probabilities(pixels_to_tensor(pixels)).float().cpu()
    best, domains = probs.max(1)
    for (image, _), d, p in zip(batch, domains.tolist(), best.tolist(), strict=True):
        report.assigned.append(Assignment(image.path, image.relative, int(d), float(p)))


def _place(a: Assignment, out_dir: Path, mode: str, overwrite: bool, report: ClusterReport) -> Assignment:
    """Link or copy one image into its domain folder; a failure is reported and the assignment kept."""
    target = out_dir / f"domain_{a.domain}" / a.relative
    if (target.exists() or target.is_symlink()) and not overwrite:
        report.failed.append((str(a.source), f"{target} exists (pass --overwrite to replace it)"))
        return a
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        if mode == "link":
            os.symlink(a.source.resolve(), tmp)
        else:
            shutil.copy2(a.source, tmp)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        report.failed.append((str(a.source), f"cannot {mode} it to {target} ({exc.strerror or exc})"))
        return a
    return Assignment(a.source, a.relative, a.domain, a.probability, target)
