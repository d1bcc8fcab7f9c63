"""netCDF at the edge: provenance attributes, atomic writing, checked reading.  Files are written by MPI rank 0
only.  What a file holds is kernel_eft.schema; this module only moves Datasets to and from disk."""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import os
import re
import socket
import sys
import shutil
import tempfile
import zlib

import numpy as np
import xarray as xr

from kernel_eft import interrupts
from kernel_eft.resources import format_bytes, free_disk
from kernel_eft.validation import InputError, format_kin
from kernel_eft.version import __version__, git_commit

CONVENTIONS = "CF-1.10"
REFERENCES = (
    "H. Kawase and T. Ota, Collective Kernel EFT for Pre-activation ResNets, arXiv:2604.15742 (2026); "
    "kernel-eft docs/exact_theory.md (exact O(1/n) theory)"
)


def provenance_attrs(title: str, params: dict) -> dict:
    """CF global attributes plus every parameter (numpy arrays and bools rendered as netCDF-safe values)."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    commit = git_commit()  # two git subprocesses: once per file
    attrs = {
        "Conventions": CONVENTIONS,
        "title": title,
        "institution": "kernel-eft",
        "source": f"kernel-eft {__version__} (git {commit})",
        "history": f"{now}: {' '.join(sys.argv) or 'python API'}",
        "references": REFERENCES,
        "kernel_eft_version": __version__,
        "git_commit": commit,
    }
    for key, value in params.items():
        if isinstance(value, np.ndarray) and value.ndim == 2:
            attrs[key] = format_kin(value)
        elif isinstance(value, bool):
            attrs[key] = int(value)
        elif value is None:
            attrs[key] = "none"
        else:
            attrs[key] = value
    return attrs


def check_writable(path: str | os.PathLike, field: str, *, directory: bool = False, needed_bytes: int = 0) -> None:
    """Before any compute: the output can be created where it is asked for.  Creates and removes a probe
    file in the target directory (or, when that does not exist yet, in its nearest existing ancestor,
    where the missing directories will be made), so a read-only or missing location fails in a second,
    not after the run; and that filesystem has `needed_bytes` free (statvfs: creating an empty probe
    succeeds on a full disk)."""
    path = os.path.abspath(os.fspath(path))
    if directory:
        if os.path.exists(path) and not os.path.isdir(path):
            raise InputError(field, f"{path} exists and is not a directory")
        target = path
    else:
        if os.path.isdir(path):
            raise InputError(field, f"{path} is a directory; give a file name such as out.nc")
        target = os.path.dirname(path)
    while not os.path.exists(target):
        target = os.path.dirname(target)
    if not os.path.isdir(target):
        raise InputError(field, f"cannot create {path}: {target} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".kernel-eft-probe-", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(field, f"cannot write to {target}: {exc.strerror or exc}") from None
    free = free_disk(target)
    if free is not None and free < needed_bytes:
        raise InputError(field, f"cannot write {path}: no space left on device ({format_bytes(free)} free in "
                                f"{target}, the output needs about {format_bytes(needed_bytes)}); nothing computed")


def refuse_overwriting_inputs(out, inputs, field: str) -> None:
    """An output path that names one of the inputs would replace that input."""
    for path in inputs:
        if os.path.exists(path) and os.path.realpath(path) == os.path.realpath(out):
            raise InputError(field, f"{out} is also an input; write the result to a new file")


def write_failure(exc: BaseException, path: str, field: str, needed_bytes: int) -> InputError:
    """The one-line error for a failed write.  HDF5 reports a full disk only as 'NetCDF: HDF error', so
    a full disk is recognised by errno where there is one and otherwise by the free space left at the
    moment of failure (less than the uncompressed size of what was being written)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        stat = os.statvfs(directory)
        free = stat.f_bavail * stat.f_frsize
    except OSError:
        free = None
    full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < needed_bytes)
    if full:
        where = f" ({free} bytes free in {directory})" if free is not None else ""
        return InputError(field, f"cannot write {path}: no space left on device{where}; nothing written")
    return InputError(field, f"cannot write {path}: {getattr(exc, 'strerror', None) or exc}; nothing written")


