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
from kernel_eft.resources import (check_memory, format_bytes, format_seconds, local_ranks, resident_bytes,
                                  simulation_memory,
                                  simulation_output_bytes, simulation_seconds)
from kernel_eft.simulate.dataset import MATCHING_ATTRS, mc_dataset, params_from_dataset
from kernel_eft.simulate.estimates import summarize
from kernel_eft.simulate.parallel import SerialComm, mpi_library_version, run_batches
from kernel_eft.simulate.params import SimulationParams
from kernel_eft.simulate.samplers import simulate_batch
from kernel_eft.validation import InputError, NonFiniteError, format_kin, non_finite_message, plain


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
    memory = simulation_memory(params, keep_samples, comm.size)
    seconds = simulation_seconds(params)

    def preflight():  # before anything is allocated: the memory, and the disk space of the output
        check_memory(memory["total_rank0"], memory["dominant"], _memory_what(params, memory, keep_samples),
                     _REMEDY[memory["dominant"]], local_ranks(comm.size))
        if out is not None:
            check_writable(out, "out", needed_bytes=simulation_output_bytes(params, keep_samples))

    on_rank0(comm, preflight)
    if comm.rank == 0 and log is not None:
        log(format_params(
            activation=params.activation, n=params.width, L=params.depth, T=f"{params.time:g}",
            sw2=f"{params.sw2:g}", sb2=f"{params.sb2:g}", K_in=f"[{format_kin(params.kin)}]",
            samples=params.samples, batches=params.batches, seed=params.seed, sampler=params.sampler,
            record_every=params.record_every, mpi_ranks=comm.size) + (f" -> {out}" if out is not None else "")
            + f"; estimated peak memory {format_bytes(memory['total_rank0'] + resident_bytes())} on rank 0, CPU time "
              f"{format_seconds(seconds)}" + (f" (~{format_seconds(seconds / comm.size)} on {comm.size} ranks)"
                                              if comm.size > 1 else ""))
    label = f"simulate {params.activation} n={params.width} L={params.depth} (rank 0 of {comm.size})"
    reporter = Progress(label, enabled=(comm.rank == 0 and progress))
    started = time.monotonic()
    kept = KeptSamples(params, comm) if keep_samples else None

    def work(b):
        def pulse(seeds_done, size, layer):
            reporter.pulse(lambda: f"inside batch {b}: {seeds_done}/{size} seeds done, the current chunk at "
                                   f"layer {layer}/{params.depth}")

        moments, samples = simulate_batch(params, b, keep_samples, pulse if reporter.enabled else None)
        if kept is not None:
            kept.add(b, samples)
        return moments

    results = run_batches(comm, params.batches, work, reporter)
    failed = None
    if comm.rank == 0:
        errors = [err for _, _, err in results if err is not None]
        failed = str(errors[0]) if errors else None
    failed = comm.bcast(failed, root=0)
    if failed is not None:
        raise NonFiniteError(failed)
    samples = kept.collect() if kept is not None else None
    outcome, ds = None, None  # rank 0 summarises and writes; every rank then raises or returns alike
    if comm.rank == 0:
        batches = BatchMoments.stack([m for _, m, _ in results])
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


_REMEDY = {"width": "reduce --width", "samples": "reduce --samples or raise --batches",
           "sampler": "use --sampler block (O(n P^2) memory) or reduce --width",
           "keep_samples": "drop --keep-samples, or reduce --samples, or raise --record-every"}


def _memory_what(params, memory, keep_samples) -> str:
    text = (f"{params.sampler} sampler: chunks of {memory['chunk_seeds']} seed(s) x P={params.P} x "
            f"n={params.width}")
    if keep_samples:
        text += f"; --keep-samples: {params.samples} x {len(params.layers)} layers x P^2 x 2 on rank 0"
    return text


class KeptSamples:
    """The per-seed G and S of --keep-samples, gathered on rank 0 into one preallocated array per variable
    in batch order: rank 0 copies its own batches in as they finish; the other ranks keep theirs and send
    them one batch at a time as raw buffers (no pickling of everything at once)."""

    def __init__(self, params: SimulationParams, comm):
        self.comm = comm
        self.sizes = params.batch_sizes()
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)])
        shape = (len(params.layers), params.P, params.P)
        self.G = self.S = None
        if comm.rank == 0:
            self.G = np.empty((params.samples, *shape))
            self.S = np.empty((params.samples, *shape))
        self.mine = {}

    def add(self, b: int, samples) -> None:
        G, S = samples
        if self.comm.rank == 0:
            self.G[self.starts[b]:self.starts[b + 1]] = G
            self.S[self.starts[b]:self.starts[b + 1]] = S
        else:
            self.mine[b] = (np.ascontiguousarray(G), np.ascontiguousarray(S))

    def collect(self):
        """Every rank calls this together; rank 0 returns (G, S), the others None."""
        size = self.comm.size
        if size == 1:
            return self.G, self.S
        for b in range(len(self.sizes)):
            owner = b % size  # kernel_eft.simulate.parallel.batches_of_rank
            if owner == 0:
                continue
            if self.comm.rank == owner:
                G, S = self.mine.pop(b)
                self.comm.Send(G, dest=0, tag=2 * b)
                self.comm.Send(S, dest=0, tag=2 * b + 1)
            elif self.comm.rank == 0:
                self.comm.Recv(self.G[self.starts[b]:self.starts[b + 1]], source=owner, tag=2 * b)
                self.comm.Recv(self.S[self.starts[b]:self.starts[b + 1]], source=owner, tag=2 * b + 1)
        return (self.G, self.S) if self.comm.rank == 0 else None


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
                raise InputError("inputs", f"{name} has {key}={plain(ds.attrs.get(key))}, but {names[0]} has "
                                           f"{key}={plain(first.attrs.get(key))}: only runs of one grid point merge")
        for coord in ("layer", "t"):
            if coord in ds.coords and coord in first.coords and (
                    ds[coord].shape != first[coord].shape or not np.array_equal(ds[coord].values, first[coord].values)):
                raise InputError("inputs", f"{name} and {names[0]} record different {coord} values: only runs of "
                                           "one grid point merge")
    owner = {}  # seed -> the file that has it
    for name, ds in inputs:
        for seed in str(ds.attrs["seed"]).split(","):
            if seed in owner:
                raise InputError("inputs", f"seed {seed} repeats: {owner[seed]} and {name} both hold it; merging a "
                                           "seed twice would double-count samples")
            owner[seed] = name
    flat = list(owner)
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
