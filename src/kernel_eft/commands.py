"""Implementations of the CLI subcommands (argument parsing lives in cli.py)."""

from __future__ import annotations

import os
import sys
import time

from kernel_eft.validation import InputError

EXIT_INPUT = 2
EXIT_NUMERICS = 3


class _Progress:
    """A rich progress bar on a terminal; otherwise a log line at every ~10% (Snakemake and SLURM logs)."""

    def __init__(self, label: str, enabled: bool):
        self.label = label
        self.enabled = enabled
        self.start = time.monotonic()
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
        if decile != self.last_decile or done == total:
            self.last_decile = decile
            elapsed = time.monotonic() - self.start
            eta = elapsed / done * (total - done)
            print(f"{self.label}: {done}/{total} batches ({100 * done / total:.0f}%), "
                  f"elapsed {elapsed:.1f} s, eta {eta:.1f} s", file=sys.stderr, flush=True)


def _report_non_finite(command: str, arrays: dict) -> bool:
    """Report the first float array holding inf or NaN (nothing is written then); True if there is one."""
    import numpy as np

    for name, values in arrays.items():
        values = np.asarray(values)
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            print(f"kernel-eft {command}: error: non-finite {name}; no file written", file=sys.stderr)
            return True
    return False


def simulate_command(args) -> int:
    import numpy as np

    from kernel_eft import io, montecarlo, parallel

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
    if comm.rank != 0:
        return 0
    batches = montecarlo.BatchMoments.stack([m for _, (m, _), _ in results])
    samples = None
    if args.keep_samples:
        samples = tuple(np.concatenate([s[i] for _, (_, s), _ in results]) for i in range(2))
    summary = montecarlo.summarize(params, batches)
    if _report_non_finite("simulate", summary):
        return EXIT_NUMERICS
    elapsed = time.monotonic() - started
    ds = io.mc_dataset(params, summary, batches, samples, extra_attrs={
        "mpi_ranks": comm.size, "mpi_library": parallel.mpi_library_version(),
        "wall_seconds": round(elapsed, 3),
    })
    io.write_dataset_atomic(ds, args.out)
    if not args.no_progress:
        print(f"kernel-eft simulate: wrote {args.out} ({params.samples} seeds, {elapsed:.1f} s on {comm.size} ranks)",
              file=sys.stderr)
    return 0


def merge_command(args) -> int:
    """Pool Monte Carlo files of the same grid point run with different seeds."""
    from kernel_eft import io, montecarlo

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
    if _report_non_finite("merge", summary):
        return EXIT_NUMERICS
    io.write_dataset_atomic(out, args.out)
    print(f"kernel-eft merge: wrote {args.out} ({total} seeds in {len(batches)} batches)", file=sys.stderr)
    return 0


def read_netcdf_inputs(paths, field):
    """[(path, dataset)] for the given files; a missing or unreadable file is an input error naming the flag."""
    from kernel_eft.io import read_dataset

    out = []
    for path in paths:
        if not os.path.isfile(path):
            raise InputError(field, f"no such file: {path}")
        try:
            out.append((path, read_dataset(path)))
        except (OSError, ValueError) as exc:
            raise InputError(field, f"cannot read {path} as netCDF ({exc})") from None
    return out


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

    return exact.theory_dataset(args)


def _validate_theory(args) -> None:
    from kernel_eft.activations import CollinearInputsError, kernel_derivatives

    if args.depth is not None and args.points is not None:
        raise InputError("--points", "applies to the continuous solver only; with --depth the discrete recursion "
                                     "writes every layer 0..L")
    if args.points is None:
        # the exact closure's two-time integrals cost O(points^2); 101 points reach 1e-4 (measured and
        # stored as the file attribute relative_accuracy)
        args.points = 101 if args.closure == "exact" else 201
    if os.path.isdir(args.out):
        raise InputError("--out", f"{args.out!r} is a directory; give a file name such as theory.nc")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise InputError("--out", f"the directory of {args.out!r} does not exist")
    try:  # relu with collinear inputs: the G-only tadpole diverges at t = 0
        kernel_derivatives(args.activation, args.kin, order=2)
    except CollinearInputsError as exc:
        raise InputError("--kin", str(exc)) from None


def theory_command(args) -> int:
    from kernel_eft import io

    _validate_theory(args)
    build = {"gonly": _theory_gonly, "exact": _theory_exact}[args.closure]
    try:
        ds = build(args)
    except FloatingPointError as exc:
        print(f"kernel-eft theory: error: {exc}; no file written", file=sys.stderr)
        return EXIT_NUMERICS
    if _report_non_finite("theory", {name: var.values for name, var in ds.data_vars.items()}):
        return EXIT_NUMERICS
    io.write_dataset_atomic(ds, args.out)
    return 0


def diagnose_command(args) -> int:
    from kernel_eft.diagnostics import diagnose_point
    from kernel_eft.io import provenance_attrs, write_dataset_atomic

    mc = read_netcdf_inputs(args.mc, "--mc")
    theories = read_netcdf_inputs(args.theory, "--theory")
    ds = diagnose_point(mc, theories, threshold=args.threshold, nsigma=args.nsigma)
    params = dict(ds.attrs)
    ds.attrs = provenance_attrs(
        f"G-only closure diagnostics ({params['activation']}, widths {params['widths']}, L={params['depth']}, "
        f"T={float(params['time']):g})", params)
    write_dataset_atomic(ds, args.out)
    tstar = ds["tstar_V4"]
    for th in ds["theory"].values:
        print(f"t*(V4) vs {th}: " + ", ".join(f"n={int(w)}: {float(tstar.sel(theory=th, width=w)):.3g}"
                                              for w in ds["width"].values))
    return 0


def figures_command(args) -> int:
    import time

    from kernel_eft import plots
    from kernel_eft.io import provenance_attrs, write_dataset_atomic

    start = time.perf_counter()
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
    written = []
    for _, ds in points:
        for figure in (plots.figure_mean_kernel, plots.figure_kernel_covariance, plots.figure_residual,
                       plots.figure_k1):
            written += figure(ds, args.outdir)
    combined = plots.collate([ds for _, ds in points])
    written += plots.figure_validity_window(combined, args.outdir, threshold, nsigma)
    table = plots.summary_table(combined)
    csv_path = os.path.join(args.outdir, "summary.csv")
    tmp = csv_path + ".tmp"
    table.to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, csv_path)
    combined.attrs = provenance_attrs("Summary of the G-only closure diagnostics over grid points",
                                      {"threshold": threshold, "nsigma": nsigma,
                                       "diagnostics_files": ",".join(path for path, _ in points)})
    write_dataset_atomic(combined, os.path.join(args.outdir, "summary.nc"))
    written += [csv_path, os.path.join(args.outdir, "summary.nc")]
    print(f"wrote {len(written)} files to {args.outdir} in {time.perf_counter() - start:.1f} s")
    return 0
