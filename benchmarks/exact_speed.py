"""Speed, memory and accuracy of the exact closure, as a user runs it (`kernel-eft theory --closure exact`).

Each case runs in its own process pinned to one BLAS thread; wall time and peak resident memory are measured
from outside, and the continuous runs report their refinement accuracy estimate (file attribute
relative_accuracy).  Targets (issue 10):

    --depth 64, P = 2:               relu <= 3 s, tanh / gelu / silu <= 10 s
    continuous, P = 2, default points: every activation <= 30 s, relative accuracy <= 1e-4 (by refinement)
    relu, P = 8 (a full 8 x 8 kernel), --depth 64: <= 2 minutes and <= 4 GB resident

and with --next-order, the cost of V4_1 (issue 17: at --depth 64, P = 2, at most 5x the O(1/n) theory): each
case with V4_1 (the default) and without (--next-order-seconds 0), their ratio, and where V4_1 is absent why.

    PYTHONPATH=src python benchmarks/exact_speed.py [--quick | --next-order] [--json out.json]

--quick runs only the depth-64 P = 2 cases.  Timings from a shared machine vary; compare cases measured in
one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

P2 = "1,0.6;0.6,1"
_CHILD = ("import resource, sys\n"
          "from kernel_eft.cli import main\n"
          "rc = main(sys.argv[1:])\n"
          "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
          "sys.exit(rc)\n")


def kin_p8() -> str:
    """A full 8 x 8 input kernel: normalised Gram matrix of 8 random vectors in R^16, norms 0.7 .. 1.5."""
    rng = np.random.default_rng(8)
    X = rng.normal(size=(8, 16))
    K = X @ X.T / 16
    d = np.sqrt(np.diag(K))
    norms = np.sqrt(np.linspace(0.7, 1.5, 8))
    K = K / np.outer(d, d) * np.outer(norms, norms)
    return ";".join(",".join(f"{v:.6f}" for v in row) for row in K)


def run_case(activation: str, kin: str, depth: int | None, time_T: float = 4.0, sb2: float = 0.1,
             extra: tuple = ()) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "th.nc")
        args = ["theory", "--closure", "exact", "--activation", activation, "--kin", kin, "--time", str(time_T),
                "--sb2", str(sb2), "--out", out, *extra] + (["--depth", str(depth)] if depth is not None else [])
        # the child reports its own peak resident memory (RUSAGE_CHILDREN would be the max over all cases)
        cmd = [sys.executable, "-c", _CHILD, *args]
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)  # for the CPU time of this child
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
        import xarray as xr

        with xr.open_dataset(out) as ds:
            accuracy = float(ds.attrs.get("relative_accuracy", float("nan")))
            points = int(ds.sizes["t"])
            next_order = "V4_1" if "V4_1" in ds else str(ds.attrs.get("V4_1_method", ""))
        return {"activation": activation, "P": kin.count(";") + 1, "depth": depth, "points": points,
                "wall_seconds": round(wall, 2), "cpu_seconds": round((after.ru_utime - before.ru_utime)
                                                                     + (after.ru_stime - before.ru_stime), 2),
                "peak_rss_mb": round(float(proc.stderr.strip().splitlines()[-1].split()[-1]) / 1024, 1),
                "relative_accuracy": accuracy, "next_order": next_order}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the depth-64 P = 2 cases")
    ap.add_argument("--json", default=None)
    ap.add_argument("--next-order", action="store_true", help="V4_1's cost against the O(1/n) theory alone")
    args = ap.parse_args(argv)
    if args.next_order:
        return next_order_main(args)
    cases = [(act, P2, 64) for act in ("relu", "tanh", "gelu", "silu")]
    if not args.quick:
        cases += [(act, P2, None) for act in ("relu", "erf", "tanh", "gelu", "silu")]
        cases += [("relu", kin_p8(), 64)]
    results = []
    print(f"{'activation':>10} {'P':>2} {'form':>12} {'wall s':>8} {'cpu s':>8} {'peak MB':>8} {'rel. accuracy':>14}")
    for act, kin, depth in cases:
        r = run_case(act, kin, depth)
        results.append(r)
        form = f"L={depth}" if depth else f"cont. {r['points']}"
        print(f"{act:>10} {r['P']:>2} {form:>12} {r['wall_seconds']:8.2f} {r['cpu_seconds']:8.2f} "
              f"{r['peak_rss_mb']:8.1f} {r['relative_accuracy']:14.2e}", flush=True)
    return write_json(args.json, results)


def write_json(path, results) -> int:
    if path:
        with open(path, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


def next_order_main(args) -> int:
    """Each case with V4_1 and without it (--next-order-seconds 0), measured one after the other."""
    cases = [(act, kin, depth) for act in ("relu", "tanh", "gelu") for kin, depth in
             (("1", 64), ("1", None), (P2, 8), (P2, 64))]
    results = []
    print(f"{'activation':>10} {'P':>2} {'form':>8} {'O(1/n) s':>9} {'+ V4_1 s':>9} {'ratio':>6}  V4_1")
    for act, kin, depth in cases:
        alone = run_case(act, kin, depth, time_T=3.0, sb2=0.2, extra=("--next-order-seconds", "0"))
        both = run_case(act, kin, depth, time_T=3.0, sb2=0.2)
        results.append({"alone": alone, "with_V4_1": both})
        form = f"L={depth}" if depth else "cont."
        note = "written" if both["next_order"] == "V4_1" else both["next_order"][:90]
        print(f"{act:>10} {both['P']:>2} {form:>8} {alone['wall_seconds']:9.2f} {both['wall_seconds']:9.2f} "
              f"{both['wall_seconds'] / alone['wall_seconds']:6.1f}  {note}", flush=True)
    return write_json(args.json, results)


if __name__ == "__main__":
    raise SystemExit(main())
