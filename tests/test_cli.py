"""The simulate command: files, MPI determinism, bad input, overflow."""

import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

ARGS = ["--activation", "relu", "--width", "24", "--depth", "8", "--time", "2", "--sw2", "1", "--sb2", "0.1",
        "--kin", "1,0.6;0.6,1", "--samples", "300", "--seed", "7", "--batches", "6", "--record-every", "2",
        "--no-progress"]


def simulate(cli_env, out, *extra, launcher=()):
    cmd = [*launcher, sys.executable, *(["-m", "mpi4py"] if launcher else []), "-m", "kernel_eft", "simulate",
           *ARGS, *extra, "--out", str(out)]
    return subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=300)


def test_file_schema_and_provenance(cli_env, tmp_path):
    out = tmp_path / "mc.nc"
    res = simulate(cli_env, out, "--keep-samples")
    assert res.returncode == 0, res.stderr
    ds = xr.open_dataset(out)
    assert ds.attrs["Conventions"].startswith("CF-1.")
    for key in ("title", "source", "history", "references", "activation", "width", "depth", "time", "sw2", "sb2",
                "kin", "samples", "seed", "seed_entropy", "mpi_ranks", "mpi_library", "sampler", "batches"):
        assert key in ds.attrs, key
    assert ds.attrs["mpi_ranks"] == 1 and ds.attrs["width"] == 24
    for name in ("G_mean", "S_mean", "V4", "K1", "cov_GS", "cov_SS", "K1_source"):
        assert name + "_se" in ds, name
        assert ds[name].attrs["long_name"] and "units" in ds[name].attrs
    assert ds["V4"].dims == ("t", "a", "b", "c", "d")
    assert ds["layer"].values.tolist() == [0, 2, 4, 6, 8]
    assert float(ds.sel(t=1.0)["layer"]) == 4  # layer rides along t
    assert ds["sample_G"].shape == (300, 5, 2, 2)
    assert ds["batch_m2_GG"].encoding.get("zlib") is True
    # V4 is symmetric under (ab) <-> (cd) and within each pair.
    v4 = ds["V4"].values
    np.testing.assert_allclose(v4, v4.transpose(0, 3, 4, 1, 2))
    np.testing.assert_allclose(v4, v4.transpose(0, 2, 1, 3, 4))


@pytest.mark.mpi
def test_one_two_and_three_ranks_give_bitwise_identical_files(cli_env, tmp_path, mpiexec):
    outs = []
    for ranks in (1, 2, 3):
        out = tmp_path / f"mc{ranks}.nc"
        res = simulate(cli_env, out, "--expect-ranks", str(ranks), launcher=(mpiexec, "-n", str(ranks)))
        assert res.returncode == 0, res.stderr
        outs.append(xr.open_dataset(out))
    assert [ds.attrs["mpi_ranks"] for ds in outs] == [1, 2, 3]
    for ds in outs[1:]:
        for name in outs[0].data_vars:
            assert np.array_equal(outs[0][name].values, ds[name].values), name


@pytest.mark.mpi
def test_wrong_rank_count_is_refused(cli_env, tmp_path, mpiexec):
    out = tmp_path / "mc.nc"
    res = simulate(cli_env, out, "--expect-ranks", "3", launcher=(mpiexec, "-n", "2"))
    assert res.returncode != 0
    assert "--expect-ranks" in res.stderr and "2 ranks" in res.stderr
    assert not out.exists()


