"""The martingale control variates (kernel_eft.simulate.controls): exactly zero mean, unbiased and calibrated
estimates, the same answer as without them, and the variance reduction where it is large."""

import dataclasses

import numpy as np
import pytest

from kernel_eft.core.pairs import to_pairs
from kernel_eft.core.statistics import BatchMoments
from kernel_eft.simulate import controls as controls_module
from kernel_eft.simulate import samplers
from kernel_eft.simulate.estimates import summarize
from kernel_eft.simulate.params import SimulationParams
from kernel_eft.simulate.samplers import simulate

KIN = np.array([[1.0, 0.6], [0.6, 1.0]])


def params(**kw):
    base = dict(activation="relu", width=8, depth=4, time=1.0, sw2=1.0, sb2=0.1, kin=KIN, samples=640, seed=1,
                batches=32, control_variates="martingale")
    base.update(kw)
    return SimulationParams(**base)


def control_pulls(p: SimulationParams) -> np.ndarray:
    """Mean of every control at every recorded layer over all seeds, in units of its standard error."""
    batches, _ = simulate(p)
    c = batches.pooled().controls
    var = np.einsum("rii->ri", c.m2_xx) / (c.count - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, c.mean_x / np.sqrt(var / c.count), 0.0)


@pytest.mark.parametrize("activation,sampler", [("relu", "block"), ("tanh", "block"), ("tanh", "weights")])
def test_controls_have_exactly_zero_mean(activation, sampler, monkeypatch):
    # 30 000 seeds: a control with a mean of 3% of its spread would show as a pull of 5.
    p = params(activation=activation, sampler=sampler, width=4, samples=30_000, batches=8)
    pulls = control_pulls(p)
    assert np.max(np.abs(pulls)) < 5, np.round(pulls, 1)
    # The test can fail: without the Wishart term Q^0 = S2(K_in) / n the second-moment control C = Y Y^T - Q
    # has mean E[Q^0] != 0 at every layer.
    setup = controls_module.control_setup(p)
    wrong = dataclasses.replace(setup, Q0=np.zeros_like(setup.Q0))
    monkeypatch.setattr(samplers, "control_setup", lambda _: wrong)
    assert np.max(np.abs(control_pulls(p))) > 10


def test_the_random_stream_and_the_plain_moments_do_not_change():
    plain, _ = simulate(params(control_variates="none"))
    controlled, _ = simulate(params())
    assert plain.controls is None and controlled.controls is not None
    for name in ("counts", "mean_G", "mean_S", "m2_GG", "m2_GS", "m2_SS"):
        assert np.array_equal(getattr(plain, name), getattr(controlled, name)), name


def repetitions(reps: int, **kw):
    """(plain, controlled) K1 and V4 at t = T with their jackknife errors over `reps` independent runs."""
    out = {key: [] for key in ("K1", "K1_se", "V4", "V4_se", "K1_plain", "K1_plain_se", "V4_plain", "V4_plain_se")}
    for seed in range(reps):
        p = params(seed=1000 + seed, **kw)
        batches, _ = simulate(p)
        s = summarize(p, batches)
        plain = summarize(dataclasses.replace(p, control_variates="none"),
                          dataclasses.replace(batches, controls=None))
        for suffix, src in (("", s), ("_plain", plain)):
            out["K1" + suffix].append(to_pairs(src["K1"][-1]))
            out["K1" + suffix + "_se"].append(to_pairs(src["K1_se"][-1]))
            out["V4" + suffix].append(src["V4"][-1].diagonal())
            out["V4" + suffix + "_se"].append(src["V4_se"][-1].diagonal())
    return {key: np.array(v) for key, v in out.items()}


@pytest.fixture(scope="module")
def reps():
    return repetitions(200)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["K1", "V4"])
def test_controlled_estimates_are_unbiased(reps, name):
    # The plain estimator is unbiased (K1 up to nothing, V4 exactly); the controlled one minus the plain one on
    # the same seeds must average to zero within its own spread over the 200 repetitions.
    d = reps[name] - reps[name + "_plain"]
    pull = d.mean(axis=0) / (d.std(axis=0, ddof=1) / np.sqrt(d.shape[0]))
    assert np.all(np.abs(pull) < 4.5), pull
    # The test can fail: it would flag a bias of one controlled standard error (its 4.5-sigma resolution is
    # smaller than that; it is limited by the plain estimator's larger spread).
    resolution = 4.5 * d.std(axis=0, ddof=1) / np.sqrt(d.shape[0])
    assert np.all(resolution < reps[name + "_se"].mean(axis=0)), (resolution, reps[name + "_se"].mean(0))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["K1", "V4"])
def test_controlled_errors_are_calibrated(reps, name):
    # pulls about the mean over repetitions: std 1 within the sampling error of a std over 200 values, widened by
    # the jackknife's own scatter with 32 batches (a t law with 31 dof: std 1.03)
    x, se = reps[name], reps[name + "_se"]
    pulls = (x - x.mean(axis=0)) / se
    spread = pulls.std(axis=0, ddof=1)
    tolerance = 4.5 / np.sqrt(2 * (x.shape[0] - 1)) + 0.05
    assert np.all(np.abs(spread - 1.0) < tolerance), spread
    # the errors are also the right size against the scatter of the estimates themselves
    ratio = x.std(axis=0, ddof=1) / np.sqrt(np.mean(se ** 2, axis=0))
    assert np.all(np.abs(ratio - 1.0) < tolerance), ratio


