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
    discrete = closures  # every closure at the Monte Carlo depth
    continuous = closures if theory.get("continuous", True) else []
    per_depth = len(grid["activation"]) * len(grid["time"]) * len(grid["sw2"]) * len(grid["sb2"]) * len(grid["inputs"])
    points = per_depth * len(grid["depth"])
    counts = {
        "simulate": points * len(grid["width"]),
        "theory_discrete": points * len(discrete),
        "theory_continuous": per_depth * len(continuous),
        "diagnose": points,
        "figures_point": points,  # one figures job per point, then one for the study
        "figures": 1,
        "all": 1,
    }
    return {job: count for job, count in counts.items() if count}


@pytest.mark.parametrize("study", ["config.yaml", "paper.yaml", "test.yaml", "workstation.yaml"])
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
    at_depth = [line for line in exact_cmds if "--depth 64" in line]
    continuum = [line for line in exact_cmds if "--points 101" in line]
    assert at_depth, "the exact closure runs at the Monte Carlo depth"
    assert len(continuum) == (len(exact_cmds) - len(at_depth) if continuous else 0)


def test_exact_points_must_be_4k_plus_1(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["theory"]["exact_points"] = 100
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "-n", "--configfile", "bad.yaml", check=False)
    assert proc.returncode != 0 and "theory.exact_points" in proc.stdout + proc.stderr


def test_paths_are_readable_and_stable(tmp_path):
    """A grid point's file name spells its parameters (and is the same on every dry run); the
    default study writes to results/default whether or not config.yaml is named."""
    for args in ((), ("--configfile", str(ROOT / "config" / "config.yaml"))):
        proc = snakemake(tmp_path, "-n", *args)
        assert "results/default/mc/relu/w128_L64_T4_sw1_sb0_rho0.6.nc" in proc.stdout
        assert "results/default/theory/tanh/gonly_L64_T4_sw1_sb0_rho0.6.nc" in proc.stdout
        assert "results/default/diagnostics/relu/L64_T4_sw1_sb0_rho0.6.nc" in proc.stdout


