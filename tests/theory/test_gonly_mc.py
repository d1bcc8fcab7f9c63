"""G-only EFT against the Monte Carlo referee (P = 2, n = 128, T = 4; discrete recursion at the MC depth).

Acceptance: K0 agrees within 1% (up to 5 standard errors).  For relu at T = 4 the measured deviation of E[G]
from K0 is 1.1 +- 0.2 % (n = 128, L = 64, 40000 seeds; benchmarks/validate_gonly_vs_mc.py): it is the genuine
1/n correction K1/n (K1_00 = +10 +- 2, which the G-only EFT predicts to be 0), so at T = 4 the criterion holds
only up to that correction; for t <= 3 it holds outright (0.7%).  tanh: <= 0.3% at every t.  The G-only closure is expected to FAIL beyond K0;
the numbers are recorded by benchmarks/validate_gonly_vs_mc.py.  Here we assert what is exact (V4(0) is Wishart)
and the two failures that are clearly resolved at this sample size: the relu V4 drift and the tanh tadpole at t = 0.
"""

import numpy as np
import pytest

from kernel_eft.simulate.estimates import summarize
from kernel_eft.simulate.params import SimulationParams
from kernel_eft.simulate.samplers import simulate
from kernel_eft.core.pairs import pair_lookup, to_pairs
from kernel_eft.theory import gonly

KIN = np.array([[1.0, 0.6], [0.6, 1.0]])
WIDTH, DEPTH, TIME, SAMPLES = 128, 32, 4.0, 32_000


@pytest.fixture(scope="module", params=["relu", "tanh"])
def run(request):
    params = SimulationParams(activation=request.param, width=WIDTH, depth=DEPTH, time=TIME, sw2=1.0, sb2=0.0,
                                 kin=KIN, samples=SAMPLES, seed=20240, batches=24)
    batches, _ = simulate(params)
    est = summarize(params, batches)
    theory = gonly.solve_gonly_discrete(request.param, KIN, 1.0, 0.0, TIME, DEPTH)
    return request.param, est, theory


@pytest.mark.slow
def test_mean_kernel_within_one_percent(run):
    name, est, theory = run
    G, G_se = to_pairs(est["G_mean"]), to_pairs(est["G_mean_se"])
    excess = np.abs(G - theory.K0) - 0.01 * np.abs(theory.K0)
    assert np.all(excess < 5 * G_se), (name, np.max(np.abs(G - theory.K0) / np.abs(theory.K0)))
    assert np.max(G_se / np.abs(theory.K0)) < 0.003  # the test resolves 1%


@pytest.mark.slow
def test_initial_covariance_is_wishart(run):
    _, est, theory = run
    V, V_se = est["V4"][0], est["V4_se"][0]
    assert np.all(np.abs(V - theory.V4[0]) < 5 * V_se)


@pytest.mark.slow
def test_recorded_gonly_failures(run):
    """relu: MC V4 exceeds the G-only V4 at T = 4 (the paper's drift); tanh: the exact K1 source at t = 0 is 0
    (h^0 Gaussian) while the G-only tadpole is not (the source-closure mismatch at initialisation)."""
    name, est, theory = run
    lut = pair_lookup(2)
    m = lut[0, 1]
    if name == "relu":
        V, V_se = est["V4"][-1], est["V4_se"][-1]
        assert V[m, m] - theory.V4[-1][m, m] > 5 * V_se[m, m]
    else:
        source, source_se = to_pairs(est["K1_source"][0]), to_pairs(est["K1_source_se"][0])
        assert abs(source[m]) < 5 * source_se[m]
        assert abs(theory.tadpole[0][m] - source[m]) > 5 * source_se[m]


def test_linear_activation_is_exact_against_monte_carlo():
    """phi(x) = x: S = G, so the G-only recursion is the exact O(1) covariance and K1 = 0 exactly at every n.

    Every V4 entry (P = 3, all 17 layers, 36 x 36 pairs) agrees with Monte Carlo within 5 standard errors; the
    O(1/n) bias of V4 is below the statistical error at n = 128 and 8000 seeds (measured max |z| = 3.0)."""
    kin = np.array([[1.0, 0.3, -0.2], [0.3, 1.5, 0.5], [-0.2, 0.5, 0.8]])
    params = SimulationParams(activation="linear", width=128, depth=16, time=1.5, sw2=1.0, sb2=0.3, kin=kin,
                                 samples=8000, seed=5, batches=16)
    batches, _ = simulate(params)
    est = summarize(params, batches)
    theory = gonly.solve_gonly_discrete("linear", kin, 1.0, 0.3, 1.5, 16)
    assert np.all(np.abs(est["V4"] - theory.V4) < 5 * est["V4_se"])
    assert np.all(np.abs(to_pairs(est["K1"])) < 5 * to_pairs(est["K1_se"]))
    assert np.all(theory.K1 == 0.0)
