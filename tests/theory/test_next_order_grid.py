"""V4_1 for one input by the grid cumulant hierarchy (kernel_eft.theory.next_order_grid).  Checks, each able to fail:
- the transition matrix's Om-derivatives against central differences;
- linear phi: the grid's V4 and V4_1 equal the exact linear recursion (next_order.linear_*) to round-off;
- t = 0: V4_1 = 0; one layer: V4_1 equals the identity's known terms (X_1 = Y_1 = 0 after one layer);
- the grid's V4 and K1 equal the exact O(1/n) theory's on the layer grid, converging at fourth order (relu) in the
  spacing, and V4_1 converging with them;
- slow tier: Monte Carlo width by width (relu sb2 > 0 and gelu, P = 1, n = 32..256): n^2 (MC - V4 - V4_1/n) flat in
  n (one free constant per layer, the O(1/n^2) term), where V4 + (known terms)/n and V4 alone fail; each width with
  n >= 64 within 4.5 sigma of V4 + V4_1/n at every layer, where V4 alone is not.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2 as chi2_dist

from kernel_eft.core.activations import get_activation
from kernel_eft.core.expectations import f_matrix
from kernel_eft.theory.exact import exact_theory_discrete, mean_path_discrete
from kernel_eft.theory.next_order import known_terms, linear_v4_at_width, linear_v4_next_order
from kernel_eft.theory.next_order_grid import transition_matrices, v4_next_order_grid


def _exact(activation, kin, sw2, sb2, time, depth):
    act = get_activation(activation)
    res = exact_theory_discrete(act, [[kin]], sw2, sb2, time, depth)
    path = mean_path_discrete(act, [[kin]], sw2, sb2, time, depth)
    f0 = np.stack([f_matrix(act, K, sw2, sb2) for K in res.K0])
    known = known_terms(res, path.DF, f0, sw2, time / depth).known_V4_1()[:, 0, 0]
    return res.V4[:, 0, 0], res.K1[:, 0], known


def test_transition_derivatives_against_central_differences():
    x = np.linspace(-6.0, 6.0, 61)
    dt, Om, h = 0.4, 0.7, 1e-4
    M, M1, M2, M3 = transition_matrices(x, dt * Om, dt)
    up, down = transition_matrices(x, dt * (Om + h), dt), transition_matrices(x, dt * (Om - h), dt)
    assert np.allclose(M.sum(axis=1), 1.0) and np.allclose(M1.sum(axis=1), 0.0, atol=1e-12)
    for k, analytic in enumerate((M1, M2, M3)):
        numeric = (up[k] - down[k]) / (2 * h)  # O(h^2) = 1e-8 relative
        assert np.max(np.abs(numeric - analytic)) < 1e-6 * np.max(np.abs(analytic)), k


def test_linear_phi_is_the_exact_recursion():
    """phi(x) = x: S = G and the identity closes, so V4 and V4_1 are known exactly (next_order.linear_*).  The grid
    hierarchy, which knows nothing of that closure (it uses M', M'', M''' and K3), must reproduce both."""
    args = dict(sw2=1.2, sb2=0.3, time=2.0, depth=4)
    grid = v4_next_order_grid("linear", 1.0, grid_points=101, **args)
    V4 = linear_v4_at_width([[1.0]], args["sw2"], args["sb2"], args["time"], args["depth"], np.inf)[:, 0, 0]
    V4_1 = linear_v4_next_order([[1.0]], args["sw2"], args["sb2"], args["time"], args["depth"])[:, 0, 0]
    assert np.max(np.abs(grid.V4 - V4)) < 1e-10 * np.max(np.abs(V4))
    assert np.max(np.abs(grid.V4_1 - V4_1)) < 1e-10 * np.max(np.abs(V4_1))
    assert np.max(np.abs(grid.K1)) < 1e-10  # K1 = 0 for linear phi
    assert V4_1[-1] > 1.0 * V4[-1]  # a large correction, not a trivial pass


@pytest.mark.parametrize("activation, sb2", [("relu", 0.3), ("tanh", 0.0)])
def test_zero_time_and_one_layer(activation, sb2):
    """t = 0: V4_1 = 0 (Wishart at every n).  After one layer X_1 = Y_1 = 0, so V4_1 is the identity's known part."""
    sw2, time = 1.4, 1.5
    grid = v4_next_order_grid(activation, 1.0, sw2, sb2, time, 1, grid_points=101)
    V4, _, known = _exact(activation, 1.0, sw2, sb2, time, 1)
    assert grid.V4_1[0] == 0.0
    assert abs(grid.V4_1[1] - known[1]) < 1e-6 * abs(known[1])  # the tables of tanh: ~1e-7
    assert abs(grid.V4[1] - V4[1]) < 1e-6 * V4[1]


