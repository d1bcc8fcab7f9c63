"""Grid convergence of the V4_1 hierarchy (kernel_eft.theory.next_order_grid) for one input: at each number of grid
points, the grid's V4 and K1 against the exact O(1/n) theory at the same depth (max over layers), V4_1 at the last
layer, the wall time, and the order p of the error from successive V4_1 differences (d_k / (h_k^p - h_{k+1}^p)
constant).  Usage (seconds to minutes; N = 301 takes about 1.5 min for L = 8):

    PYTHONPATH=src python benchmarks/next_order_grid_convergence.py --activation relu --sw2 1 --sb2 0.2 --time 4 \
        --depth 8 --points 101,151,201,251,301
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kernel_eft.core.activations import get_activation
from kernel_eft.theory.exact import exact_theory_discrete
from kernel_eft.theory.next_order_grid import v4_next_order_grid


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--activation", default="relu")
    ap.add_argument("--kin", type=float, default=1.0)
    ap.add_argument("--time", type=float, default=4.0)
    ap.add_argument("--sw2", type=float, default=1.0)
    ap.add_argument("--sb2", type=float, default=0.2)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--points", default="101,151,201")
    args = ap.parse_args(argv)
    act = get_activation(args.activation)
    res = exact_theory_discrete(act, [[args.kin]], args.sw2, args.sb2, args.time, args.depth)
    V4, K1 = res.V4[:, 0, 0], res.K1[:, 0]
    rows = []
    print(f"{args.activation} kin={args.kin} sw2={args.sw2} sb2={args.sb2} T={args.time} L={args.depth}")
    print(f"{'N':>5} {'h':>7} {'h/step':>7} {'V4 rel err':>11} {'K1 err/max':>11} {'V4_1[L]':>14} {'seconds':>8}")
    for points in (int(p) for p in args.points.split(",")):
        started = time.perf_counter()
        g = v4_next_order_grid(act, args.kin, args.sw2, args.sb2, args.time, args.depth, grid_points=points)
        wall = time.perf_counter() - started
        e_v4 = np.max(np.abs(g.V4[1:] / V4[1:] - 1))
        e_k1 = np.max(np.abs(g.K1 - K1)) / max(np.max(np.abs(K1)), 1e-300)
        h = g.info["spacing"]
        rows.append((h, g.V4_1[-1]))
        print(f"{points:5d} {h:7.4f} {h / g.info['min_step_std']:7.3f} {e_v4:11.2e} {e_k1:11.2e} {g.V4_1[-1]:14.6f} "
              f"{wall:8.1f}")
    if len(rows) >= 3:
        h = np.array([r[0] for r in rows])
        v = np.array([r[1] for r in rows])
        d = np.abs(np.diff(v))
        for p in (2, 4, 6):
            ratio = d / np.abs(np.diff(h ** p))
            print(f"  order {p}: successive V4_1 differences / differences of h^{p}: "
                  + " ".join(f"{x:.3g}" for x in ratio) + "   (constant at the true order)")


if __name__ == "__main__":
    main()
