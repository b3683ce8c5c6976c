"""``ugatit eval``: KID (and FID) of translations against real images, as the U-GAT-IT paper reports them.

With a model, the test images of the source domain are translated into a temporary folder (removed
afterwards) and compared with the real test images of the target domain: ``a2b`` compares translations of
``testA`` with ``testB``. Two folders can also be compared directly. Features come from torch-fidelity's
FID Inception network (:mod:`ugatit_cli.features`); the numbers from :mod:`ugatit_cli.metrics`.
"""

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .devices import select_device
from .errors import UserError
from .features import FeatureExtractor, FolderFeatures, InceptionFeatures, folder_features
from .hub import DIRECTIONS, UGATITModel, check_direction
from .images import InputProblem
from .metrics import fid_from_features, kid_from_features

#: direction -> (folder translated, folder of the real target images), in the official dataset layout
TEST_FOLDERS = {"a2b": ("testA", "testB"), "b2a": ("testB", "testA")}
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


@dataclass
class EvaluationReport:
    comparisons: list[Comparison]
    failures: list[InputProblem] = field(default_factory=list)  # images skipped, with the reason
    extractor: str = ""
    kid_subsets: int = 100
    seed: int = 0

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

    def features(self, folder: str | os.PathLike, cache: bool | None = None, label: str | None = None
                 ) -> FolderFeatures:
        batch_size = self.batch_size or FEATURE_BATCH_SIZE
        return folder_features(folder, self.extractor, batch_size=batch_size, progress=self.progress,
                               cache=self.cache if cache is None else cache, cache_dir=self.cache_dir, label=label)

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

    def report(self, comparisons: list[Comparison], failures: list[InputProblem]) -> EvaluationReport:
        unique = list({p.path: p for p in failures}.values())  # with "both", testA is read twice
        return EvaluationReport(comparisons, unique, self.extractor.identity, self.kid_subsets, self.seed)


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
    ``batch_size`` defaults to 16 images per feature batch.
    """
    settings = _settings(kid, fid, extractor, inception_weights, device, progress, batch_size=batch_size,
                         kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed, cache=cache,
                         cache_dir=cache_dir)
    real_features, fake_features = settings.features(real), settings.features(fake)
    comparison = settings.compare(real_features, fake_features, str(fake_features.folder), None)
    return settings.report([comparison], real_features.failures + fake_features.failures)


def evaluate_model(
    data_dir: str | os.PathLike, model: str | os.PathLike | UGATITModel, *, direction: str = "a2b",
    kid: bool = True, fid: bool = False, extractor: FeatureExtractor | None = None,
    inception_weights: str | os.PathLike | None = None, device: str | torch.device = "auto",
    batch_size: int | None = None, revision: str | None = None, kid_subsets: int = 100, kid_subset_size: int = 1000,
    seed: int = 0, cache: bool = True, cache_dir: str | os.PathLike | None = None, progress: bool = True,
    backend: str = "auto",
) -> EvaluationReport:
    """Translate ``testA`` (a2b) and/or ``testB`` (b2a) of ``data_dir`` with ``model`` and measure the
    translations against the real test images of the target domain (``direction="both"`` for both).

    Translation runs through :func:`ugatit_cli.translate` at the model's size; ``batch_size`` applies to it and
    to the features (default: translate's per-device choice, and 16). ``backend`` as in :func:`ugatit_cli.translate`
    (an ONNX export folder as ``model`` runs with onnxruntime). Other options as :func:`evaluate_folders`.
    """
    from .images import collect_images
    from .loading import resolve_model
    from .onnx_backend import is_onnx_folder
    from .translation import BACKENDS, choose_backend, translate

    directions = DIRECTIONS if direction == "both" else (check_direction(direction),)
    data_dir = Path(data_dir)
    for d in directions:
        for name in TEST_FOLDERS[d]:
            if not (data_dir / name).is_dir():
                raise UserError(f"{data_dir}: no {name}/ folder (expected the official layout testA/ testB/)")
    settings = _settings(kid, fid, extractor, inception_weights, device, progress, batch_size=batch_size,
                         kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed, cache=cache,
                         cache_dir=cache_dir)
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; use {', '.join(BACKENDS)}")
    onnx_folder = not isinstance(model, UGATITModel) and is_onnx_folder(Path(str(model)).expanduser())
    if onnx_folder:
        loaded = None
    else:
        loaded = model if isinstance(model, UGATITModel) else resolve_model(model, directions, revision)
    comparisons, failures = [], []
    for d in directions:
        source, target = (data_dir / name for name in TEST_FOLDERS[d])
        real_features = settings.features(target)
        with tempfile.TemporaryDirectory(prefix=f"ugatit-eval-{d}-") as tmp:
            if loaded is None:  # an ONNX export folder: translate reads its graph for the direction
                runner, used = str(model), backend
            else:
                runner, used = loaded.generators[d], backend
                if backend == "auto":
                    target = select_device(device) if isinstance(device, str) else torch.device(device)
                    used = choose_backend(runner, target, "fp32", len(collect_images([source])[0]))
            translation = translate([source], runner, output=tmp, batch_size=batch_size, device=device,
                                    progress=progress, direction=d, backend=used)
            failures += [InputProblem(str(f.source), f.reason) for f in translation.failed]
            # translations are new files every run: caching their features could never hit
            fake_features = settings.features(tmp, cache=False, label=f"{source.name} translated {d}")
        comparisons.append(settings.compare(real_features, fake_features, f"{source} translated {d}", d))
        failures += real_features.failures + fake_features.failures
    return settings.report(comparisons, failures)
