"""TUNIT losses and the augmentation that defines IIC's positive pairs.

Formulas from the paper (Baek et al., ICCV 2021, eqs. 1-6) with the official constants (clovaai/tunit
``tools/ops.py``, MIT, and ``datasets/datasetgetter.py``):

- IIC (Ji et al., ICCV 2019): joint P = sum over the batch of p(x) p(x+)^T, symmetrised ((P + P^T) / 2),
  normalised to sum 1; marginals are its row and column sums (taken before clamping); P, and both marginals,
  are clamped below at 1e-10; the loss is ``-sum P * (log P - log P_i - log P_j)`` = minus the mutual
  information (minimised). Inputs are softmax probabilities.
- Contrastive (MoCo-style, as the official code: the codes are **not** L2-normalised): logits
  ``[q . k, q . queue^T] / 0.07``, cross-entropy with the positive at index 0 (mean over the batch).
  The queue holds the last 1024 keys (from C_EMA on the augmented images), appended after each iteration.
- Adversarial: hinge for D (``relu(1 - real) + relu(1 + fake)``, means), ``-mean(fake)`` for G.
- R1: ``sum(grad_x D(x_real)[y]^2) / batch``, weighted 10.
- Reconstruction: mean absolute error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import autograd

IIC_EPS = 1e-10
TEMPERATURE = 0.07
QUEUE_SIZE = 1024


def iic_joint(p: torch.Tensor, p_tf: torch.Tensor) -> torch.Tensor:
    """K x K symmetric joint distribution of the pseudo-domains of images and their augmented copies."""
    if p.shape != p_tf.shape or p.dim() != 2:
        raise ValueError(f"expected two B x K probability matrices of one shape, got {tuple(p.shape)} and "
                         f"{tuple(p_tf.shape)}")
    joint = p.t() @ p_tf
    joint = (joint + joint.t()) / 2
    return joint / joint.sum()


def iic_loss(p: torch.Tensor, p_tf: torch.Tensor, eps: float = IIC_EPS) -> torch.Tensor:
    """Minus the mutual information between the cluster assignments of ``p`` and ``p_tf`` (B x K softmax
    outputs); a scalar in [-log K, 0]."""
    joint = iic_joint(p, p_tf)
    p_i = joint.sum(dim=1, keepdim=True)
    p_j = joint.sum(dim=0, keepdim=True)
    joint, p_i, p_j = joint.clamp_min(eps), p_i.clamp_min(eps), p_j.clamp_min(eps)
    return -(joint * (joint.log() - p_i.log() - p_j.log())).sum()


def contrastive_loss(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor,
                     temperature: float = TEMPERATURE) -> torch.Tensor:
    """InfoNCE of ``query`` (B x D) against its positive ``key`` (B x D, not differentiated) and the
    negatives ``queue`` (N x D, N >= 0)."""
    key = key.detach()
    positive = (query * key).sum(dim=1, keepdim=True)
    negative = query @ queue.t().to(query.dtype)
    logits = torch.cat([positive, negative], dim=1) / temperature
    target = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
    return F.cross_entropy(logits, target)


def enqueue(queue: torch.Tensor, keys: torch.Tensor, size: int = QUEUE_SIZE) -> torch.Tensor:
    """Append ``keys`` to the queue and keep the newest ``size`` rows."""
    queue = torch.cat([queue, keys.detach().to(queue.dtype)], dim=0)
    return queue[-size:] if queue.shape[0] > size else queue


def d_hinge_real(logit: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - logit).mean()


def d_hinge_fake(logit: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 + logit).mean()


def g_adversarial(logit: torch.Tensor) -> torch.Tensor:
    return -logit.mean()


def r1_penalty(real_logit: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Squared gradient norm of ``real_logit.sum()`` with respect to ``real`` (which must require grad),
    summed over pixels and averaged over the batch; differentiable (create_graph)."""
    (grad,) = autograd.grad(real_logit.sum(), real, create_graph=True)
    return grad.square().sum() / real.shape[0]


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (output - target).abs().mean()


# --- the augmentation of IIC ------------------------------------------------------------------------------------


def iic_augmentation(size: int, color: bool = True, flip: bool = True):
    """The official transformation of the second view (``x_tf``), for one image (PIL or uint8 C x H x W
    tensor) to a float C x size x size tensor in [-1, 1]: random affine (±20°, translate 0.1, shear 10),
    random resized crop (scale and ratio 0.9-1.1, bilinear), colour jitter (0.4, 0.4, 0.4, 0.125; the
    official two-domain datasets leave it out: ``color=False``), horizontal flip (``flip=False`` leaves it
    out, a recipe choice for data whose mirror image is another class, such as digits: not official).

    torchvision.transforms.v2 draws from torch's global generator; seed it to reproduce a view.
    """
    from torchvision.transforms import InterpolationMode, v2

    steps = [
        v2.ToImage(),
        v2.RandomAffine(20, translate=(0.1, 0.1), shear=10),
        v2.RandomResizedCrop(size, scale=(0.9, 1.1), ratio=(0.9, 1.1), interpolation=InterpolationMode.BILINEAR,
                             antialias=True),
    ]
    if color:
        steps.append(v2.ColorJitter(0.4, 0.4, 0.4, 0.125))
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)]
    return v2.Compose(steps)


def plain_view(size: int, flip: bool = True):
    """The official first view (``x_org``): resize to size x size (bilinear), random horizontal flip,
    to [-1, 1]. ``flip=False`` is the official test transform."""
    from torchvision.transforms import InterpolationMode, v2

    steps = [v2.ToImage(), v2.Resize((size, size), interpolation=InterpolationMode.BILINEAR, antialias=True)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)]
    return v2.Compose(steps)
