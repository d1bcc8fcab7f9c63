"""kernel_eft.core.quadrature: each rule integrates what it claims exactly (Gaussian moments, polynomials)."""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from kernel_eft.core.quadrature import (BlockRule, bivariate_normal_cdf, gauss_hermite, gaussian_expectation_2d,
                                        half_range_rule, legendre_on, normal_rule, rule_1d, rule_2d)


def double_factorial(k: int) -> int:
    return math.prod(range(k, 0, -2)) if k > 0 else 1


def test_gauss_hermite_gives_the_normal_moments_exactly():
    """order m is exact to degree 2m - 1: E[x^2k] = (2k-1)!!; one degree beyond, it must fail."""
    x, w = gauss_hermite(6)
    for k in range(6):
        np.testing.assert_allclose(np.sum(w * x ** (2 * k)), double_factorial(2 * k - 1), rtol=1e-12)
        assert abs(np.sum(w * x ** (2 * k + 1))) < 1e-12
    assert abs(np.sum(w * x ** 12) - double_factorial(11)) > 1.0  # degree 12 > 2*6 - 1


def test_legendre_on_integrates_polynomials_on_every_interval():
    lo, hi = np.array([-1.0, 0.5]), np.array([2.0, 3.0])
    x, w = legendre_on(4, lo, hi)  # exact to degree 7
    for m in range(8):
        np.testing.assert_allclose(np.sum(w * x ** m, -1), (hi ** (m + 1) - lo ** (m + 1)) / (m + 1), rtol=1e-13)


def test_half_range_rule_integrates_the_radial_moments():
    """int_0^inf r^(m+power) e^(-r^2/2) dr = 2^((m+power-1)/2) Gamma((m+power+1)/2), m <= 2n - 1."""
    for power in (0, 1):
        r, w = half_range_rule(8, power)
        for m in range(16):
            q = m + power
            np.testing.assert_allclose(np.sum(w * r ** m), 2 ** ((q - 1) / 2) * special.gamma((q + 1) / 2),
                                       rtol=1e-11)


def test_normal_rule_and_rule_1d_give_the_normal_moments():
    x, w = normal_rule(np.array([0.3, -1.2]))
    v, u = rule_1d(2.5, 8)
    for k in range(6):
        np.testing.assert_allclose(np.sum(w * x ** (2 * k)), double_factorial(2 * k - 1), rtol=1e-10)
        np.testing.assert_allclose(np.sum(u * v ** (2 * k)), double_factorial(2 * k - 1) * 2.5 ** k, rtol=1e-11)


def test_bivariate_rules_give_isserlis_moments():
    """E[x0^2 x1^2] = K00 K11 + 2 K01^2, E[x0 x1^3] = 3 K01 K11, E[x0^2] = K00 (Isserlis), for both 2-D rules."""
    K = np.array([[1.3, -0.7], [-0.7, 0.9]])
    exact = {(2, 2): K[0, 0] * K[1, 1] + 2 * K[0, 1] ** 2, (1, 3): 3 * K[0, 1] * K[1, 1], (2, 0): K[0, 0],
             (1, 1): K[0, 1], (1, 0): 0.0}
    x, w = rule_2d(K, BlockRule())
    for (a, b), value in exact.items():
        assert abs(np.sum(w * x[:, 0] ** a * x[:, 1] ** b) - value) < 1e-11
        got = gaussian_expectation_2d(lambda za, zb: za ** a * zb ** b, K[0, 0], K[1, 1], K[0, 1])
        assert abs(got - value) < 1e-10
        got = gaussian_expectation_2d(lambda za, zb: za ** a * zb ** b, K[0, 0], K[1, 1], K[0, 1], order=4)
        assert abs(got - value) < 1e-12


def test_bivariate_cdf_at_the_origin_is_sheppards_formula():
    """P(Z1 <= 0, Z2 <= 0) = 1/4 + asin(rho) / (2 pi), on both branches (Plackett and Owen's T)."""
    rho = np.array([-0.99, -0.5, 0.0, 0.3, 0.9, 0.95, 0.999])
    np.testing.assert_allclose(bivariate_normal_cdf(np.zeros(7), np.zeros(7), rho),
                               0.25 + np.arcsin(rho) / (2 * np.pi), rtol=1e-12)
