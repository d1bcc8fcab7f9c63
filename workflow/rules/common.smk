"""What Snakemake needs of the study: its validated config, its points and paths, as input functions.

The study itself (config validation with the field named, the grid and its points, each point's tag, the
seeds, the path scheme, the job list) is kernel_eft.study, tested Python; this file only turns it into
wildcards, path templates and rule parameters. A study writes everything under results/<study>/ and
logs/<study>/; a finished point is recognised by its path, never recomputed when the grid grows.
"""

import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

try:
    import kernel_eft  # the package installed in snakemake's environment (make venv)
except ImportError:  # else the package of this checkout
    sys.path.append(str(Path(workflow.basedir) / "src"))
    import kernel_eft
from kernel_eft.study import paths
from kernel_eft.study.config import ConfigError
from kernel_eft.study.grid import Study

DEFAULT_CONFIG = Path(workflow.basedir, "config", "config.yaml")


def load_study():
    """The study of `config` (the last --configfile names it), or one line naming the bad field."""
    study_files = workflow.overwrite_configfiles
    try:
        return Study.from_config(
            dict(config), study_files[-1] if study_files else None, DEFAULT_CONFIG
        )
    except ConfigError as exc:
        raise WorkflowError(str(exc)) from None


STUDY_OF = load_study()
STUDY = STUDY_OF.name
config.update(
    STUDY_OF.config, study=STUDY
)  # the defaults filled, for the rules and the report
MC = STUDY_OF.monte_carlo
POINTS = {point.tag: point for point in STUDY_OF.points}
CLOSURES = {closure.name: closure for closure in STUDY_OF.closures}
# every closure at the Monte Carlo's own depth L (what the diagnostics compare with), in continuous depth
# where the config asks for it; each in the depth forms it declares
DISCRETE_CLOSURES = [closure.name for closure in STUDY_OF.discrete_closures]
CONTINUOUS_CLOSURES = [closure.name for closure in STUDY_OF.continuous_closures]
CONDA_ENV = "../../envs/kernel-eft.yaml"

# Wildcards match only what the scheme produces, so no rule can claim a foreign file.
NUMBER = r"[0-9]+(\.[0-9]+)?(e[-+][0-9]+)?"


wildcard_constraints:
    activation="|".join(STUDY_OF.grid["activation"]),
    width=r"[0-9]+",
    depth=r"[0-9]+",
    time=NUMBER,
    sw2=NUMBER,
    sb2=NUMBER,
    geom="|".join(map(re.escape, STUDY_OF.geometries)),
    closure="|".join(CLOSURES),
    study=re.escape(STUDY),


POINT_TAG = paths.POINT_TAG
MC_NAME, DIAG_NAME = paths.MC_NAME, paths.DIAG_NAME
THEORY_DISCRETE_NAME = paths.THEORY_DISCRETE_NAME
THEORY_CONTINUOUS_NAME = paths.THEORY_CONTINUOUS_NAME
MC_FILE, DIAG_FILE = paths.MC_FILE, paths.DIAG_FILE
THEORY_DISCRETE_FILE = paths.THEORY_DISCRETE_FILE
THEORY_CONTINUOUS_FILE = paths.THEORY_CONTINUOUS_FILE
result, log_of, benchmark_of = paths.result, paths.log_of, paths.benchmark_of
SUMMARY_TEMPLATE = paths.SUMMARY
POINT_FIGURES_DIR = paths.POINT_FIGURES_DIR
POINT_FIGURES_LOG, POINT_FIGURES_BENCHMARK = (
    paths.POINT_FIGURES_LOG,
    paths.POINT_FIGURES_BENCHMARK,
)
STUDY_FIGURES_DIR_TEMPLATE = paths.STUDY_FIGURES_DIR
FIGURES_LOG, FIGURES_BENCHMARK = paths.FIGURES_LOG, paths.FIGURES_BENCHMARK
STUDY_FIGURES_DIR = STUDY_FIGURES_DIR_TEMPLATE.format(study=STUDY)
SUMMARY_FILES = [
    SUMMARY_TEMPLATE.format(study=STUDY, ext=ext) for ext in paths.SUMMARY_EXTENSIONS
]


