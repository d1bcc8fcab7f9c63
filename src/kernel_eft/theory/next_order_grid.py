"""V4_1, the 1/n coefficient of n Cov(G), for one input (P = 1), by a cumulant hierarchy of the empirical measure
on a spatial grid (docs/exact_theory.md section 7.1).

Why a grid: given the layer, every neuron moves independently, h_i -> h_i + sqrt(dt) Om^{1/2} xi_i, and Om =
sw2 <phi^2>_mu + sb2 is a LINEAR function of the empirical measure mu.  Put the state space on a uniform grid x_1..x_N
and mu becomes a weight vector w (sum 1); one layer is a multinomial move of the n neurons with the transition
matrix M(Om) (row i: the normalised weights of N(x_i, dt Om) on the grid), so

    E[w' | w] = w^T M(Om(w)),   n Cov(w' | w) = D(w, Om) = diag(w^T M) - M^T diag(w) M,
    n^2 cum3(w' | w) = sum_i w_i kappa3(M_i.)                      (one-hot cumulants, linear in w).

The only non-linearity is M(Om(w)); expanding it around Om_bar = E Om to third order in e = sw2 psi . (w - E w)
and taking total cumulants closes the hierarchy order by order in 1/n:

    m   = E w          = m0 + m1 / n           (K1 = x^2 . m1)
    K2  = n Cov(w)     = K2_0 + K2_1 / n       (V4 = q^T K2_0 q, V4_1 = q^T K2_1 q, q = x^2: G = q . w)
    K3  = n^2 cum3(w)  = K3_0 + O(1/n)         (needed at order 0 only: it feeds K2_1 through the quadratic part)

All of it is exact for the grid chain; the grid is the only approximation and is measured by refinement
(`grid_points`) and against the exact O(1/n) theory's V4 and K1 (kernel_eft.theory.exact).  Cost O(L N^4) time,
O(N^3) memory (K3): N = 201 takes seconds per layer and 65 MB per N^3 array.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kernel_eft.core.activations import get_activation
from kernel_eft.core.expectations import f_matrix
from kernel_eft.core.meanfield import mean_kernel_discrete

Array = np.ndarray


@dataclass
class GridNextOrder:
    """Per layer 0..L (P = 1, scalars): K0 = E G at n = infinity, K1 = n (E G - K0), V4 = lim n Cov(G), V4_1 its 1/n
    coefficient, all of the grid chain; x the grid; info: grid_points, spacing, half_range, min_step_std (the
    smallest one-layer step std sqrt(dt Om0) on the mean path, to be compared with the spacing)."""

    layers: Array
    times: Array
    K0: Array
    K1: Array
    V4: Array
    V4_1: Array
    x: Array
    info: dict = field(default_factory=dict)
    # the identity's ingredients (docs/exact_theory.md section 7), from the same hierarchy: X = n Cov(G, Om) =
    # X_0 + X_1/n, Y = n Cov(Om, Om) = Y_0 + Y_1/n, Sigma1 = n (E S - F(K0)) at O(1) (F(K0) = psi.m0 on the grid)
    X_0: Array | None = None
    X_1: Array | None = None
    Y_0: Array | None = None
    Y_1: Array | None = None
    Sigma1: Array | None = None


def transition_matrices(x: Array, variance: float, dvariance: float = 1.0) -> tuple[Array, Array, Array, Array]:
    """M and its first three derivatives with respect to Om, where the step variance is s = dvariance * Om
    (dvariance = dt).  M_ij = k(x_j - x_i; s) / Z_i with k the Gaussian density of variance s and Z_i = sum_j k_ij
    (renormalised on the grid, so each row is a probability vector and every derivative row sums to 0).

    Analytic: with l = log k = -d^2/(2s) - log(s)/2, k' = k l', k'' = k (l'' + l'^2), k''' = k (l''' + 3 l' l'' + l'^3)
    (derivatives in s), then the quotient rule for k / Z, then the chain rule ds/dOm = dvariance."""
    s = float(variance)
    d2 = (x[None, :] - x[:, None]) ** 2
    k = np.exp(-d2 / (2.0 * s))
    l1 = d2 / (2 * s ** 2) - 1 / (2 * s)
    l2 = -d2 / s ** 3 + 1 / (2 * s ** 2)
    l3 = 3 * d2 / s ** 4 - 1 / s ** 3
    k1 = k * l1
    k2 = k * (l2 + l1 ** 2)
    k3 = k * (l3 + 3 * l1 * l2 + l1 ** 3)
    # the 1/sqrt(2 pi s) factor cancels in k / Z; its log-derivative is carried by the -1/(2s) in l'
    Z, Z1, Z2, Z3 = (a.sum(axis=1, keepdims=True) for a in (k, k1, k2, k3))
    M = k / Z
    M1 = k1 / Z - k * Z1 / Z ** 2
    M2 = k2 / Z - 2 * k1 * Z1 / Z ** 2 - k * Z2 / Z ** 2 + 2 * k * Z1 ** 2 / Z ** 3
    M3 = (k3 / Z - 3 * k2 * Z1 / Z ** 2 - 3 * k1 * Z2 / Z ** 2 + 6 * k1 * Z1 ** 2 / Z ** 3 - k * Z3 / Z ** 2
          + 6 * k * Z1 * Z2 / Z ** 3 - 6 * k * Z1 ** 3 / Z ** 4)
    c = float(dvariance)
    return M, c * M1, c ** 2 * M2, c ** 3 * M3


def conditional_covariance(w: Array, M: Array, M1: Array | None = None, M2: Array | None = None,
                           order: int = 0) -> Array:
    """D(w, Om) = sum_i w_i (diag(M_i.) - M_i.^T M_i.) = diag(w^T M) - M^T diag(w) M (n Cov(w' | w)), or its first
    (order 1) or second (order 2) derivative in Om, given the derivatives M1, M2 of M."""
    if order == 0:
        return np.diag(w @ M) - M.T @ (w[:, None] * M)
    if order == 1:
        WM = w[:, None] * M
        return np.diag(w @ M1) - M1.T @ WM - WM.T @ M1
    if order == 2:
        WM = w[:, None] * M
        return np.diag(w @ M2) - M2.T @ WM - WM.T @ M2 - 2.0 * M1.T @ (w[:, None] * M1)
    raise ValueError(order)


def one_hot_third_cumulant(w: Array, M: Array) -> Array:
    """sum_i w_i kappa3(M_i.), kappa3(p)_abc = d_abc p_a - d_ab p_a p_c - d_ac p_a p_b - d_bc p_a p_b + 2 p_a p_b p_c
    (third cumulant of one multinomial draw): n^2 cum3(w' | w)."""
    N = M.shape[1]
    WM = w[:, None] * M
    T = 2.0 * _outer_sum(WM, M)
    C = M.T @ WM  # (M^T W M)_ab
    r = np.arange(N)
    T[r, r, :] -= C
    T[r, :, r] -= C
    T[:, r, r] -= C
    T[r, r, r] += w @ M
    return T


def _outer_sum(R: Array, M: Array) -> Array:
    """sum_j R_ja M_jb M_jc as one BLAS product (N x J) @ (J x N^2): the N^4 step of the hierarchy."""
    J, N = M.shape
    MM = (M[:, :, None] * M[:, None, :]).reshape(J, N * N)
    return (R.T @ MM).reshape(R.shape[1], N, N)


def _sym(X: Array) -> Array:
    return X + X.T


def _place_first(X: Array) -> Array:
    """Sum over which of the three indices is the distinguished first one of X_{a;bc} (X symmetric in bc)."""
    return X + np.einsum("bac->abc", X) + np.einsum("cab->abc", X)


def _place_last(Z: Array) -> Array:
    """Sum over which index is the distinguished last one of Z_{ab;c} (Z symmetric in ab)."""
    return Z + np.einsum("acb->abc", Z) + np.einsum("bca->abc", Z)


def _contract3(K3: Array, A: Array) -> Array:
    """K3[A, A, A]_abc = sum_ijk K3_ijk A_ia A_jb A_kc (three N^4 contractions)."""
    out = np.tensordot(K3, A, axes=([2], [0]))  # ij c
    out = np.tensordot(out, A, axes=([1], [0]))  # i c b
    out = np.tensordot(out, A, axes=([0], [0]))  # c b a
    return np.ascontiguousarray(out.transpose(2, 1, 0))


def make_grid(act, kin: float, sw2: float, sb2: float, time: float, depth: int, grid_points: int,
              half_range_sd: float) -> tuple[Array, Array]:
    """A symmetric uniform grid with an odd number of points (0 on the grid: relu's kink), half range
    half_range_sd * sqrt(max K0) over the mean path; returns (x, K0 of the mean path)."""
    if grid_points % 2 == 0:
        grid_points += 1
    K0 = mean_kernel_discrete(act, [[kin]], sw2, sb2, time, depth, check_finite=True)[:, 0, 0]
    half = half_range_sd * np.sqrt(np.max(K0))
    return np.linspace(-half, half, grid_points), K0


# The automatic grid: spacing 0.6 x the smallest one-layer step std (relu, L = 8: V4 to 1e-5 relative, V4_1 to 2e-5,
# order h^4; smooth activations converge spectrally, docs/exact_theory.md section 7.1), at most MAX_GRID_POINTS (K3 is
# N^3 float64: 218 MB a copy at 301, a few copies live; about 10 s a layer on one core), and the closure's default
# also at most MAX_GRID_WORK.
SPACING_PER_STEP_STD = 0.6
MAX_GRID_POINTS = 301
MAX_GRID_WORK = 201 ** 4 * 16  # grid_points^4 x depth the exact closure spends by default: about 30 s on one core


def automatic_grid_points(activation, kin, sw2: float, sb2: float, time: float, depth: int,
                          half_range_sd: float = 10.0) -> int:
    """The odd number of grid points whose spacing is SPACING_PER_STEP_STD x min_l sqrt(dt Om0_l) over the mean
    path, Om0 = f(K0) (may exceed MAX_GRID_POINTS: the caller decides)."""
    act = get_activation(activation)
    kin = float(np.asarray(kin, float).reshape(-1)[0])
    dt = time / depth
    K0 = mean_kernel_discrete(act, [[kin]], sw2, sb2, time, depth, check_finite=True)
    step_var = min(dt * float(f_matrix(act, K, sw2, sb2)[0, 0]) for K in K0[:-1])
    half = half_range_sd * np.sqrt(np.max(K0))
    intervals = int(np.ceil(2 * half / (SPACING_PER_STEP_STD * np.sqrt(step_var))))
    return intervals + 1 if intervals % 2 == 0 else intervals + 2


def v4_next_order_grid(activation, kin, sw2: float, sb2: float, time: float, depth: int, grid_points: int = 201,
                       half_range_sd: float = 10.0) -> GridNextOrder:
    """V4, K1 and V4_1 of one input (kin: 1x1 or a scalar) at every layer 0..depth, by the grid hierarchy.

    The recursions (docs/exact_theory.md section 7.1), per layer, all at order 0 quantities unless marked:
    Om0 = sw2 psi.m0 + sb2, M, M', M'', M''' at Om0, v = m0^T M'', u = m0^T M''', A = M + sw2 psi (m0^T M')
    (the linear response of E[w'|w] to delta = w - m), s1 = sw2 psi.m1 (the 1/n shift of E Om):

        m0' = m0^T M
        m1' = m1^T M + s1 m0^T M' + sw2 (K2_0 psi)^T M' + (sw2^2/2) (psi K2_0 psi) v
        K2_0' = D(m0) + A^T K2_0 A
        K2_1' = [E n Cov(w'|w)]_1 + A^T K2_1 A + Sym(A_1^T K2_0 A) + [third cumulant] + [Gaussian pairings]
        K3'  = sum_i m0_i kappa3(M_i.) + K3[A, A, A] + 3 Cov(E[w'|w], n Cov(w'|w)) + 3 cum(lin, lin, quad)
    """
    act = get_activation(activation)
    phi = act.phi
    kin = float(np.asarray(kin, float).reshape(-1)[0])
    dt = time / depth
    x, K0_ref = make_grid(act, kin, sw2, sb2, time, depth, grid_points, half_range_sd)
    N = x.size
    psi = np.asarray(phi(x), float) ** 2
    q = x ** 2  # G = q . w
    # the initial empirical measure: n i.i.d. draws from N(0, kin) put on the grid (exact multinomial cumulants)
    m0 = np.exp(-x ** 2 / (2 * kin))
    m0 /= m0.sum()
    m1 = np.zeros(N)
    K20 = np.diag(m0) - np.outer(m0, m0)
    K21 = np.zeros((N, N))
    K3 = one_hot_third_cumulant(np.ones(1), m0[None, :])
    names = ("K0", "K1", "V4", "V4_1", "X_0", "X_1", "Y_0", "Y_1", "Sigma1")
    out = {k: [] for k in names}
    min_step = np.inf

    def record():
        out["K0"].append(q @ m0)
        out["K1"].append(q @ m1)
        out["V4"].append(q @ K20 @ q)
        out["V4_1"].append(q @ K21 @ q)
        out["X_0"].append(sw2 * q @ K20 @ psi)
        out["X_1"].append(sw2 * q @ K21 @ psi)
        out["Y_0"].append(sw2 ** 2 * psi @ K20 @ psi)
        out["Y_1"].append(sw2 ** 2 * psi @ K21 @ psi)
        out["Sigma1"].append(psi @ m1)

    record()
    for _ in range(depth):
        Om0 = sw2 * psi @ m0 + sb2
        min_step = min(min_step, np.sqrt(dt * Om0))
        M, M1, M2, M3 = transition_matrices(x, dt * Om0, dt)
        v, u = m0 @ M2, m0 @ M3
        A = M + sw2 * np.outer(psi, m0 @ M1)
        s1 = sw2 * psi @ m1
        # A's own 1/n shift (through m1 and through Om_bar = Om0 + s1/n)
        A1 = s1 * M1 + sw2 * np.outer(psi, m1 @ M1) + sw2 * np.outer(psi, s1 * v)
        Kpsi = K20 @ psi
        pKp = psi @ Kpsi
        K3psi = np.tensordot(K3, psi, axes=([1], [0]))  # K3(., psi, .), symmetric N x N
        AtKpsi = A.T @ Kpsi
        g = M1.T @ Kpsi
        # --- order 1 of K2 = n Cov(w) ---
        cond1 = (conditional_covariance(m1, M) + s1 * conditional_covariance(m0, M, M1, order=1)
                 + sw2 * conditional_covariance(Kpsi, M, M1, order=1)
                 + 0.5 * sw2 ** 2 * pKp * conditional_covariance(m0, M, M1, M2, order=2))
        linear_part = A.T @ K21 @ A + _sym(A1.T @ K20 @ A)
        third = _sym(sw2 * A.T @ K3psi @ M1 + 0.5 * sw2 ** 2 * np.outer(A.T @ (K3psi @ psi), v))  # Cov(lin, quad)
        quad_quad = (sw2 ** 2 * (pKp * M1.T @ K20 @ M1 + np.outer(g, g)) + sw2 ** 3 * pKp * _sym(np.outer(g, v))
                     + 0.5 * sw2 ** 4 * pKp ** 2 * np.outer(v, v))
        lin_cubic = _sym(0.5 * sw2 ** 2 * pKp * A.T @ K20 @ M2 + sw2 ** 2 * np.outer(AtKpsi, M2.T @ Kpsi)
                         + 0.5 * sw2 ** 3 * pKp * np.outer(AtKpsi, u))
        K21_new = cond1 + linear_part + third + quad_quad + lin_cubic
        # --- order 0 of K3 = n^2 cum3(w) ---
        R = K20 @ A  # R_ja = (K2 A)_ja: Cov of delta_j with the linear part of E[w'_a | w]
        D1 = conditional_covariance(m0, M, M1, order=1)
        X = -_outer_sum(R, M)
        r = np.arange(N)
        X[:, r, r] += R.T @ M
        X += sw2 * np.einsum("a,bc->abc", R.T @ psi, D1)
        AtKM1 = A.T @ K20 @ M1
        Z = (sw2 * (np.einsum("a,bc->abc", AtKpsi, AtKM1) + np.einsum("ac,b->abc", AtKM1, AtKpsi))
             + sw2 ** 2 * np.einsum("a,b,c->abc", AtKpsi, AtKpsi, v))
        K3_new = one_hot_third_cumulant(m0, M) + _contract3(K3, A) + _place_first(X) + _place_last(Z)
        del X, Z
        # --- order 1 of m, order 0 of K2 and m ---
        m1 = m1 @ M + s1 * (m0 @ M1) + sw2 * Kpsi @ M1 + 0.5 * sw2 ** 2 * pKp * v
        K20 = conditional_covariance(m0, M) + A.T @ K20 @ A
        m0 = m0 @ M
        K21, K3 = 0.5 * (K21_new + K21_new.T), K3_new
        record()
    spacing = float(x[1] - x[0])
    info = {"grid_points": N, "spacing": spacing, "half_range": float(x[-1]), "min_step_std": float(min_step),
            "K0_mean_path": K0_ref}
    layers = np.arange(depth + 1)
    arrays = {k: np.array(v) for k, v in out.items()}
    return GridNextOrder(layers, layers * dt, arrays.pop("K0"), arrays.pop("K1"), arrays.pop("V4"), arrays.pop("V4_1"),
                         x, info, **arrays)
