"""Implementations of the CLI subcommands (argument parsing lives in cli.py).

Every command checks its input and that its output can be written before it computes; logs its
parameters at start, progress while it runs and "wrote PATH in S s" at the end (stderr, so Snakemake
and SLURM logs show a running job); and leaves no output file when it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time

from kernel_eft.validation import InputError

EXIT_INPUT = 2
EXIT_NUMERICS = 3
PROGRESS_SECONDS = 30.0  # a progress line at least this often, besides one every 10%


def log(command: str, message: str) -> None:
    print(f"kernel-eft {command}: {message}", file=sys.stderr, flush=True)


class _Progress:
    """A rich progress bar on a terminal; otherwise a log line at every 10% and at least every
    PROGRESS_SECONDS (Snakemake and SLURM logs)."""

    def __init__(self, label: str, enabled: bool, unit: str = "batches"):
        self.label = label
        self.unit = unit
        self.enabled = enabled
        self.start = time.monotonic()
        self.last_line = self.start
        self.bar = None
        self.last_decile = -1
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
            self.task = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            if self.task is None:
                self.bar.start()
                self.task = self.bar.add_task(self.label, total=total)
            self.bar.update(self.task, completed=done)
            if done == total:
                self.bar.stop()
            return
        decile = (10 * done) // total
        now = time.monotonic()
        if decile != self.last_decile or done == total or now - self.last_line >= PROGRESS_SECONDS:
            self.last_decile = decile
            self.last_line = now
            elapsed = now - self.start
            eta = elapsed / done * (total - done)
            print(f"{self.label}: {done}/{total} {self.unit} ({100 * done / total:.0f}%), "
                  f"elapsed {elapsed:.1f} s, eta {eta:.1f} s", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _heartbeat(command: str, what: str, interval: float = PROGRESS_SECONDS):
    """A log line every `interval` seconds while a step without progress callbacks runs (the ODE solvers)."""
    stop = threading.Event()
    start = time.monotonic()

    def beat():
        while not stop.wait(interval):
            log(command, f"{what}: still running, {time.monotonic() - start:.0f} s elapsed")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _report_non_finite(command: str, arrays: dict, times=None, layers=None) -> bool:
    """Report the first inf or NaN among float arrays whose leading axis is along `times` (nothing is
    written then): the variable, the layer and t, and the entry.  True if there is one."""
    import numpy as np

    for name, values in arrays.items():
        values = np.asarray(values)
        if values.dtype.kind != "f":
            continue
        bad = ~np.isfinite(values)
        if not bad.any():
            continue
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        where, entry = "", index
        if times is not None and values.ndim >= 1 and values.shape[0] == len(times):
            k, entry = index[0], index[1:]
            where = (f" at layer {int(layers[k])}" if layers is not None else "") + f" (t = {float(times[k]):.6g})"
        entry_text = f", entry {list(entry)}" if entry else ""
        print(f"kernel-eft {command}: error: non-finite {name}{where}{entry_text} = {values[index]}: the kernel "
              "overflowed float64 (reduce sw2*T or the input norm); no file written", file=sys.stderr)
        return True
    return False


def _on_rank0(comm, action):
    """Run action() on rank 0 and let every rank raise its InputError, so that all ranks exit alike
    (and the error is printed once)."""
    error = None
    if comm.rank == 0:
        try:
            action()
        except InputError as exc:
            error = (exc.field, exc.message)
    error = comm.bcast(error, root=0)
    if error is not None:
        raise InputError(*error)


def _format_params(**params) -> str:
    return ", ".join(f"{key}={value}" for key, value in params.items())


def simulate_command(args) -> int:
    import numpy as np

    from kernel_eft import io, montecarlo, parallel
    from kernel_eft.validation import format_kin

    comm = parallel.get_comm()
    if args.expect_ranks is not None and comm.size != args.expect_ranks:
        # Every rank sees the same size, so every rank exits the same way: no hang.
        raise InputError("--expect-ranks", f"the MPI communicator has {comm.size} ranks, expected {args.expect_ranks} "
                                           "(under SLURM use srun --mpi=pmi2 or mpiexec)")
    try:
        params = montecarlo.SimulationParams(
            activation=args.activation, width=args.width, depth=args.depth, time=args.time, sw2=args.sw2,
            sb2=args.sb2, kin=args.kin, samples=args.samples, seed=args.seed, sampler=args.sampler,
            record_every=args.record_every, batches=args.batches,
        )
    except InputError as exc:  # name the flag, not the Python field
        raise InputError("--" + exc.field.replace("_", "-"), exc.message) from None
    _on_rank0(comm, lambda: io.check_writable(args.out, "--out"))
    if comm.rank == 0:
        log("simulate", _format_params(
            activation=params.activation, n=params.width, L=params.depth, T=f"{params.time:g}",
            sw2=f"{params.sw2:g}", sb2=f"{params.sb2:g}", K_in=f"[{format_kin(params.kin)}]",
            samples=params.samples, batches=params.batches, seed=params.seed, sampler=params.sampler,
            record_every=params.record_every, mpi_ranks=comm.size) + f" -> {args.out}")
    label = f"simulate {params.activation} n={params.width} L={params.depth} (rank 0 of {comm.size})"
    progress = _Progress(label, enabled=(comm.rank == 0 and not args.no_progress))
    started = time.monotonic()
    results = parallel.run_batches(
        comm, params.batches, lambda b: montecarlo.simulate_batch(params, b, args.keep_samples), progress
    )
    failed = None
    if comm.rank == 0:
        errors = [(b, err) for b, _, err in results if err is not None]
        failed = str(errors[0][1]) if errors else None
    failed = comm.bcast(failed, root=0)
    if failed is not None:
        if comm.rank == 0:
            print(f"kernel-eft simulate: error: {failed}; no file written", file=sys.stderr)
        return EXIT_NUMERICS
    status = None  # rank 0 summarises and writes; every rank then exits with its outcome
    if comm.rank == 0:
        batches = montecarlo.BatchMoments.stack([m for _, (m, _), _ in results])
        samples = None
        if args.keep_samples:
            samples = tuple(np.concatenate([s[i] for _, (_, s), _ in results]) for i in range(2))
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, by layer and entry
            summary = montecarlo.summarize(params, batches)
        if _report_non_finite("simulate", summary, params.times, params.layers):
            status = EXIT_NUMERICS
        else:
            elapsed = time.monotonic() - started
            ds = io.mc_dataset(params, summary, batches, samples, extra_attrs={
                "mpi_ranks": comm.size, "mpi_library": parallel.mpi_library_version(),
                "wall_seconds": round(elapsed, 3),
            })
            try:
                io.write_dataset_atomic(ds, args.out)
                status = 0
                log("simulate", f"wrote {args.out} in {time.monotonic() - started:.1f} s "
                                f"({params.samples} seeds on {comm.size} MPI rank{'s' if comm.size > 1 else ''})")
            except InputError as exc:
                status = (exc.field, exc.message)
    status = comm.bcast(status, root=0)
    if isinstance(status, tuple):
        raise InputError(*status)
    return status


def _refuse_overwriting_inputs(out: str, inputs, field: str) -> None:
    """An output path that names one of the inputs would replace that input."""
    for path in inputs:
        if os.path.exists(path) and os.path.realpath(path) == os.path.realpath(out):
            raise InputError(field, f"{out} is also an input; write the result to a new file")


def merge_command(args) -> int:
    """Pool Monte Carlo files of the same grid point run with different seeds."""
    from kernel_eft import io, montecarlo

    started = time.monotonic()
    _refuse_overwriting_inputs(args.out, args.inputs, "--out")
    io.check_writable(args.out, "--out")
    datasets = [ds for _, ds in read_netcdf_inputs(args.inputs, "inputs")]
    first = datasets[0]
    for path, ds in zip(args.inputs[1:], datasets[1:]):
        for key in io.MC_MATCHING_ATTRS:
            if str(ds.attrs.get(key)) != str(first.attrs.get(key)):
                raise InputError("inputs", f"{path} has {key}={ds.attrs.get(key)!r}, but {args.inputs[0]} has "
                                           f"{first.attrs.get(key)!r}: only runs of one grid point merge")
    seeds = [str(ds.attrs["seed"]) for ds in datasets]
    flat = [s for group in seeds for s in group.split(",")]
    if len(set(flat)) != len(flat):
        raise InputError("inputs", f"seeds {flat} repeat: merging a seed twice would double-count samples")
    batches = montecarlo.BatchMoments.from_dataset(first)
    for ds in datasets[1:]:
        batches = batches.concat(montecarlo.BatchMoments.from_dataset(ds))
    total = int(batches.counts.sum())
    params = io.mc_params_from_dataset(first, samples=total, batches=len(batches))
    summary = montecarlo.summarize(params, batches)
    out = io.mc_dataset(params, summary, batches, extra_attrs={
        "seed": ",".join(flat), "merged_from": " ".join(str(p) for p in args.inputs),
        "mpi_ranks": ",".join(str(ds.attrs.get("mpi_ranks")) for ds in datasets),
        "mpi_library": str(first.attrs.get("mpi_library")),
    })
    out.attrs["seed_entropy"] = ",".join(str(ds.attrs.get("seed_entropy")) for ds in datasets)
    if _report_non_finite("merge", summary, params.times, params.layers):
        return EXIT_NUMERICS
    io.write_dataset_atomic(out, args.out)
    log("merge", f"wrote {args.out} in {time.monotonic() - started:.1f} s ({total} seeds in {len(batches)} batches)")
    return 0


def read_netcdf_inputs(paths, field):
    """[(path, dataset)] for the given files; a missing, unreadable or corrupt file is an input error
    naming the flag and the file."""
    from kernel_eft.io import read_dataset

    return [(path, read_dataset(path, field)) for path in paths]


def _theory_gonly(args):
    from kernel_eft.theory import gonly

    if args.depth is None:
        sol = gonly.solve_gonly_continuous(args.activation, args.kin, args.sw2, args.sb2, args.time,
                                           points=args.points, rtol=args.rtol, atol=args.atol, solver=args.solver)
    else:
        sol = gonly.solve_gonly_discrete(args.activation, args.kin, args.sw2, args.sb2, args.time, args.depth)
    return gonly.solution_dataset(sol, args.activation, args.kin, args.sw2, args.sb2, args.time)


def _theory_exact(args):
    from kernel_eft.theory import exact

    form = f"L={args.depth}" if args.depth is not None else "continuum"
    # the two-time kernels dominate the cost: one progress step per earlier time of the grid
    progress = _Progress(f"kernel-eft theory: exact {args.activation} {form}", enabled=True, unit="times")
    return exact.theory_dataset(args, progress=progress)


def _validate_theory(args) -> None:
    from kernel_eft.activations import CollinearInputsError, kernel_derivatives
    from kernel_eft.io import check_writable

    if args.depth is not None and args.points is not None:
        raise InputError("--points", "applies to the continuous solver only; with --depth the discrete recursion "
                                     "writes every layer 0..L")
    if args.points is None:
        # the exact closure's two-time integrals cost O(points^2); 101 points reach 1e-4 (measured and
        # stored as the file attribute relative_accuracy)
        args.points = 101 if args.closure == "exact" else 201
    check_writable(args.out, "--out")
    try:  # relu with collinear inputs: the G-only tadpole diverges at t = 0
        kernel_derivatives(args.activation, args.kin, order=2)
    except CollinearInputsError as exc:
        raise InputError("--kin", str(exc)) from None


def theory_command(args) -> int:
    from kernel_eft import io
    from kernel_eft.validation import format_kin

    _validate_theory(args)
    started = time.monotonic()
    form = f"discrete L={args.depth}" if args.depth is not None else f"continuous, {args.points} points"
    log("theory", _format_params(closure=args.closure, activation=args.activation, T=f"{args.time:g}",
                                 sw2=f"{args.sw2:g}", sb2=f"{args.sb2:g}", K_in=f"[{format_kin(args.kin)}]")
        + f", {form} -> {args.out}")
    build = {"gonly": _theory_gonly, "exact": _theory_exact}[args.closure]
    try:
        with _heartbeat("theory", f"{args.closure} closure"):
            ds = build(args)
    except FloatingPointError as exc:
        print(f"kernel-eft theory: error: {exc}; no file written", file=sys.stderr)
        return EXIT_NUMERICS
    layers = ds["layer"].values if "layer" in ds.coords else None
    if _report_non_finite("theory", {name: var.transpose("t", ...).values for name, var in ds.data_vars.items()
                                     if "t" in var.dims}, ds["t"].values, layers):
        return EXIT_NUMERICS
    io.write_dataset_atomic(ds, args.out)
    log("theory", f"wrote {args.out} in {time.monotonic() - started:.1f} s")
    return 0


def diagnose_command(args) -> int:
    from kernel_eft.diagnostics import diagnose_point
    from kernel_eft.io import check_writable, provenance_attrs, write_dataset_atomic

    started = time.monotonic()
    _refuse_overwriting_inputs(args.out, [*args.mc, *args.theory], "--out")
    check_writable(args.out, "--out")
    mc = read_netcdf_inputs(args.mc, "--mc")
    theories = read_netcdf_inputs(args.theory, "--theory")
    ds = diagnose_point(mc, theories, threshold=args.threshold, nsigma=args.nsigma)
    params = dict(ds.attrs)
    if args.tag is not None:
        params["point"] = args.tag
    ds.attrs = provenance_attrs(
        f"G-only closure diagnostics ({params['activation']}, widths {params['widths']}, L={params['depth']}, "
        f"T={float(params['time']):g})", params)
    write_dataset_atomic(ds, args.out)
    tstar = ds["tstar_V4"]
    for th in ds["theory"].values:
        print(f"t*(V4) vs {th}: " + ", ".join(f"n={int(w)}: {float(tstar.sel(theory=th, width=w)):.3g}"
                                              for w in ds["width"].values))
    log("diagnose", f"point {params['point']}: wrote {args.out} in {time.monotonic() - started:.1f} s")
    return 0


FIGURES_NEEDED_BYTES = 16 << 20  # a study's figures and summary: below this much free space a failure is a full disk


def figures_command(args) -> int:
    """Figures and summary are rendered into a staging folder beside --outdir and moved in only when all
    of them are written: a failure (disk full, bad input) leaves --outdir as it was."""
    from kernel_eft import io, plots

    start = time.perf_counter()
    io.check_writable(args.outdir, "--outdir", directory=True)
    summary_dir = os.path.abspath(args.summary_dir or args.outdir)
    io.check_writable(summary_dir, "--summary-dir", directory=True)
    points = read_netcdf_inputs(args.diagnostics, "--diagnostics")
    for path, ds in points:
        missing = [v for v in ("residual_acc", "V4_relerr", "tstar_V4") if v not in ds]
        if missing:
            raise InputError("--diagnostics", f"{path} is not a kernel-eft diagnostics file (lacks {missing})")
    threshold = float(points[0][1].attrs["threshold"])
    nsigma = float(points[0][1].attrs["nsigma"])
    for path, ds in points[1:]:
        if float(ds.attrs["threshold"]) != threshold or float(ds.attrs["nsigma"]) != nsigma:
            raise InputError("--diagnostics", f"{path} was diagnosed with threshold {ds.attrs['threshold']}, "
                                              f"nsigma {ds.attrs['nsigma']}; {points[0][0]} with {threshold:g}, "
                                              f"{nsigma:g}: one validity criterion per figure")
    tags = {}
    for path, ds in points:  # one file name per point: two points with one tag would overwrite each other
        tag = plots.point_tag(ds)
        if tag in tags:
            raise InputError("--diagnostics", f"{tags[tag]} and {path} are both grid point {tag!r}; "
                                              "their figures would overwrite each other")
        tags[tag] = path
    outdir = os.path.abspath(args.outdir)
    staging = None
    try:
        os.makedirs(os.path.dirname(outdir), exist_ok=True)
        staging = tempfile.mkdtemp(prefix=os.path.basename(outdir) + ".", suffix=".tmp", dir=os.path.dirname(outdir))
        io.usual_permissions(staging, 0o777)  # mkdtemp makes 0700; the folder may become --outdir itself
        for _, ds in points:
            for figure in (plots.figure_mean_kernel, plots.figure_kernel_covariance, plots.figure_residual,
                           plots.figure_k1):
                figure(ds, staging)
        combined = plots.collate([ds for _, ds in points])
        plots.figure_validity_window(combined, staging, threshold, nsigma)
        table = plots.summary_table(combined)
        table.to_csv(os.path.join(staging, "summary.csv"), index=False, float_format="%.6g")
        with open(os.path.join(staging, "summary.html"), "w") as fh:
            fh.write(plots.summary_html(table))
        combined.attrs = io.provenance_attrs("Summary of the G-only closure diagnostics over grid points",
                                             {"threshold": threshold, "nsigma": nsigma,
                                              "diagnostics_files": ",".join(path for path, _ in points)})
        io.write_netcdf(combined, os.path.join(staging, "summary.nc"))
        names = sorted(os.listdir(staging))
        os.makedirs(summary_dir, exist_ok=True)
        for name in SUMMARY_FILES:
            os.replace(os.path.join(staging, name), os.path.join(summary_dir, name))
        _publish(staging, outdir)
    except (OSError, RuntimeError) as exc:
        raise io.write_failure(exc, outdir, "--outdir", FIGURES_NEEDED_BYTES) from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    print(format_summary_table(table))
    where = args.outdir if summary_dir == outdir else f"{args.outdir} and the summary to {args.summary_dir}"
    log("figures", f"wrote {len(names)} files to {where} in {time.perf_counter() - start:.1f} s")
    return 0


SUMMARY_FILES = ("summary.csv", "summary.nc", "summary.html")


def _publish(staging: str, outdir: str) -> None:
    """Move the staged files into outdir: a rename of the whole folder when outdir is new."""
    if not os.path.exists(outdir):
        os.rename(staging, outdir)
        return
    for name in os.listdir(staging):
        os.replace(os.path.join(staging, name), os.path.join(outdir, name))


SUMMARY_KEY_COLUMNS = ("point", "theory", "width")


def format_summary_table(table) -> str:
    """The summary as a terminal table: point, closure, width, and every t* and pull column present
    (so columns that later diagnostics add, such as t* intervals, appear by themselves)."""
    rows = table.to_dict("records") if hasattr(table, "to_dict") else list(table)
    if not rows:
        return "(empty summary)"
    columns = [c for c in SUMMARY_KEY_COLUMNS if c in rows[0]]
    columns += [c for c in rows[0] if c.startswith(("tstar", "pull", "worst_pull"))]

    def cell(value) -> str:
        if isinstance(value, float):
            return "never" if value == float("inf") else ("-" if value != value else f"{value:.3g}")
        text = str(value)
        try:
            return cell(float(text)) if text.lower() in ("inf", "nan") or text[:1].isdigit() else text
        except ValueError:
            return text

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def summary_command(args) -> int:
    """Print the summary table of a study (summary.csv written by `figures`)."""
    import csv

    if not os.path.isfile(args.summary):
        raise InputError("summary", f"no such file: {args.summary}")
    try:
        with open(args.summary, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError("summary", f"cannot read {args.summary}: {exc}") from None
    if rows and "point" not in rows[0]:
        raise InputError("summary", f"{args.summary} is not a kernel-eft summary table (no 'point' column)")
    print(format_summary_table(rows))
    return 0
