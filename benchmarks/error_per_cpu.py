"""Error bars per CPU-second: the figure of merit of a Monte Carlo design (issue 18).

    python benchmarks/error_per_cpu.py [--samples 4000] [--depth 64] [--json out.json] [--quick]

For relu and tanh, P = 2 (rho = 0.6, sw2 = 1, sb2 = 0), T = 1 and 4, at depth L, every width is simulated
once as a whole `python -m kernel_eft simulate` process (start-up included) with and without
`--control-variates martingale`, timed by its CPU time (user + system, resource.RUSAGE_CHILDREN).  A design
is a set of widths, a fit order in 1/n and a control setting; its figure of merit is

    se(X_inf)^2 x CPU seconds of all its widths      (smaller is better; X = K1 and V4 at t = T)

with X_inf the weighted 1/n extrapolation of core/statistics.py and se from the jackknife errors, per entry
(3 K1 pairs, 6 V4 pair-pairs; the median ratio over entries is quoted).  It does not depend on the number of
samples, so designs of different cost compare directly.  "today" is the default study's design: widths
64/128/256, equal samples, linear fit, no controls.  The parts:
  controls     the same widths with controls (same seeds)
  widths       16/32/64 (linear) and 16/32/64/128 (fit order from the chi^2 test), without controls
  both         cheap widths with controls
  allocation   the CPU split over the widths of `allocate_samples` (core/allocation.py) instead of equal
               samples, evaluated from each width's measured error and cost (no rerun): Var x CPU at the optimum
Bias: every extrapolation is compared with the exact O(1/n) theory at the same depth L ((X_inf - X_exact) /
se: |pull| should stay below ~3; a design that buys its error bar with bias shows here).  V4's theory is
exact only while r = V4 / (n K0^2) is small, so at T = 4 the V4 pulls test the fit more than the theory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from kernel_eft.core.allocation import extrapolated_variance  # noqa: E402
from kernel_eft.core.pairs import four_index_to_pairs, to_pairs  # noqa: E402
from kernel_eft.core.statistics import extrapolate_inverse_width  # noqa: E402

WIDTHS = (16, 32, 64, 128, 256)
DESIGNS = {  # name: (widths, degree, controls)
    "today": ((64, 128, 256), 1, "none"),
    "controls": ((64, 128, 256), 1, "martingale"),
    "widths 16-64 lin": ((16, 32, 64), 1, "none"),
    "widths 16-128 auto": ((16, 32, 64, 128), "auto", "none"),
    "both 16-64 lin": ((16, 32, 64), 1, "martingale"),
    "both 16-128 auto": ((16, 32, 64, 128), "auto", "martingale"),
    "both 32-256 lin": ((32, 64, 128, 256), 1, "martingale"),
    "both 16-256 auto": ((16, 32, 64, 128, 256), "auto", "martingale"),
}


def run_width(activation, width, depth, time, samples, controls, seed, tmp) -> tuple[dict, float]:
    """(per-width estimates at every time, CPU seconds of the whole process)."""
    out = Path(tmp) / f"{activation}_{width}_{time:g}_{controls}.nc"
    cmd = [sys.executable, "-m", "kernel_eft", "simulate", "--activation", activation, "--width", str(width),
           "--depth", str(depth), "--time", str(time), "--kin", "1,0.6;0.6,1", "--samples", str(samples), "--seed",
           str(seed), "--control-variates", controls, "--no-progress", "--out", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with xr.open_dataset(out) as ds:
        est = {"K1": to_pairs(ds["K1"].values), "K1_se": to_pairs(ds["K1_se"].values),
               "V4": four_index_to_pairs(ds["V4"].values), "V4_se": four_index_to_pairs(ds["V4_se"].values)}
    out.unlink()
    iu, ju = np.triu_indices(3)
    for key in ("V4", "V4_se"):
        est[key] = est[key][:, iu, ju]  # the 6 distinct entries of V4
    return est, cpu


def exact_theory(activation, depth, time):
    import kernel_eft as ke

    th = ke.theory(activation=activation, kin=[[1, 0.6], [0.6, 1]], time=time, closure="exact", depth=depth)
    iu, ju = np.triu_indices(3)
    return {"K1": to_pairs(th["K1"].values)[-1], "V4": four_index_to_pairs(th["V4"].values)[-1][iu, ju]}


def evaluate(runs, design, theory, samples):
    widths, degree, controls = design
    cpu = sum(runs[(w, controls)][1] for w in widths)
    out = {"cpu_s": cpu}
    for name in ("K1", "V4"):
        values = np.stack([runs[(w, controls)][0][name] for w in widths])
        errors = np.stack([runs[(w, controls)][0][name + "_se"] for w in widths])
        e = extrapolate_inverse_width(widths, values, errors, degree=degree)
        se_T, value_T = e.se[-1], e.value[-1]
        # allocation: per-sample variance se^2 N and cost CPU / N of each width, at the fit's own order
        fit_degree = len(widths) - 1 - e.dof
        alloc = []
        for j in range(se_T.size):
            sigma2 = errors[:, -1, j] ** 2 * samples
            cost = np.array([runs[(w, controls)][1] for w in widths]) / samples
            alloc.append(allocation_gain(widths, sigma2, cost, fit_degree))
        out[name] = {"fom": (se_T ** 2 * cpu).tolist(), "se": se_T.tolist(), "value": value_T.tolist(),
                     "pull_exact": ((value_T - theory[name]) / se_T).tolist(), "degree": int(fit_degree),
                     "allocation_gain": alloc}
    return out


def allocation_gain(widths, sigma2, cost, degree):
    """Var x CPU of equal samples over that of the allocate_samples optimum (same budget)."""
    from kernel_eft.core.allocation import allocate_samples

    budget = 1000.0
    equal = np.full(len(widths), budget / cost.sum())
    best = allocate_samples(widths, budget, sigma2, cost, degree=degree, min_fraction=0.1, min_samples=1)
    return extrapolated_variance(widths, equal, sigma2, degree) / extrapolated_variance(widths, best, sigma2, degree)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--depth", type=int, default=64)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="relu at T = 4 only")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    configs = [("relu", 4.0)] if args.quick else [("relu", 4.0), ("tanh", 4.0), ("relu", 1.0), ("tanh", 1.0)]
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for activation, time in configs:
            runs = {}
            for controls in ("none", "martingale"):
                for w in WIDTHS:
                    runs[(w, controls)] = run_width(activation, w, args.depth, time, args.samples, controls,
                                                    args.seed, tmp)
                    print(f"  {activation} T={time:g} n={w} {controls}: {runs[(w, controls)][1]:.1f} CPU s",
                          file=sys.stderr, flush=True)
            theory = exact_theory(activation, args.depth, time)
            res = {name: evaluate(runs, d, theory, args.samples) for name, d in DESIGNS.items()}
            report[f"{activation}_T{time:g}"] = res
            print(f"\n{activation}, T = {time:g}, L = {args.depth}, {args.samples} samples per width")
            print(f"{'design':22s} {'CPU s':>7s} {'K1 gain':>8s} {'x alloc':>8s} {'|pull|':>7s} {'deg':>4s}"
                  f" {'V4 gain':>8s} {'x alloc':>8s} {'|pull|':>7s} {'deg':>4s}")
            base = res["today"]
            for name, r in res.items():
                line = f"{name:22s} {r['cpu_s']:7.1f}"
                for q in ("K1", "V4"):
                    gain = np.median(np.array(base[q]["fom"]) / np.array(r[q]["fom"]))
                    line += (f" {gain:8.2f} {np.median(r[q]['allocation_gain']):8.2f}"
                             f" {np.max(np.abs(r[q]['pull_exact'])):7.2f}")
                    line += f" {r[q]['degree']:4d}"
                print(line, flush=True)
            report[f"{activation}_T{time:g}"]["per_width"] = {
                f"{w}_{c}": {"cpu_s": cpu, **{k: v[-1].tolist() for k, v in est.items()}}
                for (w, c), (est, cpu) in runs.items()}
            if args.json:  # after every point, so that a long run leaves what it measured
                Path(args.json).write_text(json.dumps({"samples": args.samples, "depth": args.depth,
                                                       "report": report}, indent=1))


if __name__ == "__main__":
    main()
