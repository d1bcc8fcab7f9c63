"""Gaussian expectations F, DF, D2F: closed forms = quadrature = brute-force Monte Carlo = finite differences."""

import warnings

import numpy as np
import pytest

from kernel_eft.core import activations, expectations
from kernel_eft.core.quadrature import NormalRule, gaussian_expectation_2d
from kernel_eft.core.pairs import from_pairs, n_pairs, pair_indices, to_pairs

CLOSED = ["relu", "erf", "linear"]
ALL = ["relu", "erf", "linear", "tanh", "gelu", "silu"]


def random_blocks(rng, count, corr_max=0.98):
    """(kaa, kbb, kab) with variances over two decades and correlations up to corr_max in modulus."""
    kaa, kbb = np.exp(rng.uniform(-1.5, 2.5, (2, count)))
    corr = rng.uniform(-corr_max, corr_max, count)
    return kaa, kbb, corr * np.sqrt(kaa * kbb)


def relative_error(x, y):
    return np.max(np.abs(x - y)) / np.max(np.abs(y))


@pytest.mark.parametrize("name", CLOSED)
def test_closed_form_equals_quadrature(name):
    rng = np.random.default_rng(11)
    kaa, kbb, kab = random_blocks(rng, 40)
    closed = expectations.F_block_derivatives(name, kaa, kbb, kab, method="closed")
    quad = expectations.F_block_derivatives(name, kaa, kbb, kab, method="quadrature")
    for c, q in zip(closed, quad):
        # both are exact to rounding; the quadrature rule is converged to ~1e-11 (measured)
        np.testing.assert_allclose(q, c, rtol=1e-9, atol=1e-10 * (1.0 + np.max(np.abs(c))))
    k = np.exp(rng.uniform(-1.5, 2.5, 20))
    for c, q in zip(expectations.F_diag_derivatives(name, k, method="closed"), expectations.F_diag_derivatives(name, k, method="quadrature")):
        np.testing.assert_allclose(q, c, rtol=1e-10, atol=1e-12)


def test_relu_quadrature_beats_gauss_hermite():
    """The kink-split rule is accurate for relu where tensor Gauss-Hermite is not."""
    exact = expectations.F_block("relu", 1.0, 1.5, 0.6, method="closed")
    relu_prod = lambda za, zb: np.maximum(za, 0) * np.maximum(zb, 0)  # noqa: E731
    assert abs(gaussian_expectation_2d(relu_prod, 1.0, 1.5, 0.6) - exact) < 1e-13
    assert abs(gaussian_expectation_2d(relu_prod, 1.0, 1.5, 0.6, order=80) - exact) > 1e-6


@pytest.mark.parametrize("name", ["tanh", "gelu", "silu"])
def test_quadrature_converged(name):
    """Doubling the panels and raising the order changes F, DF, D2F by < 1e-9 (relative)."""
    rng = np.random.default_rng(5)
    kaa, kbb, kab = random_blocks(rng, 6)
    base = expectations.F_block_derivatives(name, kaa, kbb, kab)
    fine = expectations.F_block_derivatives(name, kaa, kbb, kab, rule=NormalRule(panels=8, nodes=24))
    for b, f in zip(base, fine):
        assert relative_error(b, f) < 1e-9


def score_estimates(phi, kaa, kbb, kab, samples, rng):
    """Likelihood-ratio Monte Carlo of F, its gradient and Hessian in (kaa, kbb, kab).

    d/dk E[g] = E[g dlog p/dk] and d2/dk dk' E[g] = E[g (s s' + ds/dk')] for z ~ N(0, K(k)): no Price theorem,
    no derivative of phi.  Returns (mean, standard error) of the 1 + 3 + 9 estimates.
    """
    K = np.array([[kaa, kab], [kab, kbb]])
    Kinv = np.linalg.inv(K)
    E = [np.array([[1.0, 0], [0, 0]]), np.array([[0, 0], [0, 1.0]]), np.array([[0, 1.0], [1.0, 0]])]
    z = rng.standard_normal((samples, 2)) @ np.linalg.cholesky(K).T
    g = phi(z[:, 0]) * phi(z[:, 1])
    u = z @ Kinv  # K^-1 z
    score = np.stack([0.5 * (np.einsum("si,ij,sj->s", u, Ei, u) - np.trace(Kinv @ Ei)) for Ei in E], axis=1)
    dscore = np.empty((samples, 3, 3))
    for i, Ei in enumerate(E):
        for j, Ej in enumerate(E):
            M = Kinv @ Ej @ Kinv @ Ei @ Kinv
            dscore[:, i, j] = -0.5 * np.einsum("si,ij,sj->s", z, M + M.T, z) + 0.5 * np.trace(Kinv @ Ej @ Kinv @ Ei)
    per_sample = np.concatenate([g[:, None], g[:, None] * score,
                                 (g[:, None, None] * (score[:, :, None] * score[:, None, :] + dscore)).reshape(samples, 9)],
                                axis=1)
    return per_sample.mean(0), per_sample.std(0, ddof=1) / np.sqrt(samples)


