"""MPI distribution of seed batches and their deterministic reduction.

Batch b runs on rank b mod size; its RNG stream depends on (run seed, b) only.  Rank 0 gathers every
batch's moments and merges them in batch order, so the result is bitwise identical for any rank count.
Without mpi4py, or without mpiexec, everything runs as a single rank.
"""

from __future__ import annotations

import sys
import traceback


class SerialComm:
    """The subset of an mpi4py communicator used here, for a single process."""

    rank = 0
    size = 1

    def gather(self, obj, root=0):
        return [obj]

    def bcast(self, obj, root=0):
        return obj

    def Abort(self, code=1):  # noqa: N802 (mpi4py's name)
        raise SystemExit(code)


def get_comm():
    try:
        from mpi4py import MPI
    except ImportError:
        return SerialComm()
    return MPI.COMM_WORLD


def mpi_library_version() -> str:
    try:
        from mpi4py import MPI
    except ImportError:
        return "none (mpi4py not installed)"
    return " ".join(MPI.Get_library_version().split())


def batches_of_rank(n_batches: int, rank: int, size: int) -> list[int]:
    return list(range(rank, n_batches, size))


def run_batches(comm, n_batches: int, work, progress=None):
    """Run work(b) for this rank's batches; gather [(b, result, error message or None)] by b on rank 0.

    Per-batch numerical errors travel to rank 0 as values so that every rank reaches the gather and
    the job ends cleanly with a report; any other exception aborts the whole MPI job (no hang).
    """
    mine = batches_of_rank(n_batches, comm.rank, comm.size)
    local = []
    for i, b in enumerate(mine):
        try:
            local.append((b, work(b), None))
        except ArithmeticError as exc:
            local.append((b, None, str(exc)))  # a message pickles whatever the exception's signature
        except Exception:
            if comm.size > 1:
                traceback.print_exc()
                sys.stderr.flush()
                comm.Abort(1)
            raise
        if progress is not None:
            progress(i + 1, len(mine))
    gathered = comm.gather(local, root=0)
    if comm.rank != 0:
        return None
    flat = sorted((item for part in gathered for item in part), key=lambda item: item[0])
    assert [item[0] for item in flat] == list(range(n_batches))
    return flat
