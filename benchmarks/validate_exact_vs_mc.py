"""Validate the exact O(1/n) closure (and the G-only closure) against Monte Carlo.

For one network (activation, K_in, T, sw2, sb2) and one or more depths L, run the block-sampler Monte Carlo
at several widths n, extrapolate V4 = n Cov(G) and K1 = n (mean G - K0_discrete) to n -> infinity by a
weighted least-squares fit X(n) = X_inf + c / n (>= 3 widths; with one width the raw estimate is used), and
compare X_inf with the continuum exact theory and the continuum G-only theory at every recorded depth
(also for the K1 source n sw2 (mean S - F(mean G)): sw2 B(t) in the exact theory, the tadpole in G-only):

    z = (theory - X_inf) / se(X_inf)        (se from the jackknife errors of the Monte Carlo)

Prints one line per recorded depth and entry, then max |z| per closure, and writes everything as JSON.
Usage (about a minute on one core):

    PYTHONPATH=src python benchmarks/validate_exact_vs_mc.py --activation relu --kin 1 --time 3 \
        --depths 64,128 --widths 32,64,128 --samples 20000 --records 4 --json out.json

--samples is the seed count at the smallest width; it grows proportionally to n, because the error of
K1 is about sqrt(n V4 / samples).
"""

from __future__ import annotations

import argparse
import json
import time as _time

import numpy as np

from kernel_eft.montecarlo import SimulationParams, simulate, summarize
from kernel_eft.pairs import n_pairs, pair_indices, to_pairs
from kernel_eft.theory.exact import exact_theory
from kernel_eft.theory.gonly import solve_gonly_continuous
from kernel_eft.validation import parse_kin


def fit_extrapolation(widths, depths, values, errors):
    """WLS fit of values[k] = X + c / n_k (+ d / L_k when several depths) per entry; returns (X, se(X)).

    values, errors: (runs, ...) for the runs (n_k, L_k).  One run: the raw estimate."""
    widths = np.asarray(widths, float)
    depths = np.asarray(depths, float)
    if len(widths) == 1:
        return values[0], errors[0]
    columns = [np.ones_like(widths)]
    if len(set(widths)) > 1:
        columns.append(1.0 / widths)
    if len(set(depths)) > 1:
        columns.append(1.0 / depths)
    design = np.stack(columns, axis=1)
    flat_v = values.reshape(len(widths), -1)
    flat_e = errors.reshape(len(widths), -1)
    X = np.empty(flat_v.shape[1])
    se = np.empty(flat_v.shape[1])
    for j in range(flat_v.shape[1]):
        w = 1.0 / np.maximum(flat_e[:, j], 1e-300) ** 2
        A = design * np.sqrt(w)[:, None]
        cov = np.linalg.inv(A.T @ A)
        coef = cov @ (A.T @ (flat_v[:, j] * np.sqrt(w)))
        X[j] = coef[0]
        se[j] = np.sqrt(cov[0, 0])
    return X.reshape(values.shape[1:]), se.reshape(values.shape[1:])


