"""Exact O(1/n) theory of V4 and K1 (THEORY.md section 4; derivation in docs/exact_theory.md).

The empirical measure of neurons is expanded to O(1/n) around the *free process*: a Gaussian process
z(t) in R^P with Cov(z(t1), z(t2)) = K0(min(t1, t2)).  Everything reduces to two-time covariances of
that process, C[chi1, chi2](q, t) = Cov(chi1(z(q)), chi2(z(t))) for q <= t, with chi1 an entry of
psi = phi phi^T and chi2 an entry of psi or one of its second derivatives d_c d_d psi_ab, plus
one-time Price derivatives of F (DF, the Hessian D2F) on the mean path.

Two-time Gaussian integrals (`two_time_kernels`).  chi2 depends on (v_a, v_b) = (z_a(t), z_b(t)) only and
chi1 on (u_e, u_f) = (z_e(q), z_f(q)) only, so the 4-dimensional integral is split by conditioning:
    E[chi1(u) chi2(v)] = E_v[ chi2(v) E[chi1(u) | v] ].
The inner conditional expectation is a shifted bivariate Gaussian moment of phi phi, in closed form for
relu, erf and linear (bivariate normal CDF through Owen's T), and by Gauss-Hermite otherwise.  The outer
integral over v (1 or 2 dimensions) uses polar coordinates in the whitened variable, split into the
angular sectors cut by the lines v_a = 0 and v_b = 0, where relu and its derivatives have their kinks;
inside a sector the integrand is analytic, so Gauss-Legendre in angle and radius converges fast.  The
relu Price derivative phi'' = delta is handled exactly as a line integral on v_a = 0.

Time integrals are Volterra integrals on a uniform grid, done with the trapezoid rule (weights
`volterra_weights`); the error is O(h^2) and is measured by halving the step (`quadrature_error`).
All arrays are float64; matrices in pair coordinates (kernel_eft.pairs) internally.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy.integrate import solve_ivp

from kernel_eft.activations import F_matrix, f_matrix, get_activation, kernel_derivatives
from kernel_eft.pairs import (
    four_index_to_pairs,
    from_pairs,
    n_pairs,
    pair_indices,
    pair_lookup,
    pairs_to_four_index,
    to_pairs,
    wishart_v4,
)

Array = np.ndarray

CLOSED_INNER = ("relu", "erf", "linear")
_SQRT2 = np.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


# ----------------------------------------------------------------------------------------------
# Mean path: K0(t), the propagator of y' = J y, and the Price derivatives DF, D2F on it
# ----------------------------------------------------------------------------------------------


def pair_multiplicity(P: int) -> Array:
    """Number of ordered index pairs (c, d) in pair m: 1 on the diagonal, 2 off it."""
    a, b = pair_indices(P)
    return np.where(a == b, 1.0, 2.0)


@dataclass
class MeanPath:
    times: Array  # (N,)
    K0: Array  # (N, P, P)
    U: Array  # (N, p, p) fundamental matrix, U' = J U, U(0) = I
    DF: Array  # (N, p, p)
    D2F: Array  # (N, p, p, p)

    def propagator(self) -> Array:
        """Phi[i, j] = U_i U_j^{-1}, the propagator of y' = J y from t_j to t_i, (N, N, p, p)."""
        Uinv = np.linalg.inv(self.U)
        return np.einsum("ixy,jyz->ijxz", self.U, Uinv)


def mean_path(act, kin: Array, sw2: float, sb2: float, times: Array) -> MeanPath:
    """Solve dK0/dt = f(K0) and dU/dt = sw2 DF(K0) U to rtol 1e-12 and sample them on `times`."""
    kin = np.asarray(kin, float)
    P = kin.shape[0]
    p = n_pairs(P)

    def rhs(_, state):
        K = from_pairs(state[:p], P)
        U = state[p:].reshape(p, p)
        J = sw2 * kernel_derivatives(act, K, order=1).jacobian()
        return np.concatenate([to_pairs(f_matrix(act, K, sw2, sb2)), (J @ U).ravel()])

    state0 = np.concatenate([to_pairs(kin), np.eye(p).ravel()])
    sol = solve_ivp(rhs, (times[0], times[-1]), state0, method="DOP853", t_eval=times, rtol=1e-12, atol=1e-13)
    if not sol.success or not np.all(np.isfinite(sol.y)):
        raise ArithmeticError(f"mean-kernel ODE failed: {sol.message}")
    K0 = from_pairs(sol.y[:p].T, P)
    U = sol.y[p:].T.reshape(-1, p, p)
    derivs = [kernel_derivatives(act, K, order=2) for K in K0]
    DF = np.stack([d.jacobian() for d in derivs])
    D2F = np.stack([d.hessian() for d in derivs])
    return MeanPath(np.asarray(times, float), K0, U, DF, D2F)


