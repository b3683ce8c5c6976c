"""Paired metrics of a label -> photo model: PSNR and SSIM of each generated image against its real photo.

Both come from scikit-image (``skimage.metrics.peak_signal_noise_ratio`` and ``structural_similarity``, the
Wang et al. 2004 SSIM with a 7x7 uniform window, per channel, averaged), on 8-bit RGB images with data range
255, the generated image at the real photo's size. The official pix2pixHD evaluation (segmentation accuracy of
the generated images by a pretrained segmentation network) is not computed: it needs that network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...errors import UserError


@dataclass(frozen=True)
class PairedScores:
    """Per-image PSNR (dB) and SSIM, with their means and (population) standard deviations."""

    psnr: tuple[float, ...]
    ssim: tuple[float, ...]

    def summary(self) -> dict[str, float | int]:
        return {"pairs": len(self.psnr),
                "psnr_mean": float(np.mean(self.psnr)), "psnr_std": float(np.std(self.psnr)),
                "ssim_mean": float(np.mean(self.ssim)), "ssim_std": float(np.std(self.ssim))}


def _skimage_metrics():
    try:
        from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    except ImportError:
        raise UserError("PSNR and SSIM need scikit-image: pip install 'ugatit-cli[eval]'") from None
    return peak_signal_noise_ratio, structural_similarity


def psnr_ssim(fake: np.ndarray, real: np.ndarray) -> tuple[float, float]:
    """PSNR (dB; ``inf`` for identical images) and SSIM of two uint8 ``(H, W, 3)`` arrays of one size."""
    if fake.shape != real.shape or fake.ndim != 3 or fake.dtype != np.uint8 or real.dtype != np.uint8:
        raise ValueError(f"need two uint8 (H, W, 3) arrays of one shape, got {fake.shape} {fake.dtype} and "
                         f"{real.shape} {real.dtype}")
    peak_snr, ssim = _skimage_metrics()
    if np.array_equal(fake, real):
        return math.inf, 1.0
    return (float(peak_snr(real, fake, data_range=255)),
            float(ssim(real, fake, data_range=255, channel_axis=-1)))


def paired_scores(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> PairedScores:
    """:func:`psnr_ssim` of every ``(generated, real)`` pair."""
    scores = [psnr_ssim(fake, real) for fake, real in pairs]
    return PairedScores(tuple(s[0] for s in scores), tuple(s[1] for s in scores))
