"""The loss terms of the official PyTorch training loop (znxlwm/UGATIT-pytorch ``UGATIT.train``), one by one.

Domains are named as in the official code: the "A" terms judge images in domain A (``disGA``/``disLA`` on
``fake_B2A``, the cycle back to A, ``genB2A``'s identity and CAM), the "B" terms the same for domain B.
Every term is computed in at least float32, whatever precision the networks ran in under autocast.
"""

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _full(x: Tensor) -> Tensor:
    """``x`` in at least float32 (autocast may have produced bf16/fp16; float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))

#: The four discriminators by their official suffix (G: global, L: local; A/B: the domain they judge).
DISCRIMINATORS = ("GA", "LA", "GB", "LB")


def lsgan(logit: Tensor, target: float) -> Tensor:
    """Least-squares GAN loss: mean squared distance of ``logit`` to the constant ``target``."""
    logit = _full(logit)
    return F.mse_loss(logit, torch.full_like(logit, target))


def discriminator_terms(real: dict[str, tuple[Tensor, Tensor]],
                        fake: dict[str, tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """``d_adv_X`` and ``d_adv_cam_X`` for each discriminator X: real pushed to 1, translated to 0.

    ``real[X]``/``fake[X]`` are the (patch logit, CAM logit) discriminator X gave a real/translated batch.
    """
    terms = {}
    for name in DISCRIMINATORS:
        (real_logit, real_cam), (fake_logit, fake_cam) = real[name], fake[name]
        terms[f"d_adv_{name}"] = lsgan(real_logit, 1.0) + lsgan(fake_logit, 0.0)
        terms[f"d_adv_cam_{name}"] = lsgan(real_cam, 1.0) + lsgan(fake_cam, 0.0)
    return terms


def discriminator_loss(terms: dict[str, Tensor], adv_weight: float) -> dict[str, Tensor]:
    """``d_loss_A``, ``d_loss_B`` and their sum ``d_loss`` (the official ``Discriminator_loss``)."""
    out = {}
    for domain in "AB":
        out[f"d_loss_{domain}"] = adv_weight * sum(
            terms[f"d_adv_{kind}{scale}{domain}"] for scale in "GL" for kind in ("", "cam_"))
    out["d_loss"] = out["d_loss_A"] + out["d_loss_B"]
    return out


def generator_terms(fake: dict[str, tuple[Tensor, Tensor]], real_a: Tensor, real_b: Tensor,
                    images: dict[str, Tensor], cam_logits: dict[str, Tensor]) -> dict[str, Tensor]:
    """Adversarial, cycle (L1), identity (L1) and CAM (BCE with logits) terms of the generator update.

    ``fake[X]``: discriminator X's (patch logit, CAM logit) of the translated batch it judges;
    ``images``: ``fake_A2B2A fake_B2A2B fake_A2A fake_B2B``; ``cam_logits``: the generators' CAM logits
    ``fake_A2B fake_B2A`` (translations: target 1, "this is the source domain") and ``fake_A2A fake_B2B``
    (identity mappings: target 0).
    """
    terms = {}
    for name in DISCRIMINATORS:
        logit, cam = fake[name]
        terms[f"g_adv_{name}"] = lsgan(logit, 1.0)
        terms[f"g_adv_cam_{name}"] = lsgan(cam, 1.0)
    for domain, other, real in (("A", "B", real_a), ("B", "A", real_b)):
        cycled = _full(images[f"fake_{domain}2{other}2{domain}"])
        same = _full(images[f"fake_{domain}2{domain}"])
        translated_cam = _full(cam_logits[f"fake_{other}2{domain}"])
        identity_cam = _full(cam_logits[f"fake_{domain}2{domain}"])
        terms[f"g_cycle_{domain}"] = F.l1_loss(cycled, real)
        terms[f"g_identity_{domain}"] = F.l1_loss(same, real)
        terms[f"g_cam_{domain}"] = (
            F.binary_cross_entropy_with_logits(translated_cam, torch.ones_like(translated_cam))
            + F.binary_cross_entropy_with_logits(identity_cam, torch.zeros_like(identity_cam)))
    return terms


def generator_loss(terms: dict[str, Tensor], adv_weight: float, cycle_weight: float, identity_weight: float,
                   cam_weight: float) -> dict[str, Tensor]:
    """``g_loss_A``, ``g_loss_B`` and their sum ``g_loss`` (the official ``Generator_loss``)."""
    out = {}
    for domain in "AB":
        adversarial = sum(terms[f"g_adv_{kind}{scale}{domain}"] for scale in "GL" for kind in ("", "cam_"))
        out[f"g_loss_{domain}"] = (adv_weight * adversarial + cycle_weight * terms[f"g_cycle_{domain}"]
                                   + identity_weight * terms[f"g_identity_{domain}"]
                                   + cam_weight * terms[f"g_cam_{domain}"])
    out["g_loss"] = out["g_loss_A"] + out["g_loss_B"]
    return out
