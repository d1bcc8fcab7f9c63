"""The job list of a study (what the workflow runs, file by file), its estimated CPU time from the cost model,
and its state on disk: done, running (Snakemake's .snakemake/incomplete markers or a job's .tmp files) or
missing.  `kernel-eft study plan CONFIG` and `kernel-eft study status CONFIG` print them.

Cost model (CPU seconds on one core, P = 2; config/README.md "Size and cost" has the measurements it was
fitted to): a Monte Carlo job takes startup + samples x L x (a x n + b), a and b per activation from
least-squares fits to timed jobs (n = 64 to 1024, L = 32 and 64; each job within 11% of its fit); a theory job
by its closure's own model (Closure.estimate_seconds, fitted to the same measurements); diagnostics a typical
time per job; a point's figures job (four figures) and the study's figures job (the map, the collapse figure
and the summary, a + b x points) as measured by benchmarks/figure_stage.py.  The costs scale with P only through the Monte Carlo's block sampler, which the
fits do not cover for P > 2: a plan of P > 2 geometries is a lower bound.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from kernel_eft.core.activations import get_activation
from kernel_eft.core.allocation import run_seconds
from kernel_eft.study import paths
from kernel_eft.study.grid import Point, Study
from kernel_eft.validation import parse_kin

STAGES = ("simulate", "theory_discrete", "theory_continuous", "diagnose", "figures_point", "figures")

# A closure without a cost model of its own (Closure.estimate_seconds): the dearest measured theory job
# (the exact continuum with tabulated moments, config/README.md)
UNMODELLED_SECONDS = 25.0
DIAGNOSE_SECONDS = 1.5
# benchmarks/figure_stage.py on config/paper.yaml's grid (2026-12-03, config/README.md): a point's four figures
# 5.8-7.8 CPU-s (8 points, mean 7.0); the study job 5.3 CPU-s over 8 points, 42-44 over 192 (a + b x points
# through 5.3 at 8 and 43 at 192)
POINT_FIGURES_SECONDS = 7.0
STUDY_FIGURES_SECONDS = (3.0, 0.2)


@dataclass(frozen=True)
class Job:
    stage: str
    output: str
    point: Point | None = None
    width: int | None = None
    closure: object = None  # a Closure (theory jobs)
    seconds: float = 0.0  # estimated CPU time on one core
    samples: int | None = None  # Monte Carlo jobs: networks


def mc_seconds(study: Study, point: Point, width: int) -> float:
    mc = study.monte_carlo
    return run_seconds(point.activation, width, point.depth, study.samples(point, width), point.P, mc["sampler"],
                       mc["control_variates"])


def theory_seconds(study: Study, closure, point: Point, depth: int | None) -> float:
    """The closure's own cost model (Closure.estimate_seconds_at) at the point's depth or continuous points."""
    times = depth + 1 if depth is not None else study.continuous_points(closure)
    seconds = closure.estimate_seconds_at(get_activation(point.activation), parse_kin(point.geometry.kin),
                                          sw2=point.sw2, sb2=point.sb2, time=point.time, depth=depth, times=times)
    return UNMODELLED_SECONDS if seconds is None else seconds


def jobs(study: Study) -> list[Job]:
    """Every job of the study, in the workflow's order, each with the file it writes."""
    listed, seen = [], set()

    def add(job):
        if job.output not in seen:  # the continuous theory is shared by the depths
            seen.add(job.output)
            listed.append(job)

    for point in study.points:
        w = dict(point.wildcards, study=study.name)
        for width in study.widths:
            add(Job("simulate", paths.MC_FILE.format(width=width, **w), point, width,
                    seconds=mc_seconds(study, point, width), samples=study.samples(point, width)))
        for closure in study.discrete_closures:
            add(Job("theory_discrete", paths.THEORY_DISCRETE_FILE.format(closure=closure.name, **w), point,
                    closure=closure, seconds=theory_seconds(study, closure, point, point.depth)))
        for closure in study.continuous_closures:
            add(Job("theory_continuous", paths.THEORY_CONTINUOUS_FILE.format(closure=closure.name, **w), point,
                    closure=closure, seconds=theory_seconds(study, closure, point, None)))
        add(Job("diagnose", paths.DIAG_FILE.format(**w), point, seconds=DIAGNOSE_SECONDS))
        add(Job("figures_point", paths.POINT_FIGURES_DIR.format(**w), point, seconds=POINT_FIGURES_SECONDS))
    fixed, per_point = STUDY_FIGURES_SECONDS
    add(Job("figures", paths.STUDY_FIGURES_DIR.format(study=study.name), None,
            seconds=fixed + per_point * len(study.points)))
    return listed


