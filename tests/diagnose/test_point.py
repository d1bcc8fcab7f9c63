"""Diagnostics on synthetic inputs with known answers, and on real linear-phi Monte Carlo.

The synthetic Monte Carlo moments are built from the exact one-block identities (the increments of a
block are Gaussian given h, with covariance Om = sw2 S + sb2 11^T), written out here with four-index
einsums, independently of the pair-coordinate code under test, so every residual part has a known value.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernel_eft.core.activations import get_activation
from kernel_eft.core.meanfield import mean_field_jacobian, source_s2, source_s4
from kernel_eft.core.statistics import fit_inverse_width
from kernel_eft.diagnose.compare import entry_classes, interpolate_in_time
from kernel_eft.diagnose.inputs import check_point_files, theory_kind
from kernel_eft.diagnose.point import diagnose_point
from kernel_eft.diagnose.residual import ResidualSetup, accumulate, contract_s2_cov, contract_s4_cov, residual_rates
from kernel_eft.core.pairs import (four_index_to_pairs, from_pairs, n_pairs, pair_indices, pairs_to_four_index,
                              to_pairs, wishart_v4)
from kernel_eft.validation import InputError
from tests.helpers import KIN, linear_point, s2_four, s4_four, theory_dataset

# ----------------------------------------------------------------------------------------------
# Independent four-index reference formulas
# ----------------------------------------------------------------------------------------------


def random_spd(rng, P, scale=1.0):
    X = rng.standard_normal((P, P + 2))
    return scale * X @ X.T / (P + 2) + 0.3 * np.eye(P)


# ----------------------------------------------------------------------------------------------
# Tensor helpers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("P", [1, 2, 3])
def test_s4_and_s2_match_four_index_definitions(P):
    rng = np.random.default_rng(P)
    A, B = random_spd(rng, P), random_spd(rng, P)
    np.testing.assert_allclose(source_s4(A, B), four_index_to_pairs(s4_four(A, B)), rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(source_s2(B), four_index_to_pairs(s2_four(B)), rtol=1e-14, atol=1e-14)
    # S4(K, K) = 2 x Wishart form: the one-block source at K = W is twice the t=0 covariance.
    np.testing.assert_allclose(source_s4(A, A), 2 * four_index_to_pairs(wishart_v4(A)), rtol=1e-14)


@pytest.mark.parametrize("P", [1, 2, 3])
def test_covariance_contraction_is_the_fluctuation_part_of_mean_s4(P):
    """mean_s S4(G_s, Y_s) = S4(mean G, mean Y) + (1/n) contract(n Cov(G, Y)) exactly (bilinearity)."""
    rng = np.random.default_rng(10 + P)
    p = n_pairs(P)
    N, n = 500, 7
    Z = rng.standard_normal((N, 2 * p)) @ rng.standard_normal((2 * p, 2 * p)) * 0.3
    G = from_pairs(1.0 + Z[:, :p], P)
    Y = from_pairs(0.5 + Z[:, p:], P)
    direct = np.mean([s4_four(g, y) for g, y in zip(G, Y)], axis=0)
    dG, dY = to_pairs(G) - to_pairs(G).mean(0), to_pairs(Y) - to_pairs(Y).mean(0)
    C = n * dG.T @ dY / N  # n Cov(G, Y) with the 1/N divisor of a plain sample average
    split = source_s4(G.mean(0), Y.mean(0)) + contract_s4_cov(C, P) / n
    np.testing.assert_allclose(split, four_index_to_pairs(direct), rtol=1e-12, atol=1e-12)
    direct2 = np.mean([s2_four(y) for y in Y], axis=0)
    CY = n * dY.T @ dY / N
    np.testing.assert_allclose(source_s2(Y.mean(0)) + contract_s2_cov(CY, P) / n,
                               four_index_to_pairs(direct2), rtol=1e-12, atol=1e-12)


def test_entry_classes_partition_the_upper_triangle():
    P = 3
    classes = entry_classes(P)
    a, b = pair_indices(P)
    seen = set()
    for name, entries in classes.items():
        for m, mp in entries:
            key = (min(m, mp), max(m, mp))
            assert key not in seen
            seen.add(key)
            kinds = (a[m] == b[m], a[mp] == b[mp])
            assert {"diag-diag": kinds == (True, True), "diag-off": kinds == (True, False),
                    "off-off": kinds == (False, False)}[name]
    assert len(seen) == n_pairs(P) * (n_pairs(P) + 1) // 2


def test_jacobian_linear_and_relu_closed_forms():
    K = np.array([[1.3, 0.4], [0.4, 0.8]])
    np.testing.assert_allclose(mean_field_jacobian("linear", K, 1.7, 0.2), 1.7 * np.eye(3), atol=1e-9)
    # ReLU (Price): dF_aa/dK_aa = 1/2; dF_ab/dK_ab = <phi' phi'> = (pi - theta)/(2 pi);
    # dF_ab/dK_aa = (1/2)<phi'' phi> = sin(theta) sqrt(K_bb/K_aa) / (4 pi)  (d/dK_aa of the arc-cosine kernel).
    sw2 = 2.0
    J = mean_field_jacobian("relu", K, sw2, 0.0)
    theta = np.arccos(0.4 / np.sqrt(1.3 * 0.8))
    assert J[0, 0] == pytest.approx(sw2 / 2, rel=1e-8)
    assert J[2, 2] == pytest.approx(sw2 / 2, rel=1e-8)
    assert J[1, 1] == pytest.approx(sw2 * (np.pi - theta) / (2 * np.pi), rel=1e-8)
    assert J[1, 0] == pytest.approx(sw2 * np.sin(theta) * np.sqrt(0.8 / 1.3) / (4 * np.pi), rel=1e-7)
    assert J[0, 1] == pytest.approx(0.0, abs=1e-10) and J[0, 2] == pytest.approx(0.0, abs=1e-10)


def test_accumulate_is_the_left_rule():
    t = np.array([0.0, 0.5, 1.5, 2.0])
    rates = np.array([1.0, 2.0, 4.0])[:, None]
    np.testing.assert_allclose(accumulate(t, rates)[:, 0], [0.0, 0.5, 2.5, 4.5])


# ----------------------------------------------------------------------------------------------
# Synthetic exact processes with known residual parts
# ----------------------------------------------------------------------------------------------


def synthetic_process(P=2, L=12, T=1.5, n=50, sw2=1.3, sb2=0.2, transport_error=0.0, source_error=0.0,
                      seed=0, count=1000):
    """Moments of a process obeying the exact block identities with a chosen (J, K0, W) and injected errors.

    transport_error: n Cov(G, S) = V4 J^T / sw2 + delta (so the exact transport differs from J V4 + V4 J^T by
    sw2 (delta + delta^T)); source_error: mean S = (W - sb2)/sw2 + eps (so E[Om] = W + sw2 eps).
    Returns (setup, moments dict, injected transport, injected mean-field source) in pair coordinates."""
    rng = np.random.default_rng(seed)
    p = n_pairs(P)
    dt = T / L
    times = np.arange(L + 1) * dt
    K0 = np.empty((L + 1, P, P)); W = np.empty_like(K0); J = np.empty((L + 1, p, p))
    K = random_spd(rng, P)
    for l in range(L + 1):
        K0[l] = K
        W[l] = random_spd(rng, P, 0.5)
        J[l] = 0.3 * rng.standard_normal((p, p)) + 0.5 * np.eye(p)
        K = K + dt * W[l]
    delta = transport_error * rng.standard_normal((L + 1, p, p))
    eps = source_error * np.stack([to_pairs(random_spd(rng, P)) for _ in range(L + 1)])
    V = four_index_to_pairs(wishart_v4(K0[0]))
    V4 = np.empty((L + 1, p, p)); C_GS = np.empty_like(V4); C_SS = np.empty_like(V4)
    mean_S = np.empty((L + 1, p))
    inj_transport = np.empty((L + 1, p, p)); inj_source = np.empty_like(inj_transport)
    for l in range(L + 1):
        V4[l] = V
        C_GS[l] = V @ J[l].T / sw2 + delta[l]
        C_SS[l] = J[l] @ V @ J[l].T / sw2**2
        Om = W[l] + sw2 * from_pairs(eps[l], P)
        mean_S[l] = to_pairs((Om - sb2) / sw2)
        # exact one-block identities, four-index form
        transport = sw2 * (C_GS[l] + C_GS[l].T) + dt * sw2**2 * C_SS[l]
        C_GS4 = pairs_to_four_index(C_GS[l], P)
        C_SS4 = pairs_to_four_index(C_SS[l], P)
        cov_s4 = (np.einsum("acbd->abcd", C_GS4) + np.einsum("adbc->abcd", C_GS4)
                  + np.einsum("bcad->abcd", C_GS4) + np.einsum("bdac->abcd", C_GS4))
        cov_s2 = np.einsum("acbd->abcd", C_SS4) + np.einsum("adbc->abcd", C_SS4)
        source = four_index_to_pairs(s4_four(K0[l], Om) + dt * s2_four(Om)
                                     + (sw2 * cov_s4 + dt * sw2**2 * cov_s2) / n)
        inj_transport[l] = sw2 * (delta[l] + delta[l].T)
        inj_source[l] = four_index_to_pairs(s4_four(K0[l], Om - W[l]) + dt * (s2_four(Om) - s2_four(W[l])))
        V = V + dt * (transport + source)
    setup = ResidualSetup(times, n, sw2, sb2, dt, K0, W, J)
    moments = dict(count=count, mean_G=to_pairs(K0), mean_S=mean_S, m2_GG=V4 * (count - 1) / n,
                   m2_GS=C_GS * (count - 1) / n, m2_SS=C_SS * (count - 1) / n)
    return setup, moments, inj_transport, inj_source


def test_theory_exact_process_has_zero_residual_at_large_width():
    setup, mom, _, _ = synthetic_process(n=10**9)
    parts = residual_rates(setup, **mom)
    v4_scale = np.max(np.abs(mom["m2_GG"])) * setup.width / (mom["count"] - 1)
    for name in ("total", "transport", "source", "remainder"):
        assert np.max(np.abs(parts[name])) < 1e-7 * v4_scale, name


def test_injected_transport_error_appears_only_in_transport_part():
    setup, mom, inj_t, _ = synthetic_process(transport_error=0.2, seed=3)
    parts = residual_rates(setup, **mom)
    np.testing.assert_allclose(parts["transport"], inj_t[:-1], atol=1e-11)
    np.testing.assert_allclose(parts["source_meanfield"], 0.0, atol=1e-11)
    np.testing.assert_allclose(parts["remainder"], 0.0, atol=1e-9)
    # the total residual is the injected transport plus the known O(1/n) fluctuation source
    np.testing.assert_allclose(parts["total"], inj_t[:-1] + parts["source_fluctuation"], atol=1e-9)
    assert np.max(np.abs(inj_t)) > 0.1


def test_injected_source_error_appears_only_in_source_part():
    setup, mom, inj_t, inj_s = synthetic_process(source_error=0.3, seed=4)
    parts = residual_rates(setup, **mom)
    np.testing.assert_allclose(parts["transport"], 0.0, atol=1e-11)
    np.testing.assert_allclose(parts["source_meanfield"], inj_s[:-1], atol=1e-11)
    np.testing.assert_allclose(parts["remainder"], 0.0, atol=1e-9)
    assert np.max(np.abs(inj_s)) > 0.1


# ----------------------------------------------------------------------------------------------
# 1/n fit, validity window, interpolation
# ----------------------------------------------------------------------------------------------


def test_inverse_width_fit_recovers_known_coefficients_within_errors():
    rng = np.random.default_rng(7)
    widths = np.array([16, 32, 64, 128, 256])
    entries = 400
    K0, K1, K2 = rng.normal(1, 0.3, entries), rng.normal(0, 2, entries), rng.normal(0, 5, entries)
    sigma = 0.002 * (1 + rng.random((widths.size, entries)))
    truth = K0 + K1 / widths[:, None] + K2 / widths[:, None] ** 2
    coef, se, chi2, dof = fit_inverse_width(widths, truth + sigma * rng.standard_normal(sigma.shape), sigma)
    assert dof == 2
    pulls = (coef - np.stack([K0, K1, K2])) / se
    assert np.max(np.abs(pulls)) < 5.0
    # unit-variance pulls: the mean of pull^2 over the entries has standard error sqrt(2/entries) (0.07); 5 sigma
    np.testing.assert_allclose(np.mean(pulls**2, axis=1), 1.0, atol=5 * np.sqrt(2 / entries))
    assert abs(np.mean(chi2) / dof - 1) < 5 * np.sqrt(2 / (dof * entries))
    # noiseless data: exact recovery
    coef0, _, chi20, _ = fit_inverse_width(widths, truth, sigma)
    np.testing.assert_allclose(coef0, np.stack([K0, K1, K2]), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(chi20, 0.0, atol=1e-10)
    with pytest.raises(ValueError):
        fit_inverse_width(widths[:2], truth[:2], sigma[:2], order=3)


def test_interpolation_onto_mc_times():
    ts = np.linspace(0, 2, 81)
    vals = np.stack([np.exp(ts), np.sin(ts)], axis=1)
    tq = np.array([0.0, 0.33, 1.7, 2.0])
    out = interpolate_in_time(ts, vals, tq)
    np.testing.assert_allclose(out, np.stack([np.exp(tq), np.sin(tq)], axis=1), atol=1e-6)
    with pytest.raises(ValueError):
        interpolate_in_time(ts, vals, np.array([2.5]))


# ----------------------------------------------------------------------------------------------
# Synthetic netCDF files (docs/data_format.md) and the whole point diagnosis
# ----------------------------------------------------------------------------------------------


def test_point_mc_equal_to_theory_gives_zero_errors_and_infinite_tstar():
    mc, th = linear_point(widths=(10**8, 10**9))
    d = diagnose_point(mc, th)
    assert np.all(np.isinf(d["tstar_V4_width"].values))
    assert not np.any(np.isfinite(d["tstar_K1_width"].values))  # K1 = 0 in MC and theory: nothing to measure
    np.testing.assert_allclose(d["V4_relerr"].values, 0.0, atol=1e-12)
    np.testing.assert_allclose(d["K0_relerr"].values, 0.0, atol=1e-12)
    scale = float(d["V4_MC_norm_T"].max())
    np.testing.assert_allclose(d["residual_acc"].values, 0.0, atol=1e-7 * scale)


def test_point_tstar_finds_injected_v4_error():
    L, T = 8, 1.0
    mc, th = linear_point(L=L, T=T, V4_factor=lambda t: np.where(t >= 0.5, 1.25, 1.0))
    d = diagnose_point(mc, th)
    np.testing.assert_array_equal(d["tstar_V4_width"].values, 0.5)


@pytest.mark.parametrize("attr,value", [("sw2", 1.5), ("activation", "relu"), ("kin", "1,0.4;0.4,1.2"),
                                        ("depth", 9), ("time", 2.0)])
def test_mismatched_grid_point_names_the_attribute(attr, value):
    mc, th = linear_point()
    mc[1][1].attrs[attr] = value
    with pytest.raises(InputError) as err:
        check_point_files(mc, th)
    assert err.value.field == attr


def test_discrete_theory_with_other_depth_is_rejected():
    mc, _ = linear_point(L=8)
    th = [("th.nc", theory_dataset("linear", KIN, 1.0, 0.1, 1.0, 16))]
    with pytest.raises(InputError) as err:
        check_point_files(mc, th)
    assert err.value.field == "depth"


def test_continuum_theory_is_interpolated_onto_mc_times():
    mc, _ = linear_point(L=8)
    fine = theory_dataset("linear", KIN, 1.0, 0.1, 1.0, 64, depth=False)
    d = diagnose_point(mc, [("cont.nc", fine)])
    assert list(d["theory"].values) == ["gonly_continuum"]
    want = to_pairs(fine["K0"].values[::8])
    np.testing.assert_allclose(d["K0_theory"].sel(theory="gonly_continuum").values, want, rtol=1e-12)


def test_k1_source_prediction_is_the_tadpole_for_gonly_and_sw2_b_for_exact():
    """Each closure's prediction of n sw2 (E[S] - F(E[G])) is carried to the MC times: G-only's tadpole, and the
    exact closure's own K1_source (it has no tadpole)."""
    L, T = 8, 1.0
    mc, _ = linear_point(L=L, T=T)
    t = np.arange(L + 1) * T / L
    tadpole = np.einsum("t,ab->tab", t, np.array([[0.3, -0.1], [-0.1, 0.2]]))
    gonly = theory_dataset("linear", KIN, 1.0, 0.1, T, L, tadpole=tadpole)
    exact = theory_dataset("linear", KIN, 1.0, 0.1, T, L, closure="exact", depth=False).drop_vars("tadpole")
    exact_source = np.einsum("t,ab->tab", t**2, np.array([[1.0, 0.5], [0.5, 2.0]]))
    exact["K1_source"] = (("t", "a", "b"), exact_source)
    d = diagnose_point(mc, [("g.nc", gonly), ("e.nc", exact)])
    src = d["K1_source_theory"]
    np.testing.assert_allclose(src.sel(theory="gonly_discrete").values, to_pairs(tadpole), rtol=1e-12)
    np.testing.assert_allclose(src.sel(theory="exact_continuum").values, to_pairs(exact_source), rtol=1e-9,
                               atol=1e-12)
    assert "tadpole_theory" not in d  # closures are compared through their standard fields only
    # a G-only file written before K1_source was a standard field: its tadpole is read as its K1_source
    legacy = diagnose_point(mc, [("g.nc", gonly.drop_vars("K1_source"))])
    np.testing.assert_array_equal(legacy["K1_source_theory"].values, d["K1_source_theory"].values[:1])


