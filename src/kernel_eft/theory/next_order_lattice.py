"""V4_1, the 1/n coefficient of n Cov(G), for any number of inputs P, by the cumulant hierarchy of the empirical
measure on a lattice in R^P (docs/exact_theory.md section 7.3).

It is the hierarchy of kernel_eft.theory.next_order_grid (section 7.1) with the neuron's state h in R^P: the empirical
measure is a weight vector w on N lattice points x_i, G_m = q_m . w (q_m = x_a x_b for pair m = (a, b)),
Om_m = sw2 psi_m . w + sb2 (psi_m = phi(x_a) phi(x_b)) has p = P(P+1)/2 components, and one layer moves each neuron
with the transition matrix M(Om) (row i: N(x_i, dt Om) at the lattice points, normalised).  What changes is the
size: for P = 2 the lattice has N ~ 10^3-10^4 points, so the third cumulant K3 = n^2 cum3(w) (N^3) cannot be stored.
It is needed only contracted with psi in one slot (it feeds K2_1 through Cov(linear part, quadratic part)), and

    K3^{l+1}(c) = T_l(c) + A_l^T K3^l(A_l c) A_l + [X_l](c) + [Z_l](c)        (K3(c)_ab = sum_k K3_abk c_k)

so the hierarchy carries, at layer l, the N x N matrices K3^l(c) for the back-propagated vectors
c = A_l A_{l+1} ... A_{t-1} psi_m of every later layer t and pair m (A_l, the linear response, comes from an order-0
pre-pass): p L (L+1)/2 matrix updates in all, about 4 N x N products each.  For P = 1 on the same grid it equals
next_order_grid's full-K3 hierarchy to rounding (tests/theory/test_next_order_lattice.py).

The lattice: x = diag(sqrt(K_L,aa)) (spacing * k), k integer, inside the ellipse x^T K_L^-1 x <= radius^2 (K_L = K0
at the last layer, the largest in the PSD order: K0 grows with depth).  Axis-aligned, so relu's kinks (x_a = 0) lie
on lattice lines; the spacing is spacing_per_step_std x the smallest step std that Poisson summation sees (the
aliasing of N(0, dt Om0) on the lattice decays like exp(-2 pi^2 k^T S k / h^2) over the dual lattice vectors k).
"""

from __future__ import annotations

import itertools
import time as _time

import numpy as np

from kernel_eft.core.activations import get_activation
from kernel_eft.core.meanfield import mean_kernel_discrete
from kernel_eft.core.pairs import n_pairs, pair_indices, pairs_to_four_index
from kernel_eft.theory.next_order_grid import GridNextOrder

Array = np.ndarray

SPACING_PER_STEP_STD = 1.1  # relu P = 2, L = 8: V4_1 to 2e-4 against the one-input grid (section 7.3)
RADIUS_SD = 6.5  # ellipse x^T (K0^l)^-1 x <= 6.5^2 per layer: V4_1 weighs x^8 tails


class LatticeNextOrder(GridNextOrder):
    """GridNextOrder's fields for P inputs: per layer 0..L in pair coordinates (p = P(P+1)/2), K0, K1 (L+1, p);
    V4, V4_1, X_0, X_1, Y_0, Y_1 (L+1, p, p) (X = n Cov(G, Om), Y = n Cov(Om, Om)); x the lattices (a list of
    (N_l, P) points per layer); info: points (the largest N_l), points_per_layer, spacings, radius_sd, seconds."""

    def four_index(self, name: str) -> Array:
        """(L+1, P, P, P, P) of V4, V4_1, ... (the theory file's layout)."""
        return pairs_to_four_index(getattr(self, name), self.x[0].shape[1])


def _pair_basis(P: int) -> Array:
    """E_m (p, P, P): the symmetric direction of pair m (off-diagonal pairs move K_ab and K_ba together)."""
    a, b = pair_indices(P)
    E = np.zeros((a.size, P, P))
    E[np.arange(a.size), a, b] = 1.0
    E[np.arange(a.size), b, a] = 1.0
    return E


