"""What a running job tells its user: log lines, progress, a heartbeat (stderr, so that Snakemake and SLURM
logs show a running job).  A rich progress bar on a terminal; otherwise a line every 10% and at least every
PROGRESS_SECONDS."""

from __future__ import annotations

import contextlib
import sys
import threading
import time

PROGRESS_SECONDS = 30.0  # a progress line at least this often, besides one every 10%


def logger(command: str):
    """log(message) -> "kernel-eft COMMAND: message" on stderr."""

    def log(message: str) -> None:
        print(f"kernel-eft {command}: {message}", file=sys.stderr, flush=True)

    return log


def format_params(**params) -> str:
    return ", ".join(f"{key}={value}" for key, value in params.items())


class Progress:
    """progress(done, total): a rich progress bar on a terminal; otherwise a log line at every 10% and at least
    every PROGRESS_SECONDS (Snakemake and SLURM logs).  Disabled: does nothing."""

    def __init__(self, label: str, enabled: bool, unit: str = "batches"):
        self.base_label = label
        self.enabled = enabled
        self._begin(label, unit)

    def _begin(self, label: str, unit: str) -> None:
        """Count from zero under `label` (the job's, or a later stage's)."""
        self.label = label
        self.unit = unit
        self.start = time.monotonic()
        self.last_line = self.start
        self.bar = None
        self.last_decile = -1
        if self.enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
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

    def stage(self, what: str, unit: str) -> None:
        """A second measured stage of the same job (the exact closure's V4_1 after its two-time kernels): the lines
        and the bar then count `unit` under "LABEL, WHAT", from a fresh start."""
        if self.bar is not None and self.task is not None:
            self.bar.stop()
        self._begin(f"{self.base_label}, {what}", unit)

    def note(self, message: str) -> None:
        """One line that says what a job decided (refining a lattice, and why)."""
        if not self.enabled:
            return
        line = f"{self.base_label}: {message}"
        if self.bar is not None:
            self.bar.console.print(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def pulse(self, describe) -> None:
        """Inside one long step (a batch): a line when PROGRESS_SECONDS have passed since the last one.
        describe() -> the text; called only then, so a pulse costs one clock reading."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last_line < PROGRESS_SECONDS:
            return
        self.last_line = now
        line = f"{self.label}: {describe()}, elapsed {now - self.start:.1f} s"
        if self.bar is not None:
            self.bar.console.print(line)
        else:
            print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def heartbeat(log, what: str, interval: float = PROGRESS_SECONDS):
    """log(...) every `interval` seconds while a step without progress callbacks runs (the ODE solvers)."""
    if log is None:
        yield
        return
    stop = threading.Event()
    start = time.monotonic()

    def beat():
        while not stop.wait(interval):
            log(f"{what}: still running, {time.monotonic() - start:.0f} s elapsed")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
