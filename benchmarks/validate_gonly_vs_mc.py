"""Record what the G-only EFT gets right and wrong against Monte Carlo (issue 3 acceptance).

For each activation: Monte Carlo at width n and depth L (block sampler) against the G-only discrete recursion at
the same L.  Prints, at a few depth times, K0 (relative error of the MC mean kernel), V4 (MC / theory ratio for
three representative entries, with the MC standard error), K1 (MC +- se against theory) and, at t = 0, the exact
K1 source against the G-only tadpole.

    PYTHONPATH=src python benchmarks/validate_gonly_vs_mc.py [--samples 20000] [--widths 64,128] [--depth 64]

Runs serially (about 10 s per 10^4 samples per width on one core at L = 64, P = 2).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kernel_eft.core.pairs import pair_lookup, to_pairs
from kernel_eft.simulate.estimates import summarize
from kernel_eft.simulate.params import SimulationParams
from kernel_eft.simulate.samplers import simulate
from kernel_eft.theory import gonly

KIN = np.array([[1.0, 0.6], [0.6, 1.0]])


def compare(activation: str, width: int, depth: int, T: float, samples: int, seed: int, sw2: float, sb2: float):
    params = SimulationParams(activation=activation, width=width, depth=depth, time=T, sw2=sw2, sb2=sb2, kin=KIN,
                                 samples=samples, seed=seed, batches=32)
    started = time.perf_counter()
    batches, _ = simulate(params)
    est = summarize(params, batches)
    elapsed = time.perf_counter() - started
    theory = gonly.solve_gonly_discrete(activation, KIN, sw2, sb2, T, depth)
    lut = pair_lookup(2)
    entries = {"V(00,00)": (lut[0, 0], lut[0, 0]), "V(01,01)": (lut[0, 1], lut[0, 1]), "V(00,11)": (lut[0, 0], lut[1, 1])}
    print(f"\n== {activation}  n={width}  L={depth}  T={T:g}  sw2={sw2:g} sb2={sb2:g}  samples={samples}  "
          f"(MC {elapsed:.1f} s)")
    print(" t    | K0 rel.err (max)  | " + " | ".join(f"{k}: MC/theory (+-se)" for k in entries)
          + " | K1_00 MC+-se [theory] | K1_01 MC+-se [theory]")
    for t in np.linspace(0, T, 5):
        layer = int(round(t / T * depth))
        G = to_pairs(est["G_mean"][layer])
        K0 = theory.K0[layer]
        rel = np.max(np.abs(G - K0) / np.abs(K0))
        V_mc, V_se = est["V4"][layer], est["V4_se"][layer]
        cells = []
        for key, (m1, m2) in entries.items():
            th = theory.V4[layer][m1, m2]
            cells.append(f"{V_mc[m1, m2] / th:6.3f} (+-{V_se[m1, m2] / abs(th):.3f})")
        k1, k1se = est["K1"][layer], est["K1_se"][layer]
        k1th = theory.K1[layer]
        print(f" {t:4.1f} | {rel:.2e}          | " + " | ".join(cells)
              + f" | {k1[0, 0]:+.3f}+-{k1se[0, 0]:.3f} [{k1th[lut[0, 0]]:+.3f}]"
              + f" | {k1[0, 1]:+.3f}+-{k1se[0, 1]:.3f} [{k1th[lut[0, 1]]:+.3f}]")
    src, src_se = est["K1_source"][0], est["K1_source_se"][0]
    tad = theory.tadpole[0]
    print(f" t=0 exact K1 source (MC) 01: {src[0, 1]:+.4f}+-{src_se[0, 1]:.4f}   G-only tadpole 01: {tad[lut[0, 1]]:+.4f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--activations", default="relu,tanh")
    ap.add_argument("--widths", default="128")
    ap.add_argument("--depth", type=int, default=64)
    ap.add_argument("--time", type=float, default=4.0)
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--sw2", type=float, default=1.0)
    ap.add_argument("--sb2", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    for act in args.activations.split(","):
        for n in (int(w) for w in args.widths.split(",")):
            compare(act, n, args.depth, args.time, args.samples, args.seed, args.sw2, args.sb2)


if __name__ == "__main__":
    main()
