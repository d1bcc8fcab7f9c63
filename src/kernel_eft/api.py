"""The Python API: plain keyword arguments in, xarray Datasets out (figures: the paths written).

    import kernel_eft as ke
    mc = ke.simulate(activation="relu", width=64, depth=8, time=1.0, kin=[[1, 0.6], [0.6, 1]], samples=2000, seed=1)
    th = ke.theory(activation="relu", kin=[[1, 0.6], [0.6, 1]], time=1.0, closure="exact", depth=8)
    d = ke.diagnose([mc], [th])
    ke.figures([d], "figures/")

Every function validates its input before it computes (InputError naming the argument), and a result that
overflowed float64 raises an ArithmeticError naming the variable, layer and t.  With `out=` the Dataset is
also written atomically to that netCDF path (checked for writability first); the file holds exactly the
returned Dataset, so the API and the CLI (which only parses arguments and calls these functions) give
bitwise identical data.  Registered activations and closures are accepted by name (kernel_eft.core.activations,
kernel_eft.theory); `log` is an optional callable that receives progress lines.
"""

from __future__ import annotations

import os
import re
import time as _time

import xarray as xr

from kernel_eft.core.activations import ACTIVATIONS, Activation, get_activation
from kernel_eft.io import check_writable, provenance_attrs, read_dataset, refuse_overwriting_inputs, write_result
from kernel_eft.progress import Progress, format_params, heartbeat
from kernel_eft.resources import (FILE_OVERHEAD, LIBRARIES, check_memory, format_bytes, format_seconds,
                                  resident_bytes)
from kernel_eft.simulate import run as mc_run
from kernel_eft.simulate.params import SimulationParams
from kernel_eft.theory.registry import CLOSURES, Closure, get_closure, reference_closure
from kernel_eft.validation import (InputError, NonFiniteError, check_float, check_int, check_kin, format_kin,
                                   non_finite_message)

TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def _registered(field: str, get, registry: dict, item, register: str):
    """The registered object named (or given) by item; an object must be the registered one (files name it)."""
    try:
        found = get(item)
    except KeyError as exc:
        raise InputError(field, str(exc.args[0])) from None
    if registry.get(found.name) is not found:
        raise InputError(field, f"{field} {found.name!r} is not registered: kernel_eft.{register}(...) it first "
                                "(its files name it)")
    return found


def _activation(activation) -> Activation:
    return _registered("activation", get_activation, ACTIVATIONS, activation, "register_activation")


def _activation_name(activation) -> str:
    return _activation(activation).name


def _closure(closure) -> Closure:
    return _registered("closure", get_closure, CLOSURES, closure, "register_closure")


def _inputs(items, field: str) -> list:
    """[(name, Dataset)] from paths (read, a bad file is an InputError naming it), Datasets or (name, Dataset)."""
    if isinstance(items, (str, os.PathLike, xr.Dataset)):
        items = [items]
    out = []
    for i, item in enumerate(items):
        if isinstance(item, xr.Dataset):
            out.append((f"<{field} {i}>", item))
        elif isinstance(item, tuple):
            out.append((str(item[0]), item[1]))
        else:
            out.append((os.fspath(item), read_dataset(item, field)))
    if not out:
        raise InputError(field, "no input given")
    return out


def _paths(items) -> list:
    if isinstance(items, (str, os.PathLike)):
        return [items]
    return [item for item in items if isinstance(item, (str, os.PathLike))]


# ----------------------------------------------------------------------------------------------
# simulate, merge
# ----------------------------------------------------------------------------------------------


def simulate(*, activation, width: int, depth: int, time: float, kin, samples: int, sw2: float = 1.0,
             sb2: float = 0.0, seed: int = 0, sampler: str = "block", record_every: int = 1, batches: int = 32,
             keep_samples: bool = False, comm=None, expect_ranks: int | None = None, out=None,
             progress: bool = False, log=None, control_variates: str = "none"):
    """Monte Carlo of the ResNet h^{l+1} = h^l + sqrt(T/L) (W^l phi(h^l) + b^l) at width n for `samples`
    networks: per recorded layer the mean kernel G, S, V4 = n Cov(G), K1, the exact K1 source and the batch-
    resolved raw moments, each estimate X with its jackknife error X_se (docs/data_format.md).

    kin: the P x P input kernel (nested list or array).  comm: an MPI communicator (mpi4py) to spread the
    seed batches over its ranks (bitwise identical results for any rank count); rank 0 returns the Dataset,
    the other ranks None.  sampler: "block" (exact conditional law, O(n P^2)) or "weights" (explicit weights).
    control_variates: "none" (default) or "martingale": K1, its source and V4 with exactly zero-mean controls
    (docs/control_variates.md); same random numbers, smaller errors, larger file."""
    params = SimulationParams(activation=_activation_name(activation), width=width, depth=depth, time=time,
                              sw2=sw2, sb2=sb2, kin=kin, samples=samples, seed=seed, sampler=sampler,
                              record_every=record_every, batches=batches, control_variates=control_variates)
    return mc_run.run(params, comm=comm, keep_samples=keep_samples, out=out, expect_ranks=expect_ranks,
                      progress=progress, log=log)


