"""kernel_eft.study.jobs: the job list counts what the workflow runs (counted here from the axes), the cost model
reproduces a measured job, and status reads done, running and missing from the disk the way Snakemake marks it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel_eft.study.grid import Study
from kernel_eft.core.allocation import MC_STARTUP_SECONDS as MC_STARTUP
from kernel_eft.study.jobs import incomplete_outputs, jobs, mc_seconds, plan, status

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["config", "paper", "test", "workstation"])
def test_the_job_list_has_one_job_per_file_of_the_study(name):
    s = Study.from_file(ROOT / "config" / f"{name}.yaml", ROOT / "config" / "config.yaml")
    g, theory = s.grid, s.theory
    per_depth = len(g["activation"]) * len(g["time"]) * len(g["sw2"]) * len(g["sb2"]) * len(g["inputs"])
    points = per_depth * len(g["depth"])
    expected = {"simulate": points * len(g["width"]), "theory_discrete": points * len(theory["closures"]),
                "theory_continuous": per_depth * len(theory["closures"]) * bool(theory["continuous"]),
                "diagnose": points, "figures_point": points, "figures": 1}
    counts = {stage: count for stage, (count, _) in plan(s).items()}
    assert counts == {stage: n for stage, n in expected.items() if n}
    outputs = [job.output for job in jobs(s)]
    assert len(set(outputs)) == len(outputs)
    assert all(out.startswith(f"results/{s.name}/") for out in outputs)


def test_the_cost_model_reproduces_the_measured_monte_carlo_job():
    """config/README.md: relu, n = 256, L = 64, 50 000 samples took 46.5-48.1 s on one core (three runs); the
    fits hold every timed job within 11%."""
    s = Study.from_config({"grid": dict(activation=["relu"], width=[256], depth=[64], time=[4], sw2=[1.0],
                                        sb2=[0.0], inputs=[{"rho": 0.6}]), "monte_carlo": {"samples": 50000}})
    assert mc_seconds(s, s.points[0], 256) == pytest.approx(47.3, rel=0.11)


def _mark_incomplete(workdir: Path, output: str) -> None:
    """Snakemake's own marker of an output being written (FilePersistence._record_path)."""
    from snakemake.persistence.file import FilePersistence

    class Names:
        def _fetch_max_len(self, subject):
            return 255

    root = workdir / ".snakemake" / "incomplete"
    root.mkdir(parents=True, exist_ok=True)
    marker = Path(FilePersistence._record_path(Names(), str(root), output))
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("")


def test_status_reads_done_running_and_missing_from_the_disk(tmp_path):
    s = Study.from_file(ROOT / "config" / "test.yaml")
    mc = [job for job in jobs(s) if job.stage == "simulate"]
    theory = [job for job in jobs(s) if job.stage.startswith("theory")]
    for job in (mc[0], theory[0], theory[1]):
        (tmp_path / job.output).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / job.output).write_text("")
    _mark_incomplete(tmp_path, theory[0].output)  # Snakemake is rewriting it
    Path(str(tmp_path / mc[1].output) + ".ab12.tmp").write_text("")  # a job writing its file atomically
    assert incomplete_outputs(tmp_path) == {theory[0].output}
    states = status(s, tmp_path)
    assert [j.output for j in states["simulate"]["done"]] == [mc[0].output]
    assert [j.output for j in states["simulate"]["running"]] == [mc[1].output]
    assert [j.output for j in states["theory_discrete"]["running"] + states["theory_continuous"]["running"]] \
        == [theory[0].output]
    assert len(states["diagnose"]["missing"]) == 1 and len(states["figures"]["missing"]) == 1


def test_the_cli_plans_and_reports_status(tmp_path, capsys):
    from kernel_eft.cli import main

    assert main(["study", "plan", str(ROOT / "config" / "test.yaml"), "--cores", "2", "--list"]) == 0
    out = capsys.readouterr().out
    assert "study 'test'" in out and "results/test/mc/relu/w16_L8_T1_sw1_sb0_rho0.6.nc" in out
    assert main(["study", "status", str(ROOT / "config" / "test.yaml"), "--workdir", str(tmp_path)]) == 0
    assert "missing" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: {width: [0]}\n")
    with pytest.raises(SystemExit) as info:
        main(["study", "plan", str(bad)])
    assert info.value.code == 2
    assert "invalid config: grid." in capsys.readouterr().err


def _budget_study(budget, widths=(16, 32, 64, 128), controls="none"):
    return Study.from_config({
        "study": "budget", "grid": {"activation": ["relu", "tanh"], "width": list(widths), "depth": [64],
                                    "time": [4], "sw2": [1.0], "sb2": [0.0], "inputs": [{"rho": 0.6}]},
        "monte_carlo": {"budget_cpu_seconds": budget, "batches": 32, "control_variates": controls},
        "theory": {"closures": ["gonly"], "continuous": False}})


@pytest.mark.parametrize("controls", ["none", "martingale"])
def test_a_cpu_budget_is_spent_per_point_and_beats_equal_samples(controls):
    """monte_carlo.budget_cpu_seconds: each point's Monte Carlo jobs cost the budget (the planner's cost model,
    within one sample per width), and the allocation's extrapolated K1 variance (per-sample variance ~ n) is
    below that of equal samples at every width for the same CPU."""
    from kernel_eft.core.allocation import extrapolated_variance

    budget = 150.0
    s = _budget_study(budget, controls=controls)
    for point in s.points:
        mc = [job for job in jobs(s) if job.stage == "simulate" and job.point == point]
        spent = sum(job.seconds for job in mc)
        per_sample = max(job.seconds / job.samples for job in mc)
        assert abs(spent - budget) <= len(mc) * per_sample + 1e-6
        allocated = [job.samples for job in mc]
        cost = [(job.seconds - MC_STARTUP) / job.samples for job in mc]  # seconds per network at each width
        equal = sum(n * c for n, c in zip(allocated, cost)) / sum(cost)  # same CPU, equal samples per width
        widths = [job.width for job in mc]
        assert extrapolated_variance(widths, allocated, widths) < extrapolated_variance(widths, [equal] * len(mc),
                                                                                        widths)


def test_a_budget_needs_two_widths_and_samples_fill_the_jobs():
    from kernel_eft.study.config import ConfigError

    with pytest.raises(ConfigError, match="monte_carlo.budget_cpu_seconds"):
        _budget_study(100.0, widths=(64,))
    s = _budget_study(0)  # no budget: monte_carlo.samples at every width
    assert {job.samples for job in jobs(s) if job.stage == "simulate"} == {s.monte_carlo["samples"]}
