"""G-only EFT: exact identities, the linear closed form, discrete -> continuum O(1/L), CLI and storage."""

import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from kernel_eft.core import expectations
from kernel_eft.core.meanfield import mean_kernel_discrete, source_s2, source_s4
from kernel_eft.core.pairs import four_index_to_pairs, from_pairs, pairs_to_four_index, wishart_v4
from kernel_eft.theory import gonly
from tests.helpers import s4_four

KIN2 = np.array([[1.0, 0.6], [0.6, 1.0]])
KIN3 = np.array([[1.0, 0.3, -0.2], [0.3, 1.5, 0.5], [-0.2, 0.5, 0.8]])


def w_form(X, Y):
    """w(X, Y)_abcd = X_ac Y_bd + X_ad Y_bc (four-index)."""
    return np.einsum("ac,bd->abcd", X, Y) + np.einsum("ad,bc->abcd", X, Y)


def linear_closed_form(kin, sw2, sb2, t):
    """Hand-derived solution of the G-only ODEs for phi(x) = x (F = K, J = sw2 I, H = 0).

    K0 = e^{s t} A + B with s = sw2, A = K_in + (sb2/s) U, B = -(sb2/s) U, U = 11^T.
    V4 = w(K0, K0) + X: d/dt w(K0, K0) is exactly the source S4(K0, W), so X' = 2 s V4 = 2 s (w(K0,K0) + X),
    X(0) = 0, giving X = 2 s t e^{2st} w(A,A) + 2 (e^{2st} - e^{st}) (w(A,B) + w(B,A)) + (e^{2st} - 1) w(B,B).
    K1' = s K1, K1(0) = 0: K1 = 0.
    """
    U = np.ones_like(kin)
    A_, B_ = kin + sb2 / sw2 * U, -sb2 / sw2 * U
    e1, e2 = np.exp(sw2 * t), np.exp(2 * sw2 * t)
    K0 = e1 * A_ + B_
    V4 = (w_form(K0, K0) + 2 * sw2 * t * e2 * w_form(A_, A_) + 2 * (e2 - e1) * (w_form(A_, B_) + w_form(B_, A_))
          + (e2 - 1) * w_form(B_, B_))
    return K0, V4, np.zeros_like(kin)


def test_linear_activation_matches_closed_form():
    sw2, sb2, T = 0.7, 0.3, 3.0
    sol = gonly.solve_gonly_continuous("linear", KIN3, sw2, sb2, T, points=7)
    for i, t in enumerate(sol.times):
        K0, V4, K1 = linear_closed_form(KIN3, sw2, sb2, t)
        np.testing.assert_allclose(from_pairs(sol.K0[i], 3), K0, rtol=1e-9)
        np.testing.assert_allclose(pairs_to_four_index(sol.V4[i], 3), V4, rtol=1e-9, atol=1e-9 * np.abs(V4).max())
        assert np.all(sol.K1[i] == 0.0)
        assert np.all(sol.tadpole[i] == 0.0)


def test_initial_conditions_wishart_and_zero_k1():
    for sol in (gonly.solve_gonly_continuous("tanh", KIN3, 1.0, 0.1, 1.0, points=3),
                gonly.solve_gonly_discrete("tanh", KIN3, 1.0, 0.1, 1.0, 4)):
        np.testing.assert_array_equal(from_pairs(sol.K0[0], 3), KIN3)
        np.testing.assert_allclose(pairs_to_four_index(sol.V4[0], 3), wishart_v4(KIN3), rtol=1e-15)
        assert np.all(sol.K1[0] == 0.0)


def test_relu_sb2_zero_diagonal_tadpole_is_exactly_zero():
    """F_aa = K_aa / 2 is linear, so row (aa) of H vanishes identically and so does K1_aa."""
    for sol in (gonly.solve_gonly_continuous("relu", KIN3, 1.0, 0.0, 4.0, points=11),
                gonly.solve_gonly_discrete("relu", KIN3, 1.0, 0.0, 4.0, 16)):
        diag = np.diagonal(from_pairs(sol.tadpole, 3), axis1=1, axis2=2)
        assert np.all(diag == 0.0)
        assert np.all(np.diagonal(from_pairs(sol.K1, 3), axis1=1, axis2=2) == 0.0)
        assert np.any(np.abs(sol.tadpole) > 1e-3)  # the off-diagonal tadpole is not zero


def test_sources_match_four_index_formulas():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 6))
    K = X @ X.T
    Y = rng.standard_normal((4, 6))
    W = Y @ Y.T
    S4 = s4_four(K, W)
    np.testing.assert_allclose(source_s4(K, W), four_index_to_pairs(S4), rtol=1e-14)
    np.testing.assert_allclose(source_s2(W), four_index_to_pairs(wishart_v4(W)), rtol=1e-14)
    np.testing.assert_allclose(source_s4(W, W), 2 * source_s2(W), rtol=1e-14)


