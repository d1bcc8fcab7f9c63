"""kernel_eft.core.statistics: exact identities of the mergeable moments, the jackknife and the 1/n fit, and the
control-variate sums and the fit order chosen by the data."""

from __future__ import annotations

import numpy as np
import pytest

from kernel_eft.core.statistics import (BatchMoments, ControlMoments, Moments, choose_extrapolation_degree,
                                        extrapolate_inverse_width, fit_inverse_width, jackknife)


def _samples(rng, seeds=37, R=3, p=2):
    G = rng.normal(size=(seeds, R, p)) + 1.0
    S = 0.5 * G + rng.normal(size=(seeds, R, p))
    return G, S


def test_merged_moments_equal_the_pooled_ones():
    """Merging the moments of disjoint seed sets (uneven batches) reproduces the moments of the union."""
    G, S = _samples(np.random.default_rng(1))
    cuts = [0, 5, 6, 20, 37]
    batches = BatchMoments.stack([Moments.from_samples(G[a:b], S[a:b]) for a, b in zip(cuts, cuts[1:])])
    pooled, direct = batches.pooled(), Moments.from_samples(G, S)
    assert pooled.count == direct.count == 37
    for name in ("mean_G", "mean_S", "m2_GG", "m2_GS", "m2_SS"):
        np.testing.assert_allclose(getattr(pooled, name), getattr(direct, name), rtol=1e-12, atol=1e-12)
    cov_GG, cov_GS, _ = pooled.covariances()
    np.testing.assert_allclose(cov_GS[1], np.cov(G[:, 1].T, S[:, 1].T)[:2, 2:], rtol=1e-12)
    np.testing.assert_allclose(cov_GG[0], np.cov(G[:, 0].T), rtol=1e-12)
    # every leave-one-out replicate is the direct moments of the seeds that remain
    for b, loo in enumerate(batches.leave_one_out()):
        keep = np.r_[0:cuts[b], cuts[b + 1]:37]
        np.testing.assert_allclose(loo.m2_GG, Moments.from_samples(G[keep], S[keep]).m2_GG, rtol=1e-12)


