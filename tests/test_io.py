"""kernel_eft.io: atomic writes, provenance attributes, checked reads (errors name the file)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr

from kernel_eft import io
from kernel_eft.io import provenance_attrs, read_dataset, remove_stale_temporaries, write_dataset_atomic
from kernel_eft.validation import InputError


def _dataset(value=1.0):
    return xr.Dataset({"x": ("t", np.array([value, 2.0 * value]))}, attrs={"title": "io test"})


def test_atomic_write_round_trips_bitwise_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.nc"  # the directory is created
    write_dataset_atomic(_dataset(0.1), path)
    back = read_dataset(path)
    assert back["x"].values.tobytes() == np.array([0.1, 0.2]).tobytes()
    assert back.attrs["title"] == "io test"
    write_dataset_atomic(_dataset(3.0), path)  # replaced in one rename
    assert read_dataset(path)["x"].values[0] == 3.0
    assert os.listdir(tmp_path / "sub") == ["a.nc"]


def test_a_dead_writers_temporary_is_removed_by_the_next_write(tmp_path):
    path = tmp_path / "a.nc"
    stale = tmp_path / f"a.nc.{io._HOST}-999999999.abcd.tmp"  # no such pid
    stale.write_bytes(b"partial")
    write_dataset_atomic(_dataset(), path)
    assert not stale.exists() and remove_stale_temporaries(str(path)) == []


def test_provenance_renders_parameters_as_netcdf_values():
    kin = np.array([[1.0, 0.5], [0.5, 1.0]])
    attrs = provenance_attrs("t", {"kin": kin, "flag": True, "depth": None, "sw2": 1.5})
    assert attrs["flag"] == 1 and attrs["depth"] == "none" and attrs["sw2"] == 1.5
    assert isinstance(attrs["kin"], str) and "0.5" in attrs["kin"]
    for key in ("Conventions", "source", "history", "git_commit", "kernel_eft_version"):
        assert key in attrs


@pytest.mark.parametrize("content", [None, b"", b"not a netCDF file at all", "truncated"])
def test_bad_files_are_input_errors_naming_the_field_and_file(tmp_path, content):
    path = tmp_path / "bad.nc"
    if content == "truncated":
        write_dataset_atomic(_dataset(), path)
        path.write_bytes(path.read_bytes()[:200])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as info:
        read_dataset(path, field="--mc")
    assert info.value.field == "--mc" and str(path) in str(info.value)
