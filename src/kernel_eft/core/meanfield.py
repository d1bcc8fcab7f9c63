"""The mean-field map and what one residual block does to the kernel at infinite width.

    f(K) = sw2 F(K) + sb2 11^T                       (kernel_eft.core.expectations.f_matrix)
    K0^{l+1} = K0^l + dt f(K0^l),  dt = T / L        (`mean_kernel_discrete`: the n -> infinity limit of E[G^l])

and the one-block noise: given h, the increments of a block are i.i.d. over neurons with covariance
Om = sw2 S + sb2 11^T, so n Cov(dG_ab, dG_cd | h) = dt S4(G, Om) + dt^2 S2(Om) (`source_s4`, `source_s2`).
The simulator (K1 = n (mean G - K0_discrete)), both closures and the diagnostics use these; none of them
computes them on its own.
"""

from __future__ import annotations

import numpy as np

from kernel_eft.core.activations import get_activation
from kernel_eft.core.expectations import f_matrix, kernel_jacobian
from kernel_eft.core.pairs import pair_indices


def mean_kernel_discrete(activation, kin, sw2: float, sb2: float, time: float, depth: int,
                         check_finite: bool = False) -> np.ndarray:
    """Infinite-width discrete-layer mean kernel, K0 <- K0 + dt f(K0); returns (depth+1, P, P).

    This is the exact n -> infinity limit of E[G^l] at finite L, so K1 = n (E[G] - K0_discrete) carries no
    O(n/L) discretisation artefact.  check_finite: raise FloatingPointError naming the first layer (and t)
    where K0 overflows; otherwise the non-finite values are returned for the caller to report.
    """
    act = get_activation(activation)
    dt = time / depth
    K = np.array(kin, dtype=np.float64)
    out = np.empty((depth + 1,) + K.shape)
    out[0] = K
    for layer in range(depth):
        with np.errstate(over="ignore", invalid="ignore"):  # reported with its layer (here or by the caller)
            K = K + dt * f_matrix(act, K, sw2, sb2)
        if check_finite and not np.all(np.isfinite(K)):
            raise FloatingPointError(f"non-finite mean kernel K0 at layer {layer + 1} (t = {(layer + 1) * dt:.6g}); "
                                     "the kernel overflowed float64: reduce sw2*T or the input norm")
        out[layer + 1] = K
    return out


def mean_field_jacobian(activation, K: np.ndarray, sw2: float, sb2: float) -> np.ndarray:
    """J[m, m'] = d f(K)_m / d K_m' for a stack (..., P, P) of kernels -> (..., p, p).

    The analytic Price-theorem Jacobian of kernel_eft.core.expectations (sb2 does not enter J)."""
    K = np.asarray(K, dtype=np.float64)
    flat = K.reshape((-1,) + K.shape[-2:])
    J = np.stack([kernel_jacobian(activation, k, sw2) for k in flat])
    return J.reshape(K.shape[:-2] + J.shape[-2:])


def source_s4(K: np.ndarray, W: np.ndarray) -> np.ndarray:
    """S4(K, W)_(ab)(cd) = K_ac W_bd + K_ad W_bc + K_bc W_ad + K_bd W_ac in pair coordinates, (..., p, p).

    n Cov(dG_ab, dG_cd | h) = dt S4(G, Om) + dt^2 S2(Om) is the exact one-block noise (the
    increments of a block are Gaussian given h, with covariance Om = sw2 S + sb2 11^T).
    """
    K = np.asarray(K, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    a, b = pair_indices(K.shape[-1])
    def pick(X, r, c):
        return X[..., r[:, None], c[None, :]]
    return (pick(K, a, a) * pick(W, b, b) + pick(K, a, b) * pick(W, b, a)
            + pick(K, b, a) * pick(W, a, b) + pick(K, b, b) * pick(W, a, a))


def source_s2(W: np.ndarray) -> np.ndarray:
    """S2(W)_(ab)(cd) = W_ac W_bd + W_ad W_bc, (..., p, p).  S2(K_in) is the Wishart V4(0); S4(W, W) = 2 S2(W)."""
    W = np.asarray(W, dtype=np.float64)
    a, b = pair_indices(W.shape[-1])
    def pick(r, c):
        return W[..., r[:, None], c[None, :]]
    return pick(a, a) * pick(b, b) + pick(a, b) * pick(b, a)
