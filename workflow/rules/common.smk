"""Config validation, the study, the grid, and the file-name scheme shared by all stages.

A study (one config file) writes everything under results/<study>/ and logs/<study>/, so studies
sit side by side and never overwrite each other. A grid point is (activation, depth, time, sw2,
sb2, input geometry); Monte Carlo runs once per point and width, theory once per point (it is
width-independent) and closure, diagnostics once per point with all its widths, figures once for
the study. Every point has a tag spelling all its parameters (the whole K_in included); file
names and figure names use it, so a finished point is recognised by its path, never recomputed
when the grid grows, and two points can never share a file.
"""

import itertools
import os
import re
import sys
import tempfile
import zlib
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def import_package():
    """The kernel_eft package, for its registries and checks: the rules run the package installed in their
    environment (make venv, or envs/kernel-eft.yaml); snakemake's own environment may lack it, and then the
    package of this checkout is used to check the config. None if numpy is missing there too (the jobs
    then check their input themselves)."""
    try:
        import kernel_eft  # noqa: F401
    except ImportError:
        sys.path.append(str(Path(workflow.basedir) / "src"))
    try:
        import kernel_eft.api

        return kernel_eft
    except ImportError:
        return None


KERNEL_EFT = import_package()


def schema_with_registries():
    """The config schema with the activation and closure lists of the package's registries (one place
    to add either: kernel_eft.core.activations, kernel_eft.theory), written to a temporary file.
    """
    schema = yaml.safe_load(
        Path(workflow.basedir, "workflow", "schemas", "config.schema.yaml").read_text()
    )
    if KERNEL_EFT is not None:
        grid, theory = schema["properties"]["grid"], schema["properties"]["theory"]
        grid["properties"]["activation"]["items"][
            "enum"
        ] = KERNEL_EFT.activation_names()
        theory["properties"]["closures"]["items"]["enum"] = KERNEL_EFT.closure_names()
    with tempfile.NamedTemporaryFile(
        "w", suffix=".schema.yaml", delete=False
    ) as handle:
        yaml.safe_dump(schema, handle)
    return handle.name


def config_error(field, message):
    return WorkflowError(f"invalid config: {field}: {message}")


def validate_config(config):
    """Validate and fill defaults; on failure name the offending field in one line."""
    from jsonschema import ValidationError
    from jsonschema.exceptions import best_match

    schema = schema_with_registries()
    try:
        validate(config, schema=schema)
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
        raise config_error(field or "(top level)", error.message) from None
    finally:
        os.unlink(schema)
    # What a JSON schema cannot say: relations between fields. Checked here, not in a job.
    mc, grid = config["monte_carlo"], config["grid"]
    if mc["samples"] < mc["batches"]:
        raise config_error(
            "monte_carlo.samples",
            f"{mc['samples']} is less than monte_carlo.batches ({mc['batches']}); "
            "every seed batch needs at least one sample",
        )
    shallowest = min(grid["depth"])
    if mc["record_every"] > shallowest:
        raise config_error(
            "monte_carlo.record_every",
            f"{mc['record_every']} exceeds the depth {shallowest} in grid.depth "
            "(layers 0 and L are always recorded)",
        )


validate_config(config)

GRID = config["grid"]
MC = config["monte_carlo"]
THEORY = config["theory"]
if (
    "exact" in THEORY["closures"]
    and THEORY["continuous"]
    and (THEORY["exact_points"] - 1) % 4
):
    raise WorkflowError(
        f"invalid config: theory.exact_points: {THEORY['exact_points']} is not 4k + 1 "
        "(the exact continuum is Richardson-extrapolated from points, (points+1)/2, (points+3)/4)"
    )
