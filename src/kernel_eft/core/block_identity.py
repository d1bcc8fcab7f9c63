"""The exact one-block law of total covariance for n Cov(G), at every width n.

Given h^l a block is Gaussian: G^{l+1} = G^l + dt Om^l + (noise with n Cov = dt S4(G, Om) + dt^2 S2(Om),
kernel_eft.core.meanfield).  Taking the covariance over h^l as well gives, EXACTLY at every n,

    V4(n)^{l+1} = V4(n)^l + dt (X + X^T) + dt^2 Y + dt E[S4(G, Om)] + dt^2 E[S2(Om)],
    E[S4(G, Om)] = S4(E G, E Om) + c4(X) / n,      E[S2(Om)] = S2(E Om) + c2(Y) / n,

with V4(n) = n Cov(G, G), X = n Cov(G, Om) = sw2 n Cov(G, S), Y = n Cov(Om, Om) = sw2^2 n Cov(S, S) (pair
coordinates, X[(ab), (cd)] = n Cov(G_ab, Om_cd)) and the index contractions

    c4(X)_(ab)(cd) = X_ac,bd + X_ad,bc + X_bc,ad + X_bd,ac,      c2(Y)_(ab)(cd) = Y_ac,bd + Y_ad,bc.

Both the theory (kernel_eft.theory.next_order: the identity expanded in 1/n) and the diagnostics (the identity
evaluated on Monte Carlo moments, term by term) use these functions; neither computes them on its own.
"""

from __future__ import annotations

import numpy as np

from kernel_eft.core.meanfield import source_s2, source_s4
from kernel_eft.core.pairs import four_index_to_pairs, pairs_to_four_index


def contraction_c4(X: np.ndarray, P: int) -> np.ndarray:
    """c4(X) in pair coordinates, (..., p, p) -> (..., p, p); X[(ab), (cd)] = n Cov(G_ab, Om_cd)."""
    X4 = pairs_to_four_index(np.asarray(X, float), P)  # [a, b, c, d]
    # out[a, b, c, d] = X[a c, b d] + X[a d, b c] + X[b c, a d] + X[b d, a c]
    out = (np.einsum("...acbd->...abcd", X4) + np.einsum("...adbc->...abcd", X4)
           + np.einsum("...bcad->...abcd", X4) + np.einsum("...bdac->...abcd", X4))
    return four_index_to_pairs(out)


def contraction_c2(Y: np.ndarray, P: int) -> np.ndarray:
    """c2(Y) in pair coordinates: Y[ac, bd] + Y[ad, bc]."""
    Y4 = pairs_to_four_index(np.asarray(Y, float), P)
    out = np.einsum("...acbd->...abcd", Y4) + np.einsum("...adbc->...abcd", Y4)
    return four_index_to_pairs(out)


def running_sum(increments: np.ndarray) -> np.ndarray:
    """Layer l's value from the increments of the steps before it: entry l = sum_{l' < l} increments[l'] (entry 0
    is 0; the last increment is unused)."""
    out = np.zeros_like(increments)
    out[1:] = np.cumsum(increments[:-1], axis=0)
    return out


def source_s2_derivative(W: np.ndarray, D: np.ndarray) -> np.ndarray:
    """S2'(W; D) = d/de S2(W + e D) at e = 0 = (S4(W, D) + S4(D, W)) / 2 (S2 is quadratic, S4(W, W) = 2 S2(W))."""
    return 0.5 * (source_s4(W, D) + source_s4(D, W))


def identity_terms(mean_G: np.ndarray, mean_Om: np.ndarray, X: np.ndarray, Y: np.ndarray, dt: float,
                   n: float) -> dict[str, np.ndarray]:
    """The increments V4(n)^{l+1} - V4(n)^l of the identity, term by term (pair coordinates, per layer):

    transport     dt (X + X^T) + dt^2 Y
    mean          dt S4(E G, E Om) + dt^2 S2(E Om)
    contraction   (dt c4(X) + dt^2 c2(Y)) / n
    """
    P = np.asarray(mean_G).shape[-1]
    X = np.asarray(X, float)
    return {"transport": dt * (X + np.swapaxes(X, -1, -2)) + dt ** 2 * np.asarray(Y, float),
            "mean": dt * source_s4(mean_G, mean_Om) + dt ** 2 * source_s2(mean_Om),
            "contraction": (dt * contraction_c4(X, P) + dt ** 2 * contraction_c2(Y, P)) / n}


def identity_step(V4n: np.ndarray, mean_G, mean_Om, X, Y, dt: float, n: float) -> np.ndarray:
    """V4(n)^{l+1} from layer l's V4(n), E G, E Om, X, Y: the exact law of total covariance of one block."""
    return V4n + sum(identity_terms(mean_G, mean_Om, X, Y, dt, n).values())
