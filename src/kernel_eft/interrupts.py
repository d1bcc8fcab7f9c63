"""SIGINT (Ctrl-C) and SIGTERM (SLURM, Snakemake, mpiexec): a command ends within seconds at any moment, says in
one line what was interrupted, leaves no partial file and no temporary file, and exits 130 (SIGINT) or 143
(SIGTERM).

Three regimes, chosen by what the main thread is doing when the signal arrives:

- computing (the default): the handler raises `Interrupted`, a BaseException (no `except Exception` swallows
  it); `finally` blocks remove staging folders on the way out and the CLI prints the line.
- writing a netCDF file (`abort_on_signal(tmp, ...)`): raising inside netCDF4/xarray can leave xarray's HDF5
  lock held, and the close path then waits on it for ever (the hang of issue 20).  So the handler removes the
  temporary file itself, prints the line and ends the process with os._exit: nothing of the half-written
  file survives and no lock is waited on.  (A SIGKILL cannot be caught: its temporary file stays behind and
  is removed by the next write to the same path, kernel_eft.io.)
- publishing staged outputs (`deferred()`: a few renames): the signal is remembered and raised when the
  renames are done, so outputs are published all together or not at all.

Only the CLI installs the handlers (`install`); a Python session keeps its own KeyboardInterrupt.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(BaseException):
    """A SIGINT or SIGTERM arrived while kernel-eft was computing."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.exit_code = EXIT_CODES.get(signum, 128 + signum)


_state = {"installed": False, "command": "kernel-eft", "defer": 0, "pending": None, "abort": None,
          "print": True}


def install(command: str, print_line: bool = True) -> dict:
    """Handle SIGINT and SIGTERM in this process (the CLI's entry point).  print_line: this process reports
    (rank 0 under MPI).  Returns the previous handlers, for `restore`."""
    _state.update(installed=True, command=f"kernel-eft {command}", print=print_line, pending=None)
    return {signum: signal.signal(signum, _handler) for signum in EXIT_CODES}


def restore(previous: dict) -> None:
    """Put back the handlers `install` replaced (main() called from Python: its caller keeps its Ctrl-C)."""
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    _state.update(installed=False, abort=None, defer=0, pending=None)


def installed() -> bool:
    return _state["installed"]


def message(name: str, what: str, written: bool = False) -> str:
    return f"{_state['command']}: interrupted by {name} {what}; " + ("its output was already written" if written
                                                                      else "nothing written")


def _handler(signum, frame):
    abort = _state["abort"]
    if abort is not None:  # inside a netCDF write: never raise there (see the module docstring)
        temporary, what = abort
        existed = os.path.exists(temporary)
        try:
            os.unlink(temporary)
        except OSError:
            pass
        if _state["print"]:
            name = signal.Signals(signum).name
            os.write(2, (message(name, what, written=not existed) + "\n").encode())
        os._exit(EXIT_CODES.get(signum, 128 + signum))
    if _state["defer"]:
        _state["pending"] = signum
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def abort_on_signal(temporary: str, what: str):
    """While the body writes `temporary`, a signal removes it and ends the process at once."""
    if not _state["installed"]:
        yield
        return
    previous = _state["abort"]
    _state["abort"] = (temporary, what)
    try:
        yield
    finally:
        _state["abort"] = previous


@contextlib.contextmanager
def deferred():
    """A short critical section (renames): a signal inside it is raised as Interrupted when it ends."""
    _state["defer"] += 1
    try:
        yield
    finally:
        _state["defer"] -= 1
        pending = _state["pending"]
        if not _state["defer"] and pending is not None:
            _state["pending"] = None
            raise Interrupted(pending)


def exit_now(code: int) -> None:
    """End an interrupted MPI rank without MPI_Finalize (the other ranks may never reach it) and without
    mpi4py's MPI_Abort messages."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


__all__ = ["EXIT_CODES", "Interrupted", "abort_on_signal", "deferred", "exit_now", "install", "installed", "message",
           "restore"]
