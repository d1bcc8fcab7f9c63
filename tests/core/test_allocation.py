"""core/allocation.py: splitting a CPU budget over the widths of a point."""

import numpy as np
import pytest

from kernel_eft.core.allocation import (allocate_samples, extrapolated_variance, extrapolation_weights,
                                        sample_cost)


def test_extrapolation_weights_reproduce_the_weighted_fit():
    widths = np.array([16.0, 32.0, 64.0, 128.0])
    var = np.array([1.0, 2.0, 4.0, 8.0])
    a = extrapolation_weights(widths, var, degree=1)
    # an exact law c0 + c1/n is extrapolated exactly, and the weights sum to one
    assert np.isclose(a.sum(), 1.0) and np.isclose(a @ (1.0 / widths), 0.0, atol=1e-12)
    # and the variance agrees with Monte Carlo of the fit itself
    rng = np.random.default_rng(0)
    y = 3.0 + 5.0 / widths + np.sqrt(var) * rng.standard_normal((20000, 4))
    est = y @ a
    assert abs(est.var() / np.sum(a ** 2 * var) - 1) < 4.5 * np.sqrt(2 / 20000)


def test_allocation_beats_equal_samples_and_equal_cpu_and_matches_a_brute_force_search():
    widths = np.array([16, 32, 64])
    cost = sample_cost(widths, depth=64, activation="relu")
    sigma2 = widths * 10.0  # K1: per-sample variance n V4
    budget = 100.0
    samples = allocate_samples(widths, budget, sigma2, cost, degree=1, min_fraction=0.0, min_samples=1)
    assert samples @ cost <= budget * (1 + 1e-9)
    best = extrapolated_variance(widths, samples, sigma2)
    equal_samples = np.full(3, budget / cost.sum())
    equal_cpu = budget / 3 / cost
    assert best < extrapolated_variance(widths, equal_samples, sigma2)
    assert best < extrapolated_variance(widths, equal_cpu, sigma2)
    # brute force over the simplex of CPU shares
    grid = np.linspace(0.01, 0.98, 98)
    brute = min(extrapolated_variance(widths, np.array([f, g, 1 - f - g]) * budget / cost, sigma2)
                for f in grid for g in grid if f + g < 0.99)
    assert best <= brute * 1.01


def test_every_width_keeps_its_share_and_bad_input_is_refused():
    widths = np.array([16, 32, 64, 128])
    cost = sample_cost(widths, depth=64, activation="relu")
    samples = allocate_samples(widths, 1000.0, widths * 10.0, cost, degree=2, min_fraction=0.2)
    assert np.all(samples * cost >= 0.2 * 1000.0 / 4 * 0.999)
    with pytest.raises(ValueError):
        allocate_samples(widths, -1.0, widths * 1.0, cost)
    with pytest.raises(ValueError):
        allocate_samples(widths, 1.0, widths[:2] * 1.0, cost)