def step_resolution(S: Array, frame: Array) -> float:
    """The smallest std the lattice must resolve for steps of covariance S, in the lattice's coordinates y
    (x = frame y), before the spacing: min over small dual vectors k != 0 of sqrt(k^T S~ k) / |k|_inf with
    S~ = frame^-1 S frame^-T, the aliasing exponent of Poisson summation being 2 pi^2 k^T S~ k / h^2."""
    Fi = np.linalg.inv(frame)
    St = Fi @ S @ Fi.T
    P = St.shape[0]
    best = np.inf
    for k in itertools.product(range(-2, 3), repeat=P):
        k = np.array(k, float)
        if not k.any():
            continue
        best = min(best, float(k @ St @ k) / float(np.max(np.abs(k))) ** 2)
    return float(np.sqrt(best))


def kink_jump(act) -> float:
    """J = phi'(0+) - phi'(0-) (numerically; 0 for a smooth phi, 1 for relu)."""
    eps = 1e-6
    val = [float(np.asarray(act.phi(np.array([v])), float)[0]) for v in (-eps, 0.0, eps)]
    jump = (val[2] - 2 * val[1] + val[0]) / eps
    return jump if abs(jump) >= 1e-4 else 0.0  # smooth phi: phi'' eps at most


def _frames(act, K0: Array) -> list:
    """The lattice frame of each layer, x = frame y with y on a square lattice: the axes scaled by sqrt(K0_aa)
    where phi has a kink at 0 (relu: the kinks x_a = 0 are lattice lines, so the Euler-Maclaurin correction of
    kink_corrected_psi applies), else the Cholesky factor of K0 (whitened: a correlated kernel costs no more points
    than an uncorrelated one; relu at rho 0.9 needs ~3x the points of rho 0.3 on the axes)."""
    if kink_jump(act) != 0.0:
        return [np.diag(np.sqrt(np.diag(K))) for K in K0]
    return [np.linalg.cholesky(K) for K in K0]


def _layer_geometry(act, kin, sw2, sb2, time, depth, spacing_per_step_std):
    """(K0 (L+1, P, P), frames, spacings h_l in lattice coordinates)."""
    kin = np.atleast_2d(np.asarray(kin, float))
    K0 = mean_kernel_discrete(act, kin, sw2, sb2, time, depth, check_finite=True)
    steps = np.diff(K0, axis=0)  # dt f(K0^l): the mean path's own increments
    frames = _frames(act, K0)
    spacings = np.array([spacing_per_step_std * step_resolution(steps[max(layer - 1, 0)], frames[layer])
                         for layer in range(depth + 1)])
    return K0, frames, spacings


def lattice_sizes(act, kin, sw2: float, sb2: float, time: float, depth: int,
                  spacing_per_step_std: float = SPACING_PER_STEP_STD, radius_sd: float = RADIUS_SD) -> Array:
    """The points of make_lattices' lattices without building them (for cost estimates): the ellipse's volume over
    the cell's, V_P radius^P sqrt(det C_l) / h_l^P (C_l = K0^l in lattice coordinates), within a few per cent for
    N >~ 100."""
    from math import gamma, pi

    K0, frames, spacings = _layer_geometry(act, kin, sw2, sb2, time, depth, spacing_per_step_std)
    P = K0.shape[-1]
    ball = pi ** (P / 2) / gamma(P / 2 + 1) * radius_sd ** P
    sizes = []
    for K, F, h in zip(K0, frames, spacings):
        Fi = np.linalg.inv(F)
        sizes.append(ball * np.sqrt(max(np.linalg.det(Fi @ K @ Fi.T), 0.0)) / h ** P)
    return np.array(sizes)


def make_lattices(act, kin, sw2: float, sb2: float, time: float, depth: int,
                  spacing_per_step_std: float = SPACING_PER_STEP_STD, radius_sd: float = RADIUS_SD):
    """One lattice per layer, adapted to the mean path: lattice l covers the ellipse x^T (K0^l)^-1 x <= radius^2 and
    has the spacing spacing_per_step_std x the resolution of the step INTO it (dt Om0^{l-1}; lattice 0 that of
    layer 0's step) in its frame (_frames: scaled axes for a kinked phi, whitened otherwise).  Because Om0 grows
    with K0 (relu: in proportion), every layer has about the same number of points, where one lattice for all
    layers would need the last layer's extent at the first layer's spacing (7x the points at T = 4, 400x the work).
    Returns (list of (N_l, P) points, K0 (L+1, P, P), spacings in lattice coordinates)."""
    K0, frames, spacings = _layer_geometry(act, kin, sw2, sb2, time, depth, spacing_per_step_std)
    P = K0.shape[-1]
    lattices = []
    for K, F, h in zip(K0, frames, spacings):
        Fi = np.linalg.inv(F)
        C = Fi @ K @ Fi.T
        kmax = int(np.ceil(radius_sd * np.sqrt(np.max(np.diag(C))) / h))
        axis = np.arange(-kmax, kmax + 1) * h
        Y = np.stack(np.meshgrid(*([axis] * P), indexing="ij"), axis=-1).reshape(-1, P)
        inside = np.einsum("ia,ab,ib->i", Y, np.linalg.inv(C), Y) <= radius_sd ** 2
        lattices.append(Y[inside] @ F.T)
    return lattices, K0, spacings


