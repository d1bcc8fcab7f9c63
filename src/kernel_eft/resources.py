"""What a command will need, known before it allocates: peak memory, CPU time and output size, and the memory and
disk space there are.  A run that cannot fit is refused with one line (InputError: exit 2) naming the estimate,
what is available and what to change; the estimates are stated in the start line.

Peak memory of a Monte Carlo rank is the working set of one chunk of seeds (kernel_eft.simulate.samplers: the
block sampler holds about 7 arrays of chunk x P x n float64, the weights sampler also three of chunk x n x n)
plus, on rank 0, the batch moments, the kept samples (--keep-samples) and what writing them takes, plus the
interpreter and its libraries as already counted by the operating system.  CPU time comes from the cost
model measured by the benchmarks (config/README.md, "Size and cost"): a job takes samples x L x (a n + b) on
one core for the block sampler, with (a, b) per activation, and c n^2 more for the weights sampler.
"""

from __future__ import annotations

import os
import resource

from kernel_eft.validation import InputError

FLOAT = 8
FILE_OVERHEAD = 1 << 20  # netCDF header, attributes, coordinates: a generous allowance
WRITE_FACTOR = 0.5  # a further half copy of the kept samples while netCDF4 + zlib write them (measured peak RSS)
LIBRARIES = 64 << 20  # netCDF4 and HDF5, loaded only when the file is written, and the allocator's slack


def format_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def format_seconds(s: float) -> str:
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if s >= size:
            return f"{s / size:.3g} {unit}"
    return f"{s:.2g} s"


# ---------------------------------------------------------------------------------------------
# The Monte Carlo
# ---------------------------------------------------------------------------------------------


def _pairs(P: int) -> int:
    return P * (P + 1) // 2


def simulation_memory(params, keep_samples: bool, ranks: int = 1) -> dict:
    """Peak bytes of one Monte Carlo rank beyond what the process already uses: {'chunk': working set of one
    chunk, 'rank0': what rank 0 holds besides (moments, estimates, kept samples), 'total_rank0', 'per_rank',
    'dominant': the argument that drives it (width, samples, keep_samples, sampler)}."""
    n, P, R, p = params.width, params.P, len(params.layers), _pairs(params.P)
    biggest_batch = int(params.batch_sizes().max())
    chunk = params.chunk_size(biggest_batch)
    working = 7 * chunk * P * n + 2 * chunk * R * P * P + 4 * chunk * R * p * p
    if params.sampler == "weights":
        working += 3 * chunk * n * n  # the normals, the scaled weights, matmul's contiguous copy of W^T
    moments = params.batches * R * (2 * p + 3 * p * p)
    estimates = 40 * R * p * p + 20 * R * P * P  # every estimate, its jackknife error and the jackknife's copies
    kept_all = 2 * params.samples * R * P * P if keep_samples else 0
    kept_mine = 2 * biggest_batch * R * P * P * 2 if keep_samples else 0  # one batch's samples while they merge
    rank0 = FLOAT * (moments * 3 + estimates + kept_all * (1 + WRITE_FACTOR)) + LIBRARIES
    chunk_bytes = FLOAT * (working + kept_mine)
    share = -(-params.batches // ranks)  # batches of the busiest rank, kept there until rank 0 receives them
    per_rank = chunk_bytes + (FLOAT * 2 * share * biggest_batch * R * P * P if keep_samples and ranks > 1 else 0)
    dominant = "keep_samples" if rank0 > chunk_bytes else ("sampler" if params.sampler == "weights"
                                                           and chunk * n * n > chunk * P * n * 4 else
                                                           ("width" if chunk == 1 else "samples"))
    return {"chunk": chunk_bytes, "rank0": rank0, "total_rank0": chunk_bytes + rank0, "per_rank": per_rank,
            "dominant": dominant, "chunk_seeds": chunk}


def simulation_seconds(params) -> float:
    """Core-seconds of the whole run on this project's machine (the benchmarks' cost model)."""
    from kernel_eft.core.allocation import run_seconds  # the one cost model of the Monte Carlo

    return run_seconds(params.activation, params.width, params.depth, params.samples, params.P, params.sampler,
                       params.control_variates)


def simulation_output_bytes(params, keep_samples: bool) -> int:
    """Upper bound of the Monte Carlo file's size (uncompressed)."""
    P, R, p = params.P, len(params.layers), _pairs(params.P)
    estimates = R * (10 * P * P + 6 * P ** 4)
    moments = params.batches * R * (2 * p + 3 * p * p)
    kept = 2 * params.samples * R * P * P if keep_samples else 0
    return FLOAT * (estimates + moments + kept) + FILE_OVERHEAD


# ---------------------------------------------------------------------------------------------
# What there is
# ---------------------------------------------------------------------------------------------


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def resident_bytes() -> int:
    """What this process holds now (VmRSS): the interpreter and the libraries loaded so far."""
    return _status_kb("VmRSS") or 0


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cgroup_headroom() -> int | None:
    """memory.max - memory.current of this process's cgroup (v2), or the v1 limit - usage."""
    try:
        with open("/proc/self/cgroup") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0":  # v2
            base = "/sys/fs/cgroup" + path
            files = ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            base = "/sys/fs/cgroup/memory" + path
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        try:
            with open(os.path.join(base, files[0])) as fh:
                limit = fh.read().strip()
            with open(os.path.join(base, files[1])) as fh:
                used = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if limit != "max" and int(limit) < 1 << 60:
            return max(int(limit) - used, 0)
    return None


def available_memory(local_ranks: int = 1) -> tuple[int | None, str]:
    """(bytes this process may still allocate, which limit says so): the least of the system's MemAvailable
    (shared by the `local_ranks` processes of this node), the RLIMIT_AS and RLIMIT_DATA headroom
    (ulimit -v / -d, per process) and the cgroup's memory.max headroom (shared).  (None, '') if unknown."""
    found = []
    free = _meminfo_available()
    if free is not None:
        found.append((free // max(local_ranks, 1), "available system memory (MemAvailable"
                      + (f" / {local_ranks} ranks)" if local_ranks > 1 else ")")))
    for limit, key, name in ((resource.RLIMIT_AS, "VmSize", "the address-space limit (ulimit -v)"),
                             (resource.RLIMIT_DATA, "VmData", "the data-segment limit (ulimit -d)")):
        soft, _ = resource.getrlimit(limit)
        if soft != resource.RLIM_INFINITY:
            used = _status_kb(key) or 0
            found.append((max(soft - used, 0), name))
    cgroup = _cgroup_headroom()
    if cgroup is not None:
        found.append((cgroup // max(local_ranks, 1), "the cgroup's memory.max"))
    if not found:
        return None, ""
    return min(found)


def local_ranks(comm_size: int) -> int:
    """MPI ranks on this node (the launcher's variable; else all of them)."""
    for var in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return min(int(value), comm_size)
    return comm_size


def check_memory(needed: float, field: str, what: str, remedy: str, ranks_here: int = 1) -> None:
    """InputError naming `field` when `needed` bytes exceed what is available."""
    available, source = available_memory(ranks_here)
    if available is not None and needed > available:
        raise InputError(field, f"needs about {format_bytes(needed)} of memory ({what}), more than the "
                                f"{format_bytes(available)} left by {source}; {remedy}; nothing computed")


def free_disk(directory: str) -> int | None:
    try:
        stat = os.statvfs(directory)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


__all__ = ["available_memory", "check_memory", "format_bytes", "format_seconds", "free_disk", "local_ranks",
           "resident_bytes", "simulation_memory", "simulation_output_bytes", "simulation_seconds"]