@pytest.mark.parametrize("activation, sw2, sb2, time", [("relu", 1.0, 0.2, 4.0), ("tanh", 1.5, 0.1, 3.0)])
def test_grid_equals_exact_theory_and_converges(activation, sw2, sb2, time):
    """The grid's V4 and K1 equal the exact O(1/n) theory at every layer (L = 8); the error falls at least like
    h^3 from 101 to 151 points (measured: order 4 for relu, spectral for tanh), and V4_1 moves less between the two
    grids than the V4 error of the coarser one allows (both come from the same discretisation)."""
    depth = 8
    V4, K1, known = _exact(activation, 1.0, sw2, sb2, time, depth)
    errs, v41 = [], []
    for points in (101, 151):
        grid = v4_next_order_grid(activation, 1.0, sw2, sb2, time, depth, grid_points=points)
        errs.append(max(np.max(np.abs(grid.V4[1:] / V4[1:] - 1)), np.max(np.abs(grid.K1 - K1)) / np.max(np.abs(K1))))
        v41.append(grid.V4_1)
    assert errs[1] < 1e-4, errs
    assert errs[1] < errs[0] / 1.5 ** 3 or errs[1] < 1e-8, errs  # 1e-8: the exact theory's own quadrature
    change = np.max(np.abs(v41[1] - v41[0]) / np.abs(v41[1]).max())
    assert change < 10 * errs[0], (change, errs)
    assert np.max(np.abs(v41[1][-1] - known[-1])) > 0.05 * abs(known[-1])  # the transport part is there


@pytest.mark.parametrize("activation, sw2, sb2, time, points, tol", [("gelu", 1.2, 0.1, 3.0, 121, 1e-10),
                                                                     ("relu", 1.3, 0.15, 3.0, 121, 1e-10)])
def test_hierarchy_satisfies_the_exact_identity(activation, sw2, sb2, time, points, tol):
    """The one-block identity (section 7) is exact at every n; at order 1/n, for P = 1,
        V4_1^{l+1} = V4_1^l + 2 dt X_1 + dt^2 Y_1 + dt (4 K1 f0 + 4 K0 sw2 Sigma1) + dt^2 4 f0 sw2 Sigma1
                     + dt 4 X_0 + dt^2 2 Y_0.
    The hierarchy computes V4_1 = q K2_1 q and X_1 = sw2 q K2_1 psi, Y_1 = sw2^2 psi K2_1 psi, K1, Sigma1 from the
    same K2_1, m1 without using the identity: they must satisfy it at every layer (measured: 4e-16 at 151 points for
    both; 1.5e-7 for relu at 101, where the grid's steps are further from Gaussian), and the transport part (X_1,
    Y_1) must matter (75% of V4_1 at L = 8; L = 6 here to keep the test fast)."""
    depth = 6
    dt = time / depth
    g = v4_next_order_grid(activation, 1.0, sw2, sb2, time, depth, grid_points=points)
    act = get_activation(activation)
    f0 = np.array([float(f_matrix(act, np.array([[K]]), sw2, sb2)[0, 0]) for K in g.K0])
    known = (dt * (4 * g.K1 * f0 + 4 * g.K0 * sw2 * g.Sigma1) + dt ** 2 * 4 * f0 * sw2 * g.Sigma1
             + dt * 4 * g.X_0 + dt ** 2 * 2 * g.Y_0)
    transport = 2 * dt * g.X_1 + dt ** 2 * g.Y_1
    rebuilt = np.concatenate([[0.0], np.cumsum((known + transport)[:-1])])
    assert np.max(np.abs(rebuilt - g.V4_1)) < tol * np.max(np.abs(g.V4_1)), (rebuilt, g.V4_1)
    assert np.sum(transport[:-1]) > 0.3 * g.V4_1[-1]
    # the order-0 identity: V4^{l+1} = V4 + 2 dt X_0 + dt^2 Y_0 + dt 4 K0 f0 + dt^2 2 f0^2
    rebuilt0 = g.V4[0] + np.concatenate([[0.0], np.cumsum((2 * dt * g.X_0 + dt ** 2 * g.Y_0 + dt * 4 * g.K0 * f0
                                                           + dt ** 2 * 2 * f0 ** 2)[:-1])])
    assert np.max(np.abs(rebuilt0 - g.V4)) < tol * np.max(g.V4)


# ----------------------------------------------------------------------------------------------
# Monte Carlo, width by width (slow tier)
# ----------------------------------------------------------------------------------------------

MC_CASES = [dict(activation="relu", kin=0.9, sw2=1.3, sb2=0.15, time=3.0, depth=8),
            dict(activation="gelu", kin=1.1, sw2=1.2, sb2=0.1, time=3.0, depth=8)]


