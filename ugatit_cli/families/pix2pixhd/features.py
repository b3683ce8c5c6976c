"""pix2pixHD instance features after training: per-class k-means over the training set, and their use at inference.

Source: NVIDIA/pix2pixHD ``encode_features.py`` and ``Pix2PixHDModel.encode_features``/``sample_features``.
Numerics (each confirmed in the official files):

- One feature vector per instance of each training image: the encoder's output (already averaged over the
  instance) at the instance's middle pixel (``nonzero`` order, i.e. row-major, index ``num // 2``), with the
  weight ``num / (H * W // 32)`` (its area in 1/32ths of the image). Only instances with a weight > 0.5 are
  clustered.
- Class of an instance id ``i``: ``i`` if ``i < 1000`` else ``i // 1000`` (Cityscapes ids); classes are
  ``0 .. label_nc - 1`` (ids of other classes are left out; the official script would fail on them).
- Per class with vectors: ``min(n_vectors, n_clusters)`` k-means centres (official: scikit-learn's
  ``KMeans(n_clusters, random_state=0)``; ``n_clusters`` 10); classes without vectors have no centres.
- Inference (``sample_features``): every instance id of a map, in ascending order, draws one centre of its class
  uniformly at random (official: ``np.random.randint`` from NumPy's unseeded global state); instances of classes
  without centres get zeros here (uninitialised memory officially).

Chosen differences: the k-means is our own (:func:`kmeans`: k-means++ seeding and Lloyd's iterations, the best
of 10 starts, as scikit-learn's ``KMeans`` of that era; a few lines of torch instead of a scikit-learn
dependency at run time for this one call), so the centres equal scikit-learn's only up to its random starts;
each image is encoded whole after the training resize (centre crop for the cropping transforms, no flip), where
the official script reuses the training transform's random crop; the encoder runs in eval mode (the same for the
default instance norm); each map's draw is seeded by ``--seed`` (default 0), so one map gives the same photo
whatever the batch or the other inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

BLOCK_NUM = 32  # official encode_features: an instance's weight is its area over (H * W // 32)
MIN_WEIGHT = 0.5  # official encode_features.py keeps vectors whose weight is > 0.5
KMEANS_STARTS = 10


def instance_class(ids: int) -> int:
    """Official class of an instance id: ``i`` below 1000, else ``i // 1000``."""
    return ids if ids < 1000 else ids // 1000


class FeatureClusters(nn.Module):
    """The cluster centres of a model with instance features, as buffers so that they travel with the weights.

    ``centres`` ``(label_nc, n_clusters, feat_num)`` float32 and ``counts`` ``(label_nc,)`` int64: class ``c``
    has the centres ``centres[c, :counts[c]]`` (0 when it has none). A fresh module has no centres
    (:attr:`empty`). Safetensors keys ``centres`` and ``counts``.
    """

    def __init__(self, label_nc: int, n_clusters: int, feat_num: int):
        super().__init__()
        self.register_buffer("centres", torch.zeros(label_nc, n_clusters, feat_num))
        self.register_buffer("counts", torch.zeros(label_nc, dtype=torch.int64))

    @property
    def empty(self) -> bool:
        return not bool((self.counts > 0).any())

    def as_dict(self) -> dict[int, np.ndarray]:
        """Label id -> float32 array (n, feat_num), the form of the official cluster file; classes with centres."""
        centres = self.centres.detach().float().cpu().numpy()
        return {c: centres[c, :n].copy() for c, n in enumerate(self.counts.tolist()) if n > 0}

    @torch.no_grad()
    def set(self, clusters: Mapping[int, np.ndarray]) -> None:
        """Replace every class's centres; ``ValueError`` for a class outside ``label_nc`` or too many centres."""
        label_nc, n_clusters, feat_num = self.centres.shape
        self.centres.zero_()
        self.counts.zero_()
        for label, centres in clusters.items():
            centres = np.asarray(centres, np.float32).reshape(-1, feat_num)
            if not 0 <= label < label_nc or len(centres) > n_clusters:
                raise ValueError(f"class {label} with {len(centres)} centres does not fit label_nc {label_nc}, "
                                 f"n_clusters {n_clusters}")
            self.centres[label, :len(centres)] = torch.from_numpy(centres)
            self.counts[label] = len(centres)

    def forward(self) -> torch.Tensor:  # not a network: nothing to compute
        return self.centres


# --- after training: encode the training set, cluster per class --------------------------------------------------


