"""Command line: kernel-eft simulate | merge | theory | diagnose | figures | summary | study plan | study status.

This module only parses arguments and calls kernel_eft.api (which validates its input before it opens an
output file).  Bad input exits with code 2 and one line naming the argument; a numerical failure (overflow,
NaN) exits with 3 naming the variable, layer and t.  The activation and closure choices come from their
registries (kernel_eft.core.activations, kernel_eft.theory).
"""

from __future__ import annotations

import argparse
import os
import re
import sys

# BLAS threads would oversubscribe MPI ranks and can change summation order between runs.  Only when
# kernel-eft is the program (numpy not loaded yet): a library import must not change the environment
# that the caller's later subprocesses inherit.
if "numpy" not in sys.modules:
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures are files: no display, no GUI toolkit

from kernel_eft.validation import CONTROL_VARIATES, InputError, check_float, check_int, parse_kin  # noqa: E402
from kernel_eft.version import __version__  # noqa: E402

EXIT_INPUT = 2  # bad input: one line naming the argument, nothing written
EXIT_NUMERICS = 3  # a result overflowed float64: one line naming the variable, layer and t, nothing written

# API keyword -> the flag that sets it (the API names fields by keyword; the CLI reports its own flags)
_FLAG_OF = {"theories": "--theory", "inputs": "inputs", "summary": "summary"}


def _command(name: str, fields: tuple):
    """The subcommand `name` of this module; InputErrors that name one of its API keywords `fields` are
    reported with the flag instead."""

    def run(args) -> int:
        try:
            return globals()[name](args)
        except InputError as exc:
            if exc.field in fields:
                raise InputError(_FLAG_OF.get(exc.field, "--" + exc.field.replace("_", "-")), exc.message) from None
            raise

    return run


def _argtype(check, field, **kw):
    """Wrap a validation check as an argparse type that reports the argument name."""

    def convert(text):
        try:
            return check(text, field, **kw)
        except InputError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    convert.__name__ = field.lstrip("-")
    return convert


def _activation_type(text):
    from kernel_eft.core.activations import activation_names

    if text not in activation_names():
        raise argparse.ArgumentTypeError(f"unknown activation {text!r}; choose one of {', '.join(activation_names())}")
    return text


def _activation_help() -> str:
    from kernel_eft.core.activations import activation_names

    return "phi: " + ", ".join(activation_names())


def add_network_arguments(p: argparse.ArgumentParser, *, depth_required: bool) -> None:
    """Arguments that define a grid point, shared by simulate and theory."""
    p.add_argument("--activation", required=True, type=_activation_type, help=_activation_help())
    p.add_argument("--depth", required=depth_required, default=None, type=_argtype(check_int, "--depth", minimum=1),
                   help="number of residual blocks L (dt = T/L)")
    p.add_argument("--time", required=True, type=_argtype(check_float, "--time", positive=True),
                   help="depth time T > 0")
    p.add_argument("--sw2", default=1.0, type=_argtype(check_float, "--sw2", nonnegative=True),
                   help="weight variance sigma_w^2 (default 1)")
    p.add_argument("--sb2", default=0.0, type=_argtype(check_float, "--sb2", nonnegative=True),
                   help="bias variance sigma_b^2 (default 0)")
    p.add_argument("--kin", required=True, type=lambda s: _argtype(lambda t, f: parse_kin(t, f), "--kin")(s),
                   help='input kernel K_in: rows separated by ";", entries by ","; "1,0.6;0.6,1" or "1.5"')


# ---------------------------------------------------------------------------------------------
# simulate (Monte Carlo)
# ---------------------------------------------------------------------------------------------

SIMULATE_FIELDS = ("activation", "width", "depth", "time", "sw2", "sb2", "kin", "samples", "seed", "sampler",
                   "record_every", "batches", "control_variates", "expect_ranks", "out")