# ----------------------------------------------------------------------------------------------
# Closed-form inner expectations E[phi(x1) phi(x2)], x ~ N(m, S) bivariate (shifted)
# ----------------------------------------------------------------------------------------------


def bivariate_normal_cdf(h: Array, k: Array, rho: Array) -> Array:
    """P(Z1 <= h, Z2 <= k) for standard normals with correlation rho, through Owen's T:
    Phi2 = Phi(h)/2 + Phi(k)/2 - T(h, a_h) - T(k, a_k) - beta, a_h = (k - rho h)/(h r), r = sqrt(1 - rho^2),
    beta = 1/2 when h k < 0 (or h k = 0 and h + k < 0); at h = 0 it is Phi(k)/2 - T(k, -rho/r)."""
    h, k, rho = np.broadcast_arrays(np.asarray(h, float), np.asarray(k, float), np.asarray(rho, float))
    # |rho| = 1 is a limit of the formula; staying 1e-15 inside changes Phi2 by < 1e-7 only where
    # the integrand is a step anyway (zero conditional variance), and keeps a_h finite.
    rho = np.clip(rho, -1.0 + 1e-15, 1.0 - 1e-15)
    r = np.sqrt(1.0 - rho * rho)
    hz = h == 0.0
    kz = k == 0.0
    hs = np.where(hz, 1.0, h)
    ks = np.where(kz, 1.0, k)
    ah = (k - rho * h) / (hs * r)
    ak = (h - rho * k) / (ks * r)
    beta = np.where((h * k < 0) | ((h * k == 0) & (h + k < 0)), 0.5, 0.0)
    general = 0.5 * special.ndtr(h) + 0.5 * special.ndtr(k) - special.owens_t(hs, ah) - special.owens_t(ks, ak) - beta
    h_zero = 0.5 * special.ndtr(k) - special.owens_t(ks, -rho / r)
    k_zero = 0.5 * special.ndtr(h) - special.owens_t(hs, -rho / r)
    both = 0.25 + np.arcsin(rho) / (2 * np.pi)
    out = np.where(hz & kz, both, np.where(hz, h_zero, np.where(kz, k_zero, general)))
    return np.clip(out, 0.0, 1.0)


def _std_terms(m1, m2, s11, s22, s12):
    """Standardised parameters of a bivariate Gaussian, robust to vanishing variances."""
    floor = 1e-300
    sig1 = np.sqrt(np.maximum(s11, floor))
    sig2 = np.sqrt(np.maximum(s22, floor))
    rho = np.clip(s12 / (sig1 * sig2), -1.0, 1.0)
    r = np.sqrt(np.maximum(1.0 - rho * rho, 0.0))
    return sig1, sig2, m1 / sig1, m2 / sig2, rho, r


def relu_square_mean(m: Array, s: Array) -> Array:
    """E[relu(x)^2], x ~ N(m, s)."""
    sig = np.sqrt(np.maximum(s, 1e-300))
    al = m / sig
    return (m * m + s) * special.ndtr(al) + m * sig * np.exp(-0.5 * al * al) * _INV_SQRT_2PI


