"""Image features for KID/FID: torch-fidelity's FID Inception network, batched over folders, cached on disk.

A feature extractor is any callable taking a ``uint8`` batch ``(B, 3, H, W)`` and returning float features
``(B, D)``, with an ``identity`` string (network + weights) that keys the cache. :class:`InceptionFeatures` is
the one KID/FID are defined with; Python users and tests may pass their own.

Features of a folder are cached under ``$XDG_CACHE_HOME/ugatit-cli/features`` (default
``~/.cache/ugatit-cli/features``) as one safetensors file per (folder content, extractor): the key hashes
each image's relative path, size and modification time, so touching, adding or removing a file recomputes.
"""

import contextlib
import hashlib
import importlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..core.devices import select_device
from ..core.files import atomic_file
from ..core.images import BadImageError, InputImage, InputProblem, collect_images, open_rgb
from ..core.progress import count_progress
from ..errors import UserError

CACHE_FORMAT = 1
INSTALL_HINT = "KID/FID need torch-fidelity's Inception network: pip install 'ugatit-cli[eval]'"


class FeatureExtractor(Protocol):
    identity: str  # names the network and its weights; part of the feature cache key

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...  # uint8 (B, 3, H, W) -> float (B, D)


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "ugatit-cli" / "features"


def _inception_module():
    try:
        from torch_fidelity import feature_extractor_inceptionv3
    except ModuleNotFoundError as exc:
        if exc.name != "torch_fidelity":
            raise UserError(f"torch-fidelity is installed but cannot be imported: {exc} ({INSTALL_HINT})") from None
        raise UserError(f"{INSTALL_HINT} (torch-fidelity is not installed)") from None
    except Exception as exc:  # e.g. a torchvision built for another torch: show the cause, not a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(f"torch-fidelity is installed but cannot be imported: {type(exc).__name__}: {first} "
                        f"(a torchvision that does not match torch? reinstall both: {INSTALL_HINT})") from None
    return feature_extractor_inceptionv3


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    """torch-fidelity loads weights with ``torch.load(weights_only=False)``; this makes torch refuse pickled code."""
    saved = {k: os.environ.pop(k, None) for k in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


def inception_weights_path(weights: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The FID Inception weights file: ``weights`` if given, else torch-fidelity's release in torch hub's cache.

    A missing default file is downloaded once (SHA-256 prefix checked, written atomically by torch.hub).
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"{path}: no such Inception weights file (--inception-weights)")
        return path
    url = _inception_module().URL_INCEPTION_V3
    name = os.path.basename(url)
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    hash_prefix = re.search(r"-([a-f0-9]+)\.", name)
    try:
        torch.hub.download_url_to_file(url, str(path), hash_prefix.group(1) if hash_prefix else None, progress=progress)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a hash mismatch is a RuntimeError
        reason = getattr(exc, "reason", None) or exc
        raise UserError(
            f"the FID Inception weights could not be downloaded from {url} ({reason}); download that file on a "
            f"machine with internet and pass --inception-weights PATH (or copy it to {path})"
        ) from None
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class InceptionFeatures:
    """torch-fidelity's FID Inception-v3 (``inception-v3-compat``): 2048-d pool features, as KID/FID define them.

    Images of any size are resized to 299 px inside the network the way TF 1.x did. The network is built
    on the first call, so a fully cached evaluation never loads it.
    """

    def __init__(self, weights: str | os.PathLike | None = None, device: str | torch.device = "auto",
                 progress: bool = True):
        self.weights = inception_weights_path(weights, progress)
        self.device = select_device(device) if isinstance(device, str) else device
        self.identity = f"torch-fidelity inception-v3-compat 2048 sha256:{_sha256(self.weights)[:16]}"
        self._network: torch.nn.Module | None = None

    def _build(self) -> torch.nn.Module:
        module = _inception_module()
        try:
            with _weights_only_loads():
                network = module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                             feature_extractor_weights_path=str(self.weights))
        except Exception as exc:  # torch.load and load_state_dict raise many types on a wrong file
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"{self.weights}: not FID Inception weights torch-fidelity can load ({first})") from None
        return network.to(self.device).eval()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self._network is None:
            self._network = self._build()
        with torch.inference_mode():
            (features,) = self._network(images.to(self.device))
        return features.float().cpu()


def extractor_from_spec(spec: str) -> FeatureExtractor:
    """``"module:factory"`` -> ``factory()``: another feature extractor, for experiments and fast tests."""
    module_name, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UserError(f"feature extractor {spec!r} cannot be imported ({exc}); expected module:factory") from None
    return factory()