# ----------------------------------------------------------------------------------------------
# Real Monte Carlo of linear phi: the G-only closure is exact at leading order in 1/n
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def linear_mc_point():
    from kernel_eft.simulate.dataset import mc_dataset
    from kernel_eft.simulate.estimates import summarize
    from kernel_eft.simulate.params import SimulationParams
    from kernel_eft.simulate.samplers import simulate

    T, L, sw2, sb2 = 1.0, 12, 1.0, 0.2
    mc = []
    for n in (256, 1024):
        prm = SimulationParams("linear", n, L, T, sw2, sb2, KIN, 2400, seed=11 + n, batches=24)
        b, _ = simulate(prm)
        mc.append((f"mc_{n}.nc", mc_dataset(prm, summarize(prm, b), b)))
    th = [("th.nc", theory_dataset("linear", KIN, sw2, sb2, T, L))]
    return diagnose_point(mc, th), mc


def test_linear_mc_transport_residual_vanishes_identically(linear_mc_point):
    d, _ = linear_mc_point
    transport = d["residual_acc"].sel(residual_part="transport").values
    assert np.max(np.abs(transport)) < 1e-10 * float(d["V4_MC_norm_T"].max())


def test_linear_mc_residuals_zero_within_errors(linear_mc_point):
    """Mean-field source and the statistical remainder vanish within 5 standard errors at every t."""
    d, _ = linear_mc_point
    for part in ("source_meanfield", "remainder"):
        acc = d["residual_acc"].sel(residual_part=part).values[:, 1:]
        se = d["residual_acc_se"].sel(residual_part=part).values[:, 1:]
        assert np.max(np.abs(acc / se)) < 5.0, part
    # K1 of linear phi is exactly 0 at every width (E[G] obeys the K0 recursion); the exact source is 0
    z = d["K1_MC"].values / d["K1_MC_se"].values
    assert np.max(np.abs(z)) < 5.0
    np.testing.assert_allclose(d["K1_source_MC"].values, 0.0, atol=1e-9)


