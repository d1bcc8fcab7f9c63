"""Config validation, the grid, and the file-name scheme shared by all stages.

A grid point is (activation, depth, time, sw2, sb2, input geometry); Monte Carlo runs once per
point and width, theory once per point (it is width-independent) and closure, diagnostics once
per point with all its widths, figures once for the whole study.  File names spell the point's
parameters, so a finished point is recognised by its path and never recomputed when the grid
grows.
"""

import itertools
import os
import re
import sys
import zlib
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def validate_config(config):
    """Validate and fill defaults; on failure name the offending field in one line."""
    from jsonschema import ValidationError
    from jsonschema.exceptions import best_match

    try:
        validate(config, schema="../schemas/config.schema.yaml")
    except WorkflowError as exc:
        error = exc.__context__  # validate raises WorkflowError inside its except block
        if not isinstance(error, ValidationError):
            raise
        # For oneOf/anyOf the useful message is the best-matching branch's.
        error = best_match(error.context) if error.context else error
        field = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}"
            for part in error.absolute_path
        ).lstrip(".")
        raise WorkflowError(
            f"invalid config: {field or '(top level)'}: {error.message}"
        ) from None


validate_config(config)

GRID = config["grid"]
MC = config["monte_carlo"]
THEORY = config["theory"]
# The exact O(1/n) theory exists only as continuous-depth ODEs (kernel-eft theory rejects
# --depth for it); the G-only closure has both forms.
CONTINUOUS_ONLY_CLOSURES = {"exact"}
DISCRETE_CLOSURES = [c for c in THEORY["closures"] if c not in CONTINUOUS_ONLY_CLOSURES]
CONTINUOUS_CLOSURES = [
    c
    for c in THEORY["closures"]
    if THEORY["continuous"] or c in CONTINUOUS_ONLY_CLOSURES
]
CONDA_ENV = "../../envs/kernel-eft.yaml"


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


# Rules run the kernel_eft package of this checkout, installed or not (the conda
# environment in envs/ provides only its dependencies).
shell.prefix(
    f"set -euo pipefail; export PYTHONPATH='{Path(workflow.basedir) / 'src'}'"
    "${{PYTHONPATH:+:$PYTHONPATH}}; "
)


def fmt(value):
    """Short, stable spelling of a number in a file name: 4.0 -> 4, 0.60 -> 0.6."""
    return f"{float(value):g}"


def kin_of(entry):
    """The --kin string of an input-geometry entry."""
    if "kin" in entry:
        return entry["kin"]
    q1, q2 = entry.get("norms", [1.0, 1.0])
    off = entry["rho"] * (q1 * q2) ** 0.5
    return f"{q1!r},{off!r};{off!r},{q2!r}"


def geometry_tag(entry):
    """The input-geometry part of a file name: the label, else rho0.6 (and _q1-2 for norms)."""
    if "label" in entry:
        return entry["label"]
    tag = f"rho{fmt(entry['rho'])}"
    norms = entry.get("norms", [1.0, 1.0])
    if [float(q) for q in norms] != [1.0, 1.0]:
        tag += f"_q{fmt(norms[0])}-{fmt(norms[1])}"
    return tag


def check_geometry(index, kin):
    """Reject a bad input kernel now, not in a job: the package's own --kin check."""
    try:
        sys.path.insert(0, str(Path(workflow.basedir) / "src"))
        from kernel_eft.validation import InputError, parse_kin
    except ImportError:  # snakemake without numpy: the CLI checks --kin in the job
        return
    finally:
        sys.path.pop(0)
    try:
        parse_kin(kin, f"grid.inputs[{index}]")
    except InputError as exc:
        raise WorkflowError(f"invalid config: {exc}") from None


GEOMETRIES = {}
for _index, _entry in enumerate(GRID["inputs"]):
    _tag = geometry_tag(_entry)
    if _tag in GEOMETRIES:
        raise WorkflowError(
            f"invalid config: grid.inputs[{_index}]: file-name tag {_tag!r} is used twice"
        )
    GEOMETRIES[_tag] = kin_of(_entry)
    check_geometry(_index, GEOMETRIES[_tag])

# Wildcards match only what the scheme produces, so no rule can claim a foreign file.
NUMBER = r"[0-9]+(\.[0-9]+)?(e[-+][0-9]+)?"


wildcard_constraints:
    activation="|".join(GRID["activation"]),
    width=r"[0-9]+",
    depth=r"[0-9]+",
    time=NUMBER,
    sw2=NUMBER,
    sb2=NUMBER,
    geom="|".join(map(re.escape, GEOMETRIES)),
    closure="|".join(THEORY["closures"]),


# File names of the grid; the rules spell the same templates out.
MC_FILE = "results/mc/{activation}/w{width}_L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}.nc"
THEORY_DISCRETE_FILE = (
    "results/theory/{activation}/{closure}_L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}.nc"
)
THEORY_CONTINUOUS_FILE = (
    "results/theory/{activation}/{closure}_continuous_T{time}_sw{sw2}_sb{sb2}_{geom}.nc"
)
DIAG_FILE = (
    "results/diagnostics/{activation}/L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}.nc"
)


def grid_points():
    """Every grid point as a dict of wildcard values (strings, as in file names)."""
    for act, depth, time, sw2, sb2, geom in itertools.product(
        GRID["activation"],
        GRID["depth"],
        GRID["time"],
        GRID["sw2"],
        GRID["sb2"],
        GEOMETRIES,
    ):
        yield dict(
            activation=act,
            depth=str(depth),
            time=fmt(time),
            sw2=fmt(sw2),
            sb2=fmt(sb2),
            geom=geom,
        )


def all_diagnostics():
    return [DIAG_FILE.format(**point) for point in grid_points()]


def all_results():
    """Every file of the study. All are targets, so deleting any one of them (a Monte Carlo
    file, say) reruns exactly that job and the jobs downstream of it."""
    files = []
    for point in grid_points():
        files += [MC_FILE.format(width=width, **point) for width in GRID["width"]]
        files += theory_files_of_point(point)
        files.append(DIAG_FILE.format(**point))
    return list(dict.fromkeys(files))  # continuous theory is shared by depths


def point_of(wildcards):
    """Wildcards (or a grid-point dict) as a plain dict."""
    return dict(wildcards.items())


def mc_files_of_point(wildcards):
    return [
        MC_FILE.format(width=width, **point_of(wildcards)) for width in GRID["width"]
    ]


def theory_files_of_point(wildcards):
    point = point_of(wildcards)
    discrete = [
        THEORY_DISCRETE_FILE.format(closure=closure, **point)
        for closure in DISCRETE_CLOSURES
    ]
    continuous = [
        THEORY_CONTINUOUS_FILE.format(closure=closure, **point)
        for closure in CONTINUOUS_CLOSURES
    ]
    return discrete + continuous


def point_seed(wildcards):
    """Seed of one Monte Carlo job: the base seed and a hash of the job's file name.

    Distinct points and widths get independent streams (1/n fits across widths assume
    independent errors), and a point's seed does not move when the grid changes.
    """
    name = MC_FILE.format(**point_of(wildcards))
    return MC["seed"] * 2**32 + zlib.crc32(name.encode())


def network_args(wildcards):
    """CLI arguments shared by simulate and theory for the point named by the wildcards."""
    return (
        f"--activation {wildcards.activation} --time {wildcards.time} "
        f"--sw2 {wildcards.sw2} --sb2 {wildcards.sb2} "
        f"--kin '{GEOMETRIES[wildcards.geom]}'"
    )
