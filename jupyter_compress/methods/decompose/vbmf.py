"""Automatic rank by empirical variational Bayesian matrix factorisation (EVBMF).

Nakajima, Sugiyama, Babacan and Tomioka (JMLR 2013, "Global analytic solution of fully-observed
variational Bayesian matrix factorization") show that, for an L x M matrix (L <= M, alpha = L/M)
observed with Gaussian noise of variance sigma^2, the empirical VB solution keeps exactly the
singular values above ``sqrt(M sigma^2 (1 + tau)(1 + alpha / tau))`` with ``tau = 2.5129 sqrt(alpha)``,
and that sigma^2 is the minimiser of a one-dimensional objective of the spectrum alone.
Kim et al. (2016) pick Tucker-2 ranks this way, one mode unfolding at a time.

Written here because tensorly has no VBMF; it is a few lines of numpy on the singular values
(no scipy dependency: the 1-D minimisation is a log-spaced grid followed by golden-section refinement).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["vbmf_rank", "vbmf_noise"]

_TAU_CONST = 2.5129  # the root of the EVB threshold equation, in units of sqrt(alpha) (Nakajima et al.)


def _objective(sigma2: np.ndarray, s2: np.ndarray, m: int, alpha: float, x_bar: float) -> np.ndarray:
    """Free energy (up to constants) as a function of the noise variance, vectorised over sigma2."""
    x = s2[None, :] / (m * sigma2[:, None])
    out = (x - np.log(x)).sum(axis=1)
    keep = x > x_bar
    with np.errstate(invalid="ignore", divide="ignore"):
        d = x - (1 + alpha)
        tau = 0.5 * (d + np.sqrt(np.maximum(d * d - 4 * alpha, 0.0)))
        extra = np.log(tau + 1) + alpha * np.log(tau / alpha + 1) - tau
    return out + np.where(keep, extra, 0.0).sum(axis=1)


def vbmf_noise(singular_values: torch.Tensor, shape: tuple[int, int]) -> tuple[float, float]:
    """(sigma^2, threshold) estimated from the full spectrum of a matrix of ``shape``."""
    s = np.sort(singular_values.detach().double().cpu().numpy())[::-1]
    big, small = max(shape), min(shape)
    s = s[:small]
    if s.size < small:  # a truncated spectrum: the missing values carry no energy we know of
        s = np.concatenate([s, np.zeros(small - s.size)])
    s2 = s**2
    alpha = small / big
    tau = _TAU_CONST * math.sqrt(alpha)
    x_bar = (1 + tau) * (1 + alpha / tau)
    if s2.sum() == 0 or small < 2:  # a matrix of one row or column has rank 1 at most: nothing to estimate
        return 0.0, 0.0
    h_max = max(1, min(int(math.ceil(small / (1 + alpha))) - 1, small - 1))
    upper = s2.sum() / (small * big)
    lower = max(s2[h_max] / (big * x_bar), s2[h_max:].mean() / big, upper * 1e-12)
    if lower >= upper:
        lower = upper * 1e-3
    s2 = np.maximum(s2, s2.max() * 1e-30)  # log(0) guard for exactly rank-deficient matrices
    grid = np.geomspace(lower, upper, 256)
    values = _objective(grid, s2, big, alpha, x_bar)
    i = int(np.argmin(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    golden = (math.sqrt(5) - 1) / 2
    for _ in range(60):  # golden-section search in log space between the grid neighbours
        a = hi - golden * (hi - lo)
        b = lo + golden * (hi - lo)
        fa, fb = _objective(np.array([a, b]), s2, big, alpha, x_bar)
        if fa < fb:
            hi = b
        else:
            lo = a
    sigma2 = 0.5 * (lo + hi)
    if _objective(np.array([sigma2]), s2, big, alpha, x_bar)[0] > values[i]:
        sigma2 = grid[i]
    return float(sigma2), float(math.sqrt(big * sigma2 * x_bar))


def vbmf_rank(singular_values: torch.Tensor, shape: tuple[int, int]) -> int:
    """Number of singular values above the EVB threshold (may be 0 for pure noise)."""
    _, threshold = vbmf_noise(singular_values, shape)
    return int((singular_values.detach().double() > threshold).sum())