def test_linear_mc_fluctuation_source_is_the_known_one_over_n_term(linear_mc_point):
    """For S = G: the O(1/n) source is (sw2/n) contract4(V4) + dt sw2^2/n contract2(V4), exactly."""
    d, _ = linear_mc_point
    P, sw2, dt = 2, float(d.attrs["sw2"]), float(d.attrs["time"]) / int(d.attrs["depth"])
    for w in d["width"].values:
        V4 = d["V4_MC"].sel(width=w).values
        want = (sw2 * contract_s4_cov(V4, P) + dt * sw2**2 * contract_s2_cov(V4, P)) / int(w)
        got = d["residual_rate"].sel(residual_part="source_fluctuation", width=w).values
        np.testing.assert_allclose(got, want[:-1], rtol=1e-10)


def test_linear_mc_validity_window_never_triggers(linear_mc_point):
    d, _ = linear_mc_point
    assert not np.any(np.isfinite(d["tstar_V4_width"].values))  # never seen (inf), or not resolvable (NaN)
    # the MC V4 agrees with the G-only V4 at 5 sigma beyond the O(1/n) correction 4 sw2 T / n
    err, se = d["V4_relerr"].values, d["V4_relerr_se"].values
    bound = 4 * float(d.attrs["sw2"]) * float(d.attrs["time"]) / d["width"].values
    assert np.all(np.abs(err) < bound[None, :, None, None, None] + 5 * se)


