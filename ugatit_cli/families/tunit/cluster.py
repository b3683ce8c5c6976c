"""Pseudo-domains of images and cluster accuracy.

Accuracy is the official (IIC) evaluation: count how often pseudo-domain i meets class j, find the
one-to-one matching of domains to classes that maximises the matched count (Hungarian algorithm), and
report the share of images whose matched class is their class (clovaai/tunit ``validation/eval_metrics.py``
``_hungarian_match`` and ``_acc``). The matching uses scipy's ``linear_sum_assignment``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ...errors import UserError


@torch.no_grad()
def assign(guiding: nn.Module, batches: Iterable[torch.Tensor] | torch.Tensor,
           batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-domain of every image: ``(domains N long, probabilities N x K float)`` from the guiding
    network's logits (argmax / softmax). ``batches``: B x 3 x H x W tensors in [-1, 1], or one N x 3 x H x W
    tensor (split into ``batch_size``). The network's mode is left as it is (use eval mode for inference:
    batch-norm running statistics, so an image's domain does not depend on its batch)."""
    if isinstance(batches, torch.Tensor):
        batches = batches.split(batch_size)
    device = next(guiding.parameters()).device
    probs = [torch.softmax(guiding(x.to(device))["disc"].float(), 1).cpu() for x in batches]
    if not probs:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, 0)
    p = torch.cat(probs)
    return p.argmax(1), p


@dataclass
class ClusterAccuracy:
    """Result of :func:`cluster_accuracy`: ``accuracy`` in [0, 1], ``mapping`` domain -> class (domains
    left unmatched when K > classes are absent), ``counts`` the K x C co-occurrence matrix."""

    accuracy: float
    mapping: dict[int, int]
    counts: np.ndarray


def cluster_accuracy(domains, labels, k: int | None = None, n_classes: int | None = None) -> ClusterAccuracy:
    """Best one-to-one matching of pseudo-domains (ints in [0, k)) to class labels (ints in [0, n_classes));
    K may differ from the class count (then some domains or classes stay unmatched and count as wrong)."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        raise UserError("cluster accuracy needs scipy: pip install 'ugatit-cli[eval]'") from None

    d = np.asarray(domains, dtype=np.int64).ravel()
    t = np.asarray(labels, dtype=np.int64).ravel()
    if d.shape != t.shape:
        raise ValueError(f"{d.size} domains but {t.size} labels")
    if d.size == 0:
        raise ValueError("no images to score")
    if d.min() < 0 or t.min() < 0:
        raise ValueError("domains and labels must be non-negative")
    k = int(d.max()) + 1 if k is None else k
    n_classes = int(t.max()) + 1 if n_classes is None else n_classes
    if d.max() >= k or t.max() >= n_classes:
        raise ValueError("a domain or label is out of range")
    counts = np.zeros((k, n_classes), dtype=np.int64)
    np.add.at(counts, (d, t), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    matched = int(counts[rows, cols].sum())
    return ClusterAccuracy(matched / d.size, {int(r): int(c) for r, c in zip(rows, cols, strict=True)}, counts)
