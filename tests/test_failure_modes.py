"""Every way a run can fail, and what the user sees: exit 2 for bad input, a full disk or too little memory
(3 for overflow, 130/143 for SIGINT/SIGTERM), one line that names the file, field or entry, and no output
file or temporary file left behind.

Each test is one failure mode; the workflow's (config) failure modes come after the output ones, then
interrupts, memory and CPU time, full disks and other filesystems, inputs that disagree, and MPI.
"""

from __future__ import annotations

import errno
import signal
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
def mount_tmpfs(tmp_path):
    """mount_tmpfs(name, size) -> a fresh tmpfs of `size` (root only; skipped where mounting is refused)."""
    mounted = []

    def mount(name: str, size: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "--lazy", str(point)], check=True)  # lazy: xarray may still hold a failed write open


def fill(directory: Path, leave: int = 32 << 10) -> Path:
    """Fill the filesystem of `directory` up to `leave` bytes: enough that an empty probe file can still be
    created (as on an ext4 disk with no blocks left), far too little for any output."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(bytes(1 << 12))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    os.truncate(filler, max(filler.stat().st_size - leave, 0))
    assert os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize <= 2 * leave
    return filler


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


# ---------------------------------------------------------------------------------------------
# Interrupts: SIGINT (Ctrl-C) and SIGTERM end any command within seconds, exit 130 / 143, one line,
# nothing left behind
# ---------------------------------------------------------------------------------------------

LONG_WRITE_ARGS = ["--activation", "relu", "--width", "2", "--depth", "100", "--time", "1", "--kin", "1,0.6;0.6,1",
                   "--samples", "30000", "--batches", "4", "--keep-samples", "--no-progress"]  # ~200 MB, seconds


def start_cli(cli_env, *args):
    cmd = [sys.executable, "-m", "kernel_eft", *args]
    return subprocess.Popen(cmd, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout: float, proc) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the condition never held (exit {proc.returncode}): {err}")
        time.sleep(0.05)


def interrupt_and_wait(proc, signum, limit: float = 10.0) -> tuple[float, str]:
    """Send signum; (seconds until the process ended, stderr).  A process still alive after `limit` is killed
    and the test fails: it must not hang the suite."""
    sent = time.monotonic()
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"still running {limit:g} s after {signal.Signals(signum).name}: {err}")
    seconds = time.monotonic() - sent
    print(f"ended {seconds:.2f} s after {signal.Signals(signum).name}")
    return seconds, err


def assert_one_interrupt_line(err: str, signame: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for needle in (signame, "nothing written", *needles):
        assert needle in lines[0], (needle, err)


@pytest.mark.slow
def test_ctrl_c_during_a_large_netcdf_write_ends_within_seconds_and_leaves_nothing(cli_env, tmp_path):
    """The hang of issue 20: SIGINT inside to_netcdf left xarray's HDF5 lock held."""
    out = tmp_path / "mc.nc"
    proc = start_cli(cli_env, "simulate", *LONG_WRITE_ARGS, "--out", str(out))
    wait_for(lambda: any(p.name.endswith(".tmp") and p.stat().st_size > 1 << 20 for p in tmp_path.iterdir()),
             120, proc)  # the write is under way: its temporary file has grown past 1 MiB
    seconds, err = interrupt_and_wait(proc, signal.SIGINT)
    assert proc.returncode == 130, err
    assert seconds < 10
    assert_one_interrupt_line(err, "SIGINT", str(out))
    assert files_in(tmp_path) == []


def test_sigterm_during_the_compute_exits_143_with_one_line(cli_env, tmp_path):
    out = tmp_path / "mc.nc"
    args = list(MC_ARGS)
    args[args.index("--samples") + 1] = "2000000"  # minutes of Monte Carlo
    args.remove("--no-progress")
    proc = start_cli(cli_env, "simulate", *args, "--out", str(out))
    wait_for(lambda: out.parent.exists() and time.sleep(1.5) is None, 30, proc)  # imports done, computing
    seconds, err = interrupt_and_wait(proc, signal.SIGTERM)
    assert proc.returncode == 143, err
    assert seconds < 10
    assert_one_interrupt_line(err, "SIGTERM", "while computing")
    assert files_in(tmp_path) == []


