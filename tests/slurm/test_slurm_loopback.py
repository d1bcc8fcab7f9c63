"""The workflow on a real SLURM cluster: single node on loopback, brought up by up.sh.

Runs config/test.yaml through `snakemake --executor slurm` (the SLURM workflow profile),
including Monte Carlo jobs on 2 MPI ranks launched by `srun --mpi=pmi2`, then tears the
cluster down by PID. Needs root and apt-get (it installs Debian's slurm-wlm and munge);
skips with the reason elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.mpi]


def _skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "the loopback SLURM test runs on Linux only"
    if os.geteuid() != 0:
        return "the loopback SLURM test needs root (it installs slurm-wlm/munge and runs the daemons)"
    if shutil.which("apt-get") is None:
        return "the loopback SLURM test needs apt-get to install slurm-wlm and munge"
    running = subprocess.run(["pidof", "slurmctld"], capture_output=True, text=True)
    if running.returncode == 0:
        return f"a SLURM controller is already running here (pid {running.stdout.strip()}); not touching it"
    return None


@pytest.fixture(scope="module")
def loopback_cluster(tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm-state")
    started = time.monotonic()
    up = subprocess.run([str(HERE / "up.sh"), str(state)], capture_output=True, text=True, timeout=600)
    try:
        assert up.returncode == 0, f"up.sh failed:\n{up.stdout}\n{up.stderr}"
        print(f"loopback cluster up in {time.monotonic() - started:.1f} s")
        yield state
    finally:
        pids_file = state / "pids"
        daemons = dict(line.split() for line in pids_file.read_text().splitlines()) if pids_file.exists() else {}
        down = subprocess.run([str(HERE / "down.sh"), str(state)], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        alive = {name: pid for name, pid in daemons.items() if _alive(int(pid))}
        assert not alive, f"down.sh left daemons running: {alive}"


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited


def _env():
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def test_workstation_rank_cap_is_refused_on_the_cluster(loopback_cluster, tmp_path):
    """--profile profiles/slurm keeps profiles/default (the workflow profile) with its rank cap
    at the local core count: the run must stop before submitting anything."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--profile", str(ROOT / "profiles" / "slurm"),
           "--configfile", str(ROOT / "config" / "test.yaml"), "--slurm-no-account"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "use --workflow-profile profiles/slurm" in proc.stdout + proc.stderr
    assert "has been submitted" not in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_workflow_runs_through_slurm_with_mpi(loopback_cluster, tmp_path):
    import xarray as xr

    config = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    config["theory"]["continuous"] = False  # three cluster jobs: 2 Monte Carlo (2 ranks each), 1 theory
    (tmp_path / "slurm.yaml").write_text(yaml.safe_dump(config))
    env = _env()
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
        "--workflow-profile", str(ROOT / "profiles" / "slurm"), "--configfile", "slurm.yaml", "--jobs", "3",
        "--default-resources", "slurm_partition=debug", "runtime=5", "mem_mb_per_cpu=500", "cpus_per_task=1",
        # No accounting database on the loopback cluster: job status from squeue.
        "--slurm-status-command", "squeue", "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "2",
    ]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    except subprocess.TimeoutExpired as exc:
        pytest.fail("snakemake --executor slurm did not finish in 400 s\n"
                    + _cluster_report(loopback_cluster, tmp_path, exc), pytrace=False)
    output = proc.stdout + proc.stderr
    print(f"snakemake --executor slurm: {time.monotonic() - started:.1f} s")
    assert proc.returncode == 0, output[-6000:]
    submitted = output.count("has been submitted with SLURM jobid")
    assert submitted == 4, output[-6000:]  # 2 simulate, 1 theory, 1 figures_point; diagnose, figures are local
    for width in config["grid"]["width"]:
        path = tmp_path / f"results/slurm/mc/relu/w{width}_L8_T1_sw1_sb0_rho0.6.nc"
        with xr.open_dataset(path) as mc:
            assert mc.attrs["mpi_ranks"] == 2  # srun --mpi=pmi2 gave one 2-rank communicator
            assert mc.attrs["width"] == width
    with xr.open_dataset(tmp_path / "results/slurm/diagnostics/relu/L8_T1_sw1_sb0_rho0.6.nc") as diag:
        diag.load()
    assert list((tmp_path / "results/slurm/figures").rglob("*.png"))
    assert (tmp_path / "results/slurm/summary.csv").is_file()


def _cluster_report(state: Path, workdir: Path, exc: subprocess.TimeoutExpired) -> str:
    """What the cluster and the jobs were doing, for a failure message."""
    def tail(text, lines=40):
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        return "\n".join((text or "").splitlines()[-lines:])

    parts = [f"--- snakemake output (tail)\n{tail(exc.stdout)}\n{tail(exc.stderr)}"]
    for cmd in (["squeue", "-a", "-l"], ["sinfo", "-N", "-l"], ["scontrol", "show", "jobs"]):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        parts.append(f"--- {' '.join(cmd)}\n{tail(res.stdout + res.stderr, 60)}")
    for log in sorted((state / "log").glob("*.log")):
        parts.append(f"--- {log.name}\n{tail(log.read_text(errors='replace'))}")
    for log in sorted(workdir.glob(".snakemake/slurm_logs/**/*.log"))[:6]:
        parts.append(f"--- {log.relative_to(workdir)}\n{tail(log.read_text(errors='replace'), 20)}")
    return "\n".join(parts)