# Every closure is solved at the Monte Carlo's own depth L (what the diagnostics compare with);
# the continuous-depth limit only where the config asks for it.
DISCRETE_CLOSURES = list(THEORY["closures"])
CONTINUOUS_CLOSURES = list(THEORY["closures"]) if THEORY["continuous"] else []
CONDA_ENV = "../../envs/kernel-eft.yaml"
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def study_name():
    """The `study` key; else `default` for config/config.yaml (read when no --configfile is
    given); else the name of the last --configfile without .yaml. (config.yaml has no study key,
    so a copy of it names its own study.)"""
    if "study" in config:
        return config["study"]
    default = Path(workflow.basedir, "config", "config.yaml").resolve()
    study_files = workflow.overwrite_configfiles
    if not study_files or Path(study_files[-1]).resolve() == default:
        return "default"
    name = Path(study_files[-1]).stem
    if not STUDY_NAME.fullmatch(name):
        raise config_error(
            "study",
            f"the config file name {name!r} cannot name the study's folder; "
            "set study: NAME (letters, digits, . _ + -)",
        )
    return name


STUDY = study_name()
config["study"] = STUDY  # for the report


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


def fmt(value):
    """A number in a file name: the shortest spelling that reads back as the same float (4.0 ->
    4, 0.6 -> 0.6, 1e-05), so distinct values never share a name (kernel_eft.diagnose.tags
    spells the points' tags the same way)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def kin_of(entry):
    """The --kin string of an input-geometry entry, canonical: every entry spelled by repr."""
    if "kin" in entry:
        rows = entry["kin"].strip().split(";")
        return ";".join(
            ",".join(repr(float(x)) for x in row.split(",")) for row in rows
        )
    q1, q2 = entry.get("norms", [1.0, 1.0])
    off = entry["rho"] * (q1 * q2) ** 0.5
    return f"{float(q1)!r},{off!r};{off!r},{float(q2)!r}"


def kin_hash(kin):
    """Eight hex digits of the whole K_in (kernel_eft.diagnose.tags.geometry_tag hashes the same string)."""
    return f"{zlib.crc32(kin.encode()):08x}"


def geometry_tag(entry, kin):
    """The input-geometry part of a tag: rho0.6 (two unit-norm inputs), rho0.6_q1-2 (norms),
    P3-<hash of K_in> (a kin matrix), or <label>-<hash of K_in>: a label names a geometry
    but never hides its values, so editing a kin under the same label makes new files.
    """
    if "label" in entry:
        return f"{entry['label']}-{kin_hash(kin)}"
    if "kin" in entry:
        return f"P{kin.count(';') + 1}-{kin_hash(kin)}"
    tag = f"rho{fmt(entry['rho'])}"
    norms = entry.get("norms", [1.0, 1.0])
    if [float(q) for q in norms] != [1.0, 1.0]:
        tag += f"_q{fmt(norms[0])}-{fmt(norms[1])}"
    return tag


def check_geometry(index, kin):
    """Reject a bad input kernel now, not in a job: the package's own --kin check."""
    if KERNEL_EFT is None:  # snakemake without numpy: the CLI checks --kin in the job
        return
    from kernel_eft.validation import InputError, parse_kin

    try:
        parse_kin(kin, f"grid.inputs[{index}]")
    except InputError as exc:
        raise WorkflowError(f"invalid config: {exc}") from None


def geometries():
    """{tag: --kin string} of grid.inputs; two entries of one input kernel are an error (they
    would be one grid point under two names)."""
    tags, first_of_kin = {}, {}
    for index, entry in enumerate(GRID["inputs"]):
        try:
            kin = kin_of(entry)
        except ValueError as exc:
            raise config_error(f"grid.inputs[{index}].kin", str(exc)) from None
        check_geometry(index, kin)
        if kin in first_of_kin:
            raise config_error(
                f"grid.inputs[{index}]",
                f"the same input kernel as grid.inputs[{first_of_kin[kin]}] ({kin})",
            )
        first_of_kin[kin] = index
        tag = geometry_tag(entry, kin)
        if tag in tags:
            raise config_error(
                f"grid.inputs[{index}]", f"file-name tag {tag!r} is used twice"
            )
        tags[tag] = kin
    return tags


GEOMETRIES = geometries()

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
    study=re.escape(STUDY),