def test_recorded_terms_are_the_derivatives_of_the_solution():
    """dV4/dt = transport + source and dK1/dt = J K1 + tadpole along the solution (central differences)."""
    sw2, sb2 = 1.2, 0.2
    t0, h = 1.5, 1e-3
    sol = gonly.solve_gonly_continuous("erf", KIN3, sw2, sb2, 2.0, times=[t0 - h, t0, t0 + h], rtol=1e-12, atol=1e-14)
    dV4 = (sol.V4[2] - sol.V4[0]) / (2 * h)
    np.testing.assert_allclose(dV4, sol.transport[1] + sol.source[1], rtol=1e-5, atol=1e-6)
    J = expectations.kernel_jacobian("erf", from_pairs(sol.K0[1]), sw2)
    np.testing.assert_allclose(sol.transport[1], J @ sol.V4[1] + sol.V4[1] @ J.T, rtol=1e-12)
    H = expectations.kernel_hessian("erf", from_pairs(sol.K0[1]), sw2)
    np.testing.assert_allclose(sol.tadpole[1], 0.5 * np.einsum("mij,ij->m", H, sol.V4[1]), rtol=1e-12)
    dK1 = (sol.K1[2] - sol.K1[0]) / (2 * h)
    np.testing.assert_allclose(dK1, J @ sol.K1[1] + sol.tadpole[1], rtol=1e-5, atol=1e-7)


def test_v4_is_fully_symmetric():
    sol = gonly.solve_gonly_continuous("tanh", KIN3, 1.0, 0.0, 1.0, points=3)
    V = sol.matrices()["V4"][-1]
    for perm in ("bacd", "abdc", "cdab"):
        np.testing.assert_allclose(np.einsum(f"abcd->{perm}", V), V, rtol=1e-13)


@pytest.mark.parametrize("name", ["relu", "tanh"])
def test_default_tolerances_give_eight_digits(name):
    default = gonly.solve_gonly_continuous(name, KIN2, 1.0, 0.1, 4.0, points=9)
    tight = gonly.solve_gonly_continuous(name, KIN2, 1.0, 0.1, 4.0, points=9, rtol=1e-13, atol=1e-15)
    for field in ("K0", "V4", "K1"):
        x, y = getattr(default, field), getattr(tight, field)
        assert np.max(np.abs(x - y)) <= 1e-8 * np.max(np.abs(y)), field


@pytest.mark.parametrize("name", ["relu", "tanh"])
def test_discrete_recursion_converges_at_rate_one_over_L(name):
    T, sw2, sb2 = 2.0, 1.0, 0.2
    cont = gonly.solve_gonly_continuous(name, KIN2, sw2, sb2, T, times=[T], rtol=1e-12, atol=1e-14)
    errors = {}
    for L in (32, 64, 128):
        disc = gonly.solve_gonly_discrete(name, KIN2, sw2, sb2, T, L)
        errors[L] = [np.max(np.abs(getattr(disc, f)[-1] - getattr(cont, f)[-1])) for f in ("K0", "V4", "K1")]
    for i, field in enumerate(("K0", "V4", "K1")):
        r1 = errors[32][i] / errors[64][i]
        r2 = errors[64][i] / errors[128][i]
        # O(1/L): halving dt halves the error; the ratio tends to 2 as the O(1/L^2) part dies out
        assert 1.8 < r1 < 2.25 and 1.9 < r2 < 2.1 and abs(r2 - 2) < abs(r1 - 2) + 1e-3, (field, r1, r2)


def test_discrete_mean_kernel_matches_mean_kernel_discrete():
    disc = gonly.solve_gonly_discrete("gelu", KIN3, 1.1, 0.2, 1.5, 12)
    ref = mean_kernel_discrete("gelu", KIN3, 1.1, 0.2, 1.5, 12)
    np.testing.assert_allclose(from_pairs(disc.K0, 3), ref, rtol=1e-14)
    np.testing.assert_array_equal(disc.layers, np.arange(13))


def test_discrete_step_decomposition():
    """(V4_{l+1} - V4_l)/dt = transport + source + discrete_correction, exactly."""
    L, T = 8, 2.0
    disc = gonly.solve_gonly_discrete("silu", KIN3, 1.0, 0.3, T, L)
    step = (disc.V4[1:] - disc.V4[:-1]) / (T / L)
    np.testing.assert_allclose(step, (disc.transport + disc.source + disc.discrete_correction)[:-1], rtol=1e-10,
                               atol=1e-12 * np.abs(step).max())


def test_speed_P8_relu_continuous():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 12))
    K = X @ X.T / 12
    started = time.perf_counter()
    sol = gonly.solve_gonly_continuous("relu", K, 1.0, 0.0, 4.0)
    elapsed = time.perf_counter() - started
    assert sol.V4.shape == (201, 36, 36)
    assert elapsed < 2.0, elapsed


