"""Comparing Monte Carlo with a theory: normalised errors, entry classes, theory curves on the Monte Carlo times.

Normalisation used throughout.  A "relative error" of a symmetric-matrix quantity X_ab is
(X_MC - X_th) / sqrt(|X_th,aa X_th,bb|), and of a covariance V[m, m'] it is
(V_MC - V_th) / sqrt(V_th[m,m] V_th[m',m']).  For diagonal entries this is the plain relative error;
off-diagonal entries are measured against the Cauchy-Schwarz scale, so an entry whose theory value
crosses zero (e.g. the off-diagonal of an odd activation at K_in,ab = 0) is not divided by zero.
"""

from __future__ import annotations

import numpy as np

from kernel_eft.core.pairs import pair_indices, pair_lookup


ENTRY_CLASSES = ("diag-diag", "diag-off", "off-off")


def entry_classes(P: int) -> dict[str, list[tuple[int, int]]]:
    """Pair-pair entries (m, m'), m <= m', of a covariance grouped as diag-diag, diag-off, off-off."""
    a, b = pair_indices(P)
    diag = a == b
    out = {name: [] for name in ENTRY_CLASSES}
    for m in range(a.size):
        for mp in range(m, a.size):
            if diag[m] and diag[mp]:
                out["diag-diag"].append((m, mp))
            elif diag[m] or diag[mp]:
                out["diag-off"].append((m, mp) if diag[m] else (mp, m))
            else:
                out["off-off"].append((m, mp))
    return out


def pair_label(m: int, P: int) -> str:
    a, b = pair_indices(P)
    return f"{a[m]}{b[m]}"


def kernel_scale(K: np.ndarray) -> np.ndarray:
    """sqrt(|K_aa K_bb|) in pair coordinates, (..., P, P) -> (..., p)."""
    a, b = pair_indices(K.shape[-1])
    return np.sqrt(np.abs(K[..., a, a] * K[..., b, b]))


def covariance_scale(V: np.ndarray) -> np.ndarray:
    """sqrt(|V[m,m] V[m',m']|), (..., p, p) -> (..., p, p)."""
    d = np.abs(np.diagonal(V, axis1=-2, axis2=-1))
    return np.sqrt(d[..., :, None] * d[..., None, :])


def normalised_error(value, se, reference, scale):
    """((value - reference)/scale, se/scale); NaN where the scale vanishes."""
    with np.errstate(invalid="ignore", divide="ignore"):
        good = scale > 0
        safe = np.where(good, scale, 1.0)
        return np.where(good, (value - reference) / safe, np.nan), np.where(good, se / safe, np.nan)


def interpolate_in_time(t_src, values, t_dst) -> np.ndarray:
    """Cubic-spline interpolation of a continuous-depth solution onto the Monte Carlo times."""
    from scipy.interpolate import CubicSpline

    t_src = np.asarray(t_src, dtype=np.float64)
    t_dst = np.asarray(t_dst, dtype=np.float64)
    span = t_src[-1] - t_src[0]
    if t_dst.min() < t_src[0] - 1e-9 * span or t_dst.max() > t_src[-1] + 1e-9 * span:
        raise ValueError(f"theory covers t in [{t_src[0]}, {t_src[-1]}], Monte Carlo needs "
                         f"[{t_dst.min()}, {t_dst.max()}]")
    if t_src.size < 4:
        flat = np.asarray(values).reshape(t_src.size, -1)
        out = np.stack([np.interp(t_dst, t_src, flat[:, j]) for j in range(flat.shape[1])], axis=1)
        return out.reshape((t_dst.size,) + np.asarray(values).shape[1:])
    return CubicSpline(t_src, values, axis=0)(np.clip(t_dst, t_src[0], t_src[-1]))


def kernel_scale_pairs(K_pairs: np.ndarray, P: int) -> np.ndarray:
    """kernel_scale for kernels already in pair coordinates, (..., p) -> (..., p)."""
    lut = pair_lookup(P)
    return kernel_scale(K_pairs[..., lut])


def next_order_verdict(width: int, mc, se, V4, V4_1, sigma: float = 4.0) -> dict:
    """One width's Monte Carlo n Cov(G) against V4 + V4_1/n with no extrapolation, entry by entry (pairs, layers
    >= 1, upper triangle of (p, p)), by the criterion of docs/exact_theory.md section 7.3: where V4 alone is more
    than `sigma` se off ("tested"), |MC - V4 - V4_1/n| <= max(sigma se, 1% of the entry's scale
    sqrt(V4[m,m] V4[m',m']), 1.5 e1^2 of that scale), e1 = |MC - V4| / scale the O(1/n) theory's relative miss (the
    size of the next order).  Returns counts, worst pulls, the median over tested entries of |MC - V4 - V4_1/n| /
    |MC - V4| and the last layer's n^2 (MC - V4 - V4_1/n) and n (MC - V4) (flat in n, and tending to V4_1)."""
    mc, se, V4, V4_1 = (np.asarray(a, float) for a in (mc, se, V4, V4_1))
    iu, ju = np.triu_indices(V4.shape[-1])
    scale = covariance_scale(V4)[1:, iu, ju]
    mc, se, V4, V4_1 = (a[1:, iu, ju] for a in (mc, se, V4, V4_1))
    lead, nxt = mc - V4, mc - V4 - V4_1 / width
    tol = np.maximum.reduce([sigma * se, 0.01 * scale, 1.5 * (np.abs(lead) / scale) ** 2 * scale])
    tested = np.abs(lead) > sigma * se
    ok = np.abs(nxt) <= tol
    return {"n": int(width), "tested": int(tested.sum()), "entries": int(tested.size),
            "failed": int((tested & ~ok).sum()),
            "max_pull_next": float(np.max(np.abs(nxt / se))), "max_pull_lead": float(np.max(np.abs(lead / se))),
            "median_ratio": float(np.median(np.abs(nxt[tested]) / np.abs(lead[tested]))) if tested.any() else None,
            "worst_excess": float(np.max(np.abs(nxt) / tol)),
            "n2_resid_last": (width ** 2 * nxt[-1]).tolist(), "n_resid_last": (width * lead[-1]).tolist(),
            "se_last": se[-1].tolist()}
