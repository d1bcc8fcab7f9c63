"""A whole Monte Carlo run: batches spread over MPI ranks, reduced on rank 0 in batch order, summarised and
(optionally) written; and the merging of runs of one grid point.

Under MPI every rank reaches every failure together (errors are decided on rank 0 and broadcast), so all
ranks raise the same exception and a job never hangs: InputError for bad input, an ArithmeticError
(SimulationOverflow, NonFiniteError) for a run that overflowed.  Rank 0 returns the Dataset, the others None.
"""

from __future__ import annotations

import time

import numpy as np

from kernel_eft.core.statistics import BatchMoments
from kernel_eft.io import check_writable, write_result
from kernel_eft.progress import Progress, format_params
from kernel_eft.simulate.dataset import MATCHING_ATTRS, mc_dataset, params_from_dataset
from kernel_eft.simulate.estimates import summarize
from kernel_eft.simulate.parallel import SerialComm, mpi_library_version, run_batches
from kernel_eft.simulate.params import SimulationParams
from kernel_eft.simulate.samplers import simulate_batch
from kernel_eft.validation import InputError, NonFiniteError, format_kin, non_finite_message


def on_rank0(comm, action):
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


def run(params: SimulationParams, comm=None, keep_samples: bool = False, out=None, expect_ranks: int | None = None,
        progress: bool = False, log=None):
    """Every seed batch of `params`, on the ranks of `comm` (None: this process alone), summarised with
    jackknife errors into the Monte Carlo Dataset; written atomically to `out` by rank 0 when given.
    The data are bitwise identical for any rank count.  log(message): start and end lines (rank 0)."""
    comm = comm if comm is not None else SerialComm()
    if expect_ranks is not None and comm.size != expect_ranks:
        # Every rank sees the same size, so every rank raises the same error: no hang.
        raise InputError("expect_ranks", f"the MPI communicator has {comm.size} ranks, expected {expect_ranks} "
                                         "(under SLURM use srun --mpi=pmi2 or mpiexec)")
    if out is not None:
        on_rank0(comm, lambda: check_writable(out, "out"))
    if comm.rank == 0 and log is not None:
        log(format_params(
            activation=params.activation, n=params.width, L=params.depth, T=f"{params.time:g}",
            sw2=f"{params.sw2:g}", sb2=f"{params.sb2:g}", K_in=f"[{format_kin(params.kin)}]",
            samples=params.samples, batches=params.batches, seed=params.seed, sampler=params.sampler,
            record_every=params.record_every, mpi_ranks=comm.size) + (f" -> {out}" if out is not None else ""))
    label = f"simulate {params.activation} n={params.width} L={params.depth} (rank 0 of {comm.size})"
    reporter = Progress(label, enabled=(comm.rank == 0 and progress))
    started = time.monotonic()
    results = run_batches(comm, params.batches, lambda b: simulate_batch(params, b, keep_samples), reporter)
    failed = None
    if comm.rank == 0:
        errors = [err for _, _, err in results if err is not None]
        failed = str(errors[0]) if errors else None
    failed = comm.bcast(failed, root=0)
    if failed is not None:
        raise NonFiniteError(failed)
    outcome, ds = None, None  # rank 0 summarises and writes; every rank then raises or returns alike
    if comm.rank == 0:
        batches = BatchMoments.stack([m for _, (m, _), _ in results])
        samples = None
        if keep_samples:
            samples = tuple(np.concatenate([s[i] for _, (_, s), _ in results]) for i in range(2))
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, by layer and entry
            summary = summarize(params, batches)
        message = non_finite_message(summary, params.times, params.layers)
        if message is not None:
            outcome = ("numerics", message)
        else:
            ds = mc_dataset(params, summary, batches, samples, extra_attrs={
                "mpi_ranks": comm.size,
                "mpi_library": mpi_library_version() if not isinstance(comm, SerialComm) else "none (no MPI "
                                                                                              "communicator)",
                "wall_seconds": round(time.monotonic() - started, 3),
            })
            if out is not None:
                try:
                    write_result(ds, out, log, started, detail=f" ({params.samples} seeds on {comm.size} MPI "
                                                               f"rank{'s' if comm.size > 1 else ''})")
                except InputError as exc:
                    outcome = ("input", exc.field, exc.message)
    outcome = comm.bcast(outcome, root=0)
    if outcome is not None and outcome[0] == "numerics":
        raise NonFiniteError(outcome[1])
    if outcome is not None:
        raise InputError(*outcome[1:])
    return ds


def merge(inputs: list, out=None, log=None):
    """Pool Monte Carlo runs of one grid point made with different seeds: their seed batches are
    concatenated and every estimate and error recomputed.  inputs: [(name, Dataset)]."""
    started = time.monotonic()
    names = [name for name, _ in inputs]
    datasets = [ds for _, ds in inputs]
    first = datasets[0]
    for name, ds in inputs[1:]:
        for key in MATCHING_ATTRS:
            if str(ds.attrs.get(key)) != str(first.attrs.get(key)):
                raise InputError("inputs", f"{name} has {key}={ds.attrs.get(key)!r}, but {names[0]} has "
                                           f"{first.attrs.get(key)!r}: only runs of one grid point merge")
    seeds = [str(ds.attrs["seed"]) for ds in datasets]
    flat = [s for group in seeds for s in group.split(",")]
    if len(set(flat)) != len(flat):
        raise InputError("inputs", f"seeds {flat} repeat: merging a seed twice would double-count samples")
    batches = BatchMoments.from_dataset(first)
    for ds in datasets[1:]:
        batches = batches.concat(BatchMoments.from_dataset(ds))
    total = int(batches.counts.sum())
    params = params_from_dataset(first, samples=total, batches=len(batches))
    summary = summarize(params, batches)
    merged = mc_dataset(params, summary, batches, extra_attrs={
        "seed": ",".join(flat), "merged_from": " ".join(str(name) for name in names),
        "mpi_ranks": ",".join(str(ds.attrs.get("mpi_ranks")) for ds in datasets),
        "mpi_library": str(first.attrs.get("mpi_library")),
    })
    merged.attrs["seed_entropy"] = ",".join(str(ds.attrs.get("seed_entropy")) for ds in datasets)
    message = non_finite_message(summary, params.times, params.layers)
    if message is not None:
        raise NonFiniteError(message)
    write_result(merged, out, log, started, detail=f" ({total} seeds in {len(batches)} batches)")
    return merged


__all__ = ["merge", "on_rank0", "run"]
