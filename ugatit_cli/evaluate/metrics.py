"""KID and FID from feature vectors (no IO, no networks): the numbers the U-GAT-IT paper reports.

KID is Bińkowski et al.'s (ICLR 2018) unbiased MMD² with the cubic polynomial kernel
``k(x, y) = (x·y / d + 1) ** 3``, averaged over random subsets; FID is Heusel et al.'s (NeurIPS 2017)
Fréchet distance between Gaussians fitted to the features. Subsets are drawn exactly as torch-fidelity 0.4
draws them (``numpy.random.RandomState(seed)``, without replacement), so equal seeds give equal numbers.
Everything is computed in float64.
"""

import numpy as np
import torch

# Above this many feature vectors in both sets together, kernels are computed per subset instead of once.
_GRAM_LIMIT = 4096


def _as_float64(features: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or len(array) < 2:
        raise ValueError(f"{name} features must be a 2-D array of at least 2 rows, got shape {array.shape}")
    return array


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel: ``(x·y / d + 1) ** 3`` for every pair of rows, d = feature dimension."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def unbiased_mmd2(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    """Unbiased MMD² of two equal-size samples from their kernel matrices (diagonals of k_xx, k_yy left out)."""
    m = len(k_xx)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kid_from_features(
    real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray, subsets: int = 100,
    subset_size: int = 1000, seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance ``(mean, std)`` over ``subsets`` random subsets, in raw units (the paper: ×100).

    Each subset holds ``min(subset_size, len(real), len(fake))`` rows of each set. The draws follow
    torch-fidelity's ``kid_features_to_metric(fake, real, rng_seed=seed)`` (its input1 is the generated set),
    so its numbers come back whenever it accepts the subset size.
    """
    real = _as_float64(real, "real")
    fake = _as_float64(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in dimension: {real.shape[1]} vs {fake.shape[1]}")
    if subsets < 1 or subset_size < 2:
        raise ValueError("KID needs at least 1 subset of at least 2 rows")
    n_fake, n_real = len(fake), len(real)
    size = min(subset_size, n_fake, n_real)
    rng = np.random.RandomState(seed)
    # Small sets: one kernel matrix for all subsets, then only gathers; 100 subsets of 1000 would otherwise
    # recompute the same dot products ~75 times over.
    gram = polynomial_kernel(np.vstack([fake, real]), np.vstack([fake, real])) if n_fake + n_real <= _GRAM_LIMIT \
        else None
    mmds = np.empty(subsets)
    for i in range(subsets):
        f = rng.choice(n_fake, size, replace=False)
        r = rng.choice(n_real, size, replace=False)
        if gram is not None:
            r_in_gram = r + n_fake
            mmds[i] = unbiased_mmd2(gram[np.ix_(f, f)], gram[np.ix_(f, r_in_gram)], gram[np.ix_(r_in_gram, r_in_gram)])
        else:
            x, y = fake[f], real[r]
            mmds[i] = unbiased_mmd2(polynomial_kernel(x, x), polynomial_kernel(x, y), polynomial_kernel(y, y))
    return float(mmds.mean()), float(mmds.std())


def _covariance_factor(features: np.ndarray) -> np.ndarray:
    """A matrix ``F`` with ``F.T @ F`` = the sample covariance, with the fewest rows: ``min(n, d)``."""
    n, d = features.shape
    centred = features - features.mean(axis=0)
    if n <= d:
        return centred / np.sqrt(n - 1)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / (n - 1))
    return (eigenvectors * np.sqrt(eigenvalues.clip(min=0))) @ eigenvectors.T  # the symmetric square root


def fid_from_features(real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance ``|mu_r - mu_f|² + tr(S_r + S_f - 2 (S_r S_f)^½)`` of Gaussians fitted to the features.

    With covariance factors ``S = F.T @ F``, ``tr (S_r S_f)^½`` is the sum of the singular values of
    ``F_r @ F_f.T`` (its square has the spectrum of ``S_r S_f``). For the paper's test sets (100-400
    images, 2048-d) that is an SVD of a 100 x 100 matrix instead of scipy's ``sqrtm`` of a singular
    2048 x 2048 product: milliseconds instead of seconds, always real, no scipy needed.
    """
    real = _as_float64(real, "real")
    fake = _as_float64(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in dimension: {real.shape[1]} vs {fake.shape[1]}")
    factor_r, factor_f = _covariance_factor(real), _covariance_factor(fake)
    tr_covmean = np.linalg.svd(factor_r @ factor_f.T, compute_uv=False).sum()
    diff = real.mean(axis=0) - fake.mean(axis=0)
    return float(diff @ diff + (factor_r**2).sum() + (factor_f**2).sum() - 2.0 * tr_covmean)
