"""Every way a run can fail, and what the user sees: exit 2 for bad input (3 for overflow), one line
that names the file, field or entry, and no output file left behind.

Each test is one failure mode; the workflow's (config) failure modes are at the end.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from kernel_eft import io
from kernel_eft.cli import main

MC_ARGS = ["--activation", "relu", "--width", "16", "--depth", "8", "--time", "1", "--sw2", "1", "--sb2", "0",
           "--kin", "1,0.6;0.6,1", "--samples", "200", "--batches", "4", "--seed", "3", "--no-progress"]
THEORY_ARGS = ["--activation", "relu", "--time", "1", "--kin", "1,0.6;0.6,1", "--depth", "8"]


def run_cli(cli_env, *args, launcher=()):
    cmd = [*launcher, sys.executable, *(["-m", "mpi4py"] if launcher else []), "-m", "kernel_eft", *args]
    return subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=300)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower()]


def assert_one_line_error(stderr: str, *needles: str) -> None:
    """Exactly one error line, naming every needle; no traceback."""
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    for needle in needles:
        assert needle in lines[0], (needle, stderr)


def run_main(capsys, *argv) -> tuple[int, str]:
    """kernel-eft in this process: (exit code, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def files_in(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.fixture(scope="module")
def mc_file(tmp_path_factory):
    """A real Monte Carlo file (for merge and for corruption)."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"), OPENBLAS_NUM_THREADS="1")
    out = tmp_path_factory.mktemp("mc") / "mc.nc"
    res = run_cli(env, "simulate", *MC_ARGS, "--out", str(out))
    assert res.returncode == 0, res.stderr
    return out


def corrupt_copy(directory: Path) -> Path:
    """A netCDF file whose header is valid and whose data are not: it opens, reading fails with
    'NetCDF: HDF error' (zeros written over the middle of its compressed chunks)."""
    import netCDF4

    rng = np.random.default_rng(0)
    path = directory / "corrupt.nc"
    xr.Dataset({"G_mean": (("t", "a"), rng.standard_normal((1000, 100)))}).to_netcdf(
        path, engine="netcdf4", encoding={"G_mean": {"zlib": True, "chunksizes": (100, 100)}})
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = bytes(4096)
    path.write_bytes(data)
    with netCDF4.Dataset(path) as nc:  # the premise: the header reads, the data do not
        with pytest.raises(RuntimeError, match="HDF error"):
            nc["G_mean"][:]
    return path


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 64 KiB tmpfs (needs root and mount permission; skipped elsewhere, where the injected
    ENOSPC tests below still run)."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mountpoint)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    yield mountpoint
    subprocess.run(["umount", str(mountpoint)], check=True)


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody can write: chmod for ordinary users; for root (who ignores permissions) a
    read-only tmpfs, skipped where mounting is not permitted."""
    directory = tmp_path / "readonly"
    directory.mkdir()
    if os.geteuid() != 0:
        directory.chmod(0o555)
        yield directory
        directory.chmod(0o755)
        return
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(directory)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"root cannot make a read-only directory here: {res.stderr.decode().strip()}")
    yield directory
    subprocess.run(["umount", str(directory)], check=True)


# ---------------------------------------------------------------------------------------------
# Unreadable input
# ---------------------------------------------------------------------------------------------


def test_corrupt_netcdf_given_to_diagnose_names_the_file(tmp_path, capsys, mc_file):
    bad = corrupt_copy(tmp_path)
    out = tmp_path / "diag.nc"
    code, err = run_main(capsys, "diagnose", "--mc", str(mc_file), str(bad), "--theory", str(mc_file),
                         "--out", str(out))
    assert code == 2
    assert_one_line_error(err, "--mc", str(bad), "HDF error")
    assert not out.exists() and not list(tmp_path.glob("diag.nc*"))


def test_corrupt_netcdf_given_to_merge_names_the_file(tmp_path, capsys, mc_file):
    bad = corrupt_copy(tmp_path)
    out = tmp_path / "merged.nc"
    code, err = run_main(capsys, "merge", str(mc_file), str(bad), "--out", str(out))
    assert code == 2
    assert_one_line_error(err, str(bad))
    assert not out.exists()


def test_missing_input_file_is_named(tmp_path, capsys):
    code, err = run_main(capsys, "figures", "--diagnostics", str(tmp_path / "nope.nc"), "--outdir",
                         str(tmp_path / "figs"))
    assert code == 2
    assert_one_line_error(err, "no such file", "nope.nc")
    assert not (tmp_path / "figs").exists()


# ---------------------------------------------------------------------------------------------
# Outputs that cannot be written
# ---------------------------------------------------------------------------------------------


def test_disk_full_says_no_space_left_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    """ENOSPC injected into the netCDF writer halfway through the file."""

    def full_disk(ds, path, *args, **kwargs):
        Path(path).write_bytes(b"\x89HDF half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(xr.Dataset, "to_netcdf", full_disk)
    out = tmp_path / "theory.nc"
    code, err = run_main(capsys, "theory", *THEORY_ARGS, "--out", str(out))
    assert code == 2
    assert_one_line_error(err, "--out", str(out), "no space left on device")
    assert files_in(tmp_path) == []


def test_disk_full_reported_by_hdf5_as_hdf_error_still_says_no_space(tmp_path, capsys, monkeypatch):
    """HDF5 turns ENOSPC into 'NetCDF: HDF error': the free space at the failure tells."""

    class NoSpace:
        f_bavail, f_frsize = 0, 4096

    def hdf_error(ds, path, *args, **kwargs):
        Path(path).write_bytes(b"\x89HDF half a file")
        raise RuntimeError("NetCDF: HDF error")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", hdf_error)
    monkeypatch.setattr(io.os, "statvfs", lambda path: NoSpace())
    out = tmp_path / "theory.nc"
    code, err = run_main(capsys, "theory", *THEORY_ARGS, "--out", str(out))
    assert code == 2
    assert_one_line_error(err, str(out), "no space left on device")
    assert files_in(tmp_path) == []


def test_disk_full_on_a_real_tiny_filesystem(cli_env, tiny_filesystem):
    out = tiny_filesystem / "mc.nc"
    res = run_cli(cli_env, "simulate", *MC_ARGS, "--out", str(out))
    assert res.returncode == 2, res.stderr
    assert_one_line_error(res.stderr, str(out), "no space left on device")
    assert files_in(tiny_filesystem) == []


def test_disk_full_while_writing_figures_leaves_the_folder_untouched(tmp_path, capsys, monkeypatch):
    from tests.helpers import write_point

    mc, th = write_point(tmp_path, "p")
    diag = tmp_path / "diag.nc"
    assert main(["diagnose", "--mc", *mc, "--theory", *th, "--out", str(diag)]) == 0
    outdir = tmp_path / "figs"
    outdir.mkdir()
    (outdir / "earlier.txt").write_text("an earlier study's file")
    import matplotlib.figure

    calls = []

    def full_after_three(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        Path(path).write_bytes(b"png")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full_after_three)
    capsys.readouterr()
    code, err = run_main(capsys, "figures", "--diagnostics", str(diag), "--outdir", str(outdir))
    assert code == 2
    assert_one_line_error(err, "--outdir", "no space left on device")
    assert files_in(outdir) == ["earlier.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_read_only_output_directory_fails_before_any_compute(cli_env, read_only_dir):
    out = read_only_dir / "mc.nc"
    args = list(MC_ARGS)
    args[args.index("--samples") + 1] = "2000000"  # minutes of Monte Carlo, if it started
    started = time.monotonic()
    res = run_cli(cli_env, "simulate", *args, "--out", str(out))
    assert res.returncode == 2, res.stderr
    assert time.monotonic() - started < 30
    assert_one_line_error(res.stderr, "--out", str(read_only_dir))
    assert files_in(read_only_dir) == []


def test_read_only_output_directory_for_theory(capsys, read_only_dir):
    code, err = run_main(capsys, "theory", *THEORY_ARGS, "--out", str(read_only_dir / "th.nc"))
    assert code == 2
    assert_one_line_error(err, "--out", str(read_only_dir))


def test_figures_outdir_naming_an_existing_file(tmp_path, capsys):
    from tests.helpers import write_point

    mc, th = write_point(tmp_path, "p", continuum=False)
    diag = tmp_path / "diag.nc"
    assert main(["diagnose", "--mc", *mc, "--theory", *th, "--out", str(diag)]) == 0
    capsys.readouterr()
    blocker = tmp_path / "figs"
    blocker.write_text("not a folder")
    code, err = run_main(capsys, "figures", "--diagnostics", str(diag), "--outdir", str(blocker))
    assert code == 2
    assert_one_line_error(err, "--outdir", str(blocker), "not a directory")
    assert blocker.read_text() == "not a folder"


def test_output_path_that_is_a_directory(tmp_path, capsys):
    code, err = run_main(capsys, "theory", *THEORY_ARGS, "--out", str(tmp_path))
    assert code == 2
    assert_one_line_error(err, "--out", "is a directory")
    assert files_in(tmp_path) == []


def test_merge_refuses_to_overwrite_one_of_its_inputs(tmp_path, capsys, mc_file):
    copy = tmp_path / "a.nc"
    copy.write_bytes(mc_file.read_bytes())
    before = copy.read_bytes()
    code, err = run_main(capsys, "merge", str(copy), str(mc_file), "--out", str(copy))
    assert code == 2
    assert_one_line_error(err, "--out", str(copy), "also an input")
    assert copy.read_bytes() == before


def test_diagnose_refuses_to_overwrite_one_of_its_inputs(tmp_path, capsys, mc_file):
    copy = tmp_path / "th.nc"
    copy.write_bytes(mc_file.read_bytes())
    code, err = run_main(capsys, "diagnose", "--mc", str(mc_file), "--theory", str(copy), "--out", str(copy))
    assert code == 2
    assert_one_line_error(err, "--out", "also an input")
    assert copy.read_bytes() == mc_file.read_bytes()


# ---------------------------------------------------------------------------------------------
# Bad arguments
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag, value, message", [
    ("--record-every", "100", "must be <= the depth 8"),
    ("--batches", "400", "at least as many samples"),
    ("--kin", "1,nan;nan,1", "K_in[0,1] is nan"),
    ("--kin", "1,0.6;0.6,inf", "K_in[1,1] is inf"),
])
def test_bad_simulate_argument_names_the_field_or_entry(cli_env, tmp_path, flag, value, message):
    args = list(MC_ARGS)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    res = run_cli(cli_env, "simulate", *args, "--out", str(tmp_path / "mc.nc"))
    assert res.returncode == 2, res.stderr
    assert_one_line_error(res.stderr, flag, message)
    assert "usage:" not in res.stderr
    assert files_in(tmp_path) == []


@pytest.mark.mpi
def test_bad_argument_under_mpi_is_reported_once_without_mpi_abort(cli_env, tmp_path, mpiexec):
    args = list(MC_ARGS)
    args[args.index("--batches") + 1] = "400"
    res = run_cli(cli_env, "simulate", *args, "--out", str(tmp_path / "mc.nc"), launcher=(mpiexec, "-n", "2"))
    assert res.returncode == 2, res.stderr
    assert_one_line_error(res.stderr, "--batches")
    assert "Abort" not in res.stderr
    assert files_in(tmp_path) == []


def test_two_grid_points_with_one_tag_cannot_share_figures(tmp_path, capsys):
    from tests.helpers import write_point

    diags = []
    for name, sw2 in (("a", 1.0), ("b", 1.5)):
        mc, th = write_point(tmp_path, name, sw2=sw2, continuum=False)
        out = tmp_path / f"{name}_diag.nc"
        assert main(["diagnose", "--mc", *mc, "--theory", *th, "--tag", "same", "--out", str(out)]) == 0
        diags.append(str(out))
    capsys.readouterr()
    code, err = run_main(capsys, "figures", "--diagnostics", *diags, "--outdir", str(tmp_path / "figs"))
    assert code == 2
    assert_one_line_error(err, diags[0], diags[1], "'same'")
    assert not (tmp_path / "figs").exists()


# ---------------------------------------------------------------------------------------------
# Overflow: exit 3, naming the layer and t
# ---------------------------------------------------------------------------------------------


def test_simulate_overflow_in_the_estimates_names_layer_t_and_entry(cli_env, tmp_path):
    """sw2 = 1e20: the kernels stay finite, their jackknife errors overflow."""
    args = list(MC_ARGS)
    args[args.index("--sw2") + 1] = "1e20"
    res = run_cli(cli_env, "simulate", *args, "--out", str(tmp_path / "mc.nc"))
    assert res.returncode == 3, res.stderr
    assert_one_line_error(res.stderr, "non-finite", "at layer ", "(t = ", "entry [")
    assert "RuntimeWarning" not in res.stderr
    assert files_in(tmp_path) == []


def test_simulate_overflow_in_the_network_names_layer_and_t(cli_env, tmp_path):
    args = list(MC_ARGS)
    for flag, value in (("--sw2", "1e40"), ("--time", "200"), ("--activation", "linear")):
        args[args.index(flag) + 1] = value
    res = run_cli(cli_env, "simulate", *args, "--out", str(tmp_path / "mc.nc"))
    assert res.returncode == 3, res.stderr
    assert_one_line_error(res.stderr, "at layer ", "(t = ")
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("mode, where", [(["--depth", "4000"], "at layer "),
                                         (["--rtol", "1e-3", "--atol", "1e-3"], "t = ")])
def test_theory_overflow_names_where(capsys, tmp_path, mode, where):
    code, err = run_main(capsys, "theory", "--activation", "linear", "--time", "4", "--sw2", "400", "--kin",
                         "1,0.6;0.6,1", *mode, "--out", str(tmp_path / "th.nc"))
    assert code == 3
    assert_one_line_error(err, where)
    assert files_in(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Workflow configs: rejected at load, before any job, naming the field
# ---------------------------------------------------------------------------------------------


def _grid(**override):
    grid = dict(activation=["relu"], width=[16], depth=[8], time=[1], sw2=[1.0], sb2=[0.0], inputs=[{"rho": 0.5}])
    grid.update(override)
    return grid


@pytest.mark.parametrize("config, message", [
    ({"grid": _grid(), "monte_carlo": {"samples": 10, "batches": 32}},
     "monte_carlo.samples: 10 is less than monte_carlo.batches (32)"),
    ({"grid": _grid(depth=[8, 64]), "monte_carlo": {"record_every": 100}},
     "monte_carlo.record_every: 100 exceeds the depth 8"),
    ({"grid": _grid(inputs=[{"rho": 0.6}, {"kin": "1,0.6;0.6,1"}])},
     "grid.inputs[1]: the same input kernel as grid.inputs[0]"),
    ({"grid": _grid(), "study": "../elsewhere"}, "study"),
], ids=["samples<batches", "record_every>depth", "same-kin-twice", "study-name"])
def test_config_relations_are_checked_at_load(tmp_path, config, message):
    from tests.test_workflow import snakemake

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "-n", "--configfile", "bad.yaml", check=False, timeout=60)
    assert proc.returncode != 0
    assert "invalid config: " + message in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
