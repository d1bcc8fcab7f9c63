"""Shifted Gaussian moments (kernel_eft.core.moments) against independent routes: scipy's bivariate normal
CDF, conditioning with adaptive one-dimensional quadrature, and the erf closed form for the tabulated route."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import multivariate_normal

from kernel_eft.core.activations import custom_activation, get_activation
from kernel_eft.core.activations.erf import erf_pair_mean
from kernel_eft.core.activations.relu import relu_pair_mean
from kernel_eft.core.activations import moments_for
from kernel_eft.core.moments import TabulatedMoments, UnsupportedActivation
from kernel_eft.core.quadrature import bivariate_normal_cdf


@pytest.mark.parametrize("h,k,rho", [(0.3, -0.5, 0.7), (0.0, 0.4, -0.3), (-1.0, 0.0, 0.9), (0.0, 0.0, 0.5),
                                     (2.0, 1.0, 0.999), (-0.2, -0.3, -0.8), (1.5, -2.0, 0.0)])
def test_bivariate_cdf_matches_scipy(h, k, rho):
    ref = multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]]).cdf([h, k])
    assert bivariate_normal_cdf(h, k, rho) == pytest.approx(ref, abs=1e-7)


def _conditional_route(f1, f2, m1, m2, s11, s22, s12, breaks1=(), inner_points=()):
    """E[f1(X1) E[f2(X2) | X1]] with the inner expectation by adaptive quadrature: an independent route."""
    s1 = np.sqrt(s11)
    beta = s12 / s1
    sc = np.sqrt(s22 - beta * beta)

    def inner(xi):
        mu = m2 + beta * xi
        pts = [(-mu) / sc] if sc > 0 and abs(mu / sc) < 12 else None
        return integrate.quad(lambda e: f2(mu + sc * e) * np.exp(-e * e / 2) / np.sqrt(2 * np.pi), -12, 12,
                              points=pts, epsabs=1e-13, limit=200)[0]

    pts = [b for b in ((-m1) / s1,) if abs(b) < 12]
    return integrate.quad(lambda xi: f1(m1 + s1 * xi) * inner(xi) * np.exp(-xi * xi / 2) / np.sqrt(2 * np.pi),
                          -12, 12, points=pts or None, epsabs=1e-12, limit=200)[0]


CASES = [(0.3, -0.2, 1.0, 0.5, 0.3), (-1.0, 2.0, 0.4, 0.9, -0.5), (0.7, 0.1, 0.2, 0.3, 0.2),
         (0.0, 0.0, 1.0, 2.0, 0.9), (1.3, -0.8, 2.5, 1.5, -1.2)]


@pytest.mark.parametrize("m1,m2,s11,s22,s12", CASES)
def test_relu_pair_moments_by_conditioning(m1, m2, s11, s22, s12):
    """E[relu relu], E[relu step], E[step step] and E[relu delta] against the conditioning route (the delta term
    as the density of X2 at 0 times the conditional mean of relu(X1))."""
    mom = moments_for("relu")
    relu = lambda x: np.maximum(x, 0.0)  # noqa: E731
    step = lambda x: (x > 0).astype(float)  # noqa: E731
    assert mom.pair(0, 0, m1, m2, s11, s22, s12) == pytest.approx(
        _conditional_route(relu, relu, m1, m2, s11, s22, s12), abs=1e-9)
    assert mom.pair(0, 1, m1, m2, s11, s22, s12) == pytest.approx(
        _conditional_route(relu, step, m1, m2, s11, s22, s12), abs=1e-9)
    assert mom.pair(1, 0, m1, m2, s11, s22, s12) == pytest.approx(
        _conditional_route(step, relu, m1, m2, s11, s22, s12), abs=1e-9)
    assert mom.pair(1, 1, m1, m2, s11, s22, s12) == pytest.approx(
        _conditional_route(step, step, m1, m2, s11, s22, s12), abs=1e-7)
    # E[relu(X1) delta(X2)] = p_X2(0) E[relu(X1) | X2 = 0]
    s2 = np.sqrt(s22)
    mc = m1 + s12 / s22 * (0.0 - m2)
    vc = s11 - s12 ** 2 / s22
    cond = integrate.quad(lambda x: relu(x) * np.exp(-(x - mc) ** 2 / (2 * vc)) / np.sqrt(2 * np.pi * vc),
                          mc - 12 * np.sqrt(vc), mc + 12 * np.sqrt(vc), points=[0.0], epsabs=1e-13)[0]
    dens = np.exp(-m2 ** 2 / (2 * s22)) / (np.sqrt(2 * np.pi) * s2)
    assert mom.pair(0, 2, m1, m2, s11, s22, s12) == pytest.approx(dens * cond, abs=1e-10)


def test_relu_single_and_square_moments():
    mom = moments_for("relu")
    for mu, s in ((0.3, 1.1), (-1.2, 0.4), (2.0, 3.0)):
        ref = [integrate.quad(lambda e: f(mu + s * e) * np.exp(-e * e / 2) / np.sqrt(2 * np.pi), -12, 12,
                              points=[-mu / s], epsabs=1e-13)[0]
               for f in (lambda x: np.maximum(x, 0), lambda x: float(x > 0), lambda x: np.maximum(x, 0) ** 2)]
        assert mom.single(0, mu, s) == pytest.approx(ref[0], abs=1e-12)
        assert mom.single(1, mu, s) == pytest.approx(ref[1], abs=1e-12)
        assert mom.single(2, mu, s) == pytest.approx(np.exp(-mu * mu / (2 * s * s)) / (np.sqrt(2 * np.pi) * s))
        assert mom.square(0, mu, s) == pytest.approx(ref[2], abs=1e-12)
        assert mom.square(1, mu, s) == pytest.approx(2 * ref[0], abs=1e-12)
        assert mom.square(2, mu, s) == pytest.approx(2 * ref[1], abs=1e-12)


def test_centred_pair_means_reproduce_F():
    """With zero means the pair moments are F(K) (arc-cosine and arcsine kernels of kernel_eft.core.expectations)."""
    from kernel_eft.core.expectations import F_matrix

    K = np.array([[1.3, 0.5], [0.5, 0.8]])
    assert relu_pair_mean(0.0, 0.0, K[0, 0], K[1, 1], K[0, 1]) == pytest.approx(F_matrix("relu", K)[0, 1], abs=1e-13)
    assert erf_pair_mean(0.0, 0.0, K[0, 0], K[1, 1], K[0, 1]) == pytest.approx(F_matrix("erf", K)[0, 1], abs=1e-13)


@pytest.fixture(scope="module")
def tanh_table():
    return moments_for("tanh", mu_max=30.0, s_max=2.5)


@pytest.mark.parametrize("mu", [-3.1, -0.37, 0.0, 0.2, 1.7, 6.0])
@pytest.mark.parametrize("s", [0.01, 0.3, 1.1, 2.37])
def test_tabulated_single_and_square_against_quadrature(tanh_table, mu, s):
    """Interpolated smoothings E[f(mu + s xi)] of tanh, tanh', tanh'', tanh^2 and (tanh^2)'' within 1e-7."""
    act = get_activation("tanh")
    f0, f1, f2 = act.phi, act.dphi, act.d2phi

    def ref(f):
        pts = [-mu / s] if abs(mu / s) < 12 else None
        return integrate.quad(lambda e: f(mu + s * e) * np.exp(-e * e / 2) / np.sqrt(2 * np.pi), -12, 12,
                              points=pts, epsabs=1e-14, limit=200)[0]

    for order, f in enumerate((f0, f1, f2)):
        assert tanh_table.single(order, np.array([mu]), s)[0] == pytest.approx(ref(f), abs=1e-7)
    assert tanh_table.square(0, np.array([mu]), s)[0] == pytest.approx(ref(lambda x: f0(x) ** 2), abs=1e-7)
    assert tanh_table.square(2, np.array([mu]), s)[0] == pytest.approx(
        ref(lambda x: 2 * (f1(x) ** 2 + f0(x) * f2(x))), abs=1e-6)