def transition_derivatives(x: Array, y: Array, S: Array, dS: Array, w: Array | None = None,
                           second: bool = True):
    """M(S) (N, J) from the points x (N, P) to the points y (J, P) (row i: N(x_i, S) at the y_j, normalised) and its
    derivatives along the directions dS (p, P, P): returns M, M1 (p, N, J), M2 (p, p, N, J) and, given weights w,
    u = w^T M3 (p, p, p, J) (the third derivative is needed only so contracted; None without w).

    log k = -(1/2) d^T S^-1 d - (1/2) log det S (d = y_j - x_i): its derivatives l_m, l_mq, l_mqr are quadratic forms
    of d with the derivatives of S^-1 and log det S (closed form), and log M = log k - log Z, whose derivatives
    a_m, a_mq, a_mqr subtract the row cumulants of those of log k (mean, covariance, third cumulant under M_i.).
    Then M_m = M a_m, M_mq = M (a_mq + a_m a_q), M_mqr = M (a_mqr + a_mq a_r + a_mr a_q + a_qr a_m + a_m a_q a_r)."""
    N, P = x.shape
    J = y.shape[0]
    p = dS.shape[0]
    Si = np.linalg.inv(S)
    # the quadratic forms d^T B d (d = y_j - x_i) from the products d_a d_b, a <= b (B's symmetric part counts)
    ia, ib = np.triu_indices(P)
    prods = [(y[None, :, i] - x[:, None, i]) * (y[None, :, j] - x[:, None, j]) for i, j in zip(ia, ib)]

    def quad(B):
        out = np.zeros((N, J))
        for (i, j), dij in zip(zip(ia, ib), prods):
            out += (B[i, i] if i == j else B[i, j] + B[j, i]) * dij
        return out

    logk = -0.5 * quad(Si)
    logk -= logk.max(axis=1, keepdims=True)
    M = np.exp(logk)
    del logk
    M /= M.sum(axis=1, keepdims=True)

    def centred(a):  # a - (row mean under M)
        return a - np.einsum("ij,ij->i", M, a)[:, None]

    X = [Si @ dS[m] for m in range(p)]  # Si dS_m
    # l_m = (1/2) d^T Si dS_m Si d - (1/2) tr(Si dS_m)
    a1 = np.stack([centred(0.5 * quad(X[m] @ Si)) for m in range(p)])
    # l_mq = -d^T Si dS_m Si dS_q Si d + (1/2) tr(Si dS_m Si dS_q); a_mq = l_mq - <l_mq> - Cov(l_m, l_q)
    M1 = M[None] * a1
    if not second:
        return M, M1, None, None
    a2 = np.empty((p, p, N, J))
    c2 = {}  # centred l_mq, kept for the third derivative
    for m in range(p):
        for q in range(m, p):
            c2[m, q] = centred(-quad(X[m] @ X[q] @ Si))
            a2[m, q] = a2[q, m] = c2[m, q] - np.einsum("ij,ij->i", M, a1[m] * a1[q])[:, None]
    M2 = M[None, None] * (a2 + a1[:, None] * a1[None, :])
    u = None
    if w is not None:
        u = np.empty((p, p, p, J))
        for m, q, r in itertools.combinations_with_replacement(range(p), 3):
            perms = set(itertools.permutations((m, q, r)))
            # l_mqr = (1/2) sum over the 6 orderings of d^T Si dS . Si dS . Si dS . Si d, minus trace terms (constant
            # in j: they drop out of the centred a_mqr)
            B = sum(X[s1] @ X[s2] @ X[s3] @ Si for s1, s2, s3 in perms) * (3.0 / len(perms))
            c3 = centred(quad(B))
            # a_mqr = c3 - Cov(l_mq, l_r) - Cov(l_mr, l_q) - Cov(l_qr, l_m) - kappa3(l_m, l_q, l_r)
            cov = (np.einsum("ij,ij->i", M, c2[m, q] * a1[r]) + np.einsum("ij,ij->i", M, c2[m, r] * a1[q])
                   + np.einsum("ij,ij->i", M, c2[q, r] * a1[m]) + np.einsum("ij,ij->i", M, a1[m] * a1[q] * a1[r]))
            a3 = c3 - cov[:, None]
            val = w @ (M * (a3 + a2[m, q] * a1[r] + a2[m, r] * a1[q] + a2[q, r] * a1[m] + a1[m] * a1[q] * a1[r]))
            for s in perms:
                u[s] = val
    return M, M1, M2, u