def add_simulate_parser(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="Monte Carlo of finite-width ResNets: per-layer kernel moments to netCDF",
        description=(
            "Simulate h^{l+1} = h^l + sqrt(T/L) (W^l phi(h^l) + b^l) at width n for many seeds and record, at every "
            "recorded layer, the mean empirical kernel G, the sigma-kernel S, V4 = n Cov(G), n Cov(G,S), n Cov(S,S) "
            "and K1 = n (mean G - K0_discrete), each with a jackknife standard error over seed batches. "
            "Runs under MPI: mpiexec -n N python -m mpi4py -m kernel_eft simulate ...; results are bitwise "
            "identical for any rank count. Before computing it states its estimated peak memory and CPU time, "
            "and exits 2 if the memory or the output's disk space is not there. SIGINT/SIGTERM: exit 130/143, "
            "nothing written."
        ),
    )
    add_network_arguments(p, depth_required=True)
    p.add_argument("--width", required=True, type=_argtype(check_int, "--width", minimum=1), help="width n")
    p.add_argument("--samples", required=True, type=_argtype(check_int, "--samples", minimum=2),
                   help="number of independent networks (seeds), >= 2")
    p.add_argument("--seed", default=0, type=_argtype(check_int, "--seed", minimum=0),
                   help="run seed; RNG streams are keyed by (seed, batch index)")
    p.add_argument("--sampler", default="block", choices=["block", "weights"],
                   help="block: exact conditional Gaussian law of the increments, O(n P^2) per layer (default); "
                        "weights: explicit n x n weight matrices, O(n^2 P), a reference")
    p.add_argument("--record-every", default=1, type=_argtype(check_int, "--record-every", minimum=1),
                   help="record every k-th layer (layer 0 and L are always recorded)")
    p.add_argument("--batches", default=32, type=_argtype(check_int, "--batches", minimum=2),
                   help="seed batches: units of MPI work and of the jackknife error (default 32)")
    p.add_argument("--control-variates", default="none", choices=CONTROL_VARIATES,
                   help="none: plain estimators (default); martingale: K1, its source and V4 adjusted by exactly "
                        "zero-mean controls built from the network's own noise (docs/control_variates.md): same "
                        "random numbers, smaller errors, a larger file")
    p.add_argument("--keep-samples", action="store_true",
                   help="also store per-seed G and S at the recorded layers (large)")
    p.add_argument("--expect-ranks", default=None, type=_argtype(check_int, "--expect-ranks", minimum=1),
                   help="fail unless the MPI communicator has exactly this many ranks (guards srun without PMI)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    p.add_argument("--out", required=True, help="output netCDF path (written atomically by rank 0)")
    p.set_defaults(func=_command("simulate_command", SIMULATE_FIELDS))


def add_merge_parser(sub) -> None:
    p = sub.add_parser(
        "merge",
        help="pool Monte Carlo files of one grid point run with different seeds",
        description="Concatenate the seed batches of several simulate outputs (same parameters, distinct seeds) "
                    "and recompute every estimate and its jackknife error from the pooled batches.",
    )
    p.add_argument("inputs", nargs="+", help="Monte Carlo netCDF files from kernel-eft simulate")
    p.add_argument("--out", required=True, help="merged netCDF path")
    p.set_defaults(func=_command("merge_command", ("inputs", "out")))


# ---------------------------------------------------------------------------------------------
# theory (G-only and exact closures)
# ---------------------------------------------------------------------------------------------


THEORY_FIELDS = ("activation", "kin", "time", "sw2", "sb2", "closure", "depth", "points", "out")


def closure_options() -> dict:
    """{option name: [(closure, Option), ...]} of every registered closure's options that the CLI can spell (one
    flag per name; the closures that share a name share its flag)."""
    from kernel_eft.theory.registry import CLOSURES

    found = {}
    for closure in CLOSURES.values():
        for option in closure.options:
            if option.type is not None:
                found.setdefault(option.name, []).append((closure, option))
    return found


def _option_type(option):
    def convert(text):
        try:
            return option.check(text if option.choices or option.type is str else option.type(text), option.flag)
        except InputError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None
        except ValueError:  # int("x"), float("x")
            raise argparse.ArgumentTypeError(f"expected {option.type.__name__}, got {text!r}") from None
    convert.__name__ = option.flag.lstrip("-")
    return convert


def add_theory_parser(sub) -> None:
    from kernel_eft.theory.registry import CLOSURES, reference_closure

    p = sub.add_parser(
        "theory",
        help="EFT solvers (" + "; ".join(c.long_label for c in CLOSURES.values()) + ") to netCDF",
        description=(
            "Solve the collective-kernel EFT for the mean kernel K0, the kernel covariance V4 = n Cov(G, G) and the "
            "1/n mean correction K1, and write them with the closure's parts (the terms of its equations) to netCDF.  Without --depth: the continuous-depth ODEs (scipy solve_ivp) "
            "at --points uniform times from 0 to T.  With --depth L: the discrete-layer recursion including the dt^2 "
            "terms, output at every layer (compare Monte Carlo at depth L with this one).  The closures: "
            + "; ".join(f"{c.name}: {c.description}" for c in CLOSURES.values()) + "."
        ),
    )
    add_network_arguments(p, depth_required=False)
    default = reference_closure().name
    p.add_argument("--closure", default=default, choices=list(CLOSURES),
                   help="; ".join(f"{name}: {closure.description}" for name, closure in CLOSURES.items())
                   + f" (default {default})")
    p.add_argument("--points", default=None, type=_argtype(check_int, "--points", minimum=2),
                   help="continuous solver: number of uniform output times from 0 to T inclusive (default: "
                        + ", ".join(f"{c.default_points} for {name}" for name, c in CLOSURES.items()) + ")")
    for name, declared in closure_options().items():  # every closure's own options (Closure.options)
        option = declared[0][1]
        p.add_argument(option.flag, dest=f"option_{name}", metavar=name.upper(), default=None, type=_option_type(option),
                       choices=option.choices or None,
                       help="; ".join(f"{closure.name}: {o.help} (default {o.default})" for closure, o in declared))
    p.add_argument("--out", required=True, help="output netCDF path (written atomically)")
    p.set_defaults(func=_command("theory_command", THEORY_FIELDS + tuple(closure_options())))


# ---------------------------------------------------------------------------------------------
# diagnose and figures
# ---------------------------------------------------------------------------------------------


def add_diagnose_parser(sub) -> None:
    from kernel_eft.theory.registry import CLOSURES

    p = sub.add_parser(
        "diagnose",
        help="compare Monte Carlo with theory at one grid point: residuals, validity window, 1/n fits",
        description=(
            "Diagnostics of one grid point (same activation, depth L, T, sw2, sb2, K_in; several widths): "
            "relative error of K0; V4 against each theory with the validity window t*; the V4 equation residual "
            "R = dV4_MC/dt - RHS_EFT(V4_MC) split into transport and source parts and accumulated over t; K1 "
            "per width and from a weighted 1/n fit; the measured K1 source n sw2 (E[S] - F(E[G])) against each "
            "closure's prediction of it. Errors come "
            "from the delete-one-batch jackknife over the batch-resolved raw moments of the Monte Carlo files. "
            "Theory files are recognised by their attributes (closure: " + " or ".join(CLOSURES) + "; depth = discrete layers, "
            "none = continuum, interpolated onto the Monte Carlo times). Exit 2 names a mismatched attribute."
        ),
    )
    p.add_argument("--mc", required=True, nargs="+", metavar="MC.nc",
                   help="Monte Carlo files of one grid point, one per width (kernel-eft simulate)")
    p.add_argument("--theory", required=True, nargs="+", metavar="TH.nc",
                   help="theory files of the same grid point (kernel-eft theory): at most one per closure "
                        "and depth form (discrete/continuum)")
    p.add_argument("--threshold", default=0.1, type=_argtype(check_float, "--threshold", positive=True),
                   help="relative-error threshold of the validity window t* (default 0.1)")
    p.add_argument("--nsigma", default=4.0, type=_argtype(check_float, "--nsigma", positive=True),
                   help="t* counts a deviation only where it exceeds this many standard errors (noise, such as the "
                        "first layers where K1 starts from zero, is not a failure; default 4); docs/diagnostics.md")
    p.add_argument("--tag", default=None, type=_tag_type,
                   help="name of the grid point in figure names and the summary table (the workflow passes the "
                        "point's file-name tag; default: derived from activation, L, T, sw2, sb2 and K_in)")
    p.add_argument("--out", required=True, help="output diagnostics netCDF (written atomically)")
    p.set_defaults(func=_command("diagnose_command", ("mc", "theories", "threshold", "nsigma", "tag", "out")))


def _tag_type(text):
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", text):
        raise argparse.ArgumentTypeError(f"{text!r}: a tag is letters, digits and . _ + - (it names files)")
    return text


def add_figures_parser(sub) -> None:
    p = sub.add_parser(
        "figures",
        help="render the diagnostic figures (PDF and PNG) and the summary table",
        description=(
            "Render figures 1-4 (mean kernel, V4, residual decomposition, K1 and its source) for every "
            "diagnostics file, collate the grid points on their parameter coordinates (activation, sw2, sb2, "
            "K_in, depth, T, width) and render figures 5 and 6 (validity map, collapse) and the summary table "
            "(summary.csv, summary.nc, summary.html; printed at the end). Every figure is written as PDF and PNG "
            "with a caption file, named by the point's tag (diagnose --tag); two points with one tag are an error. "
            "Everything is rendered in staging folders beside --outdir and --summary-dir (each on its own "
            "filesystem) and published together only when complete."
        ),
    )
    p.add_argument("--diagnostics", required=True, nargs="+", metavar="DIAG.nc",
                   help="diagnostics files written by kernel-eft diagnose")
    p.add_argument("--outdir", required=True, help="output directory (created if missing; files of the same "
                                                   "name in it are replaced)")
    p.add_argument("--summary-dir", default=None,
                   help="directory of summary.csv, summary.nc and summary.html (default: --outdir)")
    p.add_argument("--only", default=None, choices=("point", "study"),
                   help="point: the figures of each point alone (the workflow's per-point jobs); study: the study "
                        "figures and the summary table alone (default: both)")
    p.set_defaults(func=_command("figures_command", ("diagnostics", "outdir", "summary_dir", "only")))


def add_summary_parser(sub) -> None:
    p = sub.add_parser(
        "summary",
        help="print a study's summary table (summary.csv) as a terminal table",
        description="Print point, closure, t* with its 68% interval, worst pulls and the r limit from a summary.csv "
                    "written by kernel-eft figures.",
    )
    p.add_argument("summary", metavar="SUMMARY.csv", help="summary.csv written by kernel-eft figures")
    p.set_defaults(func=_command("summary_command", ("summary",)))


def add_study_parser(sub) -> None:
    p = sub.add_parser(
        "study",
        help="a study's jobs and cost before a run (plan), and where a run stands (status)",
        description="Read a study's config file (as the workflow does: validated, defaults filled, the study named "
                    "by its `study` key or file name) and print its jobs per stage with their estimated CPU time "
                    "(plan), or which jobs are done, running and missing from the files on disk (status; running: "
                    "Snakemake's .snakemake/incomplete markers or a job's .tmp files).",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="{plan,status}")
    plan = actions.add_parser("plan", help="jobs and estimated CPU time per stage (cost model: config/README.md)")
    plan.add_argument("config", metavar="CONFIG.yaml", help="the study's config file")
    plan.add_argument("--cores", default=1, type=_argtype(check_int, "--cores", minimum=1),
                      help="cores of the run, for the wall-time estimate (default 1)")
    plan.add_argument("--list", action="store_true", dest="list_jobs", help="also list every job and its file")
    plan.set_defaults(func=_command("study_plan_command", ("config", "cores")))
    status = actions.add_parser("status", help="done, running and missing jobs from the files on disk")
    status.add_argument("config", metavar="CONFIG.yaml", help="the study's config file")
    status.add_argument("--workdir", default=".", help="the directory the workflow runs in (default: here)")
    status.add_argument("--list", action="store_true", dest="list_jobs", help="also list the running and missing "
                                                                               "files")
    status.set_defaults(func=_command("study_status_command", ("config", "workdir")))


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line naming the argument (not the usage block), printed once under MPI."""

    def error(self, message):
        if _mpi_rank() == 0:
            print(f"{self.prog}: error: {message} (--help explains the arguments)", file=sys.stderr, flush=True)
        _end_mpi_cleanly()
        raise SystemExit(EXIT_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kernel-eft",
        description="Kernels of finite-width pre-activation ResNets: Monte Carlo, EFT solvers, diagnostics.",
    )
    parser.add_argument("--version", action="version", version=f"kernel-eft {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{simulate,merge,theory,diagnose,figures,summary,study}")
    add_simulate_parser(sub)
    add_merge_parser(sub)
    add_theory_parser(sub)
    add_diagnose_parser(sub)
    add_figures_parser(sub)
    add_summary_parser(sub)
    add_study_parser(sub)
    return parser


def _mpi_rank() -> int:
    """Rank in MPI_COMM_WORLD when MPI is initialised; else the launcher's rank variable (argument errors
    come before MPI starts); else 0."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        return mpi.COMM_WORLD.Get_rank()
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def _under_mpi_job() -> bool:
    """MPI is running and this process is one rank of a job (mpi4py's runner or several ranks)."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None or not mpi.Is_initialized() or mpi.Is_finalized():
        return False
    return "mpi4py.run" in sys.modules or mpi.COMM_WORLD.Get_size() > 1


def _end_mpi_cleanly() -> None:
    """Under `python -m mpi4py` a non-zero exit calls MPI_Abort, which buries the one-line error under
    abort messages.  Every rank reaches a failure together (commands decide failures collectively), so
    finalising MPI first lets the job end with the plain exit code.  (Only under MPI's runner or several
    ranks: a Python session that called main() keeps its MPI.)"""
    if _under_mpi_job():
        sys.modules["mpi4py.MPI"].Finalize()


# ---------------------------------------------------------------------------------------------
# The subcommands: arguments -> kernel_eft.api
# ---------------------------------------------------------------------------------------------


def simulate_command(args) -> int:
    from kernel_eft import api
    from kernel_eft.progress import logger
    from kernel_eft.simulate.parallel import get_comm

    api.simulate(activation=args.activation, width=args.width, depth=args.depth, time=args.time, sw2=args.sw2,
                 sb2=args.sb2, kin=args.kin, samples=args.samples, seed=args.seed, sampler=args.sampler,
                 record_every=args.record_every, batches=args.batches, control_variates=args.control_variates,
                 keep_samples=args.keep_samples,
                 comm=get_comm(), expect_ranks=args.expect_ranks, out=args.out, progress=not args.no_progress,
                 log=logger("simulate"))
    return 0


def merge_command(args) -> int:
    from kernel_eft import api
    from kernel_eft.progress import logger

    api.merge(args.inputs, out=args.out, log=logger("merge"))
    return 0


def theory_command(args) -> int:
    from kernel_eft import api
    from kernel_eft.progress import logger

    options = {name: getattr(args, f"option_{name}") for name in closure_options()
               if getattr(args, f"option_{name}") is not None}
    api.theory(activation=args.activation, kin=args.kin, time=args.time, sw2=args.sw2, sb2=args.sb2,
               closure=args.closure, depth=args.depth, points=args.points, out=args.out, progress=True,
               log=logger("theory"), **options)
    return 0


def diagnose_command(args) -> int:
    from kernel_eft import api
    from kernel_eft.progress import logger

    ds = api.diagnose(args.mc, args.theory, threshold=args.threshold, nsigma=args.nsigma, tag=args.tag,
                      out=args.out, log=logger("diagnose"))
    extrapolated = int(ds.attrs.get("fit_dof", 0)) > 0
    for th in ds["theory"].values:
        for width in ([None] if extrapolated else ds["width"].values):
            parts = []
            for q in ("V4", "K1", "K1_source"):
                sel = {"theory": th} if width is None else {"theory": th, "width": width}
                suffix = "" if width is None else "_width"
                est, lo, hi = (float(ds[f"tstar_{q}{suffix}{s}"].sel(**sel)) for s in ("", "_lo", "_hi"))
                parts.append(f"{q} {est:.3g} [{lo:.3g}, {hi:.3g}]" if est == est else f"{q} not resolved")
            against = "MC extrapolated to n -> inf" if width is None else f"MC at n = {int(width)}"
            print(f"t* vs {th} ({against}): " + ", ".join(parts))
    for line in identity_lines(ds):
        print(line)
    return 0


def identity_lines(ds) -> list[str]:
    """Where the diagnostics split n (V4(n) - V4) by the exact one-block identity: per width, at t = T and the
    entry where the theory's V4_1 is largest, the measured total and parts beside the predicted parts."""
    if "V4_1_part_MC" not in ds:
        return []
    import numpy as np

    from kernel_eft.core.pairs import pair_indices

    predicted = ds["V4_1_part_theory"].values[-1]  # (part, pair, pair2)
    i, j = np.unravel_index(np.argmax(np.abs(predicted.sum(axis=0))), predicted.shape[1:])
    a, b = pair_indices(int(ds.attrs["P"]))
    entry = f"[{a[i]}{b[i]},{a[j]}{b[j]}]"
    names = [str(part) for part in ds["identity_part"].values]
    lines = [f"identity: n (V4(n) - V4) at t = {float(ds['t'].values[-1]):g}, entry {entry}, measured ± se "
             f"(predicted), parts {', '.join(names)}; max |identity_pull| over layers and entries"]
    for w, width in enumerate(ds["width"].values):
        total, total_se = float(ds["V4_1_MC"].values[w, -1, i, j]), float(ds["V4_1_MC_se"].values[w, -1, i, j])
        parts = ds["V4_1_part_MC"].values[w, -1, :, i, j]
        parts_se = ds["V4_1_part_MC_se"].values[w, -1, :, i, j]
        pull = float(np.max(np.abs(ds["identity_pull"].values[w])))
        lines.append(f"  n = {int(width)}: {total:.4g} ± {total_se:.2g} (V4_1 {predicted[:, i, j].sum():.4g}); "
                     + ", ".join(f"{name} {v:.4g} ± {e:.2g} ({p:.4g})"
                                 for name, v, e, p in zip(names, parts, parts_se, predicted[:, i, j]))
                     + f"; identity |pull| <= {pull:.2f}")
    return lines