# relu at T = 2 (not 4): at n = 16 and T = 4 the fluctuations are O(1) (r >> 0.15), one network in thousands
# moves the plain V4 by several of its jackknife errors, and the plain error is not a fair yardstick there.
@pytest.mark.parametrize("activation,time", [("relu", 2.0), ("tanh", 1.0)])
def test_same_answer_with_and_without_controls_and_smaller_errors(activation, time):
    p = params(activation=activation, width=16, depth=16, time=time, sb2=0.0, samples=6400)
    batches, _ = simulate(p)
    s = summarize(p, batches)
    plain = summarize(dataclasses.replace(p, control_variates="none"), dataclasses.replace(batches, controls=None))
    for name in ("K1", "K1_source", "V4"):
        value, se, v0, se0 = s[name], s[name + "_se"], plain[name], plain[name + "_se"]
        # controlled = plain - beta x: their difference has about the variance se0^2 - se^2
        spread = np.sqrt(np.clip(se0 ** 2 - se ** 2, 0, None) + 0.05 * se0 ** 2)
        pull = (value - v0)[1:] / spread[1:]
        assert np.all(np.abs(pull) < 5), (name, np.max(np.abs(pull)))
    # t = 0: the controls are exact there (G^0 - K_in is a control), so K1(0) = 0 and V4(0) = S2(K_in)
    assert np.max(np.abs(s["K1"][0])) < 1e-9 and np.max(s["K1_se"][0]) < 1e-9
    np.testing.assert_allclose(s["V4"][0], controls_module.control_setup(p).Q0 * p.width, rtol=1e-9, atol=1e-12)
    # the variance reduction, where it is large (measured at n = 32, L = 32: K1 at t = T 5-8x for relu at
    # T = 1 and 4, 200-350x for tanh at T = 1; V4 5x and 50-90x)
    gain_k1 = np.median((plain["K1_se"][-1] / s["K1_se"][-1]) ** 2)
    gain_v4 = np.median((plain["V4_se"][-1] / s["V4_se"][-1]) ** 2)
    assert gain_k1 > (3 if activation == "relu" else 50), gain_k1
    assert gain_v4 > (2.5 if activation == "relu" else 15), gain_v4


def test_controls_merge_like_batches_and_refuse_mixing():
    p = params()
    a, _ = simulate(p)
    b, _ = simulate(dataclasses.replace(p, seed=2))
    pooled = a.concat(b)
    whole = summarize(dataclasses.replace(p, samples=2 * p.samples, batches=2 * p.batches), pooled)
    assert np.all(np.isfinite(whole["K1"])) and whole["K1_se"][-1].min() > 0
    plain, _ = simulate(params(control_variates="none"))
    with pytest.raises(ValueError, match="control-variate"):
        a.concat(plain)


def test_unknown_control_variates_name_the_field():
    from kernel_eft.validation import InputError

    with pytest.raises(InputError) as exc:
        params(control_variates="magic")
    assert exc.value.field == "control_variates"


CLI_ARGS = ["--activation", "tanh", "--width", "12", "--depth", "6", "--time", "2", "--sw2", "1", "--sb2", "0.1",
            "--kin", "1,0.6;0.6,1", "--samples", "240", "--batches", "6", "--record-every", "2",
            "--control-variates", "martingale", "--no-progress"]


def cli_simulate(cli_env, out, seed, launcher=()):
    import subprocess
    import sys

    cmd = [*launcher, sys.executable, *(["-m", "mpi4py"] if launcher else []), "-m", "kernel_eft", "simulate",
           *CLI_ARGS, "--seed", str(seed), "--out", str(out)]
    res = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr


@pytest.mark.mpi
def test_controlled_files_are_bitwise_identical_for_any_rank_count_and_merge_exactly(cli_env, tmp_path, mpiexec):
    import subprocess
    import sys

    import xarray as xr

    from kernel_eft.simulate.dataset import params_from_dataset

    one, two = tmp_path / "one.nc", tmp_path / "two.nc"
    cli_simulate(cli_env, one, 3)
    cli_simulate(cli_env, two, 3, launcher=(mpiexec, "-n", "2"))
    a, b = xr.open_dataset(one), xr.open_dataset(two)
    assert a.attrs["control_variates"] == "martingale" and "batch_cv_m2_xx" in a
    for name in a.data_vars:
        assert np.array_equal(a[name].values, b[name].values), name
    # merge: the pooled file equals the estimates of the concatenated batches (beta refitted on all seeds)
    other = tmp_path / "other.nc"
    cli_simulate(cli_env, other, 4)
    merged = tmp_path / "merged.nc"
    res = subprocess.run([sys.executable, "-m", "kernel_eft", "merge", str(one), str(other), "--out", str(merged)],
                         env=cli_env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    m = xr.open_dataset(merged)
    pooled = BatchMoments.from_dataset(a).concat(BatchMoments.from_dataset(xr.open_dataset(other)))
    p = params_from_dataset(a, samples=480, batches=12)
    direct = summarize(p, pooled)
    np.testing.assert_array_equal(to_pairs(m["K1"].values), to_pairs(direct["K1"]))
    # a controlled file and a plain one do not merge
    plain = tmp_path / "plain.nc"
    res = subprocess.run([sys.executable, "-m", "kernel_eft", "simulate", *CLI_ARGS[:-3], "--no-progress",
                          "--seed", "9", "--out", str(plain)], env=cli_env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([sys.executable, "-m", "kernel_eft", "merge", str(one), str(plain), "--out",
                          str(tmp_path / "bad.nc")], env=cli_env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "control_variates" in res.stderr