def merge(inputs, *, out=None, log=None):
    """Pool Monte Carlo runs of one grid point made with different seeds (paths or Datasets): the seed batches
    are concatenated and every estimate and error recomputed."""
    if out is not None:
        refuse_overwriting_inputs(out, _paths(inputs), "out")
        check_writable(out, "out", needed_bytes=FILE_OVERHEAD + sum(os.path.getsize(p) for p in _paths(inputs)
                                                                     if os.path.isfile(p)))
    with heartbeat(log, "merge"):
        return mc_run.merge(_inputs(inputs, "inputs"), out=out, log=log)


# ----------------------------------------------------------------------------------------------
# theory
# ----------------------------------------------------------------------------------------------


def theory(*, activation, kin, time: float, sw2: float = 1.0, sb2: float = 0.0, closure=None,
           depth: int | None = None, points: int | None = None, out=None, progress: bool = False, log=None,
           **options):
    """A closure's theory of K0, V4, K1 and the K1 source (and its parts) as a Dataset.

    depth=L: the network's layer recursion at depth L (every layer 0..L: compare Monte Carlo at depth L with
    this); depth=None: the continuous-depth limit on `points` uniform times (default: the closure's).
    closure: a registered name or Closure (default: the reference closure, theory.registry.reference_closure).
    options: the closure's own keywords (Closure.options: name, type, default, help)."""
    act = _activation(activation)  # resolved once here; the closure receives the object
    name = act.name
    chosen = reference_closure() if closure is None else _closure(closure)
    kin = check_kin(kin, "kin")
    time = check_float(time, "time", positive=True)
    sw2 = check_float(sw2, "sw2", nonnegative=True)
    sb2 = check_float(sb2, "sb2", nonnegative=True)
    options = chosen.check_options(options)
    form = "discrete" if depth is not None else "continuum"
    if form not in chosen.depths:
        raise InputError("depth", f"the {chosen.name} closure solves only {' and '.join(chosen.depths)} depth")
    if depth is not None:
        depth = check_int(depth, "depth", 1)
        if points is not None:
            raise InputError("points", "applies to the continuous solver only; with depth the discrete recursion "
                                       "writes every layer 0..L")
    else:
        points = chosen.default_points if points is None else check_int(points, "points", 2)
    if out is not None:  # an upper bound of the file: ~30 fields of up to P^4 entries at every output time
        outputs = depth + 1 if depth else points
        check_writable(out, "out", needed_bytes=FILE_OVERHEAD + 30 * 8 * len(kin) ** 4 * outputs)
    chosen.check(act, kin, depth, points)
    times = depth + 1 if depth else points
    needed = chosen.estimate_memory_at(act, kin, sw2=sw2, sb2=sb2, time=time, depth=depth, times=times, **options)
    if needed is not None:
        needed += LIBRARIES
        check_memory(needed, "depth" if depth else "points", f"the {chosen.name} closure's two-time kernels on "
                     f"{times} x {times} times", "reduce --depth" if depth else "reduce --points")
    seconds = chosen.estimate_seconds_at(act, kin, sw2=sw2, sb2=sb2, time=time, depth=depth, times=times)
    estimate = "; estimated " + ", ".join(
        part for part in (f"peak memory {format_bytes(needed + resident_bytes())}" if needed is not None else "",
                          f"CPU time {format_seconds(seconds)}" if seconds is not None else "") if part)
    started = _time.monotonic()
    form = f"discrete L={depth}" if depth is not None else f"continuous, {points} points"
    if log is not None:
        log(format_params(closure=chosen.name, activation=name, T=f"{time:g}", sw2=f"{sw2:g}", sb2=f"{sb2:g}",
                          K_in=f"[{format_kin(kin)}]") + f", {form}" + (f" -> {out}" if out is not None else "")
            + (estimate if needed is not None or seconds is not None else ""))
    # the exact closure's two-time kernels dominate its cost: one progress step per earlier time of the grid
    reporter = Progress(f"kernel-eft theory: {chosen.name} {name} "
                        + (f"L={depth}" if depth is not None else "continuum"), enabled=progress, unit="times")
    with heartbeat(log, f"{chosen.name} closure"):
        ds = chosen.solve(act, kin, sw2=sw2, sb2=sb2, time=time, depth=depth, points=points, progress=reporter,
                          **options)
    layers = ds["layer"].values if "layer" in ds.coords else None
    message = non_finite_message({key: var.transpose("t", ...).values for key, var in ds.data_vars.items()
                                  if "t" in var.dims}, ds["t"].values, layers)
    if message is not None:
        raise NonFiniteError(message)
    write_result(ds, out, log, started)
    return ds