def test_every_input_geometry_has_its_own_tag(tmp_path):
    """Inputs of equal rho (unit norms, other norms, a 3x3 K_in, a labelled K_in) get four tags (spelled by
    kernel_eft.study, tests/study/test_grid.py); the diagnose job passes the point's tag on."""
    kin3 = "1,0.3,0.3;0.3,1,0.3;0.3,0.3,1"
    config = {"grid": dict(activation=["relu"], width=[16], depth=[4], time=[1], sw2=[1.0], sb2=[0.0],
                           inputs=[{"rho": 0.3}, {"rho": 0.3, "norms": [1, 2]}, {"kin": kin3},
                                   {"kin": "1,0.3;0.3,1.5", "label": "mine"}])}
    (tmp_path / "geoms.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "-n", "-p", "--configfile", "geoms.yaml")
    for geom in ("rho0.3", "rho0.3_q1-2", "P3-", "mine-"):
        assert f"results/geoms/diagnostics/relu/L4_T1_sw1_sb0_{geom}" in proc.stdout, geom
        assert f"--tag relu_L4_T1_sw1_sb0_{geom}" in proc.stdout, geom


def test_cores_1_never_starts_two_ranks(tmp_path):
    """A study asking 2 ranks per Monte Carlo job gets 1 under --cores 1 (Snakemake caps threads)."""
    proc = snakemake(tmp_path, "-n", "-p", "--cores", "1", "--configfile", str(TEST_CONFIG))
    simulate_cmds = [line for line in proc.stdout.splitlines() if "kernel_eft simulate" in line]
    assert simulate_cmds and all("mpiexec -n 1 " in line and "--expect-ranks 1 " in line for line in simulate_cmds)


def test_rules_pin_blas_threads_to_their_threads(tmp_path):
    """Every job exports OMP/OpenBLAS/MKL threads: its declared threads (1 for theory, diagnostics
    and figures), and 1 per rank for Monte Carlo."""
    proc = snakemake(tmp_path, "-n", "-p", "--configfile", str(TEST_CONFIG))
    commands = [line for line in proc.stdout.splitlines() if "python -m" in line and "kernel_eft" in line]
    assert len(commands) == sum(expected_counts(TEST_CONFIG)[job] for job in
                                ("simulate", "theory_discrete", "theory_continuous", "diagnose", "figures_point",
                                 "figures"))
    for line in commands:
        assert "export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1;" in line, line


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
    for more_cores_than_the_machine in ((), ("--cores", "64")):
        proc = snakemake(tmp_path, "-n", "-p", "--configfile", "many.yaml", *more_cores_than_the_machine)
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
        ({"grid": _tiny_grid(), "monte_carlo": {"samplez": 10}}, "monte_carlo.samplez: unknown key"),
        ({"grid": _tiny_grid(), "typo_section": {}}, "typo_section: unknown section"),
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


def assert_netcdf_files_sound(workdir: Path, killed: bool = False) -> None:
    """Every .nc file is whole, and no temporary file is left.  After a SIGKILL (`killed`), which no
    handler sees, a write that was under way leaves its PATH.HOST-PID.XXXX.tmp: allowed only if its
    writer is dead (so that the next write to PATH removes it, checked after the resume)."""
    import xarray as xr

    for path in (workdir / "results").rglob("*.nc"):
        with xr.open_dataset(path) as ds:  # a truncated or half-written file fails here
            assert ds.attrs.get("Conventions", "").startswith("CF"), path
            ds.load()
    leftovers = list((workdir / "results").rglob("*.tmp"))
    if killed:
        stale = re.compile(r".+\.nc\.[A-Za-z0-9_]+-(?P<pid>\d+)\.[^.]+\.tmp")
        for path in leftovers:
            match = stale.fullmatch(path.name)
            assert match is not None, f"not a recognisable temporary file: {path}"
            deadline = time.monotonic() + 30  # a killed rank may take a moment to be reaped
            while Path(f"/proc/{match['pid']}").exists():
                assert time.monotonic() < deadline, f"its writer is still running: {path}"
                time.sleep(0.1)
        return
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
        with xr.open_dataset(workdir / f"results/test/mc/relu/w{width}_L8_T1_sw1_sb0_rho0.6.nc") as mc:
            assert mc.attrs["width"] == width
            assert mc.attrs["mpi_ranks"] == 2  # the MC rule really ran on 2 ranks
            assert mc.attrs["samples"] == config["monte_carlo"]["samples"]
    for name in ["gonly_L8_T1_sw1_sb0_rho0.6.nc", "gonly_continuous_T1_sw1_sb0_rho0.6.nc"]:
        assert (workdir / "results/test/theory/relu" / name).is_file()
    assert (workdir / "results/test/diagnostics/relu/L8_T1_sw1_sb0_rho0.6.nc").is_file()
    figures = workdir / "results/test/figures"
    pngs = sorted(p.stem for p in figures.rglob("*.png"))
    assert pngs and pngs == sorted(p.stem for p in figures.rglob("*.pdf"))
    # one folder per point (its own job), one for the study figures
    assert sorted(p.name for p in figures.iterdir()) == ["relu_L8_T1_sw1_sb0_rho0.6", "study"]
    for ext in ("csv", "nc", "html"):
        assert (workdir / f"results/test/summary.{ext}").is_file()
    assert_netcdf_files_sound(workdir)
    for rule_dir in ["mc", "theory", "diagnostics"]:
        assert list((workdir / "logs/test" / rule_dir).rglob("*.log")), rule_dir
        assert list((workdir / "results/test/benchmarks" / rule_dir).rglob("*.tsv")), rule_dir


@pytest.mark.slow
@pytest.mark.mpi
def test_job_logs_show_parameters_progress_and_the_file_written(finished_study):
    workdir, _, _ = finished_study
    mc_log = (workdir / "logs/test/mc/relu/w16_L8_T1_sw1_sb0_rho0.6.log").read_text()
    assert "n=16, L=8" in mc_log and "samples=400" in mc_log and "mpi_ranks=2" in mc_log
    assert "batches (100%)" in mc_log
    assert re.search(r"wrote results/test/mc/relu/w16_L8_T1_sw1_sb0_rho0.6.nc in [0-9.]+ s", mc_log), mc_log
    for log in (workdir / "logs/test/theory/relu").glob("*.log"):
        text = log.read_text()
        assert "closure=gonly, activation=relu" in text and re.search(r"wrote \S+ in [0-9.]+ s", text), text


@pytest.mark.slow
@pytest.mark.mpi
def test_run_ends_with_the_summary_table(finished_study):
    workdir, proc, _ = finished_study
    tail = proc.stdout[proc.stdout.index("Study 'test'"):]
    assert "point" in tail and "closure" in tail and "t* V4 [68%]" in tail and "worst pull V4" in tail
    assert re.search(r"relu_L8_T1_sw1_sb0_rho0.6\s+gonly\s", tail), tail
    assert "results/test/report.html" in tail


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
    config["study"] = "test"  # the same study, grown
    (tmp_path / "grown.yaml").write_text(yaml.safe_dump(config))
    dry = snakemake(workdir, "-n", "-p", "--cores", "2", "--configfile", str(tmp_path / "grown.yaml"))
    assert job_counts(dry.stdout) == {"simulate": 2, "theory_discrete": 1, "theory_continuous": 1, "diagnose": 1,
                                      "figures_point": 1, "figures": 1, "all": 1}
    outputs = re.findall(r"--out (\S+)", dry.stdout)
    assert outputs and all(path.endswith("_rho0.3.nc") for path in outputs)


@pytest.mark.slow
@pytest.mark.mpi
def test_report_renders_figures(finished_study):
    workdir, _, _ = finished_study
    import base64

    proc = snakemake(workdir, "--configfile", str(TEST_CONFIG), "--report", "results/test/report.html")
    # captions are reStructuredText: a stray |x| or *x* is an error the report would show instead of the text
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR" in line or "WARNING" in line]
    assert not problems, "\n".join(problems)
    html = (workdir / "results/test/report.html").read_text(errors="replace")
    assert "fig1_mean_kernel" in html and "fig5_validity_map" in html
    table = re.search(r"data:text/html;charset=utf8;filename=summary.html;base64,([A-Za-z0-9+/=]+)", html)
    assert table, "the summary table is not in the report"
    table = base64.b64decode(table.group(1)).decode()
    assert "relu_L8_T1_sw1_sb0_rho0.6" in table and "tstar_V4" in table


@pytest.mark.slow
@pytest.mark.mpi
def test_deleting_one_mc_file_reruns_only_that_point(finished_study):
    workdir, _, _ = finished_study
    victim = "results/test/mc/relu/w16_L8_T1_sw1_sb0_rho0.6.nc"
    (workdir / victim).unlink()
    before = study_files(workdir)
    dry = snakemake(workdir, "-n", "--cores", "2", "--configfile", str(TEST_CONFIG))
    assert job_counts(dry.stdout) == {"simulate": 1, "diagnose": 1, "figures_point": 1, "figures": 1, "all": 1}
    snakemake(workdir, "--cores", "2", "--configfile", str(TEST_CONFIG))
    after = study_files(workdir)
    assert victim in after
    changed = {name for name in after if before.get(name) != after[name]}
    assert changed == {victim, "results/test/diagnostics/relu/L8_T1_sw1_sb0_rho0.6.nc", "results/test/summary.nc"}
    assert_netcdf_files_sound(workdir)


def small_study(**grid_override) -> dict:
    grid = dict(activation=["relu"], width=[16], depth=[4], time=[1], sw2=[1.0], sb2=[0.0],
                inputs=[{"rho": 0.6}])
    grid.update(grid_override)
    return {"grid": grid, "monte_carlo": {"samples": 200, "batches": 4, "tasks": 1},
            "theory": {"closures": ["gonly"], "continuous": False}}


@pytest.mark.slow
@pytest.mark.mpi
def test_inputs_of_equal_rho_are_three_points_and_studies_sit_side_by_side(tmp_path):
    """Three inputs sharing rho = 0.3 (unit norms, norms [1, 2], a 3x3 K_in) give three sets of
    figures and three points in the summary; a second study then leaves the first untouched."""
    import pandas as pd

    kin3 = "1,0.3,0.3;0.3,1,0.3;0.3,0.3,1"
    first = small_study(inputs=[{"rho": 0.3, "norms": [1, 2]}, {"rho": 0.3}, {"kin": kin3}])
    (tmp_path / "first.yaml").write_text(yaml.safe_dump(first))
    snakemake(tmp_path, "--cores", "2", "--configfile", "first.yaml")
    figures = tmp_path / "results/first/figures"
    fig1 = sorted(p.name for p in figures.rglob("*_fig1_mean_kernel.png"))
    assert len(fig1) == 3, fig1
    for stem in ("fig2_kernel_covariance", "fig3_residual", "fig4_k1_source"):
        assert len(list(figures.rglob(f"*_{stem}.png"))) == 3, stem
    table = pd.read_csv(tmp_path / "results/first/summary.csv")
    assert len(table) == 3 and table["point"].nunique() == 3  # one width: a row per point
    assert sorted(table["point"]) == sorted(name[: -len("_fig1_mean_kernel.png")] for name in fig1)
    p3 = table[table["kin"].str.count(";") == 2]
    assert len(p3) == 1 and p3["rho"].isna().all()  # a 3x3 K_in has no single rho
    snapshot = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "results/first").rglob("*")
                if p.is_file()}

    second = small_study(inputs=[{"rho": 0.3}])
    second["monte_carlo"]["samples"] = 400  # the first study's rho0.3 point, with other settings
    (tmp_path / "second.yaml").write_text(yaml.safe_dump(second))
    snakemake(tmp_path, "--cores", "2", "--configfile", "second.yaml")
    assert len(list((tmp_path / "results/second/figures").rglob("*_fig1_mean_kernel.png"))) == 1
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "results/first").rglob("*")
             if p.is_file()}
    assert after == snapshot, "the second study touched the first study's results"