# A grid point's tag, and every path of the study, defined once: the rules take their outputs,
# logs and benchmarks from these templates (the study is a wildcard that matches this study only).
POINT_TAG = "{activation}_L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}"
MC_NAME = "mc/{activation}/w{width}_L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}"
THEORY_DISCRETE_NAME = (
    "theory/{activation}/{closure}_L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}"
)
THEORY_CONTINUOUS_NAME = (
    "theory/{activation}/{closure}_continuous_T{time}_sw{sw2}_sb{sb2}_{geom}"
)
DIAG_NAME = "diagnostics/{activation}/L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}"


def result(name):
    return f"results/{{study}}/{name}.nc"


def log_of(name):
    return f"logs/{{study}}/{name}.log"


def benchmark_of(name):
    return f"results/{{study}}/benchmarks/{name}.tsv"


MC_FILE = result(MC_NAME)
THEORY_DISCRETE_FILE = result(THEORY_DISCRETE_NAME)
THEORY_CONTINUOUS_FILE = result(THEORY_CONTINUOUS_NAME)
DIAG_FILE = result(DIAG_NAME)
FIGURES_DIR_TEMPLATE = "results/{study}/figures"
SUMMARY_TEMPLATE = "results/{study}/summary.{ext}"
FIGURES_LOG = "logs/{study}/figures.log"
FIGURES_BENCHMARK = "results/{study}/benchmarks/figures.tsv"
FIGURES_DIR = FIGURES_DIR_TEMPLATE.format(study=STUDY)
SUMMARY_FILES = [
    SUMMARY_TEMPLATE.format(study=STUDY, ext=ext) for ext in ("csv", "nc", "html")
]
# A Monte Carlo job's seed hashes this study-independent name: one point has one seed in every
# study, and the seeds of the default study did not move when results went into study folders.
SEED_NAME = (
    "results/mc/{activation}/w{width}_L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}.nc"
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
            study=STUDY,
            activation=act,
            depth=str(depth),
            time=fmt(time),
            sw2=fmt(sw2),
            sb2=fmt(sb2),
            geom=geom,
        )


def check_point_tags():
    """Two grid points never share a tag, hence never a file (fmt is injective and the grid
    axes hold distinct values; this is the safety net that says so if that ever changes).
    """
    seen = {}
    for point in grid_points():
        tag = POINT_TAG.format(**point)
        if tag in seen:
            raise config_error(
                "grid", f"grid points {seen[tag]} and {point} share the tag {tag}"
            )
        seen[tag] = point


check_point_tags()


def all_diagnostics(wildcards=None):
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


def point_tag(wildcards):
    return POINT_TAG.format(**point_of(wildcards))


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


def continuous_points(wildcards):
    """Output times of a continuous-depth theory: theory.exact_points for the exact closure (4k + 1:
    it is Richardson-extrapolated), theory.points for the others."""
    return THEORY["exact_points" if wildcards.closure == "exact" else "points"]


def point_seed(wildcards):
    """Seed of one Monte Carlo job: the base seed and a hash of the job's study-independent
    name. Distinct points and widths get independent streams (1/n fits across widths assume
    independent errors), and a point's seed does not move when the grid changes."""
    name = SEED_NAME.format(**point_of(wildcards))
    return MC["seed"] * 2**32 + zlib.crc32(name.encode())


def network_args(wildcards):
    """CLI arguments shared by simulate and theory for the point named by the wildcards."""
    return (
        f"--activation {wildcards.activation} --time {wildcards.time} "
        f"--sw2 {wildcards.sw2} --sb2 {wildcards.sb2} "
        f"--kin '{GEOMETRIES[wildcards.geom]}'"
    )


def print_summary():
    """At the end of a run: the study's summary table and where the report goes."""
    summary = SUMMARY_FILES[0]
    if not os.path.exists(summary):
        return
    print(f"\nStudy {STUDY!r}, {summary}:", flush=True)
    try:
        print(KERNEL_EFT.summary(summary), flush=True)
    except Exception:  # the table is a courtesy; the run itself succeeded
        print(f"(could not print the table; see {summary})")
    study_files = workflow.overwrite_configfiles
    print(
        f"Report: snakemake --report results/{STUDY}/report.html"
        + (f" --configfile {study_files[-1]}" if study_files else "")
    )
