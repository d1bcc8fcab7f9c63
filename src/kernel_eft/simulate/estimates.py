"""Every Monte Carlo estimate with its jackknife standard error, from the batch-resolved moments.

The references at infinite width come from core (the discrete-layer mean-field K0 and F), never from a
theory: the simulator is the referee of the theories and computes nothing with them.
"""

from __future__ import annotations

import numpy as np

from kernel_eft.core.expectations import F_matrix, kernel_derivatives
from kernel_eft.core.meanfield import mean_kernel_discrete
from kernel_eft.core.pairs import from_pairs, n_pairs, to_pairs
from kernel_eft.core.statistics import BatchMoments, Moments, jackknife
from kernel_eft.simulate.params import SimulationParams

def mean_kernel_reference(params: SimulationParams) -> np.ndarray:
    """Infinite-width discrete-layer K0 at the recorded layers, (R, P, P)."""
    k0 = mean_kernel_discrete(params.activation, params.kin, params.sw2, params.sb2, params.time, params.depth)
    return k0[params.layers]


def summarize(params: SimulationParams, batches: BatchMoments) -> dict[str, np.ndarray]:
    """Every estimate with its jackknife standard error.  Matrices (R, P, P), covariances (R, p, p) in pairs.

    V4 = n Cov(G), cov_GS = n Cov(G, S), cov_SS = n Cov(S, S), K1 = n (mean G - K0_discrete),
    K1_source = n sw2 (mean S - F(mean G)) (the exact source of K1: as n -> infinity, dK1/dt = J K1 + K1_source;
    its jackknife replicates with F linearised about the pooled mean G).
    With control-variate sums in the batches (control_variates="martingale"), mean G, mean S and Cov(G) are the
    control-adjusted ones (beta refitted in every jackknife replicate); cov_GS and cov_SS are not controlled.
    """
    n, P = params.width, params.P
    k0 = mean_kernel_reference(params)
    p = n_pairs(P)
    iu, ju = np.triu_indices(p)
    k0_pairs = to_pairs(k0)

    def controlled(c):
        """Mean G, mean S and Cov(G) from the control-adjusted means of q = (G, S, D), D = (G - K0)(G - K0)^T:
        Cov(G) = E[D] - (E[G] - K0)(E[G] - K0)^T (without the N / (N - 1) factor: its bias, -Var(adjusted mean
        G), is below V4 / (n N)), so that at t = 0, where the controls are exact, V4 = S2(K_in) exactly."""
        q = c.adjusted_means()
        G, S, D = q[:, :p], q[:, p:2 * p], q[:, 2 * p:]
        cov = np.empty(D.shape[:1] + (p, p))
        cov[:, iu, ju] = D
        cov[:, ju, iu] = D
        dG = G - k0_pairs
        cov -= dG[:, :, None] * dG[:, None, :]
        return from_pairs(G, P), from_pairs(S, P), cov

    def means(m: Moments):
        if m.controls is not None:
            return controlled(m.controls)
        return from_pairs(m.mean_G, P), from_pairs(m.mean_S, P), None

    # F(mean G) of the K1 source: exact on all seeds, linearised about it in the jackknife replicates,
    # F(G_r) = F(G) + DF (G_r - G) (their G differs from the pooled one by ~se / B; the quadratic term is ~1/B of
    # that again), so the quadrature runs once, not B + 1 times (tanh, L = 64: ~1.5 CPU-s per run saved).
    G_all = means(batches.pooled())[0]
    F_all = to_pairs(F_matrix(params.activation, G_all))
    DF_all = np.stack([kernel_derivatives(params.activation, g, order=1).jacobian() for g in G_all])
    G_all = to_pairs(G_all)

    def estimates(m: Moments) -> np.ndarray:
        cov_GG, cov_GS, cov_SS = m.covariances()
        G, S, cov_controlled = means(m)
        if cov_controlled is not None:
            cov_GG = cov_controlled
        k1 = n * (G - k0)
        F = F_all + np.einsum("rij,rj->ri", DF_all, to_pairs(G) - G_all)
        source = n * params.sw2 * (S - from_pairs(F, P))
        # Pack into one flat vector per layer so one jackknife pass serves every estimator.
        parts = [G, S, k1, source, n * cov_GG, n * cov_GS, n * cov_SS]
        return np.concatenate([x.reshape(x.shape[0], -1) for x in parts], axis=1)

    value, se = jackknife(batches, estimates)
    R, p = batches.mean_G.shape[1], n_pairs(P)
    names = ["G_mean", "S_mean", "K1", "K1_source", "V4", "cov_GS", "cov_SS"]
    shapes = [(P, P)] * 4 + [(p, p)] * 3
    out: dict[str, np.ndarray] = {"K0_discrete": k0}
    start = 0
    for name, shape in zip(names, shapes):
        size = int(np.prod(shape))
        out[name] = value[:, start:start + size].reshape((R,) + shape)
        out[name + "_se"] = se[:, start:start + size].reshape((R,) + shape)
        start += size
    return out