def test_a_temporary_file_left_by_sigkill_is_removed_by_the_next_write(tmp_path, capsys):
    """SIGKILL cannot be handled: its PATH.HOST-PID.XXXX.tmp stays, and the next write to PATH removes it
    (a live writer's is left alone)."""
    out = tmp_path / "th.nc"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"th.nc.{io._HOST}-{dead.pid}.abcd1234.tmp"
    live = tmp_path / f"th.nc.{io._HOST}-{proc.pid}.efgh5678.tmp"
    try:
        stale.write_bytes(b"\x89HDF half")
        live.write_bytes(b"\x89HDF writing")
        assert main(["theory", *THEORY_ARGS, "--out", str(out)]) == 0
    finally:
        proc.kill()
    assert files_in(tmp_path) == sorted([live.name, out.name])


# ---------------------------------------------------------------------------------------------
# Memory and CPU time known before compute
# ---------------------------------------------------------------------------------------------


def limited(address_space: int):
    """preexec_fn: the child may map at most `address_space` bytes (ulimit -v)."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))


@pytest.mark.parametrize("sampler, flag", [("block", "--width"), ("weights", "--sampler")])
def test_a_network_too_wide_for_memory_is_refused_before_allocating(cli_env, tmp_path, sampler, flag):
    """At 470e067 --width 1000000000 grew to 24 GB (OOM killer); under a limit, a MemoryError traceback."""
    args = list(MC_ARGS)
    args[args.index("--width") + 1] = "1000000000"
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "kernel_eft", "simulate", *args, "--sampler", sampler,
                          "--out", str(tmp_path / "mc.nc")], env=cli_env, capture_output=True, text=True,
                         timeout=60, preexec_fn=limited(4 << 30))
    assert res.returncode == 2, res.stderr
    print(f"refused in {time.monotonic() - started:.2f} s")
    assert time.monotonic() - started < 10
    assert_one_line_error(res.stderr, flag, "memory", "GB", "the address-space limit (ulimit -v)", "nothing computed")
    assert files_in(tmp_path) == []


def test_kept_samples_too_large_for_memory_are_refused_naming_keep_samples(capsys, tmp_path):
    """--keep-samples of 10^8 seeds x 9 layers: 58 GB on rank 0, refused before the first batch."""
    args = list(MC_ARGS)
    args[args.index("--samples") + 1] = "100000000"
    code, err = run_main(capsys, "simulate", *args, "--keep-samples", "--out", str(tmp_path / "mc.nc"))
    assert code == 2
    assert_one_line_error(err, "--keep-samples", "memory")
    assert files_in(tmp_path) == []


def test_running_out_of_memory_anywhere_is_a_one_line_exit_2(capsys, tmp_path, monkeypatch):
    from kernel_eft.simulate import run as mc_run

    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 8.00 GiB for an array with shape (1, 2, 536870912)")

    monkeypatch.setattr(mc_run, "simulate_batch", no_memory)
    code, err = run_main(capsys, "simulate", *MC_ARGS, "--out", str(tmp_path / "mc.nc"))
    assert code == 2
    assert_one_line_error(err, "out of memory", "8.00 GiB", "nothing written")
    assert files_in(tmp_path) == []


def mc_args(*extra: str, **values) -> list[str]:
    """MC_ARGS with values replaced (width=..., samples=...) and flags added."""
    args = list(MC_ARGS)
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if flag in args:
            args[args.index(flag) + 1] = str(value)
        else:
            args += [flag, str(value)]
    return args + list(extra)


@pytest.mark.slow
@pytest.mark.parametrize("args", [mc_args("--keep-samples", width=2, depth=100, samples=30000),
                                  mc_args(width=2000000, depth=2, samples=4, batches=2),
                                  mc_args(width=384, depth=4, samples=64, sampler="weights")],
                         ids=["keep-samples", "wide", "weights"])
def test_the_stated_peak_memory_bounds_the_measured_one(cli_env, tmp_path, args):
    """The start line's estimate against the peak resident memory the kernel measured (VmHWM of the process's
    own address space; ru_maxrss would not do: Linux carries it over from the forking parent, here pytest, across
    exec): never below it, and not so far above that it would refuse runs that fit (within 2.5x)."""
    code = ("import re, sys\nfrom kernel_eft.cli import main\ncode = main(sys.argv[1:])\n"
            "kb = int(re.search(r'VmHWM:\\s*(\\d+) kB', open('/proc/self/status').read()).group(1))\n"
            "print('maxrss', kb * 1024)\nsys.exit(code)")
    res = subprocess.run([sys.executable, "-c", code, "simulate", *args, "--out", str(tmp_path / "mc.nc")],
                         env=cli_env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    measured = int(res.stdout.split()[-1])
    import re

    value, unit = re.search(r"estimated peak memory ([0-9.]+) (kB|MB|GB)", res.stderr).groups()
    estimate = float(value) * {"kB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
    print("peak memory measured", measured, "estimated", estimate)
    assert measured <= estimate <= 2.5 * measured, (measured, estimate)


def test_the_start_line_states_the_cpu_time_of_a_58_day_request(capsys, tmp_path, monkeypatch):
    """--width 100000 --depth 1000 --samples 1000000: the cost model's 58 days are stated, not started
    silently (the run is stopped here before its first batch)."""
    from kernel_eft.simulate import run as mc_run

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mc_run, "run_batches", stop)
    args = list(MC_ARGS)
    for flag, value in (("--width", "100000"), ("--depth", "1000"), ("--samples", "1000000")):
        args[args.index(flag) + 1] = value
    with pytest.raises(KeyboardInterrupt):
        main(["simulate", *args, "--out", str(tmp_path / "mc.nc")])
    err = capsys.readouterr().err
    assert "CPU time 57.9 days" in err, err  # 1e6 x 1000 x (50 ns x 1e5 + 1.4 us) + start-up


def test_a_long_batch_logs_progress_inside_the_batch(capsys, monkeypatch):
    """Progress lines come at least every PROGRESS_SECONDS even within one batch (here shortened to 0.2 s;
    one batch of this run takes seconds)."""
    import kernel_eft
    from kernel_eft import progress

    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 0.2)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    started = time.monotonic()
    kernel_eft.simulate(activation="relu", width=4096, depth=64, time=1.0, kin=[[1, 0.6], [0.6, 1]], samples=128,
                        batches=2, progress=True)
    seconds = time.monotonic() - started
    lines = [line for line in capsys.readouterr().err.splitlines() if "inside batch 0" in line]
    assert len(lines) >= min(3, int(seconds / 2 / 0.2) - 1), (seconds, lines)
    assert "layer" in lines[0] and "seeds done" in lines[0]


# ---------------------------------------------------------------------------------------------
# Full disks and other filesystems: known before compute; staged on the destination's filesystem
# ---------------------------------------------------------------------------------------------


def test_a_full_disk_is_exit_2_before_any_compute(cli_env, mount_tmpfs):
    """At 470e067 the empty probe file succeeded on a full disk and the run computed to the end first."""
    disk = mount_tmpfs("full", "1M")
    fill(disk)
    before = files_in(disk)
    started = time.monotonic()  # what starting the CLI takes here: the imports, under this machine's load
    subprocess.run([sys.executable, "-c", "import kernel_eft.api, mpi4py.MPI"], env=cli_env, check=True)
    start_up = time.monotonic() - started
    started = time.monotonic()
    res = run_cli(cli_env, "simulate", *mc_args(samples=2000000), "--out", str(disk / "mc.nc"))  # 36 s if run
    seconds = time.monotonic() - started
    assert res.returncode == 2, res.stderr
    print(f"full disk refused in {seconds:.2f} s (start-up alone {start_up:.2f} s)")
    assert seconds < max(3.0, 2 * start_up)  # 3 s, unless a loaded machine takes over 1.5 s to import
    assert_one_line_error(res.stderr, "--out", str(disk / "mc.nc"), "no space left on device", "nothing computed")
    assert files_in(disk) == before


@pytest.mark.parametrize("command", ["theory", "diagnose", "merge"])
def test_every_netcdf_writer_refuses_a_full_disk_naming_the_path(capsys, mount_tmpfs, mc_file, command):
    disk = mount_tmpfs("full", "1M")
    fill(disk)
    before = files_in(disk)
    out = disk / "out.nc"
    argv = {"theory": ["theory", *THEORY_ARGS], "diagnose": ["diagnose", "--mc", str(mc_file), "--theory",
                                                              str(mc_file)], "merge": ["merge", str(mc_file)]}[command]
    code, err = run_main(capsys, *argv, "--out", str(out))
    assert code == 2
    assert_one_line_error(err, "--out", str(out), "no space left on device")
    assert files_in(disk) == before


@pytest.fixture
def diagnosed(tmp_path):
    from tests.helpers import write_point

    mc, th = write_point(tmp_path, "p", continuum=False)
    diag = tmp_path / "diag.nc"
    assert main(["diagnose", "--mc", *mc, "--theory", *th, "--out", str(diag)]) == 0
    return diag


def test_figures_on_a_full_disk_exit_2_naming_the_path(capsys, mount_tmpfs, diagnosed):
    disk = mount_tmpfs("full", "1M")
    fill(disk)
    outdir = disk / "figs"
    capsys.readouterr()
    code, err = run_main(capsys, "figures", "--diagnostics", str(diagnosed), "--outdir", str(outdir))
    assert code == 2
    assert_one_line_error(err, "--outdir", str(outdir), "no space left on device")
    assert files_in(disk) == ["filler"]


def test_figures_whose_writers_hit_a_real_full_disk_exit_2_and_leave_nothing(capsys, mount_tmpfs, diagnosed,
                                                                            monkeypatch):
    """The free-space check switched off, so the PDF and PNG writers themselves meet ENOSPC on a 128 KiB
    tmpfs (at 470e067: a zlib.error traceback, exit 1)."""
    from kernel_eft.figures import study

    monkeypatch.setattr(study, "NEEDED_BYTES", 0)
    disk = mount_tmpfs("tiny", "128k")
    outdir = disk / "figs"
    capsys.readouterr()
    code, err = run_main(capsys, "figures", "--diagnostics", str(diagnosed), "--outdir", str(outdir))
    assert code == 2
    assert_one_line_error(err, "--outdir", str(outdir), "nothing written")
    assert files_in(disk) == []


def test_zlib_error_from_the_pdf_writer_is_one_line(capsys, tmp_path, diagnosed, monkeypatch):
    import zlib

    import matplotlib.figure

    def pdf_full(self, path, *args, **kwargs):
        raise zlib.error("Error -2 while flushing: inconsistent stream state")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", pdf_full)
    outdir = tmp_path / "figs"
    capsys.readouterr()
    code, err = run_main(capsys, "figures", "--diagnostics", str(diagnosed), "--outdir", str(outdir))
    assert code == 2
    assert_one_line_error(err, "--outdir", str(outdir), "inconsistent stream state", "nothing written")
    assert not outdir.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_summary_dir_on_another_filesystem_than_outdir(capsys, tmp_path, mount_tmpfs, diagnosed):
    """At 470e067: 'Invalid cross-device link' naming --outdir, an empty summary folder left behind."""
    other = mount_tmpfs("other", "16M")
    outdir, summary_dir = tmp_path / "figs", other / "study" / "summary"
    assert os.stat(other).st_dev != os.stat(tmp_path).st_dev
    capsys.readouterr()
    code, err = run_main(capsys, "figures", "--diagnostics", str(diagnosed), "--outdir", str(outdir),
                         "--summary-dir", str(summary_dir))
    assert code == 0, err
    assert files_in(other) == ["study", "study/summary", "study/summary/summary.csv", "study/summary/summary.html",
                               "study/summary/summary.nc"]
    assert any(name.endswith(".pdf") for name in files_in(outdir))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_failing_summary_dir_names_summary_dir_and_leaves_both_folders_untouched(capsys, tmp_path,
                                                                                   mount_tmpfs, diagnosed):
    other = mount_tmpfs("full", "1M")
    fill(other)
    outdir = tmp_path / "figs"
    code, err = run_main(capsys, "figures", "--diagnostics", str(diagnosed), "--outdir", str(outdir),
                         "--summary-dir", str(other / "summary"))
    assert code == 2
    assert_one_line_error(err, "--summary-dir", str(other / "summary"), "no space left on device")
    assert not outdir.exists() and files_in(other) == ["filler"]


# ---------------------------------------------------------------------------------------------
# Inputs that disagree: exit 2 naming the field and both files, numbers as plain numbers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mc_variants(tmp_path_factory):
    """Monte Carlo files of one grid point but for one field each (width 32 unless named)."""
    import kernel_eft

    directory = tmp_path_factory.mktemp("variants")
    base = dict(activation="relu", width=32, depth=8, time=1.0, kin=[[1, 0.6], [0.6, 1]], samples=40, batches=4)
    variants = {"ref": dict(width=16, seed=1), "record_every": dict(record_every=2, seed=2), "depth": dict(depth=4),
                "seed": dict(width=16, seed=1), "other_seed": dict(seed=5)}
    paths = {}
    for name, change in variants.items():
        paths[name] = str(directory / f"{name}.nc")
        kernel_eft.simulate(**{**base, **change}, out=paths[name])
    return paths


@pytest.mark.parametrize("field, plain_values", [("record_every", ("record_every=2", "record_every=1")),
                                                 ("depth", ("depth=4", "depth=8"))])
def test_diagnose_files_that_disagree_name_the_field_and_both_files(capsys, tmp_path, mc_variants, field,
                                                                    plain_values):
    """At 470e067 record_every 1 against 2 was 'operands could not be broadcast', exit 1."""
    theory = tmp_path / "th.nc"
    assert main(["theory", *THEORY_ARGS, "--out", str(theory)]) == 0
    capsys.readouterr()
    code, err = run_main(capsys, "diagnose", "--mc", mc_variants["ref"], mc_variants[field], "--theory", str(theory),
                         "--out", str(tmp_path / "diag.nc"))
    assert code == 2
    assert_one_line_error(err, field, mc_variants["ref"], mc_variants[field], *plain_values)
    assert "np." not in err
    assert not (tmp_path / "diag.nc").exists()


@pytest.mark.parametrize("field, needles", [("record_every", ("record_every=2", "record_every=1")),
                                            ("depth", ("depth=4", "depth=8")), ("seed", ("seed 1",))])
def test_merge_files_that_disagree_name_the_field_and_both_files(capsys, tmp_path, mc_variants, field, needles):
    first = mc_variants["ref"] if field == "seed" else mc_variants["other_seed"]
    code, err = run_main(capsys, "merge", first, mc_variants[field], "--out", str(tmp_path / "merged.nc"))
    assert code == 2
    assert_one_line_error(err, first, mc_variants[field], *needles)
    assert "np." not in err
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("text", ["name,value\n", ""], ids=["header-only", "empty"])
def test_a_foreign_or_empty_csv_given_to_summary_is_exit_2(capsys, tmp_path, text):
    """At 470e067 a header-only foreign CSV printed '(empty summary)' with exit 0."""
    path = tmp_path / "other.csv"
    path.write_text(text)
    code, err = run_main(capsys, "summary", str(path))
    assert code == 2
    assert_one_line_error(err, str(path), "not a kernel-eft summary table")


# ---------------------------------------------------------------------------------------------
# Under MPI
# ---------------------------------------------------------------------------------------------


@pytest.mark.mpi
def test_kept_samples_sent_batch_by_batch_are_bitwise_those_of_one_rank(cli_env, tmp_path, mpiexec):
    """--keep-samples on 3 ranks: the samples arrive as raw buffers, one batch at a time, in batch order."""
    files = []
    for ranks in (1, 3):
        out = tmp_path / f"mc{ranks}.nc"
        res = run_cli(cli_env, "simulate", *mc_args("--keep-samples", batches=5), "--out", str(out),
                      launcher=(mpiexec, "-n", str(ranks)))
        assert res.returncode == 0, res.stderr
        files.append(xr.load_dataset(out))
    for name in ("sample_G", "sample_S", "G_mean", "V4"):
        assert np.array_equal(files[0][name].values, files[1][name].values), name


@pytest.mark.mpi
def test_sigterm_under_mpiexec_ends_every_rank_with_one_line(cli_env, tmp_path, mpiexec):
    out = tmp_path / "mc.nc"
    cmd = [mpiexec, "-n", "2", sys.executable, "-m", "mpi4py", "-m", "kernel_eft", "simulate",
           *mc_args(samples=2000000), "--out", str(out)]
    proc = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)  # MPI is up, the ranks are computing
    seconds, err = interrupt_and_wait(proc, signal.SIGTERM, limit=20)
    assert proc.returncode != 0, err
    assert seconds < 10
    assert "Traceback" not in err, err
    assert [line for line in err.splitlines() if "interrupted" in line] == [
        "kernel-eft simulate: interrupted by SIGTERM while computing; nothing written"], err
    assert files_in(tmp_path) == []


def test_ctrl_c_while_figures_render_removes_the_staging_folder(cli_env, tmp_path, diagnosed):
    outdir = tmp_path / "figs"
    proc = start_cli(cli_env, "figures", "--diagnostics", str(diagnosed), "--outdir", str(outdir))
    staging = lambda: [p for p in tmp_path.iterdir() if p.name.startswith("figs.") and p.name.endswith(".tmp")]
    wait_for(lambda: any(any(folder.iterdir()) for folder in staging()), 120, proc)  # the first figure is written
    seconds, err = interrupt_and_wait(proc, signal.SIGINT)
    assert proc.returncode == 130, err
    assert seconds < 10
    assert_one_interrupt_line(err, "SIGINT", "while computing")
    assert not outdir.exists() and staging() == []


def test_an_exact_theory_too_deep_for_memory_is_refused_before_allocating(cli_env, tmp_path):
    """--closure exact --depth 100000: its N x N two-time kernels would take terabytes (np.zeros would map
    them lazily and grow until the OOM killer)."""
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "kernel_eft", "theory", "--activation", "relu", "--time", "1",
                          "--kin", "1,0.6;0.6,1", "--closure", "exact", "--depth", "100000",
                          "--out", str(tmp_path / "th.nc")], env=cli_env, capture_output=True, text=True,
                         timeout=60, preexec_fn=limited(4 << 30))
    assert res.returncode == 2, res.stderr
    assert time.monotonic() - started < 10
    assert_one_line_error(res.stderr, "--depth", "memory", "TB", "two-time kernels", "nothing computed")
    assert files_in(tmp_path) == []