def test_real_theory_files_are_recognised_and_aligned():
    """Files from theory.gonly.solution_dataset (discrete and continuous) map onto the MC layers."""
    from kernel_eft.theory import gonly

    mc, th = linear_point(L=8)
    disc = gonly.solution_dataset(gonly.solve_gonly_discrete("linear", KIN, 1.0, 0.1, 1.0, 8), get_activation("linear"), KIN,
                                  1.0, 0.1, 1.0)
    cont = gonly.solution_dataset(gonly.solve_gonly_continuous("linear", KIN, 1.0, 0.1, 1.0, points=33),
                                  get_activation("linear"), KIN, 1.0, 0.1, 1.0)
    assert theory_kind(disc) == ("gonly", 8) and theory_kind(cont) == ("gonly", None)
    d = diagnose_point(mc, [("disc.nc", disc), ("cont.nc", cont)])
    assert list(d["theory"].values) == ["gonly_discrete", "gonly_continuum"]
    # the synthetic MC equals this test's discrete recursion; the real discrete solver must agree with it
    np.testing.assert_allclose(d["V4_theory"].sel(theory="gonly_discrete").values,
                               th[0][1]["V4"].pipe(lambda v: four_index_to_pairs(v.values)), rtol=1e-12)
    exact_like = theory_dataset("linear", KIN, 1.0, 0.1, 1.0, 16, closure="exact", depth=False)
    assert theory_kind(exact_like) == ("exact", None)