KILL_TARGET = "results/kill/diagnostics/relu/L16_T1_sw1_sb0_rho0.6.nc"
KILL_ARGS = [KILL_TARGET, "--cores", "2", "--configfile", "kill.yaml"]  # --configfile takes several


def write_kill_config(directory: Path) -> None:
    """A study whose Monte Carlo jobs take a few seconds: time to kill one mid-way."""
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config["monte_carlo"]["samples"] = 40000
    config["grid"]["width"] = [32, 64]
    config["grid"]["depth"] = [16]
    config["theory"]["continuous"] = False
    (directory / "kill.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def uninterrupted_kill_study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    write_kill_config(workdir)
    snakemake(workdir, *KILL_ARGS)
    return workdir


def assert_same_results(workdir: Path, reference: Path) -> None:
    """The same result files holding bitwise the same data (attributes such as the time of writing
    and the wall time may differ)."""
    import xarray as xr

    names = set(study_files(workdir))
    assert names == set(study_files(reference))
    for name in sorted(names):
        with xr.open_dataset(workdir / name) as ds, xr.open_dataset(reference / name) as ref:
            xr.testing.assert_equal(ds.load(), ref.load())


@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_run_resumes_to_the_results_of_an_uninterrupted_run(tmp_path, sig, uninterrupted_kill_study):
    """Kill the whole run (snakemake, mpiexec and ranks: the process group, as a terminal does)
    while a Monte Carlo job is running, resume with the README's commands, and compare with a run
    that was never interrupted (up to diagnostics: figures are covered above)."""
    write_kill_config(tmp_path)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), *KILL_ARGS]
    with open(tmp_path / "killed.out", "w") as out:
        run = subprocess.Popen(cmd, cwd=tmp_path, env=workflow_env(), stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
        mc_logs = tmp_path / "logs" / "kill" / "mc"
        deadline = time.monotonic() + 120
        while not (mc_logs.exists() and any(mc_logs.rglob("*.log"))):
            assert run.poll() is None, (tmp_path / "killed.out").read_text()
            assert time.monotonic() < deadline, "no Monte Carlo job started"
            time.sleep(0.1)
        time.sleep(1.0)  # inside the first Monte Carlo job
        os.killpg(run.pid, sig)
        run.wait(timeout=60)
    assert not (tmp_path / KILL_TARGET).exists(), "the run got past Monte Carlo before it was killed"
    assert_netcdf_files_sound(tmp_path, killed=sig == signal.SIGKILL)
    if sig == signal.SIGKILL:
        # A killed snakemake cannot release its lock; it says so and --unlock removes it.
        proc = snakemake(tmp_path, *KILL_ARGS, check=False)
        assert proc.returncode != 0 and "--unlock" in proc.stdout + proc.stderr
        snakemake(tmp_path, "--unlock", "--configfile", "kill.yaml")
    snakemake(tmp_path, "--rerun-incomplete", *KILL_ARGS)
    assert_netcdf_files_sound(tmp_path)
    finished = study_files(tmp_path)
    assert sum(name.startswith("results/kill/mc/") for name in finished) == 2 and KILL_TARGET in finished
    assert_same_results(tmp_path, uninterrupted_kill_study)
    proc = snakemake(tmp_path, "-n", *KILL_ARGS)
    assert "Nothing to be done" in proc.stdout + proc.stderr


TOY_CLOSURE_MODULE = '''"""Toy closure with an option (written by tests/test_workflow.py; one file is a closure)."""
import numpy as np

from kernel_eft.core.meanfield import mean_kernel_discrete
from kernel_eft.core.pairs import wishart_v4
from kernel_eft.theory.closure import Closure, Option


class ScaledWishart(Closure):
    name = "toyscaled"
    label = long_label = "scaled Wishart toy"
    description = "toy: scale x the Wishart V4 of the mean field, K1 = 0"
    depths = ("discrete",)
    options = (Option("scale", float, 1.0, "factor of the Wishart V4", positive=True),)

    def solve(self, activation, kin, *, sw2, sb2, time, depth=None, points=None, progress=None, scale=1.0):
        K0 = mean_kernel_discrete(activation, kin, sw2, sb2, time, depth)
        V4 = scale * np.stack([wishart_v4(K) for K in K0])
        zeros = np.zeros_like(K0)
        return self.dataset({"K0": K0, "V4": V4, "K1": zeros, "K1_source": zeros}, np.linspace(0.0, time, depth + 1),
                            np.arange(depth + 1), activation, kin, sw2, sb2, time, {"scale": scale}, "toy")


CLOSURE = ScaledWishart()
'''


def test_a_closure_with_an_option_is_one_file_and_runs_in_the_workflow(tmp_path):
    """A module in kernel_eft/theory/ is a closure: the study config takes its option (theory.toyscaled.scale), the
    workflow passes it to the theory job as --scale, and the file holds scale x the Wishart form of its K0."""
    import numpy as np
    import xarray as xr

    from kernel_eft.core.pairs import wishart_v4

    module = ROOT / "src" / "kernel_eft" / "theory" / "zz_toy_scaled_closure.py"
    module.write_text(TOY_CLOSURE_MODULE)
    try:
        config = {"grid": _tiny_grid(), "theory": {"closures": ["gonly", "toyscaled"], "continuous": True,
                                                   "toyscaled": {"scale": 3.0}}}
        (tmp_path / "toy.yaml").write_text(yaml.safe_dump(config))
        target = "results/toy/theory/relu/toyscaled_L4_T1_sw1_sb0_rho0.5.nc"
        proc = snakemake(tmp_path, target, "--cores", "1", "-p", "--configfile", "toy.yaml")
        assert "--scale 3.0 --closure toyscaled" in proc.stdout + proc.stderr
        dry = snakemake(tmp_path, "-n", "--configfile", "toy.yaml").stdout  # it declares the discrete form only
        assert "gonly_continuous" in dry and "toyscaled_continuous" not in dry
        with xr.open_dataset(tmp_path / target) as ds:
            np.testing.assert_allclose(ds["V4"].values, 3.0 * np.stack([wishart_v4(K) for K in ds["K0"].values]),
                                       rtol=1e-14)
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**config, "theory": {**config["theory"],
                                                                               "toyscaled": {"scale": 0}}}))
        proc = snakemake(tmp_path, "-n", "--configfile", "bad.yaml", check=False)
        assert proc.returncode != 0 and "invalid config: theory.toyscaled.scale" in proc.stdout + proc.stderr
    finally:
        module.unlink()