@torch.no_grad()
def instance_vectors(feat_map: torch.Tensor, regions: torch.Tensor, label_nc: int
                     ) -> list[tuple[int, np.ndarray, float]]:
    """(class, feature vector, weight) per instance of one encoded image (official ``encode_features``).

    ``feat_map``: (1, feat_num, H, W) encoder output; ``regions``: (1, 1, H, W) instance (or label) ids.
    Instances whose class is not below ``label_nc`` are left out.
    """
    h, w = regions.shape[-2:]
    flat = regions.reshape(-1)
    feats = feat_map.reshape(feat_map.shape[1], -1)
    out = []
    for value in torch.unique(flat).tolist():
        label = instance_class(int(value))
        if not 0 <= label < label_nc:
            continue
        where = torch.nonzero(flat == value).squeeze(1)  # row-major order, as the official nonzero()
        num = where.numel()
        middle = int(where[num // 2])
        out.append((label, feats[:, middle].double().cpu().numpy(), num / (h * w // BLOCK_NUM)))
    return out


def kmeans(points: np.ndarray, k: int, seed: int = 0, starts: int = KMEANS_STARTS, iterations: int = 300,
           tol: float = 1e-4) -> np.ndarray:
    """``k`` centres of ``points`` (N, D) by Lloyd's algorithm from k-means++ seeds, the start with the lowest
    inertia of ``starts`` (scikit-learn's ``KMeans`` defaults; its tolerance is relative to the data's mean
    variance, as here). Deterministic for a ``seed``. Returns float64 (k, D); ``ValueError`` unless 1 <= k <= N.
    """
    x = torch.as_tensor(np.asarray(points, np.float64))
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    threshold = tol * float(x.var(dim=0, unbiased=False).mean()) if n > 1 else 0.0
    generator = torch.Generator().manual_seed(seed)
    best, best_inertia = None, float("inf")
    for _ in range(starts):
        centres = _kmeans_plus_plus(x, k, generator)
        for _ in range(iterations):
            assign = torch.cdist(x, centres).argmin(dim=1)
            sums = torch.zeros_like(centres).index_add_(0, assign, x)
            counts = torch.bincount(assign, minlength=k).to(x.dtype)
            moved = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
            shift = float(((moved - centres) ** 2).sum())
            centres = moved
            if shift <= threshold:
                break
        inertia = float((torch.cdist(x, centres).min(dim=1).values ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = centres, inertia
    return best.numpy()


def _kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Arthur & Vassilvitskii's seeding: each next centre drawn with probability proportional to its squared
    distance to the nearest centre so far (uniform among the points when every distance is 0)."""
    n = x.shape[0]
    chosen = [int(torch.randint(0, n, (1,), generator=generator))]
    nearest = ((x - x[chosen[0]]) ** 2).sum(dim=1)
    for _ in range(1, k):
        weights = nearest if float(nearest.sum()) > 0 else torch.ones_like(nearest)
        pick = int(torch.multinomial(weights, 1, generator=generator))
        chosen.append(pick)
        nearest = torch.minimum(nearest, ((x - x[pick]) ** 2).sum(dim=1))
    return x[chosen].clone()


def cluster_vectors(vectors: Sequence[tuple[int, np.ndarray, float]], n_clusters: int, seed: int = 0
                    ) -> dict[int, np.ndarray]:
    """Official clustering step: per class, the vectors with weight > 0.5, ``min(n, n_clusters)`` centres."""
    by_class: dict[int, list[np.ndarray]] = {}
    for label, vector, weight in vectors:
        if weight > MIN_WEIGHT:
            by_class.setdefault(label, []).append(vector)
    return {label: kmeans(np.stack(found), min(len(found), n_clusters), seed=seed).astype(np.float32)
            for label, found in sorted(by_class.items())}


@torch.no_grad()
def encode_training_set(net_e: nn.Module, train, samples: Sequence, label_feat: bool, device: torch.device,
                        rank: int = 0, world_size: int = 1) -> list[tuple[int, int, np.ndarray, float]]:
    """(sample index, class, vector, weight) for every instance of this rank's share of ``samples`` (indices
    ``rank, rank + world_size, ...``), each image whole after the training resize (centre crop for cropping
    transforms, no flip), the encoder in eval mode."""
    from .data import TransformParams, load_sample, resized_size

    was_training = net_e.training
    net_e.eval()
    found = []
    try:
        for index in range(rank, len(samples), world_size):
            sample = samples[index]
            resized = resized_size(train, sample.size)
            crop = None
            if "crop" in train.resize_or_crop and (resized[0] > train.fine_size or resized[1] > train.fine_size):
                crop = ((resized[0] - train.fine_size) // 2, (resized[1] - train.fine_size) // 2)
            item = load_sample(train, sample, TransformParams(resized, crop, False))
            regions = (item["label"] if label_feat else item["inst"])[None].to(device)
            feat_map = net_e(item["image"][None].to(device), regions)
            found += [(index, *v) for v in instance_vectors(feat_map.float(), regions, train.model.label_nc)]
    finally:
        net_e.train(was_training)
    return found


# --- inference ----------------------------------------------------------------------------------------------------


def sample_feature_map(clusters: Mapping[int, np.ndarray], inst: torch.Tensor, feat_num: int,
                       generator: torch.Generator | None = None, *, seed: int | None = None,
                       choice: int | None = None) -> torch.Tensor:
    """Official ``sample_features``: every instance gets one cluster centre of its class.

    ``inst``: (B, 1, H, W) instance ids (class ``i`` if ``i < 1000``, else ``i // 1000``). Returns
    (B, feat_num, H, W) on ``inst``'s device. The centre is drawn at random per instance, in ascending id order:
    from ``generator`` across the batch, or with ``seed`` from a generator seeded afresh for each image (the same
    map gives the same draw whatever else is in the batch); ``choice`` K takes centre ``K`` of every class
    instead (``K mod`` the class's count when it has fewer). Instances of classes without centres get zeros.
    """
    b, _, h, w = inst.shape
    out = torch.zeros(b, feat_num, h, w)
    ids = inst.long().cpu()
    for i in range(b):
        image_ids = ids[i, 0]
        draw = torch.Generator().manual_seed(seed) if seed is not None else generator
        for value in torch.unique(image_ids).tolist():
            centres = clusters.get(instance_class(int(value)))
            if centres is None or len(centres) == 0:
                continue
            if choice is not None:
                pick = choice % len(centres)
            else:
                pick = int(torch.randint(0, len(centres), (1,), generator=draw))
            mask = image_ids == value
            out[i][:, mask] = torch.from_numpy(np.asarray(centres[pick], np.float32))[:, None]
    return out.to(inst.device)
