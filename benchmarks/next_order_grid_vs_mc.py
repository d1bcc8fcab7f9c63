"""V4 + V4_1/n of the grid hierarchy against Monte Carlo, width by width, for one input (P = 1).

For each width n, n Cov(G) of the simulation (jackknife error over 32 seed batches) at every layer against
  next:   V4 + V4_1/n        (V4: the exact O(1/n) theory at depth L; V4_1: kernel_eft.theory.next_order_grid)
  lead:   V4                 (the O(1/n) theory alone)
  known:  V4 + known/n       (only the known terms of the identity, kernel_eft.theory.next_order.known_terms)
as pulls (MC - prediction) / se, and the scaled residuals n^2 (MC - V4 - V4_1/n) (flat in n if V4_1 is right) and
n (MC - V4) (tends to V4_1: not flat).  Usage (seconds per case):

    PYTHONPATH=src python benchmarks/next_order_grid_vs_mc.py --activation relu --sw2 1 --sb2 0.2 --time 4 \
        --depth 8 --widths 16,32,64,128 --samples 80000 --grid-points 201
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from kernel_eft.core.activations import get_activation
from kernel_eft.core.expectations import f_matrix
from kernel_eft.simulate.estimates import summarize
from kernel_eft.simulate.params import SimulationParams
from kernel_eft.simulate.samplers import simulate
from kernel_eft.theory.exact import exact_theory_discrete, mean_path_discrete
from kernel_eft.theory.next_order import known_terms
from kernel_eft.theory.next_order_grid import v4_next_order_grid


def predictions(activation, kin, sw2, sb2, time, depth, grid_points):
    """V4 (exact theory), V4_1 (grid), known part of V4_1 and the grid's own V4, K1 against the exact theory's."""
    act = get_activation(activation)
    res = exact_theory_discrete(act, [[kin]], sw2, sb2, time, depth)
    path = mean_path_discrete(act, [[kin]], sw2, sb2, time, depth)
    f0 = np.stack([f_matrix(act, K, sw2, sb2) for K in res.K0])
    known = known_terms(res, path.DF, f0, sw2, time / depth).known_V4_1()[:, 0, 0]
    grid = v4_next_order_grid(act, kin, sw2, sb2, time, depth, grid_points=grid_points)
    return {"V4": res.V4[:, 0, 0], "K1": res.K1[:, 0], "V4_1": grid.V4_1, "known": known, "grid_V4": grid.V4,
            "grid_K1": grid.K1}


def compare(activation, kin, sw2, sb2, time, depth, widths, samples, grid_points, seed=11):
    th = predictions(activation, kin, sw2, sb2, time, depth, grid_points)
    rows = []
    for n in widths:
        params = SimulationParams(activation=activation, width=n, depth=depth, time=time, sw2=sw2, sb2=sb2,
                                  kin=[[kin]], samples=samples, seed=seed + n, record_every=1, batches=32)
        batches, _ = simulate(params)
        s = summarize(params, batches)
        mc, se = s["V4"][:, 0, 0], s["V4_se"][:, 0, 0]
        nxt = th["V4"] + th["V4_1"] / n
        kn = th["V4"] + th["known"] / n
        lay = slice(1, None)  # layer 0 is Wishart, exact at every n (se 0 with the control variates)
        rows.append({"n": n, "mc": mc.tolist(), "se": se.tolist(),
                     "z_next": ((mc - nxt)[lay] / se[lay]).tolist(), "z_lead": ((mc - th["V4"])[lay] / se[lay]).tolist(),
                     "z_known": ((mc - kn)[lay] / se[lay]).tolist(),
                     "n2_resid": (n ** 2 * (mc - nxt)).tolist(), "n2_resid_se": (n ** 2 * se).tolist(),
                     "n_resid": (n * (mc - th["V4"])).tolist(), "n_resid_se": (n * se).tolist()})
    return th, rows


def fit_second_order(widths, mc, se, V4, V4_1):
    """Per layer, MC(n) - V4 - V4_1/n = c2 / n^2 fitted over the widths (c2 free: the O(1/n^2) term); returns c2, its
    error, chi2 and the p-value with W - 1 degrees of freedom (the same fit as tests/theory/test_next_order_grid.py)."""
    from scipy.stats import chi2 as chi2_dist

    n = np.asarray(widths, float)[:, None]
    r = mc - V4[None] - V4_1[None] / n
    w, x = 1.0 / se ** 2, 1.0 / n ** 2
    c2 = np.sum(w * x * r, axis=0) / np.sum(w * x ** 2, axis=0)
    chi2 = np.sum(w * (r - c2 * x) ** 2, axis=0)
    return c2, 1.0 / np.sqrt(np.sum(w * x ** 2, axis=0)), chi2, chi2_dist.sf(chi2, len(widths) - 1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--activation", default="relu")
    ap.add_argument("--kin", type=float, default=1.0)
    ap.add_argument("--time", type=float, default=4.0)
    ap.add_argument("--sw2", type=float, default=1.0)
    ap.add_argument("--sb2", type=float, default=0.2)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--widths", default="16,32,64,128")
    ap.add_argument("--samples", type=int, default=80000)
    ap.add_argument("--grid-points", type=int, default=201)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    th, rows = compare(args.activation, args.kin, args.sw2, args.sb2, args.time, args.depth, widths, args.samples,
                       args.grid_points, args.seed)
    L = args.depth
    print(f"{args.activation} kin={args.kin} sw2={args.sw2} sb2={args.sb2} T={args.time} L={L}, {args.samples} nets")
    print("grid vs exact theory: max rel |V4| %.2e, max |K1| diff / max|K1| %.2e" % (
        np.max(np.abs(th["grid_V4"][1:] / th["V4"][1:] - 1)),
        np.max(np.abs(th["grid_K1"] - th["K1"])) / max(np.max(np.abs(th["K1"])), 1e-300)))
    print("layer " + " ".join(f"{l:>9d}" for l in range(1, L + 1)))
    for name in ("V4", "V4_1", "known"):
        print(f"{name:>5} " + " ".join(f"{v:9.3f}" for v in th[name][1:]))
    for r in rows:
        print(f"n={r['n']}")
        for key in ("z_next", "z_lead", "z_known"):
            print(f"  {key:>7} " + " ".join(f"{v:9.2f}" for v in r[key]))
        print("  n2res  " + " ".join(f"{v:9.0f}" for v in r["n2_resid"][1:]) + "   (last se %.0f)" % r["n2_resid_se"][-1])
        print("  n res  " + " ".join(f"{v:9.1f}" for v in r["n_resid"][1:]) + "   (last se %.1f)" % r["n_resid_se"][-1])
    mc = np.array([r["mc"] for r in rows])[:, 1:]
    se = np.array([r["se"] for r in rows])[:, 1:]
    print(f"fit MC - V4 - X/n = c2/n^2 over n = {widths} (one c2 per layer), chi2 / p-value per layer:")
    for name in ("V4_1", "known"):
        c2, c2_se, chi2, p = fit_second_order(widths, mc, se, th["V4"][1:], th[name][1:])
        print(f"  X = {name:>5}: p " + " ".join(f"{v:9.2g}" for v in p))
        print(f"  {'':>9}  c2 " + " ".join(f"{v:9.0f}" for v in c2) + "  (last se %.0f)" % c2_se[-1])
    c2, c2_se, chi2, p = fit_second_order(widths, mc, se, th["V4"][1:], 0 * th["V4"][1:])
    print(f"  X =     0: p " + " ".join(f"{v:9.2g}" for v in p))
    # is n (MC - V4) flat (the O(1/n) theory plus a constant V4_1 only)?  A constant fit per layer
    from scipy.stats import chi2 as chi2_dist

    n = np.asarray(widths, float)[:, None]
    y, e = n * (mc - th["V4"][None, 1:]), n * se
    w = 1.0 / e ** 2
    const = np.sum(w * y, axis=0) / np.sum(w, axis=0)
    p_flat = chi2_dist.sf(np.sum(w * (y - const) ** 2, axis=0), len(widths) - 1)
    print("  n (MC - V4) constant in n: p " + " ".join(f"{v:9.2g}" for v in p_flat))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"theory": {k: np.asarray(v).tolist() for k, v in th.items()}, "rows": rows, "args": vars(args)},
                      fh, indent=1)


if __name__ == "__main__":
    main()
