"""Cost of the progress heartbeat inside a Monte Carlo batch (kernel_eft.progress.Progress.pulse, called by the
samplers at every layer), measured in one run: the same batches with and without the pulse, best of 7, interleaved.

    python benchmarks/bench_progress_pulse.py

Two cases: a typical job (relu, n = 256, L = 64, 391 seeds per batch) and the worst case for a per-layer
call, tiny batches of a narrow network (n = 16, 2 seeds per batch), where a layer costs only microseconds.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402

from kernel_eft.progress import Progress  # noqa: E402
from kernel_eft.simulate.params import SimulationParams  # noqa: E402
from kernel_eft.simulate.samplers import simulate_batch  # noqa: E402

KIN = np.array([[1.0, 0.6], [0.6, 1.0]])


def best_of_interleaved(a, b, repeats=7):
    """min over repeats of each, the two run alternately (a shared machine's load drifts)."""
    times = {a: [], b: []}
    for _ in range(repeats):
        for fn in (a, b):
            t0 = time.perf_counter()
            fn()
            times[fn].append(time.perf_counter() - t0)
    return min(times[a]), min(times[b])


def main() -> None:
    cases = {"typical (n=256, L=64, 391 seeds/batch)": dict(width=256, depth=64, samples=782, batches=2),
             "worst (n=16, L=64, 2 seeds/batch)": dict(width=16, depth=64, samples=64, batches=32)}
    reporter = Progress("bench", enabled=True)  # enabled, but no line is due within the benchmark
    reporter.last_line = float("inf")

    def pulse(done, size, layer):
        reporter.pulse(lambda: f"{done}/{size} at layer {layer}")

    for name, kw in cases.items():
        params = SimulationParams(activation="relu", time=1.0, sw2=1.0, sb2=0.0, kin=KIN, **kw)

        def run(with_pulse):
            return lambda: [simulate_batch(params, b, False, pulse if with_pulse else None)
                            for b in range(params.batches)]

        plain, pulsed = best_of_interleaved(run(False), run(True))
        print(f"{name}: without pulse {plain:.4f} s, with pulse {pulsed:.4f} s, overhead "
              f"{100 * (pulsed / plain - 1):+.1f}%")


if __name__ == "__main__":
    main()