@pytest.mark.parametrize("name", ["relu", "erf", "tanh"])
def test_block_derivatives_match_monte_carlo(name):
    """The likelihood-ratio estimator is noisy for D2F (relative SE 2-15% at 10^6 samples for these blocks),
    so this is an independent check at the few-percent level; closed form vs quadrature is the precise one."""
    rng = np.random.default_rng(2024)
    act = activations.get_activation(name)
    for kaa, kbb, kab in [(1.0, 1.5, 0.6), (0.7, 2.0, -0.5)]:
        F, grad, hess = expectations.F_block_derivatives(name, kaa, kbb, kab)
        theory = np.concatenate([[F], grad, hess.ravel()])
        mean, se = score_estimates(act.phi, kaa, kbb, kab, 1_000_000, rng)
        z = np.abs(mean - theory) / se
        assert np.all(z < 5.0), (name, (kaa, kbb, kab), z.round(2))


@pytest.mark.parametrize("name", ["relu", "erf", "tanh"])
def test_diagonal_derivatives_match_monte_carlo(name):
    rng = np.random.default_rng(7)
    act = activations.get_activation(name)
    for k in (0.5, 2.0):
        z = np.sqrt(k) * rng.standard_normal(1_000_000)
        g = act.phi(z) ** 2
        score = z * z / (2 * k * k) - 1 / (2 * k)
        dscore = -z * z / k**3 + 1 / (2 * k * k)
        per_sample = np.stack([g, g * score, g * (score * score + dscore)], axis=1)
        mean, se = per_sample.mean(0), per_sample.std(0, ddof=1) / np.sqrt(z.size)
        theory = np.array(expectations.F_diag_derivatives(name, k))
        assert np.all(np.abs(mean - theory) < 5 * se), (name, k, (mean - theory) / se)


