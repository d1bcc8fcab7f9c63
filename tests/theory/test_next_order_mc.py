"""The known terms of V4_1 against Monte Carlo (slow tier): the identity's mean-shift and contraction parts,
measured at each width on the simulation (kernel_eft.diagnose.identity, jackknife errors) and extrapolated in 1/n,
equal the O(1/n) theory's K1/Sigma1 and c4(X_0), c2(Y_0) terms (kernel_eft.theory.next_order.known_terms) at every
layer and entry; the contraction built from the G-only closure's X_0 = sw2 V4 DF^T fails.  At a point not used in
development of the code (relu, P = 2, sb2 > 0, L = 8; widths 32, 64, 128)."""

from __future__ import annotations

import numpy as np
import pytest

from kernel_eft.core.activations import get_activation
from kernel_eft.core.block_identity import contraction_c2, contraction_c4
from kernel_eft.core.expectations import f_matrix
from kernel_eft.core.statistics import fit_inverse_width
from kernel_eft.diagnose.identity import decomposition_with_errors
from kernel_eft.simulate.params import SimulationParams
from kernel_eft.simulate.samplers import simulate
from kernel_eft.theory.exact import exact_theory_discrete, mean_path_discrete
from kernel_eft.theory.next_order import known_terms, zeroth_order_XY

CASE = dict(activation="relu", kin=[[1.0, 0.3], [0.3, 0.9]], time=3.0, sw2=1.3, sb2=0.15)
DEPTH, WIDTHS = 8, (32, 64, 128)


def _running(increments):
    out = np.zeros_like(increments)
    out[1:] = np.cumsum(increments[:-1], axis=0)
    return out


@pytest.mark.slow
def test_known_terms_of_v4_1_against_monte_carlo():
    act = get_activation(CASE["activation"])
    kin, sw2, sb2, time = np.array(CASE["kin"]), CASE["sw2"], CASE["sb2"], CASE["time"]
    dt = time / DEPTH
    res = exact_theory_discrete(act, kin, sw2, sb2, time, DEPTH)
    path = mean_path_discrete(act, kin, sw2, sb2, time, DEPTH)
    f0 = np.stack([f_matrix(act, K, sw2, sb2) for K in res.K0])
    X0, Y0 = zeroth_order_XY(res, sw2)
    theory = {"K0": res.K0, "f0": f0, "V4": res.V4, "X0": X0, "Y0": Y0}
    known = known_terms(res, path.DF, f0, sw2, dt)
    measured = {"mean": [], "contraction": []}
    for n in WIDTHS:
        params = SimulationParams(width=n, depth=DEPTH, samples=40000, seed=7 + n, batches=32, record_every=1,
                                  **CASE)
        batches, _ = simulate(params)
        d = decomposition_with_errors(batches, theory, width=n, sw2=sw2, sb2=sb2, dt=dt)
        for k in measured:
            measured[k].append(d[k])

    def pulls(name, prediction):
        values = np.array([v for v, _ in measured[name]])[:, 1:]
        errors = np.array([e for _, e in measured[name]])[:, 1:]
        coef, coef_se, _, _ = fit_inverse_width(WIDTHS, values, errors, order=2)
        return (coef[0] - prediction[1:]) / coef_se[0], values, errors

    z_mean, _, _ = pulls("mean", _running(known.mean_shift))
    z_contr, raw, raw_se = pulls("contraction", _running(known.contraction))
    assert np.max(np.abs(z_mean)) < 4.5, z_mean
    assert np.max(np.abs(z_contr)) < 4.5, z_contr
    # each width alone still carries the 1/n part of X (X_1): the contraction at n = 32 is off without the fit
    assert np.max(np.abs((raw[0] - _running(known.contraction)[1:]) / raw_se[0])) > 4.5
    # the G-only closure's X_0 (S a function of G) gives the wrong contraction
    X_gonly = sw2 * np.einsum("nxy,nzy->nxz", res.V4, path.DF)
    Y_gonly = sw2 ** 2 * np.einsum("nxy,nyz,nwz->nxw", path.DF, res.V4, path.DF)
    wrong = _running(dt * contraction_c4(X_gonly, 2) + dt ** 2 * contraction_c2(Y_gonly, 2))
    z_wrong, _, _ = pulls("contraction", wrong)
    assert np.max(np.abs(z_wrong)) > 6.0, z_wrong