def test_source_closure_mismatch_at_initialisation_tanh():
    """At t = 0, h is exactly Gaussian: the exact K1 source vanishes, the G-only tadpole does not (tanh).

    Expected significance: tadpole_00(0) ~ -0.17 against a source error ~ sqrt(n/N) x 0.2 ~ 0.018 for n = 64,
    N = 8000, i.e. ~10 sigma; we require > 5 sigma, and |exact source| < 5 sigma."""
    from kernel_eft.simulate.dataset import mc_dataset
    from kernel_eft.simulate.estimates import summarize
    from kernel_eft.simulate.params import SimulationParams
    from kernel_eft.simulate.samplers import simulate
    from kernel_eft.theory import gonly

    kin = np.array([[1.0, 0.6], [0.6, 1.0]])
    prm = SimulationParams("tanh", 64, 2, 0.5, 1.0, 0.0, kin, 8000, seed=5, batches=16)
    b, _ = simulate(prm)
    mc = [("mc.nc", mc_dataset(prm, summarize(prm, b), b))]
    th = gonly.solution_dataset(gonly.solve_gonly_discrete("tanh", kin, 1.0, 0.0, 0.5, 2), get_activation("tanh"), kin,
                                1.0, 0.0, 0.5)
    d = diagnose_point(mc, [("th.nc", th)])
    assert np.all(np.abs(d["K1_source_t0_sigma"].values) < 5.0)
    tadpole0 = d["K1_source_theory"].sel(theory="gonly_discrete").values[0]  # the G-only K1 source: its tadpole
    assert np.all(tadpole0[[0, 2]] < -0.1)  # diagonal entries
    assert np.all(np.abs(d["K1_source_mismatch_t0_sigma"].values[0, [0, 2]]) > 5.0)


