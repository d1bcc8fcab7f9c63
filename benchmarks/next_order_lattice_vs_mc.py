"""V4 + V4_1/n of the lattice hierarchy (any P) against Monte Carlo, width by width, with no extrapolation.

For each width n, every entry (ab, cd) of n Cov(G) of the simulation (jackknife error over 32 seed batches) at every
layer l >= 1 is compared with
  next:   V4 + V4_1/n        (V4: the exact O(1/n) theory at depth L; V4_1: kernel_eft.theory.next_order_lattice)
  lead:   V4                 (the O(1/n) theory alone)
as pulls (MC - prediction)/se, and judged by the criterion of issue 17: where V4 alone is off by more than 4 se,
|MC - V4 - V4_1/n| <= max(4 se, 1% of the entry's scale sqrt(V4[m,m] V4[m',m']), 1.5 e1^2 of that scale), with
e1 = |MC - V4| / scale the O(1/n) theory's relative miss (the size of the next order); and the median entry's
residual at least halved.  Usage (minutes per case; P = 2 at L = 8):

    PYTHONPATH=src python benchmarks/next_order_lattice_vs_mc.py --activation relu --rho 0.5 --sw2 1.1 \
        --sb2 0.2 --time 3 --depth 8 --widths 16,32,64,128 --samples 100000
"""

from __future__ import annotations

import argparse
import json
import time as _time

import numpy as np

from kernel_eft.core.activations import get_activation
from kernel_eft.diagnose.compare import next_order_verdict
from kernel_eft.simulate.estimates import summarize
from kernel_eft.simulate.params import SimulationParams
from kernel_eft.simulate.samplers import simulate
from kernel_eft.core.pairs import four_index_to_pairs
from kernel_eft.theory.exact import exact_theory_discrete, lattice_v4_check, next_order_inputs
from kernel_eft.theory.next_order_lattice import v4_next_order_lattice


def theory(activation, kin, sw2, sb2, time, depth, **lattice):
    """The exact theory's V4 and V4_1 as the closure writes them (exact.next_order_inputs: the lattice checked
    against V4 and refined where it is coarse, no time limit), or at a given spacing (--spacing, no refinement)."""
    start = _time.perf_counter()
    act = get_activation(activation)
    res = exact_theory_discrete(act, kin, sw2, sb2, time, depth)
    if lattice:
        lat = v4_next_order_lattice(act, kin, sw2, sb2, time, depth, **lattice)
        V4_1, points, check = lat.V4_1, lat.info["points"], lattice_v4_check(lat.V4, res.V4)
    else:
        four, attrs = next_order_inputs(act, kin, sw2, sb2, time, depth, V4=res.V4)
        V4_1, points, check = four_index_to_pairs(four), attrs["V4_1_grid_points"], attrs["V4_1_V4_check"]
    return {"V4": np.asarray(res.V4), "V4_1": V4_1, "V4_check": check, "K1": np.asarray(res.K1),
            "points": points, "seconds": _time.perf_counter() - start}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--activation", default="relu")
    ap.add_argument("--rho", type=float, default=0.5, help="input correlation (unit-norm inputs unless --norm1)")
    ap.add_argument("--norm1", type=float, default=1.0, help="squared norm of the second input")
    ap.add_argument("--time", type=float, default=3.0)
    ap.add_argument("--sw2", type=float, default=1.0)
    ap.add_argument("--sb2", type=float, default=0.2)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--widths", default="16,32,64,128")
    ap.add_argument("--samples", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--spacing", type=float, default=None, help="lattice spacing per step std (default: module's)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    c = args.rho * np.sqrt(args.norm1)
    kin = np.array([[1.0, c], [c, args.norm1]])
    lattice = {} if args.spacing is None else {"spacing_per_step_std": args.spacing}
    th = theory(args.activation, kin, args.sw2, args.sb2, args.time, args.depth, **lattice)
    print(f"{args.activation} rho={args.rho} sw2={args.sw2} sb2={args.sb2} T={args.time} L={args.depth}: theory "
          f"{th['seconds']:.0f} s, {th['points']} lattice points; lattice V4 vs exact (V4_1_V4_check) "
          f"{th['V4_check']:.1e}", flush=True)
    rows = []
    for n in [int(w) for w in args.widths.split(",")]:
        params = SimulationParams(activation=args.activation, width=n, depth=args.depth, time=args.time, sw2=args.sw2,
                                  sb2=args.sb2, kin=kin.tolist(), samples=args.samples, seed=args.seed + n,
                                  record_every=1, batches=32)
        start = _time.perf_counter()
        s = summarize(params, simulate(params)[0])
        r = next_order_verdict(n, s["V4"], s["V4_se"], th["V4"], th["V4_1"])
        r["seconds"] = _time.perf_counter() - start
        r["mc"], r["se"] = s["V4"].tolist(), s["V4_se"].tolist()
        rows.append(r)
        print(f"n={n:4d}: entries off V4 by > 4 se {r['tested']}/{r['entries']}, failing {r['failed']}; max pull "
              f"V4 + V4_1/n {r['max_pull_next']:.2f}, V4 alone {r['max_pull_lead']:.2f}; median |resid| ratio "
              f"{r['median_ratio']}; worst |resid|/tol {r['worst_excess']:.2f}  ({r['seconds']:.0f} s)", flush=True)
        print("        last layer n^2 (MC - V4 - V4_1/n) " + " ".join(f"{v:9.0f}" for v in r["n2_resid_last"])
              + "\n        last layer n (MC - V4)           " + " ".join(f"{v:9.1f}" for v in r["n_resid_last"])
              + "\n        last layer se                    " + " ".join(f"{v:9.3f}" for v in r["se_last"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"theory": {k: np.asarray(v).tolist() for k, v in th.items()}, "rows": rows, "args": vars(args)},
                      fh, indent=1)


if __name__ == "__main__":
    main()
