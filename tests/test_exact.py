"""Exact O(1/n) closure (kernel_eft.theory.exact): identities, closed forms against independent routes,
the P = 1 reduction, linear exactness, and a small Monte Carlo comparison."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special
from scipy.stats import multivariate_normal

from kernel_eft.activations import F_matrix
from kernel_eft.pairs import four_index_to_pairs, to_pairs, wishart_v4
from kernel_eft.theory import exact
from kernel_eft.theory.gonly import solve_gonly_continuous

# ----------------------------------------------------------------------------------------------
# Inner closed forms
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("h,k,rho", [(0.3, -0.5, 0.7), (0.0, 0.4, -0.3), (-1.0, 0.0, 0.9), (0.0, 0.0, 0.5),
                                     (2.0, 1.0, 0.999), (-0.2, -0.3, -0.8), (1.5, -2.0, 0.0)])
def test_bivariate_cdf_matches_scipy(h, k, rho):
    ref = multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]]).cdf([h, k])
    assert exact.bivariate_normal_cdf(h, k, rho) == pytest.approx(ref, abs=1e-7)


CASES = [(0.3, -0.2, 1.0, 0.5, 0.3), (-1.0, 2.0, 0.4, 0.9, -0.5), (0.7, 0.1, 0.2, 0.3, 0.2), (0.0, 0.0, 1.0, 2.0, 0.9)]


@pytest.mark.parametrize("m1,m2,s11,s22,s12", CASES)
def test_relu_pair_mean_by_conditioning(m1, m2, s11, s22, s12):
    """Independent route: E[relu(x1) E[relu(x2) | x1]], the inner in closed form, x1 > 0 by Gauss-Legendre."""
    s1 = np.sqrt(s11)
    sig = np.sqrt(s22 - s12 ** 2 / s11)
    lo, hi = -m1 / s1, 12.0  # relu(x1) vanishes below x1 = 0, i.e. xi = -m1/s1
    xs, ws = np.polynomial.legendre.leggauss(400)
    xi = lo + 0.5 * (hi - lo) * (xs + 1)
    w = 0.5 * (hi - lo) * ws * np.exp(-0.5 * xi ** 2) / np.sqrt(2 * np.pi)
    x1 = m1 + s1 * xi
    mu = m2 + s12 / s11 * (x1 - m1)
    inner = mu * special.ndtr(mu / sig) + sig * np.exp(-0.5 * (mu / sig) ** 2) / np.sqrt(2 * np.pi)
    ref = np.sum(w * x1 * inner)
    assert exact.relu_pair_mean(m1, m2, s11, s22, s12) == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("m1,m2,s11,s22,s12", CASES)
def test_erf_pair_mean_by_conditioning(m1, m2, s11, s22, s12):
    """E[erf(x1) erf(x2)] = E[erf(x1) erf(mu(x1) / sqrt(1 + 2 sig^2))], x1 by Gauss-Hermite (smooth)."""
    x, w = np.polynomial.hermite_e.hermegauss(120)
    w = w / np.sqrt(2 * np.pi)
    x1 = m1 + np.sqrt(s11) * x
    mu = m2 + s12 / s11 * (x1 - m1)
    sig2 = s22 - s12 ** 2 / s11
    ref = np.sum(w * special.erf(x1) * special.erf(mu / np.sqrt(1 + 2 * sig2)))
    assert exact.erf_pair_mean(m1, m2, s11, s22, s12) == pytest.approx(ref, abs=1e-12)


def test_centred_inner_means_reproduce_F():
    """With zero mean the inner forms are F(K) of activations.py (arc-cosine and arcsine kernels)."""
    K = np.array([[1.3, 0.5], [0.5, 0.8]])
    for name, fn in (("relu", exact.relu_pair_mean), ("erf", exact.erf_pair_mean)):
        F = F_matrix(name, K)
        assert fn(0.0, 0.0, K[0, 0], K[1, 1], K[0, 1]) == pytest.approx(F[0, 1], abs=1e-13)
    assert exact.relu_square_mean(0.0, 1.3) == pytest.approx(0.65, abs=1e-14)


# ----------------------------------------------------------------------------------------------
# Two-time kernels against independent routes
# ----------------------------------------------------------------------------------------------


def _relu_p1_closed_forms(K):
    """P = 1 relu, q <= t: C(q,t) = Cov(relu(z_q)^2, 2 1{z_t > 0}) and Cov(relu(z_q)^2, relu(z_t)^2)."""
    qi, ti = np.triu_indices(len(K))
    Kq, Kt = K[qi], K[ti]
    c = np.clip(np.sqrt(Kq / Kt), -1.0, 1.0)
    theta = np.arccos(c)
    C_step = Kq * (np.arcsin(c) + c * np.sqrt(1 - c * c)) / np.pi
    J2 = 3 * np.sin(theta) * np.cos(theta) + (np.pi - theta) * (1 + 2 * np.cos(theta) ** 2)
    C_sq = Kq * Kt * J2 / (2 * np.pi) - Kq * Kt / 4  # degree-2 arc-cosine kernel (Cho & Saul)
    n = len(K)
    out_step = np.zeros((n, n))
    out_sq = np.zeros((n, n))
    out_step[qi, ti] = C_step
    out_sq[qi, ti] = C_sq
    return out_step, out_sq


def test_relu_p1_kernels_closed_form():
    K = 1.3 * np.exp(0.5 * np.linspace(0, 3, 13))
    Cpp, Q = exact.two_time_kernels("relu", K[:, None, None])
    step, sq = _relu_p1_closed_forms(K)
    assert np.max(np.abs(Q[:, :, 0, 0, 0] - step)) < 1e-9
    assert np.max(np.abs(Cpp[:, :, 0, 0] - sq)) < 1e-9 * np.max(np.abs(sq))


def _sample_two_time(K0q, K0t, size, rng):
    P = K0q.shape[0]
    joint = np.block([[K0q, K0q], [K0q, K0t]])
    z = rng.multivariate_normal(np.zeros(2 * P), joint, size=size, method="cholesky")
    return z[:, :P], z[:, P:]


@pytest.mark.parametrize("name", ["relu", "erf", "tanh"])
def test_two_time_kernels_p2_against_sampling(name):
    """Cov(psi_m(z_q), psi_ab(z_t)) and Cov(psi_m(z_q), phi'(z_ta) phi'(z_tb)) against direct sampling of the
    4-dimensional Gaussian (z(q), z(t)); tolerance 5 standard errors."""
    from kernel_eft.activations import get_activation

    act = get_activation(name)
    K0 = np.array([[[1.0, 0.4], [0.4, 1.5]], [[1.6, 0.9], [0.9, 2.3]]])  # two times: q = 0, t = 1
    Cpp, Q = exact.two_time_kernels(name, K0)
    rng = np.random.default_rng(7)
    u, v = _sample_two_time(K0[0], K0[1], 400_000, rng)
    pu = act.phi(u)
    pv = act.phi(v)
    X = np.stack([pu[:, 0] ** 2, pu[:, 0] * pu[:, 1], pu[:, 1] ** 2], axis=1)
    Ypsi = np.stack([pv[:, 0] ** 2, pv[:, 0] * pv[:, 1], pv[:, 1] ** 2], axis=1)
    Yd = act.dphi(v[:, 0]) * act.dphi(v[:, 1])  # d_0 d_1 psi_01
    for m in range(3):
        for ab in range(3):
            prod = (X[:, m] - X[:, m].mean()) * (Ypsi[:, ab] - Ypsi[:, ab].mean())
            se = prod.std() / np.sqrt(len(prod))
            assert abs(Cpp[0, 1, m, ab] - prod.mean()) < 5 * se, (m, ab)
        prod = (X[:, m] - X[:, m].mean()) * (Yd - Yd.mean())
        se = prod.std() / np.sqrt(len(prod))
        assert abs(Q[0, 1, m, 1, 1] - prod.mean()) < 5 * se, m


def test_relu_delta_kernel_is_price_derivative():
    """phi'' = delta for relu: Cov(psi_m(z_q), delta(z_t0) relu(z_t1)) = 2 d/dK_t00 Cov(psi_m(z_q), psi_01(z_t))
    at fixed K_q (Price's theorem on the marginal of z_t), by central differences of the kernel."""
    Kq = np.array([[1.0, 0.4], [0.4, 1.5]])
    Kt = np.array([[1.6, 0.9], [0.9, 2.3]])
    h = 1e-4
    E = np.array([[1.0, 0.0], [0.0, 0.0]])
    plus, _ = exact.two_time_kernels("relu", np.stack([Kq, Kt + h * E]))
    minus, _ = exact.two_time_kernels("relu", np.stack([Kq, Kt - h * E]))
    _, Q = exact.two_time_kernels("relu", np.stack([Kq, Kt]))
    deriv = 2 * (plus[0, 1, :, 1] - minus[0, 1, :, 1]) / (2 * h)
    assert np.max(np.abs(Q[0, 1, :, 0, 1] - deriv)) < 1e-6


# ----------------------------------------------------------------------------------------------
# The assembled theory
# ----------------------------------------------------------------------------------------------


def _direct_relu_p1(kin, sw2, T, steps):
    """THEORY.md section 4 at P = 1, relu, sb2 = 0, written out directly with closed-form kernels and the same
    trapezoid Volterra sums: K0 = kin e^{Jt}, J = sw2/2, DF = 1/2."""
    t = np.linspace(0, T, steps + 1)
    J = sw2 / 2
    K = kin * np.exp(J * t)
    W = exact.volterra_weights(t)
    step, sq = _relu_p1_closed_forms(K)
    Csq = sq + sq.T - np.diag(np.diag(sq))
    prop = np.exp(J * (t[:, None] - t[None, :]))  # e^{J (t_i - t_j)}
    free = 2 * K ** 2
    cross = 2 * sw2 * np.einsum("ij,ij,j->i", W, prop, K ** 2)  # Cov_K(relu^2, z^2) = K^2
    feedback = sw2 ** 2 * np.einsum("ij,ik,ij,ik,jk->i", W, W, prop, prop, Csq)
    # B(t) = (sw2/2) int_0^t [C(r,t) + (sw2/2) int_0^r e^{J(r-q)} C(q,t) dq] dr
    inner = 0.5 * sw2 * np.einsum("rq,rq,qt->rt", W, prop, step)
    B = 0.5 * sw2 * np.einsum("tr,rt->t", W, step + inner)
    K1 = sw2 * np.einsum("ij,ij,j->i", W, prop, B)
    return K, free, cross, feedback, B, K1


def test_p1_reduction_relu():
    """General-P code at P = 1 equals the direct P = 1 formulas (acceptance: 1e-6)."""
    kin, sw2, T, steps = 1.3, 1.2, 3.0, 30
    K, free, cross, feedback, B, K1 = _direct_relu_p1(kin, sw2, T, steps)
    res = exact.exact_theory("relu", np.array([[kin]]), sw2, 0.0, T, steps)
    assert np.max(np.abs(res.K0[:, 0, 0] - K) / K) < 1e-9
    for got, want in ((res.V4_free[:, 0, 0], free), (res.V4_cross[:, 0, 0], cross),
                      (res.V4_feedback[:, 0, 0], feedback), (res.B[:, 0], B), (res.K1[:, 0], K1)):
        assert np.max(np.abs(got - want)) < 1e-6 * np.max(np.abs(want))


def test_initial_values_and_symmetry():
    kin = np.array([[1.0, 0.4], [0.4, 1.5]])
    res = exact.exact_theory("erf", kin, 1.0, 0.1, 1.0, 8)
    assert np.allclose(res.V4[0], four_index_to_pairs(wishart_v4(kin)), atol=1e-14)
    assert np.all(res.K1[0] == 0) and np.all(res.B[0] == 0)
    assert np.allclose(res.V4, np.swapaxes(res.V4, 1, 2), atol=1e-12 * np.max(np.abs(res.V4)))


def test_input_permutation_covariance():
    """Swapping the two inputs permutes every output (checks the sector and conditioning bookkeeping)."""
    kin = np.array([[1.0, 0.4], [0.4, 1.5]])
    swapped = kin[::-1, ::-1]
    perm = np.array([2, 1, 0])  # pairs (00, 01, 11) -> (11, 01, 00)
    a = exact.exact_theory("relu", kin, 1.0, 0.0, 1.5, 6)
    b = exact.exact_theory("relu", swapped, 1.0, 0.0, 1.5, 6)
    assert np.allclose(a.V4, b.V4[:, perm][:, :, perm], rtol=1e-9, atol=1e-10)
    assert np.allclose(a.K1, b.K1[:, perm], rtol=1e-8, atol=1e-10)


def test_linear_activation_equals_gonly():
    """Linear phi: S = G, the G-only EFT is exact.  The exact theory must agree after removing its O(h^2)
    trapezoid error by Richardson extrapolation (h, h/2), and give K1 = 0."""
    kin = np.array([[1.0, 0.3], [0.3, 0.7]])
    sw2, sb2, T = 1.1, 0.2, 2.0
    coarse = exact.exact_theory("linear", kin, sw2, sb2, T, 20)
    fine = exact.exact_theory("linear", kin, sw2, sb2, T, 40)
    richardson = (4 * fine.V4[::2] - coarse.V4) / 3
    gonly = solve_gonly_continuous("linear", kin, sw2, sb2, T, times=coarse.times)
    scale = np.max(np.abs(gonly.V4))
    assert np.max(np.abs(coarse.V4 - gonly.V4)) > 1e-7 * scale  # the raw trapezoid error is visible ...
    assert np.max(np.abs(richardson - gonly.V4)) < 1e-6 * scale  # ... and extrapolates away
    assert np.max(np.abs(fine.K1)) < 1e-10
    assert np.max(np.abs(to_pairs(fine.K0) - solve_gonly_continuous("linear", kin, sw2, sb2, T,
                                                                     times=fine.times).K0)) < 1e-8


def test_time_quadrature_is_second_order():
    """Trapezoid error halves by ~4 per halving of the step: errors at h, h/2 against h/4."""
    kin = np.array([[1.0]])
    runs = [exact.exact_theory("erf", kin, 1.0, 0.0, 2.0, s) for s in (10, 20, 40)]
    e1 = np.max(np.abs(runs[0].V4 - runs[2].V4[::4]))
    e2 = np.max(np.abs(runs[1].V4[::2] - runs[2].V4[::4]))
    ratio = (e1 - e2) / max(e2 - 0.0, 1e-300)
    # e(h) - e(h/4) = c h^2 (1 - 1/16), e(h/2) - e(h/4) = c h^2 (1/4 - 1/16): ratio 5 for a second-order rule
    assert 4.0 < ratio < 6.0