def write_netcdf(ds: xr.Dataset, path: str, compress: bool = True) -> None:
    """The plain write (NETCDF4, zlib level 4 on numeric variables); callers make it atomic.  Coordinates get
    no _FillValue (CF: a coordinate has no missing values)."""
    encoding = {name: {"_FillValue": None} for name, var in ds.coords.items() if var.dtype.kind in "fiu"}
    for name, var in ds.coords.items():
        # text coordinates as character arrays: a variable-length string coordinate is read by CF tools as a
        # numeric coordinate variable (the IOOS checker then fails its monotonicity test)
        if var.dtype.kind in "OUS" and var.size:
            encoding[name] = {"dtype": "S1"}
    if compress:
        for name, var in ds.data_vars.items():
            if var.dtype.kind in "fiu":
                encoding[name] = {"zlib": True, "complevel": 4}
    ds.to_netcdf(path, engine="netcdf4", format="NETCDF4", encoding=encoding)


def write_dataset_atomic(ds: xr.Dataset, path: str | os.PathLike, compress: bool = True,
                         field: str = "--out") -> None:
    """Write to a temporary file in the target directory, then rename: readers never see a partial file.
    A failed write (disk full, I/O error) removes the temporary file and raises InputError naming `path`;
    a SIGINT or SIGTERM during the write removes it and ends the process (kernel_eft.interrupts).  The
    temporary file is named PATH.HOST-PID.XXXX.tmp, so that one left by a killed process (SIGKILL) is
    recognised and removed by the next write to PATH."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=f"{os.path.basename(path)}.{_HOST}-{os.getpid()}.", suffix=".tmp",
                                   dir=directory)
        os.close(fd)
        with interrupts.abort_on_signal(tmp, f"while writing {path}"):
            write_netcdf(ds, tmp, compress)
            usual_permissions(tmp, 0o666)  # mkstemp creates 0600
            os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # netCDF4 raises RuntimeError('NetCDF: HDF error') for I/O failures
        _remove_quietly(tmp)
        raise write_failure(exc, path, field, int(ds.nbytes)) from None
    except BaseException:
        _remove_quietly(tmp)
        raise


_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


def remove_stale_temporaries(path: str) -> list[str]:
    """Remove PATH.HOST-PID.XXXX.tmp files of this host whose process no longer exists (a write killed by
    SIGKILL, which no handler sees); a live writer's temporary file is left alone.  Returns the removed."""
    directory = os.path.dirname(os.path.abspath(path))
    pattern = re.compile(re.escape(os.path.basename(path)) + r"\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.[^.]+\.tmp")
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or match["host"] != _HOST or _alive(int(match["pid"])):
            continue
        _remove_quietly(os.path.join(directory, name))
        removed.append(os.path.join(directory, name))
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def write_result(ds: xr.Dataset, out, log=None, started: float | None = None, prefix: str = "",
                 detail: str = "") -> None:
    """Write ds atomically to `out` when one is given (InputError naming `out` on failure) and log
    "wrote OUT in S s" (S counted from the monotonic clock reading `started`)."""
    if out is None:
        return
    write_dataset_atomic(ds, out, field="out")
    if log is not None:
        import time

        log(f"{prefix}wrote {out} in {time.monotonic() - (started or time.monotonic()):.1f} s{detail}")


