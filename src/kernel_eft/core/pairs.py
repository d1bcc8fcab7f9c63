"""Pair coordinates for symmetric P x P matrices.

Convention (used everywhere in kernel-eft): pair m runs over (a, b) with a <= b in row-major
order, (0,0), (0,1), ..., (0,P-1), (1,1), ..., (P-1,P-1); p = P(P+1)/2.  A symmetric matrix M
maps to the vector M[m] = M[a_m, b_m] (no sqrt(2) weights).  A linear map on symmetric matrices,
dM = D[dK], is the p x p matrix D[m, m'] = d M_m / d K_m' where an off-diagonal K_m' moves both
K_ab and K_ba together (the symmetric perturbation).  With that convention covariances transport
as V -> J V J^T in pair coordinates.
"""

from __future__ import annotations

import numpy as np


def n_pairs(P: int) -> int:
    return P * (P + 1) // 2


def pair_indices(P: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-major (a, b), a <= b, index arrays of length p."""
    a, b = np.triu_indices(P)
    return a, b


def pair_lookup(P: int) -> np.ndarray:
    """P x P integer array: the pair index of (a, b), symmetric."""
    a, b = pair_indices(P)
    lut = np.empty((P, P), dtype=np.intp)
    lut[a, b] = np.arange(a.size)
    lut[b, a] = np.arange(a.size)
    return lut


def to_pairs(M: np.ndarray) -> np.ndarray:
    """(..., P, P) symmetric -> (..., p)."""
    P = M.shape[-1]
    a, b = pair_indices(P)
    return M[..., a, b]


def from_pairs(v: np.ndarray, P: int | None = None) -> np.ndarray:
    """(..., p) -> (..., P, P) symmetric."""
    p = v.shape[-1]
    if P is None:
        P = int(round((np.sqrt(8 * p + 1) - 1) / 2))
    if n_pairs(P) != p:
        raise ValueError(f"{p} pair entries do not form a symmetric {P}x{P} matrix")
    return v[..., pair_lookup(P)]


def pairs_to_four_index(V: np.ndarray, P: int) -> np.ndarray:
    """(..., p, p) covariance in pair coordinates -> (..., P, P, P, P) with V[ab, cd]."""
    lut = pair_lookup(P)
    return V[..., lut[:, :, None, None], lut[None, None, :, :]]


def four_index_to_pairs(V: np.ndarray) -> np.ndarray:
    """(..., P, P, P, P) -> (..., p, p)."""
    P = V.shape[-1]
    a, b = pair_indices(P)
    return V[..., a[:, None], b[:, None], a[None, :], b[None, :]]


def wishart_v4(K: np.ndarray) -> np.ndarray:
    """n Cov(G_ab, G_cd) for G = h h^T / n with rows h_i ~ N(0, K): K_ac K_bd + K_ad K_bc, (P,P,P,P)."""
    return np.einsum("ac,bd->abcd", K, K) + np.einsum("ad,bc->abcd", K, K)


def pair_multiplicity(P: int) -> np.ndarray:
    """Number of ordered index pairs (c, d) in pair m: 1 on the diagonal, 2 off it."""
    a, b = pair_indices(P)
    return np.where(a == b, 1.0, 2.0)