@pytest.mark.parametrize("name", ALL)
def test_block_derivatives_match_finite_differences(name):
    rng = np.random.default_rng(3)
    kaa, kbb, kab = random_blocks(rng, 5, corr_max=0.9)
    k = np.stack([kaa, kbb, kab], axis=-1)
    F, grad, hess = expectations.F_block_derivatives(name, kaa, kbb, kab)
    h = 1e-4 * np.max(k[:, :2], axis=1)
    for i in range(3):
        e = np.zeros(3)
        e[i] = 1.0
        plus = expectations.F_block_derivatives(name, *(k + h[:, None] * e).T, order=1)
        minus = expectations.F_block_derivatives(name, *(k - h[:, None] * e).T, order=1)
        np.testing.assert_allclose((plus[0] - minus[0]) / (2 * h), grad[:, i], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose((plus[1] - minus[1]) / (2 * h[:, None]), hess[:, :, i], rtol=1e-5, atol=1e-7)
    kd = np.exp(rng.uniform(-1, 2, 4))
    Fd, d1, d2 = expectations.F_diag_derivatives(name, kd)
    hd = 1e-4 * kd
    p_, m_ = expectations.F_diag_derivatives(name, kd + hd), expectations.F_diag_derivatives(name, kd - hd)
    np.testing.assert_allclose((p_[0] - m_[0]) / (2 * hd), d1, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose((p_[1] - m_[1]) / (2 * hd), d2, rtol=1e-5, atol=1e-7)


def random_kernel(rng, P):
    X = rng.standard_normal((P, P + 3))
    return X @ X.T / (P + 3) + 0.2 * np.eye(P)


@pytest.mark.parametrize("name", ["relu", "tanh"])
def test_pair_convention_is_a_taylor_expansion(name):
    """f(K + e dK) = f + e J dK + (e^2/2) dK H dK + O(e^3) with dK a symmetric perturbation in pairs."""
    rng = np.random.default_rng(9)
    P, sw2, sb2 = 3, 1.3, 0.4
    K = random_kernel(rng, P)
    dK = to_pairs(random_kernel(rng, P) - 0.5 * np.eye(P))
    J = expectations.kernel_jacobian(name, K, sw2)
    H = expectations.kernel_hessian(name, K, sw2)
    assert J.shape == (n_pairs(P),) * 2 and H.shape == (n_pairs(P),) * 3
    np.testing.assert_allclose(H, np.swapaxes(H, 1, 2))
    f0 = to_pairs(expectations.f_matrix(name, K, sw2, sb2))
    remainders = []
    for eps in (1e-2, 5e-3):
        f = to_pairs(expectations.f_matrix(name, K + eps * from_pairs(dK, P), sw2, sb2))
        taylor = f0 + eps * J @ dK + 0.5 * eps**2 * np.einsum("mij,i,j->m", H, dK, dK)
        remainders.append(np.max(np.abs(f - taylor)))
    # third-order remainder: halving eps divides it by 8 (4 would mean a wrong Hessian, 2 a wrong Jacobian)
    assert 6.0 < remainders[0] / remainders[1] < 10.0, remainders


def test_sparse_hessian_contraction_matches_dense():
    rng = np.random.default_rng(4)
    K = random_kernel(rng, 4)
    deriv = expectations.kernel_derivatives("erf", K)
    V = rng.standard_normal((2, n_pairs(4), n_pairs(4)))
    np.testing.assert_allclose(deriv.contract_hessian(V), np.einsum("mij,sij->sm", deriv.hessian(), V), rtol=1e-13)


def test_relu_collinear_raises_and_near_collinear_warns():
    with pytest.raises(activations.CollinearInputsError, match="collinear"):
        expectations.F_block_derivatives("relu", 1.0, 4.0, 2.0)
    with pytest.raises(activations.CollinearInputsError):
        expectations.F_block_derivatives("relu", 1.0, 4.0, -2.0)  # anti-collinear
    with pytest.raises(activations.CollinearInputsError):
        expectations.kernel_hessian("relu", np.array([[1.0, 1.0], [1.0, 1.0]]), 1.0)
    # F and DF stay finite at the collinear point: F = kab/2, DF_kab = P(z_a > 0, z_b > 0) = 1/2, DF_kaa = 0
    F, grad, _ = expectations.F_block_derivatives("relu", 1.0, 4.0, 2.0, order=1)
    np.testing.assert_allclose([F, *grad], [1.0, 0.0, 0.0, 0.5], atol=1e-15)
    F, grad, _ = expectations.F_block_derivatives("relu", 1.0, 4.0, -2.0, order=1)
    np.testing.assert_allclose([F, *grad], [0.0, 0.0, 0.0, 0.0], atol=1e-15)
    with pytest.warns(activations.CollinearWarning):
        _, _, hess = expectations.F_block_derivatives("relu", 1.0, 1.0, 1.0 - 1e-10)
    assert np.all(np.isfinite(hess))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expectations.F_block_derivatives("relu", 1.0, 1.0, 0.99)  # sin theta = 0.14: no warning


def test_relu_angle_accurate_near_collinear():
    """F via atan2 keeps full relative accuracy of 1 - F/sqrt(kaa kbb) ~ theta^3/(3 pi) near theta = 0."""
    theta = 1e-4
    F = expectations.F_block("relu", 1.0, 1.0, np.cos(theta))
    series = (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)
    assert abs(F - series) < 1e-16


def test_custom_kinked_activation_matches_leaky_relu_identity():
    """Generic kink handling: leaky relu = 0.9 relu + 0.1 x, so F = 0.81 F_relu + 0.1 kab (and its derivatives)."""
    leaky = activations.custom_activation("leaky", lambda x: np.maximum(x, 0.1 * x), lambda x: np.where(x > 0, 1.0, 0.1),
                                lambda x: np.zeros(np.shape(x)), kinks=[(0.0, 0.9)])
    rng = np.random.default_rng(8)
    kaa, kbb, kab = random_blocks(rng, 10)
    F, grad, hess = expectations.F_block_derivatives(leaky, kaa, kbb, kab)
    Fr, gr, hr = expectations.F_block_derivatives("relu", kaa, kbb, kab)
    np.testing.assert_allclose(F, 0.81 * Fr + 0.1 * kab, rtol=1e-10)
    np.testing.assert_allclose(grad, 0.81 * gr + np.array([0, 0, 0.1]), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hess, 0.81 * hr, rtol=1e-9, atol=1e-12)
    Fd, d1, d2 = expectations.F_diag_derivatives(leaky, np.array([0.5, 3.0]))
    np.testing.assert_allclose([Fd, d1, d2], [0.505 * np.array([0.5, 3.0]), [0.505, 0.505], [0, 0]], atol=1e-12)


def test_custom_activation_without_derivatives_reports_clearly():
    act = activations.custom_activation("cube", lambda x: x**3)
    assert np.isclose(expectations.F_block(act, 1.0, 1.0, 0.5), 9 * 0.5 + 6 * 0.5**3)  # E[x^3 y^3] = 9 rho + 6 rho^3
    with pytest.raises(ValueError, match="dphi"):
        expectations.F_block_derivatives(act, 1.0, 1.0, 0.5)


def test_F_matrix_pairs_consistent():
    rng = np.random.default_rng(1)
    K = random_kernel(rng, 4)
    deriv = expectations.kernel_derivatives("tanh", K)
    np.testing.assert_allclose(from_pairs(deriv.F, 4), expectations.F_matrix("tanh", K), rtol=1e-14)
    a, b = pair_indices(4)
    assert np.all(deriv.index[a == b] == deriv.index[a == b][:, :1])