def run(args) -> dict:
    kin = parse_kin(args.kin)
    P = kin.shape[0]
    p = n_pairs(P)
    widths = [int(w) for w in args.widths.split(",")]
    depths = [int(d) for d in args.depths.split(",")]
    if any(L % args.records for L in depths):
        raise SystemExit("--records must divide every depth (the recorded times must coincide)")
    started = _time.perf_counter()
    runs, mc = [], []
    for L in depths:
        for n in widths:
            samples = int(args.samples * n / min(widths))
            params = SimulationParams(activation=args.activation, width=n, depth=L, time=args.time,
                                      sw2=args.sw2, sb2=args.sb2, kin=kin, samples=samples,
                                      seed=args.seed + 1000 * L + n, record_every=L // args.records, batches=32)
            batches, _ = simulate(params)
            runs.append((n, L))
            mc.append(summarize(params, batches))
    mc_seconds = _time.perf_counter() - started
    times = params.times
    rn = [r[0] for r in runs]
    rL = [r[1] for r in runs]
    V4, V4_se = fit_extrapolation(rn, rL, np.stack([m["V4"] for m in mc]), np.stack([m["V4_se"] for m in mc]))
    K1, K1_se = fit_extrapolation(rn, rL, np.stack([to_pairs(m["K1"]) for m in mc]),
                                  np.stack([to_pairs(m["K1_se"]) for m in mc]))
    src, src_se = fit_extrapolation(rn, rL, np.stack([to_pairs(m["K1_source"]) for m in mc]),
                                    np.stack([to_pairs(m["K1_source_se"]) for m in mc]))

    started = _time.perf_counter()
    steps = args.records * args.steps_per_record
    ex = exact_theory(args.activation, kin, args.sw2, args.sb2, args.time, steps)
    exact_seconds = _time.perf_counter() - started
    rec = np.arange(0, steps + 1, args.steps_per_record)
    go = solve_gonly_continuous(args.activation, kin, args.sw2, args.sb2, args.time, times=times)
    ex_V4, ex_K1, ex_src = ex.V4[rec], ex.K1[rec], args.sw2 * ex.B[rec]
    a, b = pair_indices(P)
    rows = []
    for r, t in enumerate(times):
        if r == 0:
            continue  # t = 0: V4 is the Wishart form and K1 = 0 in every closure
        for i in range(p):
            for j in range(i, p):
                se = V4_se[r, i, j]
                rows.append({"t": float(t), "quantity": f"V4[{a[i]}{b[i]},{a[j]}{b[j]}]",
                             "mc": float(V4[r, i, j]), "se": float(se),
                             "exact": float(ex_V4[r, i, j]), "gonly": float(go.V4[r, i, j]),
                             "z_exact": float((ex_V4[r, i, j] - V4[r, i, j]) / se),
                             "z_gonly": float((go.V4[r, i, j] - V4[r, i, j]) / se)})
        for i in range(p):
            se = K1_se[r, i]
            rows.append({"t": float(t), "quantity": f"K1[{a[i]}{b[i]}]", "mc": float(K1[r, i]), "se": float(se),
                         "exact": float(ex_K1[r, i]), "gonly": float(go.K1[r, i]),
                         "z_exact": float((ex_K1[r, i] - K1[r, i]) / se),
                         "z_gonly": float((go.K1[r, i] - K1[r, i]) / se)})
        for i in range(p):  # K1 source: exact sw2 B(t); G-only tadpole (1/2) H : V4
            se = src_se[r, i]
            rows.append({"t": float(t), "quantity": f"K1src[{a[i]}{b[i]}]", "mc": float(src[r, i]),
                         "se": float(se), "exact": float(ex_src[r, i]), "gonly": float(go.tadpole[r, i]),
                         "z_exact": float((ex_src[r, i] - src[r, i]) / se),
                         "z_gonly": float((go.tadpole[r, i] - src[r, i]) / se)})
    summary = {}
    for kind in ("V4", "K1[", "K1src"):
        sel = [row for row in rows if row["quantity"].startswith(kind)]
        summary[kind] = {"max_abs_z_exact": max(abs(row["z_exact"]) for row in sel),
                         "max_abs_z_gonly": max(abs(row["z_gonly"]) for row in sel), "entries": len(sel)}
    report = {"activation": args.activation, "kin": args.kin, "time": args.time, "sw2": args.sw2, "sb2": args.sb2,
              "runs": runs, "samples_at_smallest_width": args.samples, "rows": rows, "summary": summary,
              "mc_seconds": mc_seconds, "exact_seconds": exact_seconds, "exact_steps": steps}
    fit = "X + c/n" + (" + d/L" if len(depths) > 1 else "")
    print(f"# {args.activation} kin={args.kin} T={args.time} sw2={args.sw2} sb2={args.sb2} widths={widths} "
          f"depths={depths}, MC extrapolated by WLS fit {fit} (MC {mc_seconds:.1f} s, exact theory "
          f"{exact_seconds:.1f} s on {steps} steps)")
    print(f"{'t':>6} {'quantity':>14} {'MC(extrap)':>12} {'se':>9} {'exact':>12} {'z':>7} {'G-only':>12} {'z':>8}")
    for row in rows:
        print(f"{row['t']:6.3f} {row['quantity']:>14} {row['mc']:12.5g} {row['se']:9.3g} {row['exact']:12.5g} "
              f"{row['z_exact']:7.2f} {row['gonly']:12.5g} {row['z_gonly']:8.2f}")
    for kind, s in summary.items():
        print(f"# {kind}: max|z| exact = {s['max_abs_z_exact']:.2f}, G-only = {s['max_abs_z_gonly']:.2f} "
              f"over {s['entries']} entries")
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--activation", default="relu")
    ap.add_argument("--kin", default="1")
    ap.add_argument("--time", type=float, default=3.0)
    ap.add_argument("--sw2", type=float, default=1.0)
    ap.add_argument("--sb2", type=float, default=0.0)
    ap.add_argument("--depths", default="64,128", help="comma-separated depths L (>= 2: fit the O(1/L) effect)")
    ap.add_argument("--widths", default="32,64,128")
    ap.add_argument("--samples", type=int, default=20000, help="seeds at the smallest width (scaled with n)")
    ap.add_argument("--records", type=int, default=4, help="recorded depths after t = 0 (must divide every L)")
    ap.add_argument("--steps-per-record", type=int, default=16, help="exact-theory grid steps per recorded depth")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the full comparison here")
    args = ap.parse_args(argv)
    report = run(args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
