"""Validate the exact O(1/n) theory at the network's own depth against Monte Carlo (the referee).

For one network (activation, K_in, T, sw2, sb2) and each depth L separately: run the block-sampler Monte Carlo at
>= 3 widths n, extrapolate V4 = n Cov(G), K1 = n (mean G - K0_discrete) and the K1 source
n sw2 (mean S - F(mean G)) to n -> infinity by a weighted least-squares fit X(n) = X_inf + c / n (3 widths:
one degree of freedom left; its chi^2 is reported), and compare X_inf at every recorded layer with

    exact            the exact theory of the layer recursion at this L (`kernel-eft theory --closure exact --depth L`)
    exact_no_same    the same without the same-layer dt^2 term of the K1 source (the open question it settles)
    exact_continuum  the continuous-depth exact theory at the same times (right only as L -> infinity)
    gonly            the paper's G-only closure, discrete at this L (its tadpole as the K1 source)

as pulls z = (MC_inf - theory) / se(MC_inf).  No extrapolation in L: the theory is evaluated at the Monte
Carlo's own depth.  Prints one line per layer and quantity, then max |z| per theory, and can write JSON.
Usage (about half a minute per depth on one core):

    PYTHONPATH=src python benchmarks/validate_exact_vs_mc.py --activation relu --kin "1,0.6;0.6,1" --time 4 \
        --sb2 0.2 --depths 8,16 --widths 32,64,128 --samples 20000 --json out.json

--samples is the seed count at the smallest width; it grows proportionally to n, because the errors of K1 and of
the K1 source grow like sqrt(n / samples).

Width by width, with no extrapolation, against V4 + V4_1/n (the next order, docs/exact_theory.md section 7):
benchmarks/next_order_lattice_vs_mc.py (two inputs) and benchmarks/next_order_grid_vs_mc.py (one input).
"""

from __future__ import annotations

import argparse
import json
import time as _time

import numpy as np

from kernel_eft.core.activations import get_activation
from kernel_eft.core.pairs import n_pairs, pair_indices, to_pairs
from kernel_eft.core.statistics import fit_inverse_width
from kernel_eft.simulate.estimates import summarize
from kernel_eft.simulate.params import SimulationParams
from kernel_eft.simulate.samplers import simulate
from kernel_eft.theory.exact import (assemble_discrete, default_rule, exact_theory, mean_path_discrete,
                                     moments_for_path)
from kernel_eft.theory.two_time import two_time_kernels
from kernel_eft.theory.gonly import solve_gonly_discrete
from kernel_eft.validation import parse_kin

THEORIES = ("exact", "exact_no_same", "exact_continuum", "gonly")
QUANTITIES = ("V4", "K1", "K1src")


def monte_carlo(activation, kin, time, sw2, sb2, depth, widths, samples, seed, record_every=1):
    """Per-width summaries (pair coordinates) at one depth; samples at the smallest width, scaled with n."""
    out = []
    for n in widths:
        params = SimulationParams(activation=activation, width=n, depth=depth, time=time, sw2=sw2, sb2=sb2, kin=kin,
                                  samples=int(samples * n / min(widths)), seed=seed + 1000 * depth + n,
                                  record_every=record_every, batches=32)
        batches, _ = simulate(params)
        s = summarize(params, batches)
        out.append({"layers": params.layers, "times": params.times,
                    "V4": s["V4"], "V4_se": s["V4_se"],
                    "K1": to_pairs(s["K1"]), "K1_se": to_pairs(s["K1_se"]),
                    "K1src": to_pairs(s["K1_source"]), "K1src_se": to_pairs(s["K1_source_se"])})
    return out


def extrapolate(widths, runs, name):
    """X_inf, se(X_inf), chi^2 (1 dof with 3 widths) of the WLS fit X(n) = X_inf + c/n, per entry."""
    values = np.stack([r[name] for r in runs])
    errors = np.stack([r[name + "_se"] for r in runs])
    coef, coef_se, chi2, dof = fit_inverse_width(widths, values, errors, order=2)
    return coef[0], coef_se[0], chi2, dof


