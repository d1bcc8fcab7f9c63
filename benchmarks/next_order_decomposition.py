"""The next order of V4 measured on Monte Carlo, width by width: the exact one-block identity term by term.

For one network and depth L, run Monte Carlo at each width n (every layer recorded), and with the O(1/n) exact
theory of the layer grid as order 0 (kernel_eft.diagnose.identity):

  identity   max |pull| of V4(n) rebuilt from layer 0 by the identity with the measured X = sw2 n Cov(G, S),
             Y = sw2^2 n Cov(S, S), E G, E Om, against the measured V4(n) (the identity is exact: pulls O(1))
  measured   n (V4(n) - V4) at the last layer, the Monte Carlo's own V4_1 at this width, with its error n se
  parts      its split into mean (K1, Sigma1 shift), contraction (c4, c2) and transport (X - X_0, Y - Y_0: X_1, Y_1)
  known      the theory's prediction of the mean + contraction parts (kernel_eft.theory.next_order.known_terms)
  share      known / measured: how much of V4(n) - V4 the known terms of the identity carry
  predicted  V4_1 and X_1 of the cumulant hierarchy (P <= 2: next_order_lattice), so that the transport part
             (X_1, Y_1) is predicted too: V4_1 - known

Finally X_1 (the 1/n coefficient of n Cov(G, Om)) at the last layer, extrapolated over the widths by a weighted
fit of n (X(n) - X_0) = X_1 + c / n.  Usage (seconds per width):

    PYTHONPATH=src python benchmarks/next_order_decomposition.py --activation relu --kin "1,0.6;0.6,1" \
        --time 4 --sw2 1 --sb2 0.2 --depth 8 --widths 16,32,64,128 --samples 20000
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from kernel_eft.core.activations import get_activation
from kernel_eft.core.expectations import f_matrix
from kernel_eft.core.pairs import n_pairs, pair_indices
from kernel_eft.core.statistics import fit_inverse_width
from kernel_eft.diagnose.identity import identity_decomposition
from kernel_eft.simulate.estimates import summarize
from kernel_eft.simulate.params import SimulationParams
from kernel_eft.simulate.samplers import simulate
from kernel_eft.theory.exact import exact_theory_discrete, mean_path_discrete
from kernel_eft.theory.next_order import known_terms, zeroth_order_XY
from kernel_eft.theory.next_order_lattice import v4_next_order_lattice
from kernel_eft.validation import parse_kin


def order_zero(activation, kin, sw2, sb2, time, depth):
    act = get_activation(activation)
    res = exact_theory_discrete(act, kin, sw2, sb2, time, depth)
    path = mean_path_discrete(act, kin, sw2, sb2, time, depth)
    f0 = np.stack([f_matrix(act, K, sw2, sb2) for K in res.K0])
    X0, Y0 = zeroth_order_XY(res, sw2)
    known = known_terms(res, path.DF, f0, sw2, time / depth)
    return {"K0": res.K0, "f0": f0, "V4": res.V4, "X0": X0, "Y0": Y0}, known


def decompose(activation, kin, time, sw2, sb2, depth, widths, samples, seed=1):
    theory, known = order_zero(activation, kin, sw2, sb2, time, depth)
    P = np.asarray(kin).shape[0]
    a, b = pair_indices(P)
    names = [f"{a[m]}{b[m]}" for m in range(n_pairs(P))]
    known_V4_1 = known.known_V4_1()
    rows, X1, V41 = [], [], []
    for n in widths:
        params = SimulationParams(activation=activation, width=n, depth=depth, time=time, sw2=sw2, sb2=sb2,
                                  kin=kin, samples=samples, seed=seed + n, record_every=1, batches=32)
        batches, _ = simulate(params)
        s = summarize(params, batches)
        d = identity_decomposition(s, theory, width=n, sw2=sw2, sb2=sb2, dt=time / depth)
        X1.append((d["X_1_measured"][-2], n * sw2 * s["cov_GS_se"][-2]))
        V41.append((d["measured_V4_1"][-1], n * s["V4_se"][-1]))
        last = -1
        for i in range(len(names)):
            for j in range(i, len(names)):
                meas = d["measured_V4_1"][last, i, j]
                row = {"n": n, "entry": f"{names[i]},{names[j]}", "measured": meas,
                       "measured_se": n * s["V4_se"][last, i, j],
                       **{k: d["parts"][k][last, i, j] for k in d["parts"]},
                       "known": known_V4_1[last, i, j], "share_known": known_V4_1[last, i, j] / meas,
                       "identity_max_pull": float(np.max(np.abs(d["identity_pull"])))}
                rows.append(row)
    fits = {}
    for name, series in (("V4_1", V41), ("X_1", X1)):
        coef, coef_se, chi2, dof = fit_inverse_width(widths, [v for v, _ in series], [e for _, e in series], order=2)
        fits[name] = {"value": coef[0], "se": coef_se[0], "chi2": chi2, "dof": dof}
    fits["V4_1"]["known"] = known_V4_1[-1]
    fits["X_1"]["X_0"] = theory["X0"][-2]
    if P <= 2:  # the predicted V4_1 and X_1 (docs/exact_theory.md 7.1, 7.3): the transport is V4_1 - known
        lat = v4_next_order_lattice(activation, kin, sw2, sb2, time, depth)
        fits["V4_1"]["predicted"] = lat.V4_1[-1]
        fits["X_1"]["predicted"] = lat.X_1[-2]
    return rows, fits


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--activation", default="relu")
    ap.add_argument("--kin", default="1,0.6;0.6,1")
    ap.add_argument("--time", type=float, default=4.0)
    ap.add_argument("--sw2", type=float, default=1.0)
    ap.add_argument("--sb2", type=float, default=0.2)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--widths", default="16,32,64,128")
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    rows, fits = decompose(args.activation, parse_kin(args.kin), args.time, args.sw2, args.sb2, args.depth, widths,
                         args.samples, args.seed)
    print(f"{args.activation} L={args.depth} T={args.time} sw2={args.sw2} sb2={args.sb2}: last layer, n (V4(n) - V4)")
    print(f"{'n':>5} {'entry':>7} {'measured':>10} {'±':>8} {'mean':>9} {'contr':>9} {'transp':>9} {'known':>9}"
          f" {'known/meas':>10} {'id|z|max':>8}")
    for r in rows:
        print(f"{r['n']:5d} {r['entry']:>7} {r['measured']:10.4f} {r['measured_se']:8.4f} {r['mean']:9.4f} "
              f"{r['contraction']:9.4f} {r['transport']:9.4f} {r['known']:9.4f} {r['share_known']:10.3f} "
              f"{r['identity_max_pull']:8.2f}")
    f = fits["V4_1"]
    print(f"V4_1 at the last layer, extrapolated over the widths (n (V4(n) - V4) = V4_1 + c/n, chi2/dof):")
    for i in range(f["value"].shape[0]):
        for j in range(i, f["value"].shape[1]):
            pred = (f"  predicted {f['predicted'][i, j]:10.4f} (transport {f['predicted'][i, j] - f['known'][i, j]:10.4f})"
                    if "predicted" in f else "")
            print(f"  [{i},{j}] V4_1 = {f['value'][i, j]:10.4f} ± {f['se'][i, j]:8.4f}  known part "
                  f"{f['known'][i, j]:10.4f}  share {f['known'][i, j] / f['value'][i, j]:6.3f}  "
                  f"chi2 {f['chi2'][i, j]:.2f}/{f['dof']}{pred}")
    f = fits["X_1"]
    print("X_1 = 1/n coefficient of n Cov(G, Om) at layer L-1 (rows G pair, columns Om pair), and X_0:")
    for i in range(f["value"].shape[0]):
        print("  " + "  ".join(f"{f['value'][i, j]:9.3f}±{f['se'][i, j]:7.3f} (X_0 {f['X_0'][i, j]:8.3f}"
                               + (f", predicted {f['predicted'][i, j]:8.3f})" if "predicted" in f else ")")
                               for j in range(f["value"].shape[1])))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "fits": {k: {q: np.asarray(v).tolist() for q, v in f.items()}
                                              for k, f in fits.items()}}, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
