"""``ugatit eval``: KID (and FID) of translations against real images, KID x 100 as the papers report it.

With a model, the family says what to compare (``Family.eval_pairs``, e.g. the translations of one
domain's test images with the real test images of the other): the source images are translated into a
temporary folder (removed afterwards) and compared with the real images. Two folders can also be compared
directly. Features come from torch-fidelity's
FID Inception network (:mod:`ugatit_cli.evaluate.features`); the numbers from :mod:`ugatit_cli.evaluate.metrics`.
"""

import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.files import results_folders
from ..core.images import InputProblem
from ..errors import UserError
from ..families.base import Direction, EvalPair, Family, Model, extra_output_suffixes
from .features import FeatureExtractor, FolderFeatures, InceptionFeatures, folder_features
from .metrics import fid_from_features, kid_from_features

FEATURE_BATCH_SIZE = 16  # Inception batches when none is given; translation has its own per-device default


@dataclass
class Comparison:
    """One KID/FID measurement; KID in raw units (the paper prints ``kid_mean * 100``)."""

    real: str
    fake: str
    real_images: int
    fake_images: int
    direction: str | None = None
    kid_mean: float | None = None
    kid_std: float | None = None
    kid_subset_size: int | None = None
    fid: float | None = None
    paired: dict[str, float] | None = None  # per-image metrics of a paired task (e.g. PSNR, SSIM)


@dataclass
class EvaluationReport:
    comparisons: list[Comparison]
    failures: list[InputProblem] = field(default_factory=list)  # images skipped, with the reason
    extractor: str = ""
    kid_subsets: int = 100
    seed: int = 0
    #: the family's measurements besides the comparisons (``Family.eval_scores``, e.g. cluster accuracy)
    scores: dict[str, float] = field(default_factory=dict)
    #: folders of this tool's earlier results inside the folders read, left out of the images (``results_folders``)
    left_out: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        results = []
        for c in self.comparisons:
            row = asdict(c)
            if c.kid_mean is not None:
                row["kid_x100_mean"], row["kid_x100_std"] = 100 * c.kid_mean, 100 * c.kid_std
            results.append(row)
        return {
            "results": results,
            "failures": [{"path": p.path, "reason": p.reason} for p in self.failures],
            "feature_extractor": self.extractor,
            "kid_subsets": self.kid_subsets,
            "seed": self.seed,
            **({"scores": self.scores} if self.scores else {}),
            "left_out": self.left_out,
        }


@dataclass
class _Settings:
    kid: bool
    fid: bool
    extractor: FeatureExtractor
    batch_size: int | None
    kid_subsets: int
    kid_subset_size: int
    seed: int
    cache: bool
    cache_dir: str | os.PathLike | None
    progress: bool

    def features(self, folder: str | os.PathLike, cache: bool | None = None, label: str | None = None,
                 skip_suffixes: tuple[str, ...] = ()) -> FolderFeatures:
        batch_size = self.batch_size or FEATURE_BATCH_SIZE
        return folder_features(folder, self.extractor, batch_size=batch_size, progress=self.progress,
                               cache=self.cache if cache is None else cache, cache_dir=self.cache_dir, label=label,
                               skip_suffixes=skip_suffixes)

    def compare(self, real: FolderFeatures, fake: FolderFeatures, fake_name: str, direction: str | None) -> Comparison:
        for side, name in ((real, str(real.folder)), (fake, fake_name)):
            if len(side.features) < 2:
                raise UserError(f"{name}: {len(side.features)} readable image(s); KID and FID need at least 2")
        comparison = Comparison(str(real.folder), fake_name, len(real.features), len(fake.features), direction)
        if self.kid:
            comparison.kid_mean, comparison.kid_std = kid_from_features(
                real.features, fake.features, self.kid_subsets, self.kid_subset_size, self.seed)
            comparison.kid_subset_size = min(self.kid_subset_size, len(real.features), len(fake.features))
        if self.fid:
            comparison.fid = fid_from_features(real.features, fake.features)
        return comparison

    def report(self, comparisons: list[Comparison], failures: list[InputProblem], read: Sequence[Path]
               ) -> EvaluationReport:
        """The report of ``comparisons``; ``read`` are the folders the images were collected from."""
        unique = list({p.path: p for p in failures}.values())  # with "both", a test folder may be read twice
        left_out = [str(f) for folder in read for f in results_folders(folder)]
        return EvaluationReport(comparisons, unique, self.extractor.identity, self.kid_subsets, self.seed,
                                left_out=left_out)