# ----------------------------------------------------------------------------------------------
# diagnose, figures
# ----------------------------------------------------------------------------------------------


def diagnose(mc, theories, *, threshold: float = 0.1, nsigma: float = 4.0, tag: str | None = None, out=None,
             log=None):
    """Diagnostics of one grid point: Monte Carlo runs of several widths (paths or Datasets) against theories
    of that point (at most one per closure and depth form).  tag: the point's name in figure files (default:
    every parameter spelled out)."""
    threshold = check_float(threshold, "threshold", positive=True)
    nsigma = check_float(nsigma, "nsigma", positive=True)
    if tag is not None and not TAG.fullmatch(str(tag)):
        raise InputError("tag", f"{tag!r}: a tag is letters, digits and . _ + - (it names files)")
    started = _time.monotonic()
    if out is not None:
        refuse_overwriting_inputs(out, [*_paths(mc), *_paths(theories)], "out")
        check_writable(out, "out", needed_bytes=FILE_OVERHEAD)
    from kernel_eft.diagnose.point import diagnose_point

    with heartbeat(log, "diagnose"):
        ds = diagnose_point(_inputs(mc, "mc"), _inputs(theories, "theories"), threshold=threshold, nsigma=nsigma)
    params = dict(ds.attrs)
    if tag is not None:
        params["point"] = tag
    ds.attrs = provenance_attrs(f"Closure diagnostics ({params['activation']}, widths {params['widths']}, "
                                f"L={params['depth']}, T={float(params['time']):g})", params)
    write_result(ds, out, log, started, prefix=f"point {params['point']}: ")
    return ds


def figures(diagnostics, outdir, *, summary_dir=None, only=None, print_summary: bool = False, log=None) -> list[str]:
    """Every figure (PDF, PNG, caption) of every diagnosed point, the study figures, and summary.csv,
    summary.nc, summary.html (in summary_dir, default outdir).  diagnostics: paths or Datasets.  only="point":
    the point figures alone; only="study": the study figures and the summary alone (the workflow renders each
    point in its own job, then the study).  Returns the paths written."""
    # matplotlib loads only when figures are drawn: simulate and theory start faster
    from kernel_eft.figures import study as renderer
    from kernel_eft.figures.summary import format_summary_table

    if only not in (None, "point", "study"):
        raise InputError("only", f"{only!r}: give point or study (or nothing: both)")
    started = _time.perf_counter()
    check_writable(outdir, "outdir", directory=True, needed_bytes=renderer.NEEDED_BYTES)
    summary_dir = os.path.abspath(summary_dir or outdir)
    check_writable(summary_dir, "summary_dir", directory=True, needed_bytes=renderer.NEEDED_BYTES // 4)
    points = _inputs(diagnostics, "diagnostics")
    table = None
    with heartbeat(log, "figures"):
        if only == "point":
            paths = renderer.render_points(points, outdir)
        elif only == "study":
            paths, table = renderer.render_study(points, outdir, summary_dir)
        else:
            paths, table = renderer.render(points, outdir, summary_dir)
    if print_summary and table is not None:
        print(format_summary_table(table))
    if log is not None:
        where = outdir if summary_dir == os.path.abspath(outdir) else f"{outdir} and the summary to {summary_dir}"
        log(f"wrote {len(paths)} files to {where} in {_time.perf_counter() - started:.1f} s")
    return paths


def summary(path) -> str:
    """A study's summary table (summary.csv written by `figures`) as terminal text: point, closure, t* with its
    68% interval, worst pulls and the r limit."""
    from kernel_eft.figures.summary import format_summary_table, read_summary

    return format_summary_table(read_summary(path))


def study_plan(config, *, cores: int = 1, list_jobs: bool = False, workdir=".") -> str:
    """A study's jobs and their estimated CPU time per stage (kernel_eft.study.jobs), from its config file."""
    from kernel_eft.study.grid import Study
    from kernel_eft.study.jobs import plan_text

    cores = check_int(cores, "cores", 1)
    study = Study.from_file(config, os.path.join(workdir, "config", "config.yaml"))
    return plan_text(study, cores=cores, list_jobs=list_jobs)


def study_status(config, *, workdir=".", list_jobs: bool = False) -> str:
    """Which of a study's jobs are done, running and missing, from the files under `workdir`."""
    from kernel_eft.study.grid import Study
    from kernel_eft.study.jobs import status_text

    study = Study.from_file(config, os.path.join(workdir, "config", "config.yaml"))
    return status_text(study, workdir, list_jobs=list_jobs)


__all__ = ["diagnose", "figures", "merge", "simulate", "study_plan", "study_status", "summary", "theory"]