def test_overflow_is_reported():
    with pytest.raises(FloatingPointError):
        gonly.solve_gonly_discrete("linear", KIN2, 400.0, 0.0, 4.0, 4000)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def run_cli(*args, cwd, env):
    return subprocess.run([sys.executable, "-m", "kernel_eft", "theory", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


BASE = ["--activation", "relu", "--time", "2", "--sw2", "1", "--sb2", "0", "--kin", "1,0.6;0.6,1"]


def test_cli_continuous_writes_schema(tmp_path, cli_env):
    import xarray as xr

    out = tmp_path / "theory.nc"
    res = run_cli(*BASE, "--closure", "gonly", "--points", "5", "--out", str(out), cwd=tmp_path, env=cli_env)
    assert res.returncode == 0, res.stderr
    with xr.open_dataset(out) as ds:
        assert ds.K0.dims == ("t", "a", "b") and ds.V4.dims == ("t", "a", "b", "c", "d")
        assert ds.sizes["t"] == 5 and float(ds.t[-1]) == 2.0
        for name in ("K1", "transport", "source", "tadpole"):
            assert name in ds
        for key in ("activation", "time", "sw2", "sb2", "kin", "closure", "solver", "rtol", "atol",
                    "kernel_eft_version", "git_commit", "Conventions"):
            assert key in ds.attrs, key
        assert ds.attrs["closure"] == "gonly" and ds.attrs["kin"] == "1.0,0.6;0.6,1.0"
        sol = gonly.solve_gonly_continuous("relu", KIN2, 1.0, 0.0, 2.0, points=5)
        np.testing.assert_allclose(ds.V4.values, pairs_to_four_index(sol.V4, 2), rtol=1e-12)
    assert [p.name for p in tmp_path.iterdir()] == ["theory.nc"]


def test_cli_discrete_has_layer_coordinate(tmp_path, cli_env):
    import xarray as xr

    out = tmp_path / "disc.nc"
    res = run_cli(*BASE, "--depth", "8", "--out", str(out), cwd=tmp_path, env=cli_env)
    assert res.returncode == 0, res.stderr
    with xr.open_dataset(out) as ds:
        np.testing.assert_array_equal(ds.layer.values, np.arange(9))
        assert ds.attrs["depth"] == 8 and "discrete_correction" in ds
        assert ds.swap_dims(t="layer").sizes["layer"] == 9


@pytest.mark.parametrize("bad, field", [
    (["--kin", "1,0.6;0.5,1"], "--kin"),
    (["--kin", "1,1;1,1"], "--kin"),  # relu, collinear inputs: the tadpole diverges
    (["--time", "-1"], "--time"),
    (["--points", "1"], "--points"),
    (["--depth", "8", "--points", "5"], "--points"),
    (["--rtol", "0"], "--rtol"),
    (["--closure", "bogus"], "--closure"),
    (["--activation", "nope"], "--activation"),
])
def test_cli_bad_input_exits_2_without_file(tmp_path, cli_env, bad, field):
    args = list(BASE)
    for i in range(0, len(bad), 2):
        if bad[i] in args:
            args[args.index(bad[i]) + 1] = bad[i + 1]
        else:
            args += bad[i:i + 2]
    res = run_cli(*args, "--out", str(tmp_path / "x.nc"), cwd=tmp_path, env=cli_env)
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert field in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_exact_closure_dispatch(tmp_path, cli_env):
    """--closure exact runs the exact closure (kernel_eft.theory.exact) and writes its schema."""
    out = tmp_path / "x.nc"
    res = run_cli(*BASE, "--closure", "exact", "--points", "9", "--out", str(out), cwd=tmp_path, env=cli_env)
    assert res.returncode == 0, res.stderr
    with xr.open_dataset(out) as ds:
        assert ds.attrs["closure"] == "exact" and ds.sizes["t"] == 9 and "V4_feedback" in ds


@pytest.mark.parametrize("mode", [["--rtol", "1e-3", "--atol", "1e-3"], ["--depth", "4000"]])
def test_cli_overflow_exits_3_without_file(tmp_path, cli_env, mode):
    args = ["--activation", "linear", "--time", "4", "--sw2", "400", "--kin", "1,0.6;0.6,1", *mode]
    res = run_cli(*args, "--out", str(tmp_path / "x.nc"), cwd=tmp_path, env=cli_env)
    assert res.returncode == 3 and ("non-finite" in res.stderr or "overflow" in res.stderr), res.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_help_explains(cli_env):
    res = run_cli("--help", cwd=None, env=cli_env)
    assert res.returncode == 0
    for flag in ("--closure", "--points", "--depth", "--rtol", "--atol", "--kin"):
        assert flag in res.stdout
