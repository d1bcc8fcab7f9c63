"""The Snakemake workflow: dry runs of the shipped studies, lint, config validation, and an
end-to-end run of config/test.yaml on 2 cores with 2-rank MPI jobs (rerun, deletion, kills).

Expected job counts are computed here from the config files' grid axes, independently of the
workflow's own grid code.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
TEST_CONFIG = ROOT / "config" / "test.yaml"


def workflow_env():
    """Environment for snakemake: this interpreter's bin first (python, mpiexec)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


def snakemake(workdir, *args, timeout=300, check=True):
    """Run snakemake on this repository's Snakefile in `workdir`; return the CompletedProcess."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), *args]
    proc = subprocess.run(cmd, cwd=workdir, env=workflow_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a snakemake run or dry run."""
    counts = {}
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats:"))
    for line in lines[start + 3:]:
        name, _, count = line.strip().partition(" ")
        if name == "total" or not count.strip().isdigit():
            break
        counts[name] = int(count)
    return counts


def expected_counts(config_path: Path) -> dict[str, int]:
    """Jobs of a study from its grid axes: MC per point and width, theory per point without the
    width (discrete per depth, continuous shared by all depths), diagnostics per point."""
    config = yaml.safe_load(config_path.read_text())
    grid = config["grid"]
    theory = config.get("theory", {})
    closures = theory.get("closures", ["gonly"])
    discrete = [c for c in closures if c != "exact"]  # the exact theory has no discrete form
    continuous = closures if theory.get("continuous", True) else [c for c in closures if c == "exact"]
    per_depth = len(grid["activation"]) * len(grid["time"]) * len(grid["sw2"]) * len(grid["sb2"]) * len(grid["inputs"])
    points = per_depth * len(grid["depth"])
    counts = {
        "simulate": points * len(grid["width"]),
        "theory_discrete": points * len(discrete),
        "theory_continuous": per_depth * len(continuous),
        "diagnose": points,
        "figures": 1,
        "all": 1,
    }
    return {job: count for job, count in counts.items() if count}


@pytest.mark.parametrize("study", ["config.yaml", "paper.yaml", "test.yaml"])
def test_dry_run_lists_every_grid_job(tmp_path, study):
    config_path = ROOT / "config" / study
    proc = snakemake(tmp_path, "-n", "--configfile", str(config_path))
    assert job_counts(proc.stdout) == expected_counts(config_path)


