"""The next order in 1/n of V4 on the layer grid: the exact one-block identity expanded to O(1/n).

Write V4(n) := n Cov(G) = V4 + V4_1/n + O(1/n^2).  The law of total covariance of one block
(kernel_eft.core.block_identity) holds exactly at every n; with E G = K0 + K1/n, E Om = f(K0) + sw2 Sigma1/n
(Sigma1 = B + DF[K1], the exact O(1/n) theory), X = X_0 + X_1/n and Y = Y_0 + Y_1/n, its order 1/n is

    V4_1^{l+1} = V4_1^l + dt (X_1 + X_1^T) + dt^2 Y_1                                       (unknown part)
                 + dt [S4(K1, f(K0)) + S4(K0, sw2 Sigma1)] + dt^2 S2'(f(K0); sw2 Sigma1)    (mean shift)
                 + dt c4(X_0) + dt^2 c2(Y_0),                                               (contractions)
    V4_1^0 = 0,

with X_0 = sw2 lim n Cov(G, S), Y_0 = sw2^2 lim n Cov(S, S) from the O(1/n) theory (`ExactResult.cov_gs`,
`cov_ss`).  X_1 and Y_1, the 1/n corrections of n Cov(G, Om) and n Cov(Om, Om), are NOT derived here for a
general activation (docs/exact_theory.md section 7 says how far the derivation goes): `known_terms` returns the
mean-shift and contraction parts, the identity's known share of V4_1, named for what it is (for one input V4_1
itself is computed without X_1, Y_1 by kernel_eft.theory.next_order_grid).  They close only where X and Y are
linear in V4(n):

- linear phi: S = G, so X = sw2 V4(n) and Y = sw2^2 V4(n); `linear_v4_at_width` gives V4(n) exactly at every n and
  `linear_v4_next_order` its exact 1/n coefficient;
- the first layer: h^0 is i.i.d. Gaussian, so X^0 = sw2 Cov_{K_in}(zz^T, psi) and Y^0 = sw2^2 Cov_{K_in}(psi, psi)
  exactly at every n (X_1^0 = Y_1^0 = 0) and V4_1 after one layer is the known part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernel_eft.core.block_identity import (contraction_c2, contraction_c4, identity_step, running_sum,
                                           source_s2_derivative)
from kernel_eft.core.meanfield import source_s4
from kernel_eft.core.pairs import four_index_to_pairs, from_pairs, wishart_v4

Array = np.ndarray


@dataclass
class NextOrderTerms:
    """Per-layer increments of V4_1 (pair coordinates, (N, p, p); entry l is the step from layer l to l+1, the last
    entry zero) and their running sums, the known part of V4_1 at every layer."""

    mean_shift: Array
    contraction: Array

    @property
    def known_increments(self) -> Array:
        return self.mean_shift + self.contraction

    def known_V4_1(self) -> Array:
        """sum_{l' < l} of the known increments: V4_1 at layer l without the X_1, Y_1 transport, (N, p, p)."""
        return running_sum(self.known_increments)

    def mean_shift_V4_1(self) -> Array:
        """The mean-shift part of V4_1 at every layer (K1, Sigma1), (N, p, p)."""
        return running_sum(self.mean_shift)

    def contraction_V4_1(self) -> Array:
        """The contraction part of V4_1 at every layer (c4(X_0), c2(Y_0)), (N, p, p)."""
        return running_sum(self.contraction)


def zeroth_order_XY(res, sw2: float) -> tuple[Array, Array]:
    """X_0 = sw2 lim n Cov(G, S) and Y_0 = sw2^2 lim n Cov(S, S) from a discrete exact result, (N, p, p) each."""
    if res.cov_gs is None or res.cov_ss is None:
        raise ValueError("the next order needs the discrete exact theory (ExactResult.cov_gs, cov_ss)")
    return sw2 * res.cov_gs, sw2 ** 2 * res.cov_ss


def known_terms(res, DF: Array, activation_f: Array, sw2: float, dt: float) -> NextOrderTerms:
    """The mean-shift and contraction increments of V4_1 on the layer grid.

    res: the discrete ExactResult (K0, K1, B, cov_gs, cov_ss); DF: (N, p, p) Jacobian of F on the mean path;
    activation_f: f(K0) per layer, (N, P, P)."""
    K0 = res.K0
    N, P, _ = K0.shape
    K1 = from_pairs(res.K1, P)
    Sigma1 = res.B + np.einsum("nxy,ny->nx", DF, res.K1)  # n (E S - F(K0)) at O(1)
    D = from_pairs(sw2 * Sigma1, P)  # the 1/n shift of E Om
    X0, Y0 = zeroth_order_XY(res, sw2)
    mean_shift = dt * (source_s4(K1, activation_f) + source_s4(K0, D)) + dt ** 2 * source_s2_derivative(activation_f, D)
    contraction = dt * contraction_c4(X0, P) + dt ** 2 * contraction_c2(Y0, P)
    mean_shift[-1] = 0.0
    contraction[-1] = 0.0
    return NextOrderTerms(mean_shift, contraction)


def v4_check_leading_order(res, activation_f: Array, sw2: float, dt: float) -> Array:
    """V4 of the O(1/n) theory re-built from the identity at order 0 (X_0, Y_0, S4(K0, f), S2(f)): equals res.V4
    on the layer grid if X_0 and Y_0 are right (a consistency check of cov_gs, cov_ss)."""
    X0, Y0 = zeroth_order_XY(res, sw2)
    out = np.zeros_like(res.V4)
    out[0] = res.V4[0]
    for layer in range(len(out) - 1):
        out[layer + 1] = identity_step(out[layer], res.K0[layer], activation_f[layer], X0[layer], Y0[layer], dt,
                                       np.inf)
    return out


# ----------------------------------------------------------------------------------------------
# Linear phi: the identity closes (S = G) and V4(n) is exact at every width
# ----------------------------------------------------------------------------------------------


def _linear_mean_path(kin: Array, sw2: float, sb2: float, dt: float, depth: int) -> tuple[Array, Array]:
    """E G^l (exact at every n for linear phi: E G^{l+1} = E G^l + dt (sw2 E G^l + sb2)) and E Om^l."""
    K = np.array(kin, float)
    ones = np.ones_like(K)
    EG = [K]
    for _ in range(depth):
        K = K + dt * (sw2 * K + sb2 * ones)
        EG.append(K)
    EG = np.stack(EG)
    return EG, sw2 * EG + sb2 * ones


def linear_v4_at_width(kin, sw2: float, sb2: float, time: float, depth: int, width: float) -> Array:
    """n Cov(G^l) for phi(x) = x at width n, exact (pair coordinates, (depth+1, p, p)); width = inf gives V4."""
    dt = time / depth
    EG, EOm = _linear_mean_path(kin, sw2, sb2, dt, depth)
    out = [four_index_to_pairs(wishart_v4(EG[0]))]
    for layer in range(depth):
        V = out[-1]
        out.append(identity_step(V, EG[layer], EOm[layer], sw2 * V, sw2 ** 2 * V, dt, width))
    return np.stack(out)


def linear_v4_next_order(kin, sw2: float, sb2: float, time: float, depth: int) -> Array:
    """V4_1 for phi(x) = x: the identity at order 1/n with X_1 = sw2 V4_1, Y_1 = sw2^2 V4_1 (K1 = Sigma1 = 0)."""
    dt = time / depth
    EG, _ = _linear_mean_path(kin, sw2, sb2, dt, depth)
    P = EG.shape[-1]
    V0 = linear_v4_at_width(kin, sw2, sb2, time, depth, np.inf)
    V1 = np.zeros_like(V0)
    for layer in range(depth):
        transport = dt * 2 * sw2 * V1[layer] + dt ** 2 * sw2 ** 2 * V1[layer]  # V4_1 is symmetric
        known = dt * contraction_c4(sw2 * V0[layer], P) + dt ** 2 * contraction_c2(sw2 ** 2 * V0[layer], P)
        V1[layer + 1] = V1[layer] + transport + known
    return V1