def refuse_workstation_rank_cap():
    """profiles/default (used by snakemake unless --workflow-profile names another) caps the
    MPI ranks running at once at the local core count. Under a cluster executor that cap would
    run one Monte Carlo job at a time with shrunken ranks: stop, the cluster profile replaces it.
    (Called at start-up: the executor is not known while the Snakefile is parsed.)"""
    rank_cap = workflow.global_resources.get("tasks")
    if (
        not workflow.local_exec
        and rank_cap is not None
        and rank_cap.value == len(os.sched_getaffinity(0))
    ):
        raise WorkflowError(
            f"the workstation profile (profiles/default) caps the MPI ranks at the {rank_cap.value} "
            "local cores; on a cluster use --workflow-profile profiles/slurm instead of "
            "--profile profiles/slurm"
        )


# Rules run the kernel_eft package installed in their environment: the Makefile's .venv (pip
# install -e .) or the conda environment of envs/kernel-eft.yaml (which installs this checkout).
shell.prefix("set -euo pipefail; ")


def mpi_ranks(wildcards, threads, resources):
    """Ranks of a Monte Carlo job. srun starts the `tasks` of the job's SLURM allocation.
    mpiexec starts them on this machine: no more than the job's threads, which Snakemake caps at
    --cores (--cores 1 never starts 2 ranks), nor than its `tasks`, which the workstation profile
    caps at the machine's cores (--cores 8 on 2 cores starts 2)."""
    if str(resources.mpi).startswith("srun"):
        return resources.tasks
    return min(threads, resources.tasks)


def point_of(wildcards):
    """The grid point named by the wildcards."""
    return POINTS[POINT_TAG.format(**dict(wildcards.items()))]


def all_diagnostics(wildcards=None):
    return [
        DIAG_FILE.format(study=STUDY, **point.wildcards) for point in POINTS.values()
    ]


def mc_files_of_point(wildcards):
    point = point_of(wildcards)
    return [
        MC_FILE.format(study=STUDY, width=width, **point.wildcards)
        for width in STUDY_OF.widths
    ]


def theory_files_of_point(wildcards):
    point = point_of(wildcards)
    discrete = [
        THEORY_DISCRETE_FILE.format(study=STUDY, closure=name, **point.wildcards)
        for name in DISCRETE_CLOSURES
    ]
    continuous = [
        THEORY_CONTINUOUS_FILE.format(study=STUDY, closure=name, **point.wildcards)
        for name in CONTINUOUS_CLOSURES
    ]
    return discrete + continuous


def all_results():
    """Every file of the study (kernel_eft.study.jobs), all targets, so deleting any one of them (a
    Monte Carlo file, say) reruns exactly that job and the jobs downstream of it."""
    from kernel_eft.study.jobs import jobs

    return [
        job.output for job in jobs(STUDY_OF) if job.stage != "figures"
    ]  # + STUDY_FIGURES_DIR


def point_tag(wildcards):
    return point_of(wildcards).tag


def continuous_points(wildcards):
    """Output times of a continuous-depth theory (the closure's own key where it declares one)."""
    return STUDY_OF.continuous_points(CLOSURES[wildcards.closure])


def point_seed(wildcards):
    """Seed of one Monte Carlo job (kernel_eft.study.grid.Study.seed)."""
    return STUDY_OF.seed(point_of(wildcards), int(wildcards.width))


def mc_samples(wildcards):
    """Networks of one Monte Carlo job (kernel_eft.study.grid.Study.samples: monte_carlo.samples, or the job's
    share of monte_carlo.budget_cpu_seconds)."""
    return STUDY_OF.samples(point_of(wildcards), int(wildcards.width))


def network_args(wildcards):
    """CLI arguments shared by simulate and theory for the point named by the wildcards."""
    kin = STUDY_OF.geometries[wildcards.geom].kin
    return (
        f"--activation {wildcards.activation} --time {wildcards.time} "
        f"--sw2 {wildcards.sw2} --sb2 {wildcards.sb2} --kin '{kin}'"
    )


def theory_args(wildcards):
    """network_args and the closure's own options set in the config (theory.<closure>)."""
    return network_args(wildcards) + STUDY_OF.closure_flags(CLOSURES[wildcards.closure])


def print_summary():
    """At the end of a run: the study's summary table and where the report goes."""
    summary = SUMMARY_FILES[0]
    if not os.path.exists(summary):
        return
    print(f"\nStudy {STUDY!r}, {summary}:", flush=True)
    try:
        print(kernel_eft.summary(summary), flush=True)
    except Exception:  # the table is a courtesy; the run itself succeeded
        print(f"(could not print the table; see {summary})")
    study_files = workflow.overwrite_configfiles
    print(
        f"Report: snakemake --report results/{STUDY}/report.html"
        + (f" --configfile {study_files[-1]}" if study_files else "")
    )