@pytest.mark.parametrize("continuous", [True, False])
def test_adding_the_exact_closure_is_one_config_line(tmp_path, continuous):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["theory"]["closures"] = ["gonly", "exact"]
    config["theory"]["continuous"] = continuous
    (tmp_path / "exact.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "-n", "-p", "--configfile", "exact.yaml")
    assert job_counts(proc.stdout) == expected_counts(tmp_path / "exact.yaml")
    exact_cmds = [line for line in proc.stdout.splitlines() if "--closure exact" in line]
    assert exact_cmds and all("--depth" not in line and "--points" in line for line in exact_cmds)


def test_paths_are_readable_and_stable(tmp_path):
    """A grid point's file name spells its parameters (and is the same on every dry run)."""
    proc = snakemake(tmp_path, "-n", "--configfile", str(ROOT / "config" / "config.yaml"))
    assert "results/mc/relu/w128_L64_T4_sw1_sb0_rho0.6.nc" in proc.stdout
    assert "results/theory/tanh/gonly_L64_T4_sw1_sb0_rho0.6.nc" in proc.stdout
    assert "results/diagnostics/relu/L64_T4_sw1_sb0_rho0.6.nc" in proc.stdout


def test_slurm_profile_submits_mpi_through_srun(tmp_path):
    """The SLURM profile launches Monte Carlo ranks with srun --mpi=pmi2, one core per task."""
    proc = snakemake(tmp_path, "-n", "-p", "--configfile", str(TEST_CONFIG), "--workflow-profile",
                     str(ROOT / "profiles" / "slurm"))
    simulate_cmds = [line for line in proc.stdout.splitlines() if "kernel_eft simulate" in line]
    assert simulate_cmds and all("srun --mpi=pmi2 -n 2 " in line for line in simulate_cmds)
    assert all("--expect-ranks 2" in line for line in simulate_cmds)
    assert "cpus_per_task=1" in proc.stdout


def test_workstation_profile_caps_ranks_at_cores(tmp_path):
    """With the default profile, a job asking for more ranks than cores gets one rank per core."""
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config["monte_carlo"]["tasks"] = 64
    (tmp_path / "many.yaml").write_text(yaml.safe_dump(config))
    cores = len(os.sched_getaffinity(0))
    assert cores < 64, "this machine has too many cores for this test"
    proc = snakemake(tmp_path, "-n", "-p", "--configfile", "many.yaml")
    simulate_cmds = [line for line in proc.stdout.splitlines() if "kernel_eft simulate" in line]
    assert simulate_cmds
    assert all(f"mpiexec -n {cores} " in line and f"--expect-ranks {cores} " in line for line in simulate_cmds)


def test_lint_and_format(tmp_path):
    proc = snakemake(tmp_path, "--lint", "--configfile", str(TEST_CONFIG), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    snakefmt = shutil.which("snakefmt", path=str(Path(sys.executable).parent)) or shutil.which("snakefmt")
    assert snakefmt is not None, "snakefmt not installed (pip install snakefmt)"
    files = [SNAKEFILE, *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
    proc = subprocess.run([snakefmt, "--check", *map(str, files)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _tiny_grid(**override):
    grid = dict(activation=["relu"], width=[16], depth=[4], time=[1], sw2=[1.0], sb2=[0.0], inputs=[{"rho": 0.5}])
    grid.update(override)
    return grid


@pytest.mark.parametrize(
    "config, field",
    [
        ({"grid": _tiny_grid(), "monte_carlo": {"samplez": 10}}, "monte_carlo: Additional properties are not allowed ('samplez'"),
        ({"grid": _tiny_grid(), "typo_section": {}}, "(top level): Additional properties are not allowed ('typo_section'"),
        ({"grid": _tiny_grid(width=[0])}, "grid.width[0]"),
        ({"grid": _tiny_grid(activation=["sigmoidish"])}, "grid.activation[0]"),
        ({"grid": _tiny_grid(time=[-1])}, "grid.time[0]"),
        ({"grid": _tiny_grid(inputs=[{"rho": 1.5}])}, "grid.inputs[0].rho"),
        ({"grid": _tiny_grid(inputs=[{"kin": "1,2;2,1", "label": "bad"}])}, "grid.inputs[0]: input kernel is not positive semi-definite"),
        ({"grid": _tiny_grid(), "monte_carlo": {"tasks": "two"}}, "monte_carlo.tasks"),
        ({"grid": _tiny_grid(), "theory": {"closures": ["gonly", "magic"]}}, "theory.closures[1]"),
    ],
)
def test_malformed_config_fails_fast_naming_the_field(tmp_path, config, field):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    started = time.monotonic()
    proc = snakemake(tmp_path, "-n", "--configfile", "bad.yaml", check=False, timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert "invalid config: " + field in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert elapsed < 5.0, f"validation took {elapsed:.1f} s"
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------------------------------------
# End to end: config/test.yaml, --cores 2, Monte Carlo on 2 MPI ranks
# ---------------------------------------------------------------------------------------------


def study_files(workdir: Path) -> dict[str, float]:
    """Every result file (not figures' internals) with its modification time."""
    return {str(p.relative_to(workdir)): p.stat().st_mtime_ns for p in sorted((workdir / "results").rglob("*.nc"))}


def assert_netcdf_files_sound(workdir: Path) -> None:
    import xarray as xr

    for path in (workdir / "results").rglob("*.nc"):
        with xr.open_dataset(path) as ds:  # a truncated or half-written file fails here
            assert ds.attrs.get("Conventions", "").startswith("CF"), path
            ds.load()
    leftovers = list((workdir / "results").rglob("*.tmp"))
    assert not leftovers, f"temporary files left behind: {leftovers}"


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("study")
    started = time.monotonic()
    proc = snakemake(workdir, "--cores", "2", "--configfile", str(TEST_CONFIG))
    return workdir, proc, time.monotonic() - started


@pytest.mark.slow
@pytest.mark.mpi
def test_end_to_end_produces_netcdf_and_figures(finished_study):
    import xarray as xr

    workdir, proc, elapsed = finished_study
    print(f"end-to-end test study: {elapsed:.1f} s")
    config = yaml.safe_load(TEST_CONFIG.read_text())
    for width in config["grid"]["width"]:
        with xr.open_dataset(workdir / f"results/mc/relu/w{width}_L8_T1_sw1_sb0_rho0.6.nc") as mc:
            assert mc.attrs["width"] == width
            assert mc.attrs["mpi_ranks"] == 2  # the MC rule really ran on 2 ranks
            assert mc.attrs["samples"] == config["monte_carlo"]["samples"]
    for name in ["gonly_L8_T1_sw1_sb0_rho0.6.nc", "gonly_continuous_T1_sw1_sb0_rho0.6.nc"]:
        assert (workdir / "results/theory/relu" / name).is_file()
    assert (workdir / "results/diagnostics/relu/L8_T1_sw1_sb0_rho0.6.nc").is_file()
    figures = workdir / "results/figures"
    pngs = sorted(p.stem for p in figures.glob("*.png"))
    assert pngs and pngs == sorted(p.stem for p in figures.glob("*.pdf"))
    assert (figures / "summary.csv").is_file() and (figures / "summary.nc").is_file()
    assert_netcdf_files_sound(workdir)
    for rule_dir in ["mc", "theory", "diagnostics"]:
        assert list((workdir / "logs" / rule_dir).rglob("*.log")), rule_dir
        assert list((workdir / "results/benchmarks" / rule_dir).rglob("*.tsv")), rule_dir


@pytest.mark.slow
@pytest.mark.mpi
def test_rerun_does_nothing(finished_study):
    workdir, _, _ = finished_study
    before = study_files(workdir)
    proc = snakemake(workdir, "--cores", "2", "--configfile", str(TEST_CONFIG))
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert study_files(workdir) == before


@pytest.mark.slow
@pytest.mark.mpi
def test_growing_the_grid_runs_only_the_new_point(finished_study, tmp_path):
    workdir, _, _ = finished_study
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config["grid"]["inputs"].append({"rho": 0.3})
    (tmp_path / "grown.yaml").write_text(yaml.safe_dump(config))
    dry = snakemake(workdir, "-n", "-p", "--cores", "2", "--configfile", str(tmp_path / "grown.yaml"))
    assert job_counts(dry.stdout) == {"simulate": 2, "theory_discrete": 1, "theory_continuous": 1, "diagnose": 1,
                                      "figures": 1, "all": 1}
    outputs = re.findall(r"--out (\S+)", dry.stdout)
    assert outputs and all(path.endswith("_rho0.3.nc") for path in outputs)


@pytest.mark.slow
@pytest.mark.mpi
def test_report_renders_figures(finished_study):
    workdir, _, _ = finished_study
    snakemake(workdir, "--configfile", str(TEST_CONFIG), "--report", "report.html")
    html = (workdir / "report.html").read_text(errors="replace")
    assert "fig1_mean_kernel" in html


@pytest.mark.slow
@pytest.mark.mpi
def test_deleting_one_mc_file_reruns_only_that_point(finished_study):
    workdir, _, _ = finished_study
    victim = "results/mc/relu/w16_L8_T1_sw1_sb0_rho0.6.nc"
    (workdir / victim).unlink()
    before = study_files(workdir)
    dry = snakemake(workdir, "-n", "--cores", "2", "--configfile", str(TEST_CONFIG))
    assert job_counts(dry.stdout) == {"simulate": 1, "diagnose": 1, "figures": 1, "all": 1}
    snakemake(workdir, "--cores", "2", "--configfile", str(TEST_CONFIG))
    after = study_files(workdir)
    assert victim in after
    changed = {name for name in after if before.get(name) != after[name]}
    assert changed == {victim, "results/diagnostics/relu/L8_T1_sw1_sb0_rho0.6.nc", "results/figures/summary.nc"}
    assert_netcdf_files_sound(workdir)


@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_run_resumes_without_corrupt_files(tmp_path, sig):
    """Kill the whole run (snakemake, mpiexec and ranks: the process group, as a terminal does)
    while a Monte Carlo job is running, then rerun to completion (up to diagnostics: figures
    are covered above)."""
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config["monte_carlo"]["samples"] = 40000  # a few seconds per job: time to kill one mid-way
    config["grid"]["width"] = [32, 64]
    config["grid"]["depth"] = [16]
    config["theory"]["continuous"] = False
    (tmp_path / "kill.yaml").write_text(yaml.safe_dump(config))
    target = "results/diagnostics/relu/L16_T1_sw1_sb0_rho0.6.nc"
    args = [target, "--cores", "2", "--configfile", "kill.yaml"]  # --configfile takes several
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), *args]
    with open(tmp_path / "killed.out", "w") as out:
        run = subprocess.Popen(cmd, cwd=tmp_path, env=workflow_env(), stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
        mc_logs = tmp_path / "logs" / "mc"
        deadline = time.monotonic() + 120
        while not (mc_logs.exists() and any(mc_logs.rglob("*.log"))):
            assert run.poll() is None, (tmp_path / "killed.out").read_text()
            assert time.monotonic() < deadline, "no Monte Carlo job started"
            time.sleep(0.1)
        time.sleep(1.0)  # inside the first Monte Carlo job
        os.killpg(run.pid, sig)
        run.wait(timeout=60)
    assert not (tmp_path / target).exists(), "the run got past Monte Carlo before it was killed"
    assert_netcdf_files_sound(tmp_path)
    if sig == signal.SIGKILL:
        # A killed snakemake cannot release its lock; it says so and --unlock removes it.
        proc = snakemake(tmp_path, *args, check=False)
        assert proc.returncode != 0 and "--unlock" in proc.stdout + proc.stderr
        snakemake(tmp_path, "--unlock", "--configfile", "kill.yaml")
    snakemake(tmp_path, *args)
    assert_netcdf_files_sound(tmp_path)
    finished = study_files(tmp_path)
    assert sum(name.startswith("results/mc/") for name in finished) == 2 and target in finished
    proc = snakemake(tmp_path, "-n", *args)
    assert "Nothing to be done" in proc.stdout + proc.stderr
