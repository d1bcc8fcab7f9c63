"""`kernel-eft theory --closure exact`: schema of both forms, accuracy attributes, bad input, no partial files."""

from __future__ import annotations

import numpy as np
import xarray as xr

from kernel_eft.cli import main
from kernel_eft.core.pairs import four_index_to_pairs

VARIABLES = ("K0", "V4", "K1", "V4_free", "V4_cross", "V4_feedback", "K1_source")


def _check_schema(ds):
    for name in VARIABLES:
        assert name in ds and ds[name].attrs["units"] == "1" and ds[name].attrs["long_name"]
    assert ds.V4.dims == ("t", "a", "b", "c", "d") and ds.K1.dims == ("t", "a", "b")
    parts = ds.V4_free + ds.V4_cross + ds.V4_feedback
    assert np.allclose(parts, ds.V4, rtol=1e-13, atol=0)
    assert ds.attrs["closure"] == "exact" and ds.attrs["Conventions"] == "CF-1.10"
    assert "kernel-eft" in ds.attrs["source"]
    K = ds.K0.isel(t=0).values  # V4(0) is the Wishart form of K_in
    v0 = four_index_to_pairs(ds.V4.isel(t=0).values)
    assert np.isclose(v0[0, 0], 2 * K[0, 0] ** 2)


def test_cli_writes_discrete_exact_theory_on_the_layer_grid(tmp_path):
    out = tmp_path / "exact_L8.nc"
    rc = main(["theory", "--closure", "exact", "--activation", "relu", "--kin", "1,0.5;0.5,1.2", "--time", "1",
               "--depth", "8", "--out", str(out)])
    assert rc == 0
    ds = xr.open_dataset(out)
    _check_schema(ds)
    assert ds.attrs["mode"] == "discrete" and int(ds.attrs["depth"]) == 8
    assert list(ds["layer"].values) == list(range(9))
    assert np.allclose(ds["t"].values, np.arange(9) / 8)
    assert np.all(ds.K1.isel(t=1).values == 0)  # one layer from a Gaussian input: K1 = 0 exactly


def test_cli_writes_continuous_exact_theory_with_accuracy_estimates(tmp_path):
    out = tmp_path / "exact.nc"
    rc = main(["theory", "--closure", "exact", "--activation", "relu", "--kin", "1,0.5;0.5,1.2", "--time", "1",
               "--points", "9", "--out", str(out)])
    assert rc == 0
    ds = xr.open_dataset(out)
    _check_schema(ds)
    assert ds.attrs["mode"] == "continuous" and ds.sizes["t"] == 9
    for key in ("time_step_error_V4", "time_step_error_K1", "gaussian_error_V4", "gaussian_error_K1"):
        assert 0 <= float(ds.attrs[key]) < 0.05, key
    assert float(ds.attrs["relative_accuracy"]) == max(float(ds.attrs[k]) for k in (
        "time_step_error_V4", "time_step_error_K1", "gaussian_error_V4", "gaussian_error_K1"))


def _run(tmp_path, extra):
    out = tmp_path / "exact.nc"
    try:
        rc = main(["theory", "--closure", "exact", "--time", "1", "--out", str(out)] + extra)
    except SystemExit as exc:
        rc = exc.code
    return rc


def test_cli_exact_rejects_collinear_inputs(tmp_path, capsys):
    rc = _run(tmp_path, ["--activation", "erf", "--kin", "1,1;1,1", "--points", "5"])
    assert rc == 2
    assert "--kin" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_cli_exact_continuum_needs_points_4k_plus_1(tmp_path, capsys):
    rc = _run(tmp_path, ["--activation", "relu", "--kin", "1", "--points", "10"])
    assert rc == 2
    assert "--points" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_cli_exact_overflow_exits_3_and_names_the_layer(tmp_path, capsys):
    rc = _run(tmp_path, ["--activation", "relu", "--kin", "1", "--sw2", "1e200", "--depth", "4"])
    assert rc == 3
    err = capsys.readouterr().err
    assert "layer" in err and "t = " in err
    assert not any(tmp_path.iterdir())