def kink_corrected_psi(act, x: Array, correct: bool = True) -> Array:
    """psi_m(x) = phi(x_a) phi(x_b) on the lattice points x (N, P), with the Euler-Maclaurin correction of a kink of
    phi at 0 (relu): a sum over a lattice line crossing a jump J = phi'(0+) - phi'(0-) of the derivative at a node
    misses the integral by -(h^2/12) J (weight there), an O(h^2) error, so phi(0) is replaced by phi(0) + J h_a / 12
    in the products a != b (h_a: the lattice spacing along axis a), which restores O(h^4) for the tensor-product sums;
    phi(x_a)^2 is C^1 where phi(0) = 0 (relu) and gets 2 phi(0) J h_a / 12 added at x_a = 0 only."""
    P = x.shape[1]
    a, b = pair_indices(P)
    phix = np.asarray(act.phi(x), float)
    phi0 = float(np.asarray(act.phi(np.zeros(1)), float)[0])
    jump = kink_jump(act)
    psi = phix[:, a] * phix[:, b]
    if jump == 0.0 or not correct:
        return psi
    on0 = np.isclose(x, 0.0, atol=1e-12)
    h = np.empty(P)
    for ax in range(P):
        u = np.unique(np.round(x[:, ax], 12))
        h[ax] = np.min(np.diff(u)) if u.size > 1 else 0.0
    corrected = np.where(on0, phix + jump * h[None, :] / 12.0, phix)
    psi = corrected[:, a] * corrected[:, b]
    same = a == b
    psi[:, same] = phix[:, a[same]] ** 2 + np.where(on0[:, a[same]], 2 * phi0 * jump * h[a[same]] / 12.0, 0.0)
    return psi


def _sym(X: Array) -> Array:
    return X + X.T


def _conditional_covariance(w: Array, M: Array) -> Array:
    """D(w) = diag(w^T M) - M^T diag(w) M: n Cov(w' | w) at fixed Om (linear in w)."""
    return np.diag(w @ M) - M.T @ (w[:, None] * M)


def _d_conditional_covariance(w: Array, M: Array, M1: Array) -> Array:
    """The derivative of D(w) along one direction of Om, given that of M."""
    B = M1.T @ (w[:, None] * M)
    return np.diag(w @ M1) - B - B.T


def _t_contract(w: Array, M: Array, C: Array, c: Array) -> Array:
    """sum_k T_abk c_k with T = sum_i w_i kappa3(M_i.) (n^2 cum3(w' | w)), C = M^T diag(w) M; one N x N product:
    diag(c (w^T M) - M^T (w Mc)) - c_a C_ab - C_ab c_b + 2 M^T diag(w Mc) M."""
    Mc = M @ c
    wMc = w * Mc
    out = 2.0 * M.T @ (wMc[:, None] * M)
    out -= c[:, None] * C + C * c[None, :]
    out[np.diag_indices_from(out)] += c * (w @ M) - M.T @ wMc
    return out


