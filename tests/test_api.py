"""The Python API (kernel_eft.api, re-exported by kernel_eft): Datasets bitwise equal to the CLI's files, input
errors naming the keyword, and a toy activation and a toy closure added through the public registries and run
end to end (simulate -> theory -> diagnose -> figures) without touching any other code."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

import kernel_eft as ke
from kernel_eft.core.meanfield import mean_kernel_discrete
from kernel_eft.core.pairs import four_index_to_pairs, wishart_v4
from kernel_eft.validation import InputError

KIN = [[1, 0.6], [0.6, 1]]
NETWORK = dict(activation="relu", time=1.0, sw2=1.0, sb2=0.0, kin=KIN)


def cli(cli_env, *args):
    res = subprocess.run([sys.executable, "-m", "kernel_eft", *args], env=cli_env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    return res


def assert_bitwise_equal(ds: xr.Dataset, path) -> None:
    """Every data variable and coordinate of the file equals the Dataset bit for bit."""
    with xr.open_dataset(path) as written:
        assert set(written.data_vars) == set(ds.data_vars)
        for name in [*ds.data_vars, *ds.coords]:
            a, b = ds[name].values, written[name].values
            assert a.dtype == b.dtype and a.shape == b.shape, name
            assert np.array_equal(a, b) or (a.dtype.kind == "f" and np.array_equal(a, b, equal_nan=True)), name


def test_simulate_returns_the_cli_file(tmp_path, cli_env):
    ds = ke.simulate(activation="relu", width=64, depth=8, time=1.0, sw2=1.0, sb2=0.0, kin=KIN, samples=2000, seed=1)
    assert isinstance(ds, xr.Dataset) and "V4" in ds and "V4_se" in ds
    assert ds["V4"].attrs["ancillary_variables"] == "V4_se"
    out = tmp_path / "mc.nc"
    cli(cli_env, "simulate", "--activation", "relu", "--width", "64", "--depth", "8", "--time", "1.0", "--sw2", "1.0",
        "--sb2", "0.0", "--kin", "1,0.6;0.6,1", "--samples", "2000", "--seed", "1", "--no-progress", "--out", str(out))
    assert_bitwise_equal(ds, out)


@pytest.mark.parametrize("closure, depth", [("exact", 8), ("gonly", 8), ("gonly", None)])
def test_theory_returns_the_cli_file(tmp_path, cli_env, closure, depth):
    ds = ke.theory(**NETWORK, closure=closure, depth=depth)
    assert {"K0", "V4", "K1", "K1_source"} <= set(ds.data_vars) and ds.attrs["closure"] == closure
    out = tmp_path / "th.nc"
    cli(cli_env, "theory", "--activation", "relu", "--time", "1.0", "--sw2", "1.0", "--sb2", "0.0", "--kin",
        "1,0.6;0.6,1", "--closure", closure, *(["--depth", str(depth)] if depth else []), "--out", str(out))
    assert_bitwise_equal(ds, out)


def test_a_closure_declares_its_depth_forms(monkeypatch):
    from kernel_eft.theory.registry import get_closure

    monkeypatch.setattr(get_closure("gonly"), "depths", ("discrete",))
    with pytest.raises(InputError) as err:
        ke.theory(**NETWORK, closure="gonly")
    assert err.value.field == "depth" and "only discrete" in err.value.message
    assert ke.theory(**NETWORK, closure="gonly", depth=2).attrs["mode"] == "discrete"


def test_api_writes_what_it_returns(tmp_path):
    out = tmp_path / "th.nc"
    ds = ke.theory(**NETWORK, closure="gonly", depth=4, out=out)
    assert_bitwise_equal(ds, out)


@pytest.mark.parametrize("call, field", [
    (lambda: ke.simulate(activation="relu", width=0, depth=2, time=1.0, kin=KIN, samples=10), "width"),
    (lambda: ke.simulate(activation="nope", width=4, depth=2, time=1.0, kin=KIN, samples=10), "activation"),
    (lambda: ke.theory(**NETWORK, closure="nope"), "closure"),
    (lambda: ke.theory(**{**NETWORK, "kin": [[1, 2], [2, 1]]}), "kin"),
    (lambda: ke.theory(**NETWORK, closure="exact", points=10), "points"),
    (lambda: ke.theory(**NETWORK, closure="exact", rtol=1e-3), "rtol"),
    (lambda: ke.theory(**NETWORK, depth=4, points=9), "points"),
])
def test_bad_input_names_the_keyword(call, field):
    with pytest.raises(InputError) as err:
        call()
    assert err.value.field == field


# ---------------------------------------------------------------------------------------------
# A toy activation and a toy closure through the public registries
# ---------------------------------------------------------------------------------------------


class FreeClosure(ke.Closure):
    """Toy closure: the mean field with the free (Wishart) covariance and no 1/n correction."""

    name = "free"
    label = "free field"
    long_label = "free-field toy closure"
    description = "toy: Wishart V4 of the mean field, K1 = 0"
    source_label = "no source"
    default_points = 5
    style = {"discrete": dict(color="tab:olive", ls="-"), "continuum": dict(color="tab:olive", ls="--")}
    # an option of its own: the CLI flag --scale, the config key theory.free.scale
    options = (ke.Option("scale", float, 1.0, "factor of the Wishart V4", positive=True),)

    def solve(self, activation, kin, *, sw2, sb2, time, depth=None, points=None, progress=None, scale=1.0):
        steps = depth if depth is not None else 64 * ((points or self.default_points) - 1)
        K0 = mean_kernel_discrete(activation, kin, sw2, sb2, time, steps)
        if depth is None:  # a fine layer grid sampled at the output times stands for the continuum
            K0 = K0[:: steps // ((points or self.default_points) - 1)]
        layers = np.arange(depth + 1) if depth is not None else None
        V4 = scale * np.stack([wishart_v4(K) for K in K0])
        zeros = np.zeros_like(K0)
        return self.dataset({"K0": K0, "V4": V4, "K1": zeros, "K1_source": zeros},
                            np.linspace(0.0, time, K0.shape[0]), layers, activation, kin, sw2, sb2, time, {},
                            f"free-field toy ({activation})")


@pytest.fixture
def toys():
    def phi(x):
        return np.tanh(x) + 0.1 * x

    def dphi(x):
        return 1.1 - np.tanh(x) ** 2

    def d2phi(x):
        t = np.tanh(x)
        return -2.0 * t * (1.0 - t * t)

    act = ke.register_activation(ke.custom_activation("toytanh", phi, dphi, d2phi))
    closure = ke.register_closure(FreeClosure())
    from kernel_eft.core.activations import ACTIVATIONS
    from kernel_eft.theory.registry import CLOSURES

    yield act, closure
    ACTIVATIONS.pop("toytanh")
    CLOSURES.pop("free")


def test_toy_activation_and_closure_run_end_to_end(toys, tmp_path):
    assert "toytanh" in ke.activation_names() and "free" in ke.closure_names()
    network = dict(activation="toytanh", time=0.5, sw2=1.0, sb2=0.1, kin=KIN)
    mc = [ke.simulate(**network, width=n, depth=4, samples=400, batches=8, seed=n) for n in (16, 32)]
    theories = [ke.theory(**network, closure="free", depth=4), ke.theory(**network, closure="free"),
                ke.theory(**network, closure="gonly", depth=4),
                ke.theory(**network, closure="exact", depth=4, next_order_seconds=0)]  # V4_1: not this test's subject
    d = ke.diagnose(mc, theories)
    assert list(d["theory"].values) == ["gonly_discrete", "exact_discrete", "free_discrete", "free_continuum"]
    # the toy's V4 is the Wishart form of the discrete K0: the diagnostics carry it unchanged
    np.testing.assert_allclose(d["V4_theory"].sel(theory="free_discrete").values,
                               four_index_to_pairs(np.stack([wishart_v4(K) for K in mc[0]["K0_discrete"].values])),
                               rtol=1e-13)
    # the MC mean kernel is the toy's discrete K0 (F by quadrature) plus the exact theory's K1/n (tabulated
    # moments of the toy): within 5 standard errors at every layer, both widths
    prediction = d["K0_discrete"] + d["K1_theory"].sel(theory="exact_discrete") / d["width"]
    z = np.abs(d["G_mean"] - prediction) / d["G_mean_se"]
    assert float(z.isel(t=slice(1, None)).max()) < 5.0
    paths = ke.figures([d], tmp_path / "figures")
    assert any(path.endswith("fig2_kernel_covariance.png") for path in paths)
    assert any(path.endswith("summary.csv") for path in paths)
    caption = next(p for p in paths if p.endswith("fig4_k1_source.caption.txt"))
    assert "free field: no source" in open(caption).read()


def test_a_toy_closure_option_reaches_the_cli_and_the_study_config(toys, tmp_path, capsys):
    """The declaration (FreeClosure.options) is all it takes: --scale in the CLI, theory.free.scale in a study,
    errors naming the flag or the config key."""
    from kernel_eft.cli import main
    from kernel_eft.study.config import ConfigError
    from kernel_eft.study.grid import Study

    args = ["theory", "--activation", "relu", "--time", "1", "--kin", "1,0.6;0.6,1", "--depth", "4"]
    out = tmp_path / "scaled.nc"
    assert main([*args, "--closure", "free", "--scale", "2", "--out", str(out)]) == 0
    with xr.open_dataset(out) as ds:  # V4 = scale x the Wishart form of its own K0
        np.testing.assert_allclose(ds["V4"].values, 2.0 * np.stack([wishart_v4(K) for K in ds["K0"].values]),
                                   rtol=1e-14)
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--closure", "gonly", "--scale", "2", "--out", str(tmp_path / "no.nc")])
    assert exit_info.value.code == 2 and "--scale: not an option of the gonly closure" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--closure", "free", "--scale", "-1", "--out", str(tmp_path / "no.nc")])
    assert "--scale" in capsys.readouterr().err and not (tmp_path / "no.nc").exists()
    grid = dict(activation=["relu"], width=[16], depth=[4], time=[1], sw2=[1.0], sb2=[0.0], inputs=[{"rho": 0.6}])
    study = Study.from_config({"grid": grid, "theory": {"closures": ["free"], "free": {"scale": 2}}})
    assert study.closure_flags(study.closures[0]) == " --scale 2.0"
    with pytest.raises(ConfigError) as config_info:
        Study.from_config({"grid": grid, "theory": {"closures": ["free"], "free": {"scael": 2}}})
    assert config_info.value.field == "theory.free.scael"


def test_merged_runs_diagnose_and_plot(tmp_path):
    """A width pooled from two seeds (merge) is one Monte Carlo file of the point: its seeds are listed together."""
    network = dict(activation="relu", width=16, depth=4, time=1.0, kin=KIN, samples=80, batches=4)
    merged = ke.merge([ke.simulate(**network, seed=1), ke.simulate(**network, seed=2)])
    assert merged.attrs["seed"] == "1,2" and int(merged["batch_count"].sum()) == 160
    other = ke.simulate(**{**network, "width": 32}, seed=3)
    d = ke.diagnose([merged, other], [ke.theory(**NETWORK, depth=4)])
    assert d.attrs["seeds"] == "1+2,3"
    from kernel_eft.figures.summary import collate, summary_table

    assert list(summary_table(collate([d]))["seed"]) == ["1+2", "3"]