def _settings(kid: bool, fid: bool, extractor: FeatureExtractor | None, inception_weights, device, progress,
              **options: Any) -> _Settings:
    if not (kid or fid):
        raise UserError("nothing to measure: ask for --kid and/or --fid")
    if extractor is None:
        extractor = InceptionFeatures(inception_weights, device=device, progress=progress)
    return _Settings(kid, fid, extractor, progress=progress, **options)


def evaluate_folders(
    real: str | os.PathLike, fake: str | os.PathLike, *, kid: bool = True, fid: bool = False,
    extractor: FeatureExtractor | None = None, inception_weights: str | os.PathLike | None = None,
    device: str | torch.device = "auto", batch_size: int | None = None, kid_subsets: int = 100,
    kid_subset_size: int = 1000, seed: int = 0, cache: bool = True, cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> EvaluationReport:
    """KID/FID between the images of two folders (recursively); unreadable images are skipped and listed.

    ``extractor`` replaces the FID Inception network (any callable on uint8 ``(B, 3, H, W)`` batches with an
    ``identity`` string); ``inception_weights`` is a local copy of torch-fidelity's Inception weights.
    ``batch_size`` defaults to 16 images per feature batch. In ``fake``, the extra files families' ``translate``
    writes beside the translations (:func:`~ugatit_cli.families.base.extra_output_suffixes`) are not counted.
    Subfolders of this tool's earlier results (``translate``, ``cluster``) are left out, and listed in
    ``report.left_out``.
    """
    settings = _settings(kid, fid, extractor, inception_weights, device, progress, batch_size=batch_size,
                         kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed, cache=cache,
                         cache_dir=cache_dir)
    # the fake folder is translate's output: the extra files families write beside it are no translations
    real_features = settings.features(real)
    fake_features = settings.features(fake, skip_suffixes=extra_output_suffixes())
    comparison = settings.compare(real_features, fake_features, str(fake_features.folder), None)
    return settings.report([comparison], real_features.failures + fake_features.failures, [Path(real), Path(fake)])


def evaluate_model(
    data_dir: str | os.PathLike, model: str | os.PathLike | Model, *, direction: str | None = None,
    kid: bool = True, fid: bool = False, extractor: FeatureExtractor | None = None,
    inception_weights: str | os.PathLike | None = None, device: str | torch.device = "auto",
    batch_size: int | None = None, revision: str | None = None, kid_subsets: int = 100, kid_subset_size: int = 1000,
    seed: int = 0, cache: bool = True, cache_dir: str | os.PathLike | None = None, progress: bool = True,
    backend: str = "auto",
) -> EvaluationReport:
    """Translate the test images of ``data_dir`` with ``model`` and measure the translations against the real
    test images the family pairs them with (its ``EvalPair``s: which folder is translated, in which direction,
    against which real folder; ``direction="both"`` for both; None: the family's default direction).

    Translation runs through :func:`ugatit_cli.translate` at the model's size; ``batch_size`` applies to it and
    to the features (default: translate's per-device choice, and 16). ``backend`` as in
    :func:`ugatit_cli.translate` (``auto`` applies its rule to each folder; an ONNX export folder as ``model``
    runs with onnxruntime). Other options as :func:`evaluate_folders`. Folders of this tool's earlier results
    inside ``data_dir`` (e.g. ``translate data/testA -o data/testA/out``) are no test images: they are left out
    and listed in ``report.left_out``.
    """
    from ..onnx_backend import onnx_export_family, read_onnx_export
    from ..store.sources import peek_family, resolve_model
    from ..translation import BACKENDS

    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; use {', '.join(BACKENDS)}")
    data_dir = Path(data_dir)
    onnx_family = None if isinstance(model, Model) else onnx_export_family(Path(str(model)).expanduser())
    family = model.family if isinstance(model, Model) else onnx_family or peek_family(model)
    directions, pairs = _pairs(family, data_dir, direction) if family is not None else (None, [])
    settings = _settings(kid, fid, extractor, inception_weights, device, progress, batch_size=batch_size,
                         kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed, cache=cache,
                         cache_dir=cache_dir)
    if isinstance(model, Model):
        loaded = runner = model
    elif onnx_family is not None:  # its networks on the meta device; translate runs the export's graphs
        export = read_onnx_export(Path(str(model)).expanduser())
        loaded, runner = export.model(onnx_family.keys_for(directions)), str(model)
    else:  # a Hub repo's family is known once loaded: ask for the one direction named, or all
        wanted = directions if family is not None else None if direction in (None, "both") else (direction,)
        loaded = runner = resolve_model(model, wanted, revision)
    if family is None:
        directions, pairs = _pairs(loaded.family, data_dir, direction)
    comparisons, failures = [], []
    with tempfile.TemporaryDirectory(prefix="ugatit-eval-work-") as work:
        pairs = loaded.family.eval_plan(loaded, data_dir, directions, Path(work))
        for pair in pairs:
            _compare(pair, loaded, settings, batch_size, device, progress, comparisons, failures, Path(work),
                     runner, backend)
        scores = loaded.family.eval_scores(loaded, data_dir, comparisons, device)
    report = settings.report(comparisons, failures, [data_dir])
    report.scores = dict(scores)
    return report


def _compare(pair: EvalPair, loaded: Model, settings: _Settings, batch_size: int | None, device, progress: bool,
             comparisons: list[Comparison], failures: list[InputProblem], work: Path,
             runner: Model | str | None = None, backend: str = "torch") -> None:
    """Translate the pair's folders with ``runner`` (``loaded``, or an ONNX export folder's path) and
    ``backend``, measure the translations against its real images; results appended. Real images the family
    put in the temporary ``work`` folder are not cached (the folder is gone after)."""
    from ..core.devices import select_device
    from ..core.images import collect_images
    from ..translation import choose_backend, translate

    runner = loaded if runner is None else runner
    if runner is loaded and backend == "auto":  # translate's rule, for this pair's number of inputs
        target = select_device(device) if isinstance(device, str) else torch.device(device)
        backend = choose_backend(loaded, pair.direction, target, "fp32", len(collect_images(pair.inputs)[0]))
    temporary = Path(pair.real).resolve().is_relative_to(work.resolve())
    real_features = settings.features(pair.real, cache=False if temporary else None)
    with tempfile.TemporaryDirectory(prefix=f"ugatit-eval-{pair.label}-") as tmp:
        translation = translate(pair.inputs, runner, direction=pair.direction, output=tmp,
                                batch_size=batch_size, device=device, progress=progress, backend=backend,
                                **pair.options)
        failures += [InputProblem(str(f.source), f.reason) for f in translation.failed]
        # translations are new files every run: caching their features could never hit
        fake_features = settings.features(tmp, cache=False, label=f"{pair.source.name} translated {pair.label}")
        # translate's stable layout: a folder's results are under its name
        written = Path(tmp) / Path(pair.source).resolve().name if Path(pair.source).is_dir() else Path(tmp)
        paired = loaded.family.paired_scores(pair, written)
    comparisons.append(settings.compare(real_features, fake_features, f"{pair.source} translated {pair.label}",
                                        pair.label))
    comparisons[-1].paired = paired
    failures += real_features.failures + fake_features.failures


def _pairs(family: Family, data_dir: Path, direction: str | None) -> tuple[tuple[str, ...] | None, list[EvalPair]]:
    """The directions asked for and what to compare (UserError when ``data_dir`` lacks a folder)."""
    directions = None
    if family.directions:
        directions = tuple(d.name for d in Direction.parse(direction or family.default_direction, family,
                                                            allow_both=True))
    elif direction not in (None, "both"):
        Direction.parse(direction, family)  # raises: the family has no directions
    return directions, family.eval_pairs(data_dir, directions)
