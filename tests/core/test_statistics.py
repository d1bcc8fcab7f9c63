"""kernel_eft.core.statistics: exact identities of the mergeable moments, the jackknife and the 1/n fit."""

from __future__ import annotations

import numpy as np

from kernel_eft.core.statistics import BatchMoments, Moments, extrapolate_inverse_width, fit_inverse_width, jackknife


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
