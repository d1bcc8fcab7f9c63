"""G-only collective-kernel EFT (THEORY.md section 3)."""

from __future__ import annotations

import numpy as np

from kernel_eft.activations import f_matrix


def mean_kernel_discrete(activation, kin, sw2: float, sb2: float, time: float, depth: int) -> np.ndarray:
    """Infinite-width discrete-layer mean kernel, K0 <- K0 + dt f(K0); returns (depth+1, P, P).

    This is the exact n -> infinity limit of E[G^l] at finite L, so K1 = n (E[G] - K0_discrete)
    carries no O(n/L) discretisation artefact.
    """
    dt = time / depth
    K = np.array(kin, dtype=np.float64)
    out = np.empty((depth + 1,) + K.shape)
    out[0] = K
    for layer in range(depth):
        K = K + dt * f_matrix(activation, K, sw2, sb2)
        out[layer + 1] = K
    return out
