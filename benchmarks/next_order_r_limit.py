"""Where the next-order theory V4 + V4_1/n ends: its error against r = V4/(n K0^2), width by width (issue 17).

For one input (P = 1, the only geometry with V4_1), each case (activation, sw2, sb2, T) at depth L and each width
n: Monte Carlo n Cov(G) at t = T (jackknife error over 32 seed batches) against
  lead:  V4              (the exact O(1/n) theory at depth L)
  next:  V4 + V4_1/n     (V4_1 from the grid hierarchy on its automatic grid, kernel_eft.theory.exact)
as relative errors e = (MC - prediction) / V4 with their standard errors, and r = V4/(n K0^2) at T.  An O(1/n)
theory misses by ~c1 r (the next term, V4_1/(n V4), is O(r)); the next-order theory should miss by ~c2 r^2.  The
fits (weighted least squares through the origin over every case and width where the error is resolved):
  e_lead = c1 r,   e_next = c2 r^2   (and, as a check of the order, e_next = c r),
and the r at which the next-order theory's error reaches the threshold (0.1 by default): sqrt(threshold / c2),
against the O(1/n) theory's threshold / c1.  Usage (a few minutes on one core):

    PYTHONPATH=src python benchmarks/next_order_r_limit.py [--depth 8] [--widths 16,32,64,128,256] \
        [--samples 200000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time as _time

import numpy as np

from kernel_eft.core.activations import get_activation
from kernel_eft.simulate.estimates import summarize
from kernel_eft.simulate.params import SimulationParams
from kernel_eft.simulate.samplers import simulate
from kernel_eft.theory.exact import exact_theory_discrete
from kernel_eft.theory.next_order_grid import automatic_grid_points, v4_next_order_grid

CASES = [("relu", 1.0, 0.0, T) for T in (1, 2, 4, 8)] + [("relu", 1.0, 0.1, 4), ("gelu", 1.0, 0.1, 2),
                                                         ("gelu", 1.0, 0.1, 4), ("tanh", 1.5, 0.0, 4)]


def case_rows(activation, sw2, sb2, T, depth, widths, samples, seed):
    act = get_activation(activation)
    kin = np.array([[1.0]])
    res = exact_theory_discrete(act, kin, sw2, sb2, T, depth)
    # the grid hierarchy on its automatic grid, called directly: the theory CLI skips grids above its work
    # limit (a time budget, not an accuracy one)
    points = automatic_grid_points(act, 1.0, sw2, sb2, T, depth)
    grid = v4_next_order_grid(act, 1.0, sw2, sb2, T, depth, grid_points=points)
    V4, V4_1, K0 = float(res.V4[-1, 0, 0]), float(grid.V4_1[-1]), float(res.K0[-1, 0, 0])
    rows = []
    for n in widths:
        params = SimulationParams(activation=activation, width=n, depth=depth, time=T, sw2=sw2, sb2=sb2, kin=kin,
                                  samples=samples, seed=seed + n, record_every=depth, batches=32)
        batches, _ = simulate(params)
        s = summarize(params, batches)
        mc, se = float(s["V4"][-1, 0, 0]), float(s["V4_se"][-1, 0, 0])
        rows.append({"activation": activation, "sw2": sw2, "sb2": sb2, "T": T, "n": n,
                     "r": V4 / (n * K0 ** 2), "V4": V4, "V4_1": V4_1, "mc": mc, "se": se,
                     "e_lead": (mc - V4) / V4, "e_next": (mc - V4 - V4_1 / n) / V4, "e_se": se / V4})
    return rows


def fit_through_origin(x, y, se):
    """c and its standard error of y = c x, weighted by 1/se^2, and the chi^2 per degree of freedom."""
    w = 1.0 / np.asarray(se) ** 2
    c = np.sum(w * x * y) / np.sum(w * x * x)
    return c, 1.0 / np.sqrt(np.sum(w * x * x)), float(np.sum(w * (y - c * x) ** 2) / max(len(x) - 1, 1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--widths", default="16,32,64,128,256")
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    rows, started = [], _time.perf_counter()
    for k, case in enumerate(CASES):  # a seed per case and width: the same stream in every case would correlate them
        rows += case_rows(*case, args.depth, widths, args.samples, args.seed + 10_000 * k)
    print(f"{'case':28s} {'n':>4s} {'r':>7s} {'e_lead':>9s} {'e_next':>9s} {'se':>8s} {'e_next/r^2':>10s}")
    for row in rows:
        name = f"{row['activation']} sw2={row['sw2']:g} sb2={row['sb2']:g} T={row['T']:g}"
        print(f"{name:28s} {row['n']:>4d} {row['r']:7.4f} {row['e_lead']:+9.4f} {row['e_next']:+9.4f} "
              f"{row['e_se']:8.4f} {row['e_next'] / row['r'] ** 2:+10.3f}")
    r = np.array([row["r"] for row in rows])
    e_lead, e_next, e_se = (np.array([row[k] for row in rows]) for k in ("e_lead", "e_next", "e_se"))
    c1, c1_se, chi1 = fit_through_origin(r, e_lead, e_se)
    c2, c2_se, chi2 = fit_through_origin(r ** 2, e_next, e_se)
    cr, cr_se, chir = fit_through_origin(r, e_next, e_se)
    print(f"\nO(1/n) theory:      e = c1 r,   c1 = {c1:.3f} +- {c1_se:.3f} (chi^2/dof {chi1:.2f})")
    print(f"next-order theory:  e = c2 r^2, c2 = {c2:.3f} +- {c2_se:.3f} (chi^2/dof {chi2:.2f}); "
          f"as c r instead: c = {cr:.4f} +- {cr_se:.4f} (chi^2/dof {chir:.2f})")
    print(f"error = {args.threshold:g} at r = {args.threshold / abs(c1):.3f} (O(1/n)) and "
          f"r = {np.sqrt(args.threshold / abs(c2)):.3f} (next order); {len(rows)} widths x cases, "
          f"{_time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "c1": [c1, c1_se, chi1], "c2": [c2, c2_se, chi2], "c_r": [cr, cr_se, chir]},
                      fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
