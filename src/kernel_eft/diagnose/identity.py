"""The exact one-block identity of n Cov(G) evaluated on Monte Carlo moments, term by term, at one width.

For a Monte Carlo at width n recorded at every layer (V4 = n Cov(G), cov_GS = n Cov(G, S), cov_SS = n Cov(S, S),
G_mean, S_mean), the law of total covariance of one block (kernel_eft.core.block_identity) says, exactly,

    V4(n)^{l+1} - V4(n)^l = transport + mean + contraction      (X = sw2 cov_GS, Y = sw2^2 cov_SS, E Om = sw2 S + sb2)

so (i) the identity itself can be checked on the simulation, and (ii) n (V4(n) - V4), the Monte Carlo's own
measurement of V4_1 at this width, splits into three measured parts, each against the O(1/n) theory's order 0:

    n (V4(n) - V4)^l = sum_{l' < l} n [ (transport_MC - transport_0) + (mean_MC - mean_0) + contraction_MC ]
                       + n (V4(n)^0 - V4^0)

- `mean`: the 1/n shift of E G and E Om (K1 and Sigma1: known from the O(1/n) theory),
- `contraction`: c4(X), c2(Y) over n (known at leading order: X_0, Y_0),
- `transport`: dt (X - X_0 + (X - X_0)^T) + dt^2 (Y - Y_0): the X_1, Y_1 part, the unknown of the next order.

Inputs are plain arrays (pair coordinates, every layer 0..L), so this room needs no theory module.
"""

from __future__ import annotations

import numpy as np

from kernel_eft.core.block_identity import identity_terms, running_sum
from kernel_eft.core.pairs import from_pairs
from kernel_eft.core.statistics import jackknife

PARTS = ("transport", "mean", "contraction")


def identity_decomposition(mc: dict, theory: dict, *, width: int, sw2: float, sb2: float, dt: float) -> dict:
    """The identity on one width's Monte Carlo, and n (V4(n) - V4) split into its parts.

    mc: V4, cov_GS, cov_SS (R, p, p), G_mean, S_mean (R, P, P) at layers 0..L (+ V4_se);
    theory: the O(1/n) theory on the same layers: K0 (R, P, P), f0 = f(K0) (R, P, P), V4, X0, Y0 (R, p, p).
    Returns (pair coordinates, per layer):
      identity_V4: V4(n) rebuilt from layer 0 by the identity with the measured X, Y, E G, E Om (equals mc V4 to
        its noise if the identity holds), identity_pull: (mc V4 - identity_V4) / V4_se;
      measured_V4_1: n (V4(n) - V4); parts: dict of the three cumulated parts times n (they sum to measured_V4_1
        up to the identity's check and layer 0's noise); X_1_measured: n (X(n) - X_0), the 1/n coefficient of
        n Cov(G, Om) as this width measures it."""
    n = float(width)
    X = sw2 * np.asarray(mc["cov_GS"], float)
    Y = sw2 ** 2 * np.asarray(mc["cov_SS"], float)
    EG = np.asarray(mc["G_mean"], float)
    EOm = sw2 * np.asarray(mc["S_mean"], float) + sb2  # sb2 11^T
    measured = identity_terms(EG, EOm, X, Y, dt, n)
    order0 = identity_terms(theory["K0"], theory["f0"], theory["X0"], theory["Y0"], dt, np.inf)
    V4_mc = np.asarray(mc["V4"], float)
    rebuilt = V4_mc[0] + running_sum(sum(measured.values()))
    parts = {name: n * running_sum(measured[name] - order0[name]) for name in PARTS}
    out = {"identity_V4": rebuilt, "measured_V4_1": n * (V4_mc - theory["V4"]), "parts": parts,
           "layer0": n * (V4_mc[0] - theory["V4"][0]), "X_1_measured": n * (X - theory["X0"])}
    if "V4_se" in mc:
        out["identity_pull"] = (V4_mc - rebuilt) / np.where(mc["V4_se"] > 0, mc["V4_se"], np.inf)
    return out


def decomposition_with_errors(batches, theory: dict, *, width: int, sw2: float, sb2: float, dt: float) -> dict:
    """`identity_decomposition` of the batch-resolved moments (every layer recorded), each output with its
    delete-one-batch jackknife error: {name: (value, se)} for measured_V4_1, X_1_measured, identity_residual
    (V4(n) minus V4(n) rebuilt by the identity: zero up to noise) and every part."""
    names = ["measured_V4_1", "X_1_measured", "identity_residual", *PARTS]

    def estimator(m):
        cov_GG, cov_GS, cov_SS = m.covariances()
        P = theory["K0"].shape[-1]
        mc = {"V4": width * cov_GG, "cov_GS": width * cov_GS, "cov_SS": width * cov_SS,
              "G_mean": from_pairs(m.mean_G, P), "S_mean": from_pairs(m.mean_S, P)}
        d = identity_decomposition(mc, theory, width=width, sw2=sw2, sb2=sb2, dt=dt)
        return np.stack([d[k] for k in names[:2]] + [mc["V4"] - d["identity_V4"]] + [d["parts"][k] for k in PARTS])

    value, se = jackknife(batches, estimator)
    return {name: (value[i], se[i]) for i, name in enumerate(names)}