def plan(study: Study) -> dict:
    """{stage: (jobs, estimated CPU seconds)}."""
    totals = {stage: [0, 0.0] for stage in STAGES}
    for job in jobs(study):
        totals[job.stage][0] += 1
        totals[job.stage][1] += job.seconds
    return {stage: tuple(value) for stage, value in totals.items() if value[0]}


def incomplete_outputs(workdir: str | Path = ".") -> set[str]:
    """Outputs Snakemake marks as being written (.snakemake/incomplete/<urlsafe base64 of the path>, split
    into '@'-prefixed chunks when longer than a file name)."""
    root = Path(workdir, ".snakemake", "incomplete")
    found = set()
    if not root.is_dir():
        return found
    for marker in root.rglob("*"):
        if marker.is_file():
            encoded = "".join(part.lstrip("@") for part in marker.relative_to(root).parts)
            try:
                found.add(os.path.normpath(base64.urlsafe_b64decode(encoded).decode()))
            except (ValueError, UnicodeDecodeError):
                continue
    return found


def job_state(job: Job, workdir: Path, incomplete: set) -> str:
    path = workdir / job.output
    staging = list(path.parent.glob(path.name + ".*.tmp")) if path.parent.is_dir() else []
    if os.path.normpath(job.output) in incomplete or staging:
        return "running"
    if job.stage == "figures":
        done = path.is_dir() and all((workdir / paths.SUMMARY.format(study=job.output.split("/")[1], ext=ext))
                                     .exists() for ext in paths.SUMMARY_EXTENSIONS)
        return "done" if done else "missing"
    return "done" if path.exists() else "missing"


def status(study: Study, workdir: str | Path = ".") -> dict:
    """{stage: {"done": [...], "running": [...], "missing": [...]}} of every job's output."""
    workdir = Path(workdir)
    incomplete = incomplete_outputs(workdir)
    states = {stage: {"done": [], "running": [], "missing": []} for stage in STAGES}
    for job in jobs(study):
        states[job.stage][job_state(job, workdir, incomplete)].append(job)
    return {stage: value for stage, value in states.items() if any(value.values())}


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_text(study: Study, cores: int = 1, list_jobs: bool = False) -> str:
    """The plan as a table: jobs and estimated CPU time per stage, the total, and the ideal wall time on
    `cores` cores (CPU time / cores; the longest job bounds it from below)."""
    listed = jobs(study)
    lines = [f"study {study.name!r}: {len(study.points)} grid points, {len(listed)} jobs "
             "(CPU time estimated by the cost model of kernel_eft.study.jobs, fitted to config/README.md's "
             "measurements)", f"{'stage':<18} {'jobs':>6} {'CPU time':>10}"]
    total = 0.0
    for stage, (count, seconds) in plan(study).items():
        lines.append(f"{stage:<18} {count:>6} {_duration(seconds):>10}")
        total += seconds
    longest = max(job.seconds for job in listed)
    lines.append(f"{'total':<18} {len(listed):>6} {_duration(total):>10}")
    lines.append(f"on {cores} core{'s' if cores > 1 else ''}: at least {_duration(max(total / cores, longest))} "
                 f"(longest job {_duration(longest)})")
    if list_jobs:
        lines += [f"  {job.stage:<18} {_duration(job.seconds):>8}  {job.output}"
                  + (f"  ({job.samples} networks)" if job.samples is not None else "") for job in listed]
    return "\n".join(lines)


def status_text(study: Study, workdir: str | Path = ".", list_jobs: bool = False) -> str:
    """Done / running / missing jobs per stage, from the files on disk under `workdir`."""
    states = status(study, workdir)
    lines = [f"study {study.name!r} in {Path(workdir).resolve()}",
             f"{'stage':<18} {'done':>6} {'running':>8} {'missing':>8}"]
    totals = {"done": 0, "running": 0, "missing": 0}
    for stage, value in states.items():
        lines.append(f"{stage:<18} {len(value['done']):>6} {len(value['running']):>8} {len(value['missing']):>8}")
        for state in totals:
            totals[state] += len(value[state])
    lines.append(f"{'total':<18} {totals['done']:>6} {totals['running']:>8} {totals['missing']:>8}")
    remaining = sum(job.seconds for value in states.values() for state in ("running", "missing")
                    for job in value[state])
    lines.append(f"left: about {_duration(remaining)} of CPU time (cost model)")
    if list_jobs:
        lines += [f"  {state:<8} {job.output}" for value in states.values() for state in ("running", "missing")
                  for job in value[state]]
    return "\n".join(lines)