def figures_command(args) -> int:
    from kernel_eft import api
    from kernel_eft.progress import logger

    api.figures(args.diagnostics, args.outdir, summary_dir=args.summary_dir, only=args.only, print_summary=True,
                log=logger("figures"))
    return 0


def summary_command(args) -> int:
    from kernel_eft import api

    print(api.summary(args.summary))
    return 0


def study_plan_command(args) -> int:
    from kernel_eft import api

    print(api.study_plan(args.config, cores=args.cores, list_jobs=args.list_jobs))
    return 0


def study_status_command(args) -> int:
    from kernel_eft import api

    print(api.study_status(args.config, workdir=args.workdir, list_jobs=args.list_jobs))
    return 0


def main(argv: list[str] | None = None) -> int:
    from kernel_eft import interrupts

    parser = build_parser()
    args = parser.parse_args(argv)
    previous = interrupts.install(args.command, print_line=_mpi_rank() == 0)
    try:
        return _run(args)
    finally:
        interrupts.restore(previous)


def _run(args) -> int:
    from kernel_eft import interrupts

    try:
        code = int(args.func(args) or 0)
    except interrupts.Interrupted as exc:  # SIGINT/SIGTERM outside a write: staging was removed on the way out
        if _mpi_rank() == 0:
            print(interrupts.message(exc.name, "while computing"), file=sys.stderr, flush=True)
        if _under_mpi_job():  # the other ranks may never reach MPI_Finalize: end now, without MPI_Abort
            interrupts.exit_now(exc.exit_code)
        return exc.exit_code
    except MemoryError as exc:
        if _mpi_rank() == 0:
            print(f"kernel-eft {args.command}: error: out of memory{': ' + str(exc) if str(exc) else ''} (the "
                  "estimate before the run did not foresee it: reduce --width, --samples or --keep-samples, or "
                  "ask for more memory); nothing written", file=sys.stderr, flush=True)
        _end_mpi_cleanly()
        raise SystemExit(EXIT_INPUT) from None
    except InputError as exc:
        if _mpi_rank() == 0:  # every rank has the same error: print it once
            print(f"kernel-eft {args.command}: error: {exc}", file=sys.stderr, flush=True)
        _end_mpi_cleanly()
        raise SystemExit(EXIT_INPUT) from None
    except ArithmeticError as exc:  # overflow: FloatingPointError, SimulationOverflow, NonFiniteError
        if _mpi_rank() == 0:
            print(f"kernel-eft {args.command}: error: {exc}; no file written", file=sys.stderr, flush=True)
        code = EXIT_NUMERICS
    if code:
        _end_mpi_cleanly()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