def relu_pair_mean(m1, m2, s11, s22, s12) -> Array:
    """E[relu(x1) relu(x2)], x ~ N((m1, m2), [[s11, s12], [s12, s22]]) (truncated bivariate moments)."""
    sig1, sig2, h, k, rho, r = _std_terms(m1, m2, s11, s22, s12)
    L = bivariate_normal_cdf(h, k, rho)
    rs = np.where(r > 0, r, 1.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ck = np.where(r > 0, special.ndtr((k - rho * h) / rs), np.where(k - rho * h >= 0, 1.0, 0.0))
        ch = np.where(r > 0, special.ndtr((h - rho * k) / rs), np.where(h - rho * k >= 0, 1.0, 0.0))
        dens = np.where(r > 0, np.exp(-0.5 * ((k - rho * h) / rs) ** 2) * _INV_SQRT_2PI, 0.0)
    ph = np.exp(-0.5 * h * h) * _INV_SQRT_2PI
    pk = np.exp(-0.5 * k * k) * _INV_SQRT_2PI
    # With W = -Z standard: E[(h - W1)(k - W2) 1{W1<h, W2<k}] expanded with Stein's lemma.
    e_w1 = -ph * ck - rho * pk * ch
    e_w2 = -pk * ch - rho * ph * ck
    e_w12 = rho * L - rho * h * ph * ck - rho * k * pk * ch + r * ph * dens
    return m1 * m2 * L - m1 * sig2 * e_w2 - m2 * sig1 * e_w1 + sig1 * sig2 * e_w12


def erf_pair_mean(m1, m2, s11, s22, s12) -> Array:
    """E[erf(x1) erf(x2)]: erf(x) = 2 Phi(sqrt2 x) - 1 turns it into bivariate normal orthants."""
    d1 = np.sqrt(1.0 + 2.0 * s11)
    d2 = np.sqrt(1.0 + 2.0 * s22)
    h = _SQRT2 * m1 / d1
    k = _SQRT2 * m2 / d2
    rho = 2.0 * s12 / (d1 * d2)
    return 4.0 * bivariate_normal_cdf(h, k, rho) - 2.0 * special.ndtr(h) - 2.0 * special.ndtr(k) + 1.0


def inner_psi_mean(act, same: bool, m1, m2, s11, s22, s12, gh_order: int = 24) -> Array:
    """E[phi(x_e) phi(x_f)] for x ~ N(m, S); `same` means e == f (then x_e = x_f, use m1, s11)."""
    name = act.name
    if name == "relu":
        return relu_square_mean(m1, s11) if same else relu_pair_mean(m1, m2, s11, s22, s12)
    if name == "erf":
        return erf_pair_mean(m1, m1, s11, s11, s11) if same else erf_pair_mean(m1, m2, s11, s22, s12)
    if name == "linear":
        return m1 * m1 + s11 if same else m1 * m2 + s12
    # Generic activation: tensor Gauss-Hermite over the conditional Gaussian (slower, still smooth).
    x, w = np.polynomial.hermite_e.hermegauss(gh_order)
    w = w / np.sqrt(2 * np.pi)
    phi = act.phi
    if same:
        sig = np.sqrt(np.maximum(s11, 0.0))[..., None]
        return np.sum(phi(m1[..., None] + sig * x) ** 2 * w, axis=-1)
    l11 = np.sqrt(np.maximum(s11, 0.0))
    l21 = np.where(l11 > 0, s12 / np.where(l11 > 0, l11, 1.0), 0.0)
    l22 = np.sqrt(np.maximum(s22 - l21 * l21, 0.0))
    out = np.zeros(np.broadcast(m1, m2).shape)
    for i in range(gh_order):
        pa = phi(m1 + l11 * x[i])
        acc = 0.0
        for j in range(gh_order):
            acc = acc + w[j] * phi(m2 + l21 * x[i] + l22 * x[j])
        out = out + w[i] * pa * acc
    return out


# ----------------------------------------------------------------------------------------------
# Outer quadrature over v ~ N(0, Kt) restricted to coordinates (a,) or (a, b)
# ----------------------------------------------------------------------------------------------


def _gauss_legendre(n: int, lo: Array, hi: Array) -> tuple[Array, Array]:
    x, w = np.polynomial.legendre.leggauss(n)
    lo = np.asarray(lo)[..., None]
    hi = np.asarray(hi)[..., None]
    return 0.5 * (hi - lo) * x + 0.5 * (hi + lo), 0.5 * (hi - lo) * w


def outer_rule_1d(kaa: Array, n_rho: int, radius: float) -> tuple[Array, Array]:
    """Nodes (N, M) and weights (N, M) for E[g(v)], v ~ N(0, kaa), split at v = 0."""
    xi, w = _gauss_legendre(n_rho, 0.0, radius)
    xi = np.concatenate([-xi[::-1], xi])
    w = np.concatenate([w[::-1], w]) * np.exp(-0.5 * xi * xi) * _INV_SQRT_2PI
    v = np.sqrt(kaa)[:, None] * xi[None, :]
    return v, np.broadcast_to(w, v.shape).copy()


def outer_rule_2d(Kab: Array, n_theta: int, n_rho: int, radius: float) -> tuple[Array, Array]:
    """Nodes (N, M, 2) and weights (N, M) for E[g(v)], v ~ N(0, Kab) (N, 2, 2), in polar coordinates of
    the whitened variable, with the angle split into the four sectors cut by v_a = 0 and v_b = 0."""
    l11 = np.sqrt(Kab[:, 0, 0])
    l21 = Kab[:, 0, 1] / l11
    l22 = np.sqrt(np.maximum(Kab[:, 1, 1] - l21 * l21, 1e-300))
    # v_a = l11 xi1 vanishes at theta = pi/2, 3pi/2; v_b = l21 xi1 + l22 xi2 at theta0 and theta0 + pi.
    theta0 = np.mod(np.arctan2(-l21, l22), np.pi)
    cuts = np.sort(np.stack([np.full_like(theta0, 0.5 * np.pi), np.full_like(theta0, 1.5 * np.pi),
                             theta0, theta0 + np.pi], axis=1), axis=1)
    lo = cuts
    hi = np.concatenate([cuts[:, 1:], cuts[:, :1] + 2 * np.pi], axis=1)
    th, wth = _gauss_legendre(n_theta, lo, hi)  # (N, 4, n_theta)
    th = th.reshape(len(Kab), -1)
    wth = wth.reshape(len(Kab), -1)
    rho, wr = _gauss_legendre(n_rho, 0.0, radius)
    wr = wr * rho * np.exp(-0.5 * rho * rho) / (2 * np.pi)
    xi1 = np.cos(th)[:, :, None] * rho[None, None, :]
    xi2 = np.sin(th)[:, :, None] * rho[None, None, :]
    va = l11[:, None, None] * xi1
    vb = l21[:, None, None] * xi1 + l22[:, None, None] * xi2
    v = np.stack([va, vb], axis=-1).reshape(len(Kab), -1, 2)
    w = (wth[:, :, None] * wr[None, None, :]).reshape(len(Kab), -1)
    return v, w


@dataclass(frozen=True)
class Quadrature:
    """Node counts of the outer integral: angle nodes per sector, radial nodes, radius in sigmas."""

    n_theta: int = 12
    n_rho: int = 32
    radius: float = 9.0

    def refined(self) -> "Quadrature":
        return Quadrature(int(round(self.n_theta * 1.5)), int(round(self.n_rho * 1.5)), self.radius + 1.0)


# ----------------------------------------------------------------------------------------------
# Two-time kernels
# ----------------------------------------------------------------------------------------------


def _second_derivative_types(P: int):
    """For each pair ab and each pair cd within {a, b}: which function d_c d_d psi_ab is."""
    a_idx, b_idx = pair_indices(P)
    lut = pair_lookup(P)
    out = []
    for ab in range(n_pairs(P)):
        a, b = int(a_idx[ab]), int(b_idx[ab])
        if a == b:
            out.append((ab, lut[a, a], "dd_sq", a, a))  # (phi^2)''(v_a)
        else:
            out.append((ab, lut[a, b], "d1d1", a, b))  # phi'(v_a) phi'(v_b)
            out.append((ab, lut[a, a], "d2_0", a, b))  # phi''(v_a) phi(v_b)
            out.append((ab, lut[b, b], "d2_0", b, a))  # phi''(v_b) phi(v_a)
    return out


def _pointwise(act, kind: str, va: Array, vb: Array | None) -> Array:
    phi, dphi, d2phi = act.phi, act.dphi, act.d2phi
    if kind == "psi":
        return phi(va) * (phi(va) if vb is None else phi(vb))
    if kind == "dd_sq":
        d2 = 0.0 if act.name == "relu" else phi(va) * d2phi(va)  # relu: x delta(x) = 0
        return 2.0 * dphi(va) ** 2 + 2.0 * d2
    if kind == "d1d1":
        return dphi(va) * dphi(vb)
    if kind == "d2_0":
        return d2phi(va) * phi(vb)
    raise ValueError(kind)


def two_time_kernels(act, K0: Array, quad: Quadrature = Quadrature()) -> tuple[Array, Array]:
    """Two-time covariances of the free process on a time grid (q <= t; entries with q > t are zero).

    Returns
      Cpp[q, t, m, ab]     = Cov(psi_m(z(t_q)), psi_ab(z(t_t)))
      Q[q, t, m, cd, ab]   = Cov(psi_m(z(t_q)), (d_c d_d psi_ab)(z(t_t)))   (zero unless {c,d} within {a,b})
    """
    act = get_activation(act)
    if act.name not in CLOSED_INNER and (act.dphi is None or act.d2phi is None):
        raise ValueError(f"activation {act.name!r} needs phi' and phi'' for the exact closure")
    N, P, _ = K0.shape
    p = n_pairs(P)
    a_idx, b_idx = pair_indices(P)
    Cpp = np.zeros((N, N, p, p))
    Q = np.zeros((N, N, p, p, p))
    EX = to_pairs(F_matrix(act, K0))  # (N, p): E psi_m(z(q))
    deriv = _second_derivative_types(P)
    for ab in range(p):
        a, b = int(a_idx[ab]), int(b_idx[ab])
        coords = [a] if a == b else [a, b]
        Kt = K0[:, coords][:, :, coords]  # (N, k, k)
        if a == b:
            v, w = outer_rule_1d(Kt[:, 0, 0], quad.n_rho, quad.radius)
            v = v[..., None]
        else:
            v, w = outer_rule_2d(Kt, quad.n_theta, quad.n_rho, quad.radius)
        # Node sets: (nodes, weights, list of (target array slot, function of v)).
        node_sets = [(v, w, "main")]
        if act.name == "relu" and a != b:
            # phi'' = delta: E[delta(v_a) g(v)] = p_{v_a}(0) E[g(0, v_b) | v_a = 0], a half-line integral.
            for line in (0, 1):
                other = 1 - line
                kl = Kt[:, line, line]
                cvar = Kt[:, other, other] - Kt[:, 0, 1] ** 2 / kl
                vl, wl = outer_rule_1d(cvar, quad.n_rho, quad.radius)
                dens0 = 1.0 / np.sqrt(2 * np.pi * kl)
                vv = np.zeros(vl.shape + (2,))
                vv[..., other] = vl
                node_sets.append((vv, wl * dens0[:, None], ("line", line)))
        for nodes, weights, tag in node_sets:
            # Functions of v evaluated on the nodes, each with its target slot.
            targets = []
            if tag == "main":
                va = nodes[..., 0]
                vb = None if a == b else nodes[..., 1]
                targets.append(("Cpp", None, _pointwise(act, "psi", va, vb)))
                for ab_d, cd, kind, i1, i2 in deriv:
                    if ab_d != ab:
                        continue
                    if kind == "d2_0" and act.name == "relu":
                        continue  # delta-type: on the line node sets
                    if a == b:
                        y = _pointwise(act, kind, va, None)
                    else:
                        x1 = nodes[..., coords.index(i1)]
                        x2 = nodes[..., coords.index(i2)]
                        y = _pointwise(act, kind, x1, x2)
                    targets.append(("Q", cd, y))
            else:
                line = tag[1]
                cd = pair_lookup(P)[coords[line], coords[line]]
                targets.append(("Q", cd, act.phi(nodes[..., 1 - line])))  # delta(v_line) phi(v_other)
            for t in range(N):
                # Conditional law of u = z_{e,f}(q) given v = z_coords(t) for every q <= t.
                Kq = K0[: t + 1]  # (nq, P, P)
                Ktinv = np.linalg.inv(Kt[t])
                for m in range(p):
                    e, f = int(a_idx[m]), int(b_idx[m])
                    ef = [e, f]
                    Cuv = Kq[:, ef][:, :, coords]  # (nq, 2, k)
                    A = Cuv @ Ktinv  # (nq, 2, k)
                    Sc = Kq[:, ef][:, :, ef] - A @ np.swapaxes(Cuv, 1, 2)
                    mean = np.einsum("qik,Mk->qMi", A, nodes[t])  # (nq, M, 2)
                    s11 = Sc[:, 0, 0, None]
                    s22 = Sc[:, 1, 1, None]
                    s12 = Sc[:, 0, 1, None]
                    inner = inner_psi_mean(act, e == f, mean[..., 0], mean[..., 1], s11, s22, s12)
                    centred = inner - EX[: t + 1, m, None]
                    for slot, cd, y in targets:
                        # Cov = E[(E[X|v] - E X) Y]; the quadrature's own E[Y] error cancels to first order.
                        val = centred @ (weights[t] * y[t])
                        if slot == "Cpp":
                            Cpp[: t + 1, t, m, ab] = val
                        else:
                            Q[: t + 1, t, m, cd, ab] = val
    return Cpp, Q


# ----------------------------------------------------------------------------------------------
# Volterra quadrature and the assembly of V4 and K1
# ----------------------------------------------------------------------------------------------


def volterra_weights(times: Array) -> Array:
    """W[i, j]: trapezoid weights of int_0^{t_i} g(t_j) dt on a uniform grid (zero for j > i)."""
    N = len(times)
    h = np.diff(times)
    if N > 1 and not np.allclose(h, h[0], rtol=1e-9, atol=0):
        raise ValueError("exact closure needs a uniform time grid")
    W = np.zeros((N, N))
    for i in range(1, N):
        W[i, : i + 1] = h[0]
        W[i, 0] = W[i, i] = 0.5 * h[0]
    return W


@dataclass
class ExactResult:
    times: Array
    K0: Array  # (N, P, P)
    V4_free: Array  # (N, p, p) pair coordinates
    V4_cross: Array
    V4_feedback: Array
    B: Array  # (N, p)
    K1: Array  # (N, p)

    @property
    def V4(self) -> Array:
        return self.V4_free + self.V4_cross + self.V4_feedback

    def four_index(self, name: str) -> Array:
        P = self.K0.shape[-1]
        return pairs_to_four_index(getattr(self, name), P)

    def K1_matrix(self) -> Array:
        return from_pairs(self.K1, self.K0.shape[-1])


def stein_psi_zz(path: MeanPath) -> Array:
    """Cov_{K}(psi_m, z_a z_b) = sum_cd K_ac K_bd <d_c d_d psi_m> = 2 (K dF_m K)_ab (Stein's lemma),
    with <d_c d_d psi_m> = 2 dF_m/dK_cd (independent entries) = 2 DF[m, cd] / mult(cd); (N, p, p)."""
    N, P, _ = path.K0.shape
    lut = pair_lookup(P)
    mult = pair_multiplicity(P)
    dfull = path.DF[:, :, lut] / mult[lut][None, None]  # (N, p, P, P)
    M = 2.0 * np.einsum("nac,nmcd,nbd->nmab", path.K0, dfull, path.K0)
    return to_pairs(M)


def assemble(path: MeanPath, Cpp: Array, Q: Array, sw2: float) -> ExactResult:
    """V4 (free, cross, feedback) and K1 from the kernels; see docs/exact_theory.md for each formula."""
    N, P, _ = path.K0.shape
    W = volterra_weights(path.times)
    Phi = path.propagator()  # (N, N, p, p)
    mult = pair_multiplicity(P)

    V4_free = four_index_to_pairs(np.stack([wishart_v4(K) for K in path.K0]))
    Cph = stein_psi_zz(path)  # (N, p, p): Cov(psi_m(z(r)), (zz^T)_ab(z(t))) for r <= t
    cross = sw2 * np.einsum("ij,ijxy,jyz->ixz", W, Phi, Cph)
    V4_cross = cross + np.swapaxes(cross, 1, 2)

    # Full two-time psi-psi covariance for any order of the times.
    Cfull = Cpp + np.swapaxes(np.swapaxes(Cpp, 0, 1), 2, 3) * (1.0 - np.eye(N))[:, :, None, None]
    M = np.einsum("ij,ijxy,jkyz->ikxz", W, Phi, Cfull)  # int dr1 Phi(t_i, r1) C(r1, r2=t_k)
    V4_feedback = sw2 ** 2 * np.einsum("ik,ikxz,ikwz->ixw", W, M, Phi)

    # E[y(r) A_psi(r)^T] and E[s(r) y(r)^T] = E[A_psi y^T] + DF E[y y^T]
    Ycross = sw2 * np.einsum("rq,rqxy,qryz->rxz", W, Phi, Cpp)
    Esy = np.swapaxes(Ycross, 1, 2) + np.einsum("rxy,ryz->rxz", path.DF, V4_feedback)

    # Terms (i) + (iii): sum_cd mult(cd) [ Q(r,t)[cd,cd,ab] + DF(r)[cd,:] . sw2 int_0^r Phi(r,q) Q(q,t)[:,cd,ab] dq ]
    I3 = sw2 * np.einsum("rq,rqxy,qtycb->rtxcb", W, Phi, Q)  # (r, t, m', cd, ab)
    diagQ = np.einsum("rtccb->rtcb", Q)
    fb = np.einsum("rcx,rtxcb->rtcb", path.DF, I3)
    term13 = np.einsum("c,rtcb->rtb", mult, diagQ + fb)
    # Terms (ii) + (iv): 2 D2F(K0(t))[ab] : E[s(r) y(r)^T]
    term24 = 2.0 * np.einsum("tbxy,rxy->rtb", path.D2F, Esy)
    integrand = term13 + term24  # (r, t, ab), valid for r <= t
    B = 0.5 * sw2 * np.einsum("tr,rtb->tb", W, integrand)
    K1 = sw2 * np.einsum("ij,ijxy,jy->ix", W, Phi, B)
    return ExactResult(path.times, path.K0, V4_free, V4_cross, V4_feedback, B, K1)


def exact_theory(activation, kin, sw2: float, sb2: float, time: float, steps: int,
                 quad: Quadrature = Quadrature()) -> ExactResult:
    """The exact O(1/n) theory on the uniform grid t_j = j T / steps, j = 0..steps."""
    act = get_activation(activation)
    times = np.linspace(0.0, time, steps + 1)
    path = mean_path(act, kin, sw2, sb2, times)
    Cpp, Q = two_time_kernels(act, path.K0, quad)
    return assemble(path, Cpp, Q, sw2)


# ----------------------------------------------------------------------------------------------
# Accuracy of the quadratures, and the netCDF edge
# ----------------------------------------------------------------------------------------------


def quadrature_error(activation, kin, sw2: float, sb2: float, time: float, steps: int,
                     quad: Quadrature = Quadrature()) -> dict:
    """Measured errors of the two quadratures at `steps` time steps.

    time_step: max |X(h) - X(h/2)| / max |X(h/2)| over the common times for X = V4, K1 (trapezoid, O(h^2));
    gaussian: the same with the outer Gaussian rule refined 1.5x in every direction, time grid fixed.
    """
    coarse = exact_theory(activation, kin, sw2, sb2, time, steps, quad)
    fine = exact_theory(activation, kin, sw2, sb2, time, 2 * steps, quad)
    refined = exact_theory(activation, kin, sw2, sb2, time, steps, quad.refined())

    def rel(x, y):
        return float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-300))

    return {
        "time_step": {"V4": rel(coarse.V4, fine.V4[::2]), "K1": rel(coarse.K1, fine.K1[::2])},
        "gaussian": {"V4": rel(coarse.V4, refined.V4), "K1": rel(coarse.K1, refined.K1)},
    }