def test_tabulated_pair_against_erf_closed_form():
    """The tabulated route for erf (treated as an activation without closed forms) against erf's bivariate
    closed form (Owen's T), over random covariances and means: within 2e-5 (the 48-node X1 rule)."""
    table = moments_for("erf", mu_max=40.0, s_max=2.5)
    assert isinstance(table, TabulatedMoments)
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(40):
        s11, s22 = rng.uniform(0.05, 4.0, 2)
        s12 = rng.uniform(-0.95, 0.95) * np.sqrt(s11 * s22)
        m1, m2 = rng.normal(0.0, 2.0, 2)
        got = table.pair(0, 0, np.array([m1]), np.array([m2]), s11, s22, s12)[0]
        worst = max(worst, abs(got - erf_pair_mean(m1, m2, s11, s22, s12)))
        batch = table.later_pair(np.array([m1]), np.array([m2]), np.array([s11]), np.array([s22]), np.array([s12]))
        assert batch[0, 0] == pytest.approx(got, abs=1e-13)
    assert worst < 2e-5


def test_table_range_is_enforced():
    table = moments_for("tanh", mu_max=10.0, s_max=1.0)
    with pytest.raises(ValueError, match="tabulated range"):
        table.single(0, np.array([50.0]), 0.5)
    with pytest.raises(ValueError, match="tabulated range"):
        table.single(0, np.array([0.0]), 5.0)


def test_kinked_custom_activation_without_closed_forms_is_refused():
    """A kink would be smeared by the tables: refuse it with the reason instead of losing the delta terms."""
    leaky = custom_activation("leaky", lambda x: np.where(x > 0, x, 0.1 * x), lambda x: np.where(x > 0, 1.0, 0.1),
                              lambda x: np.zeros_like(x), kinks=((0.0, 0.9),))
    with pytest.raises(UnsupportedActivation, match="kinks"):
        moments_for(leaky)
    no_derivatives = custom_activation("sine", np.sin)
    with pytest.raises(UnsupportedActivation, match="phi'"):
        moments_for(no_derivatives)


def test_linear_moments_are_polynomials():
    mom = moments_for("linear")
    assert mom.pair(0, 0, 0.3, -0.4, 1.0, 2.0, 0.5) == pytest.approx(0.3 * -0.4 + 0.5)
    assert mom.square(0, 0.3, 2.0) == pytest.approx(0.09 + 4.0)