def random_inception_weights(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write seeded random FID Inception weights to ``path``: for benchmarks and tests without the real ones.

    Convolutions get He initialisation so that features keep a usable scale through the ~100 layers (PyTorch's
    default initialisation shrinks them to ~1e-8).
    """
    module = _inception_module()

    class _RandomInit(module.FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # keep the fresh initialisation
            return None

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)
        with _weights_only_loads():
            network = _RandomInit("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    generator = torch.Generator().manual_seed(seed)
    for layer in network.modules():
        if isinstance(layer, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu", generator=generator)
        elif isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=layer.in_features**-0.5, generator=generator)
    path = Path(path)
    torch.save(network.state_dict(), path)
    return path


@dataclass
class FolderFeatures:
    """The features of a folder's readable images (file order) and the images that could not be read."""

    folder: Path
    features: torch.Tensor  # (N, D) float32
    failures: list[InputProblem] = field(default_factory=list)
    from_cache: bool = False


def cache_key(images: list[InputImage], identity: str) -> str:
    """Hash of the images' relative paths, sizes and mtimes, and the extractor identity."""
    entries = []
    for image in images:
        try:
            stat = image.path.stat()
            entries.append([image.relative.as_posix(), stat.st_size, stat.st_mtime_ns])
        except OSError:
            entries.append([image.relative.as_posix(), None, None])
    text = json.dumps([CACHE_FORMAT, identity, sorted(entries, key=lambda e: e[0])])
    return hashlib.sha256(text.encode()).hexdigest()


def _load_cached(path: Path, folder: Path) -> FolderFeatures | None:
    try:
        with safe_open(path, framework="pt") as fh:
            features = fh.get_tensor("features")
            failures = json.loads(fh.metadata()["failures"])
    except (OSError, SafetensorError, ValueError, KeyError, TypeError):
        return None  # unreadable entry: recompute and replace it
    problems = [InputProblem(str(folder / rel), reason) for rel, reason in failures]
    return FolderFeatures(folder, features, problems, from_cache=True)


def _store(path: Path, result: FolderFeatures) -> None:
    failures = [[Path(p.path).relative_to(result.folder).as_posix(), p.reason] for p in result.failures]
    try:
        with atomic_file(path) as tmp:
            save_file({"features": result.features.contiguous()}, str(tmp),
                      metadata={"failures": json.dumps(failures), "folder": str(result.folder)})
    except (OSError, SafetensorError) as exc:  # a cache is an optimisation: the measurement goes on
        import warnings

        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        warnings.warn(f"{path.parent}: feature cache not written ({reason}); the features will be computed "
                      "again next time", stacklevel=2)


def _pixels(path: Path) -> torch.Tensor:
    """Decoded RGB as the uint8 ``(3, H, W)`` tensor torch-fidelity's extractors expect."""
    array = np.asarray(open_rgb(path), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _extract(images: list[InputImage], extractor: FeatureExtractor, batch_size: int,
             advance: Callable[[], None]) -> tuple[list[torch.Tensor], list[InputProblem]]:
    """Features in file order; a batch holds consecutive images of one size (the extractor resizes)."""
    chunks: list[torch.Tensor] = []
    failures: list[InputProblem] = []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        if batch:
            chunks.append(extractor(torch.stack(batch)).float().cpu())
            for _ in batch:
                advance()
            batch.clear()

    for image in images:
        try:
            pixels = _pixels(image.path)
        except BadImageError as exc:
            failures.append(InputProblem(str(image.path), exc.reason))
            advance()
            continue
        if batch and pixels.shape != batch[0].shape:
            flush()
        batch.append(pixels)
        if len(batch) == batch_size:
            flush()
    flush()
    return chunks, failures


def folder_features(
    folder: str | os.PathLike, extractor: FeatureExtractor, *, batch_size: int = 16, cache: bool = True,
    cache_dir: str | os.PathLike | None = None, progress: bool = True, label: str | None = None,
    skip_suffixes: Sequence[str] = (),
) -> FolderFeatures:
    """Features of every image under ``folder`` (recursively); unreadable images are skipped and listed.

    ``label`` names the folder on the progress bar (default: its name). Images whose name (without extension)
    ends with one of ``skip_suffixes`` are left out (translate's extra outputs, e.g. ``_heatmap``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    images, _ = collect_images([folder])
    if skip_suffixes:
        images = [image for image in images if not image.path.stem.endswith(tuple(skip_suffixes))]
    if not images:
        raise UserError(f"{folder}: folder contains no images")
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    cached = Path(cache_dir or default_cache_dir()) / f"{cache_key(images, extractor.identity)}.safetensors"
    if cache and cached.is_file():
        result = _load_cached(cached, folder)
        if result is not None:
            return result
    description = f"features {label or folder.name or folder}"
    with count_progress(description, len(images), "images", enabled=progress) as advance:
        chunks, failures = _extract(images, extractor, batch_size, advance)
    features = torch.cat(chunks) if chunks else torch.empty(0, 0)
    result = FolderFeatures(folder, features, failures)
    if cache and chunks:
        _store(cached, result)
    return result