class StagedOutputs:
    """The staging folders of `staged_outputs`: staged[field] is where that destination's files are written;
    after publishing, `published` lists the final paths."""

    def __init__(self, destinations: dict):
        self.destinations = {field: os.path.abspath(os.fspath(path)) for field, path in destinations.items()}
        self.staging: dict[str, str] = {}  # destination directory -> its staging folder
        self.created: list[str] = []  # folders made for the stagings (removed again on failure)
        self.published: list[str] = []

    def __getitem__(self, field: str) -> str:
        return self.staging[self.destinations[field]]

    def field_of(self, exc: BaseException) -> str:
        """The destination a failure belongs to: the one whose staging folder the failed file is in."""
        name = os.path.abspath(str(getattr(exc, "filename", "") or ""))
        for field, destination in self.destinations.items():
            staging = self.staging.get(destination)
            if staging is not None and (name == staging or name.startswith(staging + os.sep)
                                        or name == destination or name.startswith(destination + os.sep)):
                return field
        return next(iter(self.destinations))


@contextlib.contextmanager
def staged_outputs(destinations: dict, needed_bytes: int):
    """Write several output folders all or nothing.  destinations: {field: directory} (fields may share a
    directory).  Each destination gets a staging folder beside it, on its own filesystem, so that publishing
    is renames and never a copy across devices (a --summary-dir on another filesystem than --outdir).
    When the body has written everything, every staged file is published together (interrupts deferred); a
    failure (ENOSPC, I/O error, zlib.error from a PDF writer on a full disk) removes every staging folder and
    every folder made for it, leaves the destinations as they were and raises InputError naming the field
    and the path (no space left on device when statvfs shows less than needed_bytes free)."""
    staged = StagedOutputs(destinations)
    try:
        for destination in dict.fromkeys(staged.destinations.values()):
            parent = os.path.dirname(destination)
            missing = parent
            while not os.path.exists(missing):
                staged.created.insert(0, missing)
                missing = os.path.dirname(missing)
            os.makedirs(parent, exist_ok=True)
            staging = tempfile.mkdtemp(prefix=os.path.basename(destination) + ".", suffix=".tmp", dir=parent)
            usual_permissions(staging, 0o777)  # mkdtemp makes 0700; the folder may become the destination itself
            staged.staging[destination] = staging
        yield staged
        with interrupts.deferred():
            for destination, staging in staged.staging.items():
                names = sorted(os.listdir(staging))
                if not os.path.exists(destination):
                    os.rename(staging, destination)
                else:
                    for name in names:
                        os.replace(os.path.join(staging, name), os.path.join(destination, name))
                staged.published += [os.path.join(destination, name) for name in names]
    except (OSError, RuntimeError, zlib.error) as exc:
        field = staged.field_of(exc)
        _remove_staging(staged)
        raise write_failure(exc, staged.destinations[field], field, needed_bytes) from None
    except BaseException:
        _remove_staging(staged)
        raise
    finally:
        for staging in staged.staging.values():
            shutil.rmtree(staging, ignore_errors=True)


def _remove_staging(staged: StagedOutputs) -> None:
    for staging in staged.staging.values():
        shutil.rmtree(staging, ignore_errors=True)
    for folder in reversed(staged.created):
        try:
            os.rmdir(folder)
        except OSError:
            pass


def usual_permissions(path: str, mode: int) -> None:
    """Give a temporary file (0600) or folder (0700) the permissions the umask gives new ones."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def _remove_quietly(path) -> None:
    if path is not None and os.path.exists(path):
        try:
            os.unlink(path)
        except OSError:
            pass


def read_dataset(path: str | os.PathLike, field: str = "input") -> xr.Dataset:
    """Load a kernel-eft netCDF file fully into memory (and close it).  A missing, truncated or corrupt
    file (netCDF4 reports corrupt data only when it is read, as 'NetCDF: HDF error') is an InputError
    naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(field, f"no such file: {path}")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            return ds.load()
    except Exception as exc:  # netCDF4/HDF5 raise RuntimeError, OSError, ValueError, KeyError, ...
        reason = " ".join(str(getattr(exc, "strerror", None) or exc).split()) or type(exc).__name__
        raise InputError(field, f"cannot read {path}: {reason} (corrupt, truncated or not netCDF)") from None
