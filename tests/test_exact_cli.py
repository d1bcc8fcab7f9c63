"""`kernel-eft theory --closure exact`: schema, bad input, no partial files."""

from __future__ import annotations

import numpy as np
import xarray as xr

from kernel_eft.cli import main
from kernel_eft.pairs import four_index_to_pairs


def test_cli_writes_exact_variables(tmp_path):
    out = tmp_path / "exact.nc"
    rc = main(["theory", "--closure", "exact", "--activation", "relu", "--kin", "1,0.5;0.5,1.2", "--time", "1",
               "--points", "9", "--out", str(out)])
    assert rc == 0
    ds = xr.open_dataset(out)
    for name in ("K0", "V4", "K1", "V4_free", "V4_cross", "V4_feedback", "K1_source"):
        assert name in ds and ds[name].attrs["units"] == "1" and ds[name].attrs["long_name"]
    assert ds.V4.dims == ("t", "a", "b", "c", "d") and ds.K1.dims == ("t", "a", "b")
    parts = ds.V4_free + ds.V4_cross + ds.V4_feedback
    assert np.allclose(parts, ds.V4, rtol=1e-13, atol=0)
    assert ds.attrs["closure"] == "exact" and ds.attrs["Conventions"] == "CF-1.10"
    assert "kernel-eft" in ds.attrs["source"]
    # V4(0) is the Wishart form of K_in
    K = ds.K0.isel(t=0).values
    v0 = four_index_to_pairs(ds.V4.isel(t=0).values)
    assert np.isclose(v0[0, 0], 2 * K[0, 0] ** 2)


def _expect_input_error(tmp_path, capsys, extra, field):
    """Exit code 2, a message naming the field, and nothing written."""
    out = tmp_path / "exact.nc"
    try:
        rc = main(["theory", "--closure", "exact", "--time", "1", "--out", str(out)] + extra)
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2
    assert field in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_cli_exact_rejects_depth(tmp_path, capsys):
    _expect_input_error(tmp_path, capsys, ["--activation", "relu", "--kin", "1", "--depth", "8"], "--depth")


def test_cli_exact_rejects_collinear_inputs(tmp_path, capsys):
    _expect_input_error(tmp_path, capsys, ["--activation", "erf", "--kin", "1,1;1,1", "--points", "5"], "--kin")