def v4_next_order_lattice(activation, kin, sw2: float, sb2: float, time: float, depth: int,
                          spacing_per_step_std: float = SPACING_PER_STEP_STD, radius_sd: float = RADIUS_SD,
                          x: Array | None = None, kink_correction: bool = True,
                          progress=None) -> LatticeNextOrder:
    """K0, K1, V4 and V4_1 (pair coordinates) of P inputs (kin P x P) at every layer 0..depth, by the lattice
    hierarchy (docs/exact_theory.md sections 7.1, 7.3).  x: the lattice points (N, P) instead of the automatic
    lattice (tests: next_order_grid's grid for P = 1).  kink_correction: False drops the Euler-Maclaurin correction
    of a kinked phi (kink_corrected_psi; tests show what it is worth).  progress(layer, depth, seconds) after each
    layer.

    Notation as section 7.1 with the pair index m of Om: e_m = sw2 psi_m . delta, A = M + sw2 sum_m psi_m (m^T M'_m),
    v_mk = m^T M''_mk, u_mkr = m^T M'''_mkr, Kpsi = K2_0 psi (N, p), pKp = psi^T K2_0 psi (p, p), sums over ordered
    index tuples."""
    start = _time.perf_counter()
    act = get_activation(activation)
    kin = np.atleast_2d(np.asarray(kin, float))
    P = kin.shape[0]
    p = n_pairs(P)
    dt = time / depth
    info = {}
    if x is None:
        xs, _, spacings = make_lattices(act, kin, sw2, sb2, time, depth, spacing_per_step_std, radius_sd)
        info.update(spacings=spacings, radius_sd=radius_sd)
    else:
        xs = [np.asarray(x, float).reshape(len(x), -1)] * (depth + 1)
    a, b = pair_indices(P)
    psis = [kink_corrected_psi(act, xl, kink_correction) for xl in xs]  # (N_l, p): psi_m = phi(x_a) phi(x_b)
    qs = [xl[:, a] * xl[:, b] for xl in xs]  # G_m = q_m . w
    dS = dt * _pair_basis(P)  # dS / d Om_m
    # the initial empirical measure: n i.i.d. draws from N(0, kin) on lattice 0 (multinomial cumulants)
    m0 = np.exp(-0.5 * np.einsum("ia,ab,ib->i", xs[0], np.linalg.inv(kin), xs[0]))
    m0 /= m0.sum()
    # --- order-0 pre-pass: the mean path and the linear responses A_l (for the back-propagated vectors) ---
    A_list, w = [], m0.copy()
    for layer in range(depth):
        Om = sw2 * (psis[layer].T @ w) + sb2
        M, M1, _, _ = transition_derivatives(xs[layer], xs[layer + 1], dt * _om_matrix(Om, P), dS, second=False)
        A_list.append(M + sw2 * psis[layer] @ np.stack([w @ M1[m] for m in range(p)]))
        w = w @ M
    # chains[l]: {(t, m): K3^l(c_{l,t,m})}, c_{l,t,m} = A_l ... A_{t-1} psi^t_m for t >= l; at layer 0 K3 = kappa3(m0)
    vec = {(t, t, m): psis[t][:, m] for t in range(depth) for m in range(p)}
    for t in range(depth):
        for l in range(t - 1, -1, -1):
            for m in range(p):
                vec[l, t, m] = A_list[l] @ vec[l + 1, t, m]
    one, p0 = np.ones(1), m0[None, :]
    C0 = np.outer(m0, m0)
    chain = {(t, m): _t_contract(one, p0, C0, vec[0, t, m]) for t in range(depth) for m in range(p)}
    N = xs[0].shape[0]
    m1 = np.zeros(N)
    K20 = np.diag(m0) - np.outer(m0, m0)
    K21 = np.zeros((N, N))
    out = {k: [] for k in ("K0", "K1", "V4", "V4_1", "X_0", "X_1", "Y_0", "Y_1")}

    def record(layer):
        q, psi = qs[layer], psis[layer]
        out["K0"].append(q.T @ m0)
        out["K1"].append(q.T @ m1)
        for name, K2 in (("0", K20), ("1", K21)):
            Kq = K2 @ q
            out["V4" + ("" if name == "0" else "_1")].append(q.T @ Kq)
            out["X_" + name].append(sw2 * Kq.T @ psi)
            out["Y_" + name].append(sw2 ** 2 * psi.T @ K2 @ psi)

    record(0)
    pairs2 = list(itertools.product(range(p), repeat=2))
    for layer in range(depth):
        psi, N, Nn = psis[layer], xs[layer].shape[0], xs[layer + 1].shape[0]
        Om = sw2 * (psi.T @ m0) + sb2
        M, M1, M2, u = transition_derivatives(xs[layer], xs[layer + 1], dt * _om_matrix(Om, P), dS, w=m0)
        A = A_list[layer]
        v = np.einsum("i,mkij->mkj", m0, M2)  # (p, p, N)
        s1 = sw2 * (psi.T @ m1)  # (p,) the 1/n shift of E Om
        mM1 = np.stack([m1 @ M1[m] for m in range(p)])  # (p, N)
        A1 = np.tensordot(s1, M1, axes=1) + sw2 * psi @ (mM1 + np.einsum("k,mkj->mj", s1, v))
        Kpsi = K20 @ psi  # (N, p)
        pKp = psi.T @ Kpsi  # (p, p)
        R = K20 @ A
        AtK = R.T  # A^T K2 (K2 symmetric)
        U = sw2 * psi  # A = M + U V^T
        V = np.stack([m0 @ M1[m] for m in range(p)], axis=1)
        P_ = AtK @ psi  # (N, p): A^T K2 psi_m
        # --- order 1 of K2 = n Cov(w) ---
        # E n Cov(w'|w) at O(1/n): D(m1) + s1_m D'_m(m0) + sw2 D'_m(Kpsi_m) + (sw2^2/2) pKp_mk D''_mk(m0)
        cond1 = _conditional_covariance(m1, M)
        for m in range(p):
            cond1 += _d_conditional_covariance(s1[m] * m0 + sw2 * Kpsi[:, m], M, M1[m])
        M2pK = np.tensordot(pKp, M2, axes=([0, 1], [0, 1]))  # sum_mk pKp_mk M''_mk
        W1 = np.tensordot(pKp, M1, axes=([1], [0]))  # W1_m = sum_k pKp_mk M'_k
        D2 = _d_conditional_covariance(m0, M, M2pK)
        for m in range(p):
            D2 -= 2.0 * M1[m].T @ (m0[:, None] * W1[m])
        cond1 += 0.5 * sw2 ** 2 * D2
        linear_part = A.T @ K21 @ A + _sym(A1.T @ R)
        # Cov(lin, quad): the third cumulant, K3(psi_m) from the chain
        third = np.zeros((Nn, Nn))
        K3M1 = np.zeros((N, Nn))
        for m in range(p):
            K3psi = chain[layer, m]
            K3M1 += K3psi @ M1[m]
            AK3pp = A.T @ (K3psi @ psi)  # (N, p): A^T K3(psi_m) psi_k
            for k in range(p):
                third += 0.5 * sw2 ** 2 * np.outer(AK3pp[:, k], v[m, k])
        third = _sym(third + sw2 * A.T @ K3M1)
        # Cov(quad, quad), Gaussian pairings: g[m][:, k] = M'_m^T K2 psi_k
        g = np.stack([M1[m].T @ Kpsi for m in range(p)])  # (p, N, p)
        qq = np.zeros((Nn, Nn))
        for m in range(p):
            qq += sw2 ** 2 * M1[m].T @ (K20 @ W1[m])
        for m, k in pairs2:
            qq += sw2 ** 2 * np.outer(g[m][:, k], g[k][:, m])
        # sw2^3 sum_{m,k,r} pKp_mk g[m][:, r] v_kr, plus its transpose
        cross = np.zeros((Nn, Nn))
        for m in range(p):
            vk = np.tensordot(pKp[m], v, axes=([0], [0]))  # (p, N): sum_k pKp_mk v_kr
            cross += g[m] @ vk
        qq += sw2 ** 3 * _sym(cross)
        vmat = v.reshape(p * p, Nn)
        C4 = np.einsum("mk,nr->mnkr", pKp, pKp).reshape(p * p, p * p)  # pKp_mk pKp_m'r, rows (m m'), cols (k r)
        qq += 0.5 * sw2 ** 4 * vmat.T @ C4 @ vmat
        # Cov(lin, cubic): (1/2) [sw2^2 P_m (M''_mk^T Kpsi_k) + sw2^2 P_k (M''_mk^T Kpsi_m)
        #                        + sw2^2 pKp_mk A^T K2 M''_mk]
        # + (sw2^3/2) P_m u_mkr pKp_kr, then Sym
        lc = 0.5 * sw2 ** 2 * AtK @ M2pK
        for m, k in pairs2:
            lc += 0.5 * sw2 ** 2 * (np.outer(P_[:, m], M2[m, k].T @ Kpsi[:, k])
                                    + np.outer(P_[:, k], M2[m, k].T @ Kpsi[:, m]))
        uK = np.einsum("mkrj,kr->mj", u, pKp)
        lc += 0.5 * sw2 ** 3 * P_ @ uK
        K21_new = cond1 + linear_part + third + qq + _sym(lc)
        # --- order 0 of K3 = n^2 cum3(w), along the chain of every later layer ---
        if layer + 1 < depth:
            Rtpsi = R.T @ psi  # (N, p)
            # the full-rank matrices each later layer's update scales: D1_k (the conditional covariance's derivative)
            # and AKM_k = A^T K2 M'_k, in one array so that their sum is one tensordot
            DA = np.empty((2 * p, Nn, Nn))
            for k in range(p):
                DA[k] = _d_conditional_covariance(m0, M, M1[k])
                np.matmul(AtK, M1[k], out=DA[p + k])
            C = M.T @ (m0[:, None] * M)
            RtM_C = R.T @ M - C
            UtK = U.T @ K20
            m0M = m0 @ M
            new_chain = {}
            for t in range(layer + 1, depth):
                for m in range(p):
                    c = vec[layer + 1, t, m]
                    Mc, Rc = M @ c, R @ c
                    Y = chain[t, m]  # K3^layer(A c)
                    YU = Y @ U
                    # A^T Y A + T(c) + place_3(X)(c) + place_3(Z)(c), symmetrised at the end, so every X + X^T is
                    # written 2 X: one product M^T (.) M (A = M + U V^T; T(c): M^T diag(2 m0 Mc) M; D(Rc): -M^T
                    # diag(Rc) M; -R^T diag(Mc) M and its transpose), full-rank terms scaled by c or by scalars,
                    # and the rank-4p rest as one product Lf Rf^T
                    inner = K20 * (-2.0 * Mc)[None, :]
                    inner += Y
                    inner[np.diag_indices(N)] += 2.0 * m0 * Mc - Rc
                    new = M.T @ (inner @ M)
                    new += 2.0 * RtM_C * c[None, :]  # 2 R^T M diag(c) - 2 C diag(c)
                    coef = np.concatenate([sw2 * (psi.T @ Rc), 2.0 * sw2 * (P_.T @ c)])  # s_k D1_k, 2 sw2 Pc_k AKM_k
                    new += np.tensordot(coef, DA, axes=1)
                    new[np.diag_indices(Nn)] += c * m0M - M.T @ (m0 * Mc) + Rc @ M
                    W = 0.5 * (U.T @ YU) @ V.T - (UtK * Mc[None, :]) @ M  # (p, Nn)
                    D1c = (DA[:p] @ c).T  # (Nn, p): D1_k c
                    Z = (DA[p:] @ c + c @ DA[p:]).T  # (Nn, p): AKM_k c + AKM_k^T c
                    vc = v @ c  # (p, p)
                    vP = np.einsum("mkj,k->mj", v, P_.T @ c)  # (p, Nn): sum_m' P_m'.c v_mm'
                    Lf = np.concatenate([2.0 * (M.T @ YU), 2.0 * V, 2.0 * sw2 * Rtpsi, P_], axis=1)
                    Rf = np.concatenate([V, W.T, D1c, 2.0 * sw2 * Z + sw2 ** 2 * (P_ @ vc + 2.0 * vP.T)], axis=1)
                    new += Lf @ Rf.T
                    new_chain[t, m] = 0.5 * (new + new.T)
            chain = new_chain
        # --- order 1 of m, order 0 of K2 and m ---
        m1 = (m1 @ M + s1 @ np.stack([m0 @ M1[m] for m in range(p)])
              + sw2 * np.einsum("im,mij->j", Kpsi, M1) + 0.5 * sw2 ** 2 * np.einsum("mk,mkj->j", pKp, v))
        K20 = _conditional_covariance(m0, M) + A.T @ R
        K20 = 0.5 * (K20 + K20.T)
        m0 = m0 @ M
        K21 = 0.5 * (K21_new + K21_new.T)
        record(layer + 1)
        if progress is not None:
            progress(layer + 1, depth, _time.perf_counter() - start)
    info.update(points=max(xl.shape[0] for xl in xs), points_per_layer=[xl.shape[0] for xl in xs],
                seconds=_time.perf_counter() - start)
    layers = np.arange(depth + 1)
    arr = {k: np.array(val) for k, val in out.items()}
    return LatticeNextOrder(layers, layers * dt, arr.pop("K0"), arr.pop("K1"), arr.pop("V4"), arr.pop("V4_1"), xs,
                            info, **arr)


def _om_matrix(om: Array, P: int) -> Array:
    """Om (P x P) from its pair vector."""
    a, b = pair_indices(P)
    out = np.empty((P, P))
    out[a, b] = om
    out[b, a] = om
    return out