def theory_curves(activation, kin, time, sw2, sb2, depth, layers):
    """Every theory's V4, K1 and K1-source prediction at the recorded layers (pair coordinates)."""
    act = get_activation(activation)
    quad = default_rule(act)
    path = mean_path_discrete(act, kin, sw2, sb2, time, depth)  # one set of kernels, assembled both ways
    kernels = two_time_kernels(moments_for_path(act, path.K0, quad), path.K0, quad)
    ex = assemble_discrete(path, kernels, sw2, time / depth, same_layer=True)
    ex0 = assemble_discrete(path, kernels, sw2, time / depth, same_layer=False)
    steps = depth * max(1, 64 // depth)
    cont = exact_theory(act, kin, sw2, sb2, time, steps)
    go = solve_gonly_discrete(activation, kin, sw2, sb2, time, depth)
    ci = layers * (steps // depth)
    return {
        "exact": {"V4": ex.V4[layers], "K1": ex.K1[layers], "K1src": sw2 * ex.B[layers]},
        "exact_no_same": {"V4": ex0.V4[layers], "K1": ex0.K1[layers], "K1src": sw2 * ex0.B[layers]},
        "exact_continuum": {"V4": cont.V4[ci], "K1": cont.K1[ci], "K1src": sw2 * cont.B[ci]},
        "gonly": {"V4": go.V4[layers], "K1": go.K1[layers], "K1src": go.tadpole[layers]},
    }


def compare(activation, kin, time, sw2, sb2, depth, widths, samples, seed=1, record_every=1) -> dict:
    """Pulls of every theory against the width-extrapolated Monte Carlo at one depth; rows and a summary."""
    kin = np.asarray(kin, float)
    P = kin.shape[0]
    p = n_pairs(P)
    a, b = pair_indices(P)
    started = _time.perf_counter()
    runs = monte_carlo(activation, kin, time, sw2, sb2, depth, widths, samples, seed, record_every)
    mc_seconds = _time.perf_counter() - started
    layers = runs[0]["layers"]
    times = runs[0]["times"]
    mc = {q: extrapolate(widths, runs, q) for q in QUANTITIES}
    started = _time.perf_counter()
    th = theory_curves(activation, kin, time, sw2, sb2, depth, layers)
    theory_seconds = _time.perf_counter() - started
    rows = []
    for r in range(1, layers.size):  # layer 0: V4 is Wishart and K1 = 0 in every theory and in Monte Carlo
        entries = [("V4", f"V4[{a[i]}{b[i]},{a[j]}{b[j]}]", (r, i, j)) for i in range(p) for j in range(i, p)]
        entries += [(q, f"{q}[{a[i]}{b[i]}]", (r, i)) for q in ("K1", "K1src") for i in range(p)]
        for q, label, idx in entries:
            value, se, chi2 = (x[idx] for x in mc[q][:3])
            row = {"layer": int(layers[r]), "t": float(times[r]), "quantity": label, "kind": q,
                   "mc": float(value), "se": float(se), "fit_chi2": float(chi2)}
            for name in THEORIES:
                pred = float(th[name][q][idx])
                row[name] = pred
                row["z_" + name] = float((value - pred) / se) if se > 0 else float("nan")
            rows.append(row)
    summary = {q: {name: max(abs(row["z_" + name]) for row in rows if row["kind"] == q) for name in THEORIES}
               for q in QUANTITIES}
    return {"activation": activation, "kin": kin.tolist(), "time": time, "sw2": sw2, "sb2": sb2, "depth": depth,
            "widths": list(widths), "samples_at_smallest_width": samples, "fit": "X_inf + c/n, WLS, 1 dof",
            "rows": rows, "summary": summary, "mc_seconds": mc_seconds, "theory_seconds": theory_seconds}


def print_report(report: dict) -> None:
    print(f"# {report['activation']} kin={report['kin']} T={report['time']} sw2={report['sw2']} sb2={report['sb2']} "
          f"L={report['depth']} widths={report['widths']}: Monte Carlo extrapolated by {report['fit']} "
          f"(MC {report['mc_seconds']:.1f} s, theories {report['theory_seconds']:.1f} s)")
    print(f"{'layer':>5} {'quantity':>14} {'MC(n=inf)':>11} {'se':>8} {'chi2':>6} "
          + " ".join(f"{'z ' + name:>17}" for name in THEORIES))
    for row in report["rows"]:
        print(f"{row['layer']:5d} {row['quantity']:>14} {row['mc']:11.5g} {row['se']:8.3g} {row['fit_chi2']:6.2f} "
              + " ".join(f"{row['z_' + name]:17.2f}" for name in THEORIES))
    for q, s in report["summary"].items():
        print(f"# {q}: max|z| " + ", ".join(f"{name} {value:.2f}" for name, value in s.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--activation", default="relu")
    ap.add_argument("--kin", default="1,0.6;0.6,1")
    ap.add_argument("--time", type=float, default=4.0)
    ap.add_argument("--sw2", type=float, default=1.0)
    ap.add_argument("--sb2", type=float, default=0.0)
    ap.add_argument("--depths", default="8,16", help="comma-separated depths L, each compared on its own")
    ap.add_argument("--widths", default="32,64,128", help=">= 3 widths: the 1/n fit keeps a degree of freedom")
    ap.add_argument("--samples", type=int, default=20000, help="seeds at the smallest width (scaled with n)")
    ap.add_argument("--record-every", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=None, help="write every comparison here")
    args = ap.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    if len(widths) < 3:
        ap.error("--widths: give >= 3 widths so that the 1/n fit keeps a degree of freedom")
    reports = []
    for depth in (int(d) for d in args.depths.split(",")):
        report = compare(args.activation, parse_kin(args.kin), args.time, args.sw2, args.sb2, depth, widths,
                         args.samples, args.seed, args.record_every)
        print_report(report)
        reports.append(report)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(reports, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
