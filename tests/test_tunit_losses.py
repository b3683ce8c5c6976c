"""TUNIT losses against the official formulas restated independently (numpy, float64), Hungarian accuracy."""

import math

import numpy as np
import pytest
import torch

from ugatit_cli.families.tunit.cluster import assign, cluster_accuracy
from ugatit_cli.families.tunit.losses import (
    contrastive_loss,
    d_hinge_fake,
    d_hinge_real,
    enqueue,
    g_adversarial,
    iic_augmentation,
    iic_loss,
    r1_penalty,
    reconstruction_loss,
)
from ugatit_cli.families.tunit.networks import GuidingNet


def _official_iic(p: np.ndarray, q: np.ndarray, eps: float = 1e-10) -> float:
    """IIC as the official calc_iic_loss: symmetrised normalised joint; marginals before clamping at eps."""
    joint = np.einsum("bi,bj->ij", p, q)
    joint = (joint + joint.T) / 2
    joint /= joint.sum()
    pi = np.repeat(joint.sum(1, keepdims=True), joint.shape[0], 1)
    pj = np.repeat(joint.sum(0, keepdims=True), joint.shape[0], 0)
    joint, pi, pj = (np.where(a < eps, eps, a) for a in (joint, pi, pj))
    return float(-(joint * (np.log(joint) - np.log(pj) - np.log(pi))).sum())


def _official_contrastive(q: np.ndarray, k: np.ndarray, queue: np.ndarray, t: float = 0.07) -> float:
    logits = np.concatenate([(q * k).sum(1, keepdims=True), q @ queue.T], 1) / t
    m = logits.max(1, keepdims=True)
    log_softmax = logits - m - np.log(np.exp(logits - m).sum(1, keepdims=True))
    return float(-log_softmax[:, 0].mean())


def test_iic_equals_official_formula_and_is_minus_mutual_information():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(32, 6, generator=g) * 3, 1)
    q = torch.softmax(torch.randn(32, 6, generator=g) * 3, 1)
    assert iic_loss(p, q).item() == pytest.approx(_official_iic(p.double().numpy(), q.double().numpy()), abs=1e-6)
    # perfectly consistent, balanced one-hot assignments: MI = log K, the minimum of the loss
    one_hot = torch.eye(4).repeat(8, 1)
    assert iic_loss(one_hot, one_hot).item() == pytest.approx(-math.log(4), abs=1e-5)
    # everything in one cluster: no information; the eps clamp keeps it finite
    lump = torch.zeros(8, 4)
    lump[:, 0] = 1
    assert iic_loss(lump, lump).item() == pytest.approx(0.0, abs=1e-6)
    # gradients flow and are finite even with empty clusters
    logits = torch.randn(8, 4, requires_grad=True)
    iic_loss(torch.softmax(logits, 1), lump).backward()
    assert torch.isfinite(logits.grad).all()


def test_contrastive_equals_official_formula_without_normalisation():
    g = torch.Generator().manual_seed(1)
    q, k, queue = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g), torch.randn(20, 8, generator=g)
    expected = _official_contrastive(q.double().numpy(), k.double().numpy(), queue.double().numpy())
    assert contrastive_loss(q, k, queue).item() == pytest.approx(expected, rel=1e-5)
    # scaling the codes changes the loss: they are not L2-normalised (as the official code)
    assert contrastive_loss(2 * q, k, queue).item() != pytest.approx(expected, rel=1e-3)
    # an empty queue is allowed (positive only: loss 0)
    assert contrastive_loss(q, k, queue[:0]).item() == pytest.approx(0.0, abs=1e-6)
    # the key is not differentiated
    qg, kg = q.clone().requires_grad_(), k.clone().requires_grad_()
    contrastive_loss(qg, kg, queue).backward()
    assert qg.grad is not None and kg.grad is None


def test_queue_keeps_the_newest_keys():
    queue = torch.zeros(0, 2)
    for i in range(5):
        queue = enqueue(queue, torch.full((3, 2), float(i)), size=7)
    assert queue.shape == (7, 2)
    assert queue[:, 0].tolist() == [2, 3, 3, 3, 4, 4, 4]


def test_adversarial_r1_and_reconstruction():
    logit = torch.tensor([-2.0, 0.5, 3.0])
    assert d_hinge_real(logit).item() == pytest.approx((3.0 + 0.5 + 0.0) / 3)
    assert d_hinge_fake(logit).item() == pytest.approx((0.0 + 1.5 + 4.0) / 3)
    assert g_adversarial(logit).item() == pytest.approx(-0.5)
    # R1 of a linear "discriminator" w . x: the gradient is w for every image, so the penalty is |w|^2
    w = torch.randn(3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    penalty = r1_penalty((x * w).sum(dim=(1, 2, 3)), x)
    assert penalty.item() == pytest.approx(w.square().sum().item(), rel=1e-5)
    assert reconstruction_loss(torch.ones(2, 3), torch.zeros(2, 3)).item() == 1.0


def test_iic_augmentation_is_random_in_range_and_reproducible():
    image = (torch.arange(3 * 40 * 40) % 255).reshape(3, 40, 40).to(torch.uint8)
    augment = iic_augmentation(32)
    torch.manual_seed(3)
    a = augment(image)
    torch.manual_seed(3)
    b = augment(image)
    c = augment(image)
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_iic_augmentation_without_flip_never_mirrors():
    # a left-heavy image: the affine and crop move it by at most a few pixels, a flip would move its mass right
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    image[:, :, :8] = 255

    def left_heavy(augment):
        x = augment(image)[0] + 1  # [0, 2], background 0
        return (x[:, :16].sum() > x[:, 16:].sum()).item()

    torch.manual_seed(0)
    left = [left_heavy(iic_augmentation(32, color=False, flip=False)) for _ in range(20)]
    mirrored = [not left_heavy(iic_augmentation(32, color=False)) for _ in range(20)]
    assert all(left) and any(mirrored)


def test_cluster_accuracy_is_the_best_one_to_one_matching():
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    assert cluster_accuracy([2, 2, 0, 0, 1, 1, 1], labels).accuracy == 1.0  # a relabelling is perfect
    result = cluster_accuracy([0, 0, 0, 1, 2, 2, 1], labels, k=3, n_classes=3)
    # best matching: 0->0 (2), 2->2 (2), 1->1 (1) = 5 of 7
    assert result.accuracy == pytest.approx(5 / 7)
    assert result.mapping == {0: 0, 1: 1, 2: 2}
    assert result.counts.sum() == 7
    # more domains than classes: unmatched domains count as wrong
    assert cluster_accuracy([0, 1, 2, 3], [0, 0, 1, 1], k=4, n_classes=2).accuracy == 0.5
    with pytest.raises(ValueError):
        cluster_accuracy([0, 1], [0])


def test_assign_gives_argmax_of_the_guiding_logits():
    torch.manual_seed(0)
    net = GuidingNet(k=4, sty_dim=8).eval()
    x = torch.rand(10, 3, 32, 32) * 2 - 1
    domains, probs = assign(net, x, batch_size=3)
    with torch.no_grad():
        expected = net(x)["disc"].argmax(1)
    assert torch.equal(domains, expected)
    assert probs.shape == (10, 4)
    torch.testing.assert_close(probs.sum(1), torch.ones(10))