_EXACT_VARIABLES = {
    "K0": (("t", "a", "b"), "mean kernel K0 (infinite width)"),
    "V4": (("t", "a", "b", "c", "d"), "kernel covariance V4 = n Cov(G_ab, G_cd), exact O(1/n) theory"),
    "K1": (("t", "a", "b"), "1/n mean correction K1, E[G] = K0 + K1/n, exact O(1/n) theory"),
    "V4_free": (("t", "a", "b", "c", "d"), "free part of V4: Wishart form of K0(t), Cov of the free field A_hh"),
    "V4_cross": (("t", "a", "b", "c", "d"),
                 "cross part of V4: 2 Sym sw2 int_0^t Phi(t,r) C[psi,hh](r,t) dr"),
    "V4_feedback": (("t", "a", "b", "c", "d"),
                    "feedback part of V4: Cov(y, y), sw2^2 int int Phi C[psi,psi] Phi^T"),
    "K1_source": (("t", "a", "b"),
                  "exact K1 source sw2 B(t) = n sw2 (E[S] - F(E[G])) at O(1/n); dK1/dt = J K1 + sw2 B"),
}


def theory_dataset(args):
    """`kernel-eft theory --closure exact`: the continuous-depth exact theory at --points uniform times."""
    import time as _time

    import xarray as xr

    from kernel_eft import io
    from kernel_eft.validation import InputError

    act = get_activation(args.activation)
    if args.depth is not None:
        raise InputError("--depth", "the exact closure is a continuous-depth theory; give --points instead "
                                    "(compare Monte Carlo extrapolated in 1/L, see docs/exact_theory.md)")
    if act.name not in CLOSED_INNER and (act.dphi is None or act.d2phi is None):
        raise InputError("--activation", f"{act.name!r} lacks phi' or phi'' needed by the exact closure")
    kin = np.asarray(args.kin, dtype=np.float64)
    if np.linalg.eigvalsh(kin)[0] <= 1e-10 * np.max(np.abs(kin)):
        raise InputError("--kin", "the exact closure conditions on pairs of inputs and needs a positive definite "
                                  "K_in (collinear inputs: drop the duplicate input)")
    steps = int(args.points) - 1
    started = _time.perf_counter()
    with np.errstate(over="raise", invalid="raise"):
        try:
            res = exact_theory(act, args.kin, args.sw2, args.sb2, args.time, steps)
        except (FloatingPointError, ArithmeticError) as exc:
            raise FloatingPointError(f"exact theory: {exc}") from None
    P = res.K0.shape[-1]
    values = {"K0": res.K0, "V4": res.four_index("V4"), "K1": res.K1_matrix(),
              "V4_free": res.four_index("V4_free"), "V4_cross": res.four_index("V4_cross"),
              "V4_feedback": res.four_index("V4_feedback"), "K1_source": from_pairs(args.sw2 * res.B, P)}
    data = {name: (dims, values[name], {"long_name": long_name, "units": "1"})
            for name, (dims, long_name) in _EXACT_VARIABLES.items()}
    coords = {**io.time_coords(res.times, None), **io.index_coords(P)}
    quad = Quadrature()
    params = {
        "closure": "exact", "activation": act.name, "time": float(args.time), "sw2": float(args.sw2),
        "sb2": float(args.sb2), "kin": np.asarray(args.kin, dtype=np.float64), "P": P, "mode": "continuous",
        "points": int(res.times.size),
        "time_quadrature": "trapezoid Volterra sums on the uniform output grid, error O(h^2)",
        "gaussian_quadrature": (f"outer polar Gauss-Legendre, {quad.n_theta} angles per sector x {quad.n_rho} radii "
                                f"to {quad.radius} sigma; inner closed form "
                                + ("(bivariate normal / Owen's T)" if act.name in CLOSED_INNER
                                   else "(Gauss-Hermite 24 x 24)")),
        "derivative_convention": "pair coordinates a<=b; off-diagonal K_ab and K_ba move together",
        "wall_seconds": round(_time.perf_counter() - started, 4),
    }
    title = f"Exact O(1/n) kernel theory ({act.name}, T={args.time:g}, continuous)"
    return xr.Dataset(data, coords=coords, attrs=io.provenance_attrs(title, params))