def test_jackknife_of_a_mean_is_the_textbook_standard_error():
    """With one seed per batch the delete-one jackknife of the mean is exactly s / sqrt(B)."""
    G, S = _samples(np.random.default_rng(2), seeds=25)
    batches = BatchMoments.stack([Moments.from_samples(G[i:i + 1], S[i:i + 1]) for i in range(25)])
    mean, se = jackknife(batches, lambda m: m.mean_G)
    np.testing.assert_allclose(mean, G.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(se, G.std(axis=0, ddof=1) / np.sqrt(25), rtol=1e-10)
    # a wrong formula (the population sd) is distinguishable at this B
    assert not np.allclose(se, G.std(axis=0, ddof=0) / np.sqrt(25), rtol=1e-6)


def test_weighted_inverse_width_fit_recovers_an_exact_line():
    """Noise-free data on c0 + c1/n: the weighted fit returns c0, c1 exactly and chi2 = 0, whatever the errors;
    the standard errors are those of (X^T W X)^-1."""
    widths = np.array([16.0, 32.0, 64.0, 128.0])
    c0, c1 = np.array([1.5, -0.25]), np.array([3.0, 7.0])
    values = c0 + c1 / widths[:, None]
    errors = np.array([[0.1, 0.2], [0.05, 0.3], [0.2, 0.1], [0.4, 0.05]])
    coef, coef_se, chi2, dof = fit_inverse_width(widths, values, errors, order=2)
    np.testing.assert_allclose(coef[0], c0, rtol=1e-12)
    np.testing.assert_allclose(coef[1], c1, rtol=1e-10)
    np.testing.assert_allclose(chi2, 0.0, atol=1e-20)
    assert dof == 2
    X = np.stack([np.ones(4), 1.0 / widths], axis=1)
    cov = np.linalg.inv(X.T @ (X / errors[:, :1] ** 2))
    np.testing.assert_allclose(coef_se[:, 0], np.sqrt(np.diag(cov)), rtol=1e-12)
    ext = extrapolate_inverse_width(widths, values, errors)
    np.testing.assert_allclose(ext.value, c0, rtol=1e-12)
    np.testing.assert_allclose(ext.apply(values[:, None]), c0[None], rtol=1e-12)  # the map is the fit's


def correlated_samples(rng, seeds=4000, R=3, a=2, k=3):
    x = rng.standard_normal((seeds, R, k))
    beta = rng.standard_normal((R, a, k))
    q = np.einsum("rak,srk->sra", beta, x) + 0.3 * rng.standard_normal((seeds, R, a)) + 5.0
    return q, x


def test_control_sums_merge_exactly_and_fit_the_least_squares_coefficient():
    rng = np.random.default_rng(0)
    q, x = correlated_samples(rng)
    whole = ControlMoments.from_samples(q, x)
    merged = ControlMoments.from_samples(q[:1000], x[:1000]).merge(ControlMoments.from_samples(q[1000:], x[1000:]))
    for f in ("mean_q", "mean_x", "m2_qx", "m2_xx"):
        np.testing.assert_allclose(getattr(merged, f), getattr(whole, f), rtol=1e-12, atol=1e-9)
    # beta is ordinary least squares of q on x (with an intercept) seed by seed
    for r in range(q.shape[1]):
        X = np.column_stack([np.ones(q.shape[0]), x[:, r]])
        coef = np.linalg.lstsq(X, q[:, r], rcond=None)[0]
        np.testing.assert_allclose(whole.beta()[r], coef[1:].T, rtol=1e-10)
    # a control that is identically zero (e.g. the S-noise controls at layer 0) is dropped, not inverted
    x0 = x.copy()
    x0[:, 0, 1] = 0.0
    beta = ControlMoments.from_samples(q, x0).beta()
    assert np.all(np.isfinite(beta)) and np.all(beta[0, :, 1] == 0)


def test_adjusted_mean_is_unbiased_and_has_the_residual_error():
    # 400 repetitions with a known mean 5: pulls of the adjusted mean have mean 0 and std 1 (4.5 sigma bands)
    rng = np.random.default_rng(1)
    adjusted, plain = [], []
    for _ in range(400):
        q, x = correlated_samples(rng, seeds=200, R=1, a=1, k=3)
        adjusted.append(ControlMoments.from_samples(q, x).adjusted_means()[0, 0])
        plain.append(q[:, 0, 0].mean())
    adjusted, plain = np.array(adjusted), np.array(plain)
    pulls = (adjusted - 5.0) / (0.3 / np.sqrt(200))  # residual noise 0.3 is what the controls cannot predict
    assert abs(pulls.mean()) < 4.5 / np.sqrt(400)
    assert abs(pulls.std(ddof=1) - 1.0) < 4.5 / np.sqrt(2 * 399) + 0.02  # + O(k / seeds) from fitting beta
    assert plain.std() > 3 * adjusted.std()  # the controls removed most of the spread


def synthetic_widths(rng, widths, curvature, R=4, entries=3, sigma=0.01):
    widths = np.asarray(widths, dtype=float)
    truth = 1.0 + 2.0 / widths + curvature / widths ** 2
    values = truth[:, None, None] + sigma * rng.standard_normal((widths.size, R, entries))
    return values, np.full_like(values, sigma)


def test_the_data_decide_the_fit_order():
    rng = np.random.default_rng(2)
    widths = [16, 32, 64, 128]
    # a pure 1/n law keeps the linear fit in (nearly) every repetition; 1/n^2 large against the errors is found
    linear = [choose_extrapolation_degree(widths, *synthetic_widths(rng, widths, 0.0)) for _ in range(200)]
    assert np.mean(np.array(linear) == 2) < 0.05
    curved = [choose_extrapolation_degree(widths, *synthetic_widths(rng, widths, 100.0)) for _ in range(50)]
    assert all(d == 2 for d in curved)
    # three widths never get a quadratic (no degree of freedom left to test it)
    assert choose_extrapolation_degree([16, 32, 64], *synthetic_widths(rng, [16, 32, 64], 100.0)) == 1
    # with the auto order the curved law extrapolates to its true value 1 (pulls within 4.5), the linear fit
    # would not
    values, errors = synthetic_widths(rng, widths, 100.0)
    auto = extrapolate_inverse_width(widths, values, errors, degree="auto")
    assert auto.dof == 1 and np.all(np.abs((auto.value - 1.0) / auto.se) < 4.5)
    lin = extrapolate_inverse_width(widths, values, errors, degree=1)
    assert np.any(np.abs((lin.value - 1.0) / lin.se) > 4.5)