@pytest.mark.mpi
def test_a_failing_rank_aborts_the_job_instead_of_hanging(cli_env, tmp_path, mpiexec):
    script = tmp_path / "fail.py"
    script.write_text(
        "from kernel_eft.simulate import parallel\n"
        "comm = parallel.get_comm()\n"
        "def work(b):\n"
        "    if b == 1:\n"
        "        raise RuntimeError('injected failure in batch 1')\n"
        "    return b\n"
        "parallel.run_batches(comm, 4, work)\n"
        "comm.Barrier()\n"
    )
    start = time.monotonic()
    res = subprocess.run([mpiexec, "-n", "2", sys.executable, str(script)], env=cli_env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode != 0
    assert "injected failure" in res.stderr
    assert time.monotonic() - start < 60


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--activation", "softplus", "unknown activation"),
        ("--width", "0", "must be >= 1"),
        ("--depth", "0", "must be >= 1"),
        ("--time", "0", "must be > 0"),
        ("--time", "-1", "must be > 0"),
        ("--samples", "1", "must be >= 2"),
        ("--kin", "1,0.6;0.5,1", "not symmetric"),
        ("--kin", "1,2;2,1", "not positive semi-definite"),
        ("--kin", "1,0.6;0.6", "not a square matrix"),
        ("--kin", "1,a;a,1", "could not parse"),
        ("--sw2", "nan", "finite"),
        ("--batches", "400", "at least as many samples"),
    ],
)
def test_bad_input_exits_2_naming_the_argument_and_writes_nothing(cli_env, tmp_path, flag, value, message):
    out = tmp_path / "mc.nc"
    args = list(ARGS)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    res = subprocess.run([sys.executable, "-m", "kernel_eft", "simulate", *args, "--out", str(out)], env=cli_env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert flag in res.stderr and message in res.stderr, res.stderr
    assert list(tmp_path.iterdir()) == []


def test_overflow_is_reported_with_its_location_and_writes_nothing(cli_env, tmp_path):
    out = tmp_path / "mc.nc"
    args = list(ARGS)
    args[args.index("--sw2") + 1] = "1e40"
    args[args.index("--time") + 1] = "200"
    args[args.index("--activation") + 1] = "linear"
    res = subprocess.run([sys.executable, "-m", "kernel_eft", "simulate", *args, "--out", str(out)], env=cli_env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 3, res.stderr
    assert "layer" in res.stderr and "overflow" in res.stderr, res.stderr
    assert list(tmp_path.iterdir()) == []


def test_help_explains_the_model(cli_env):
    res = subprocess.run([sys.executable, "-m", "kernel_eft", "simulate", "--help"], env=cli_env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    assert "block" in res.stdout and "mpiexec" in res.stdout and "--kin" in res.stdout


def test_merging_files_pools_their_seeds_exactly(cli_env, tmp_path):
    outs = []
    for seed in ("3", "4"):
        out = tmp_path / f"mc{seed}.nc"
        args = list(ARGS)
        args[args.index("--seed") + 1] = seed
        res = subprocess.run([sys.executable, "-m", "kernel_eft", "simulate", *args, "--keep-samples", "--out",
                              str(out)], env=cli_env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        outs.append(out)
    merged = tmp_path / "merged.nc"
    res = subprocess.run([sys.executable, "-m", "kernel_eft", "merge", *map(str, outs), "--out", str(merged)],
                         env=cli_env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    m = xr.open_dataset(merged)
    parts = [xr.open_dataset(o) for o in outs]
    assert m.attrs["samples"] == 600 and m.sizes["batch"] == 12 and m.attrs["seed"] == "3,4"
    # The pooled covariance of all 600 per-seed kernels, computed directly.
    G = np.concatenate([p["sample_G"].values for p in parts])
    direct_v4 = 24 * np.cov(G[:, -1].reshape(600, 4).T).reshape(2, 2, 2, 2)
    np.testing.assert_allclose(m["V4"].values[-1], direct_v4, rtol=1e-10)
    np.testing.assert_allclose(m["G_mean"].values, G.mean(axis=0), rtol=1e-12)
    # Refuses to count a seed twice.
    res = subprocess.run([sys.executable, "-m", "kernel_eft", "merge", str(outs[0]), str(outs[0]), "--out",
                          str(tmp_path / "bad.nc")], env=cli_env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "repeat" in res.stderr and not (tmp_path / "bad.nc").exists()


def test_progress_lines_every_tenth_and_every_30_seconds(monkeypatch, capsys):
    """Logs (no terminal) get a line at every 10% and at least every PROGRESS_SECONDS in between."""
    from kernel_eft import progress as progress_module

    clock = iter([0.0, 0.0] + [5.0 * k for k in range(1, 100)])  # start, then one reading per batch
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    progress = progress_module.Progress("job", enabled=True)
    for done in range(1, 8):  # 7 of 100 batches, 5 s apart: no new tenth, but 30 s pass
        progress(done, 100)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" batches")[0] for line in lines] == ["job: 1/100", "job: 7/100"], lines


def test_progress_stages_count_afresh_and_notes_say_what_was_decided(capsys):
    """The exact closure's V4_1 lattice is a second stage of the theory job: its lines carry the stage's name and
    unit and start from zero; a note (a refinement, and why) is one line under the job's own label."""
    from kernel_eft import progress as progress_module

    progress = progress_module.Progress("job", enabled=True, unit="times")
    progress(9, 9)
    progress.stage("V4_1 lattice", "layers")
    progress(1, 8)
    progress.note("V4_1: refining")
    progress.stage("V4_1 lattice refined", "layers")
    progress(8, 8)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "job: 9/9 times", "job, V4_1 lattice: 1/8 layers", "job: V4_1: refining",
        "job, V4_1 lattice refined: 8/8 layers"], lines


def test_heartbeat_logs_while_a_long_step_runs(capsys):
    from kernel_eft.progress import heartbeat, logger

    with heartbeat(logger("theory"), "exact closure", interval=0.05):
        time.sleep(0.3)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 2 and all("exact closure: still running" in line for line in lines), lines