# ----------------------------------------------------------------------------------------------
# n (V4(n) - V4) split by the exact one-block identity: measured per width against the predicted parts
# ----------------------------------------------------------------------------------------------

IDENTITY_CASES = [pytest.param(dict(activation="relu", kin=[[1.0]]), id="relu-P1"),
                  pytest.param(dict(activation="relu", kin=[[1.0, 0.5], [0.5, 0.9]]), id="relu-P2",
                               marks=pytest.mark.slow)]


@pytest.mark.parametrize("case", IDENTITY_CASES)
def test_identity_parts_measured_width_by_width_extrapolate_to_the_predicted_parts(case):
    """The diagnostics of Monte Carlo at n = 16-128 (100 000 networks) against the exact theory with V4_1: the
    identity rebuilds each width's V4(n) (|identity_pull| < 4.5 at every layer and entry), and each part of
    n (V4(n) - V4) (mean shift, contractions, transport), fitted over the widths as a + b/n (two degrees of
    freedom), has a within 4.5 se of the theory's part at every layer and entry.  Predicting the transport
    (the X_1, Y_1 part) as zero, as the identity's known terms alone do, fails by more than 6 se."""
    import kernel_eft as ke

    widths, args = [16, 32, 64, 128], dict(time=2.0, sw2=1.1, sb2=0.2, depth=4, **case)
    theory = ke.theory(closure="exact", **args)
    mc = [ke.simulate(width=n, samples=100000, seed=7 + n, **args) for n in widths]
    ds = ke.diagnose(mc, [theory])
    assert ds.attrs["identity_theory"] == "exact_discrete" and list(ds["identity_part"].values) == [
        "transport", "mean", "contraction"]
    assert float(np.max(np.abs(ds["identity_pull"].values))) < 4.5
    parts, se = ds["V4_1_part_MC"].values[:, 1:], ds["V4_1_part_MC_se"].values[:, 1:]  # layer 0: all zero
    predicted = ds["V4_1_part_theory"].values[1:]
    coef, coef_se, _, dof = fit_inverse_width(widths, parts, se, order=2)
    assert dof == 2
    pulls = (coef[0] - predicted) / coef_se[0]
    assert np.max(np.abs(pulls)) < 4.5, pulls
    transport = list(ds["identity_part"].values).index("transport")
    assert np.max(np.abs(coef[0][:, transport] / coef_se[0][:, transport])) > 6.0
    # the predicted parts make up the theory's V4_1
    V4_1 = ds["V4_1_theory"].sel(theory="exact_discrete").values
    np.testing.assert_allclose(ds["V4_1_part_theory"].values.sum(axis=1), V4_1, rtol=1e-10,
                               atol=1e-12 * np.max(np.abs(V4_1)))