def _fit_second_order(widths, mc, se, V4, V4_1):
    """Per layer, the weighted fit of MC(n) - V4 - V4_1/n = c2 / n^2 (c2 free: the O(1/n^2) term) over the widths:
    chi2 and its p-value with W - 1 degrees of freedom.  A wrong V4_1 leaves a residual growing like n against
    c2 / n^2 and fails; the right one leaves noise."""
    n = np.asarray(widths, float)[:, None]
    r = mc - V4[None] - V4_1[None] / n
    w = 1.0 / se ** 2
    x = 1.0 / n ** 2
    c2 = np.sum(w * x * r, axis=0) / np.sum(w * x ** 2, axis=0)
    chi2 = np.sum(w * (r - c2 * x) ** 2, axis=0)
    return c2, chi2, chi2_dist.sf(chi2, len(widths) - 1)


@pytest.mark.slow
@pytest.mark.parametrize("case", MC_CASES, ids=[c["activation"] for c in MC_CASES])
def test_v4_next_order_against_monte_carlo(case):
    """Width by width, every layer: with the O(1/n^2) term as the only free parameter (one per layer), V4 + V4_1/n
    fits n Cov(G) at n = 32..256 (p > 1e-3 at every layer); V4 + (known terms)/n and V4 alone do not.  Where the
    O(1/n^2) term is below the noise (n >= 64 at 120 000 networks), each width alone is within 4.5 sigma of
    V4 + V4_1/n while V4 alone misses by more than 4.5 sigma."""
    from kernel_eft.simulate.estimates import summarize
    from kernel_eft.simulate.params import SimulationParams
    from kernel_eft.simulate.samplers import simulate

    V4, _, known = _exact(**case)
    V4_1 = v4_next_order_grid(case["activation"], case["kin"], case["sw2"], case["sb2"], case["time"],
                              case["depth"], grid_points=151).V4_1
    lay = slice(1, None)  # layer 0: Wishart, exact at every n
    widths = (32, 64, 128, 256)
    mcs, ses = [], []
    for n in widths:
        sim = {k: v for k, v in case.items() if k != "kin"}
        params = SimulationParams(width=n, samples=120000, seed=101 + n, batches=32, record_every=1,
                                  kin=[[case["kin"]]], **sim)
        s = summarize(params, simulate(params)[0])
        mc, se = s["V4"][lay, 0, 0], s["V4_se"][lay, 0, 0]
        mcs.append(mc)
        ses.append(se)
        if n >= 64:
            assert np.max(np.abs((mc - V4[lay] - V4_1[lay] / n) / se)) < 4.5, n
            assert np.max(np.abs((mc - V4[lay]) / se)) > 4.5, n
    mcs, ses = np.array(mcs), np.array(ses)
    _, _, p_next = _fit_second_order(widths, mcs, ses, V4[lay], V4_1[lay])
    _, _, p_known = _fit_second_order(widths, mcs, ses, V4[lay], known[lay])
    _, _, p_lead = _fit_second_order(widths, mcs, ses, V4[lay], 0 * V4_1[lay])
    assert np.min(p_next) > 1e-3, p_next
    assert np.min(p_known) < 1e-6, p_known
    assert np.min(p_lead) < 1e-6, p_lead


def test_exact_closure_writes_v4_1_for_one_input():
    """`kernel-eft theory --closure exact --depth L` with one input carries V4_1 (same dims and units as V4) from the
    automatic grid; with two inputs it comes from the lattice instead (tests/theory/test_next_order_lattice.py)."""
    from kernel_eft.theory.exact import EXACT
    from kernel_eft.theory.next_order_grid import automatic_grid_points

    act = get_activation("relu")
    args = dict(sw2=1.1, sb2=0.2, time=2.0, depth=4)
    ds = EXACT.solve(act, np.array([[1.0]]), **args)
    points = automatic_grid_points(act, 1.0, **args)
    grid = v4_next_order_grid(act, 1.0, grid_points=points, **args)
    assert ds.V4_1.dims == ds.V4.dims and ds.V4_1.attrs["units"] == ds.V4.attrs["units"]
    assert ds.V4_1.attrs["long_name"].startswith("1/n coefficient of n Cov(G)")
    assert np.array_equal(ds.V4_1.values[:, 0, 0, 0, 0], grid.V4_1)
    assert int(ds.attrs["V4_1_grid_points"]) == points and points % 2 == 1
    assert ds.attrs["V4_1_grid_spacing"] <= 0.6 * ds.attrs["V4_1_min_step_std"] + 1e-12
    two = EXACT.solve(act, np.array([[1.0, 0.3], [0.3, 1.0]]), **args)
    assert "V4_1" in two and "lattice" in two.attrs["V4_1_method"]  # two inputs: test_next_order_lattice.py
