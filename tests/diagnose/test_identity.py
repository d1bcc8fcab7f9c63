"""The exact one-block identity of n Cov(G) on Monte Carlo, at one width at a time (kernel_eft.diagnose.identity).

V4(n) rebuilt from layer 0 with the measured X = sw2 n Cov(G, S), Y = sw2^2 n Cov(S, S), E G and E Om must equal
the measured V4(n) at every layer to the noise (pulls within 4.5 sigma), at small widths where the 1/n terms are
large; the same rebuild without the contraction terms c4(X)/n, c2(Y)/n (the identity at n = infinity) fails.
Then the parts of n (V4(n) - V4) sum to it, and the mean-shift part is the O(1/n) theory's K1, Sigma1 term.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernel_eft.core.activations import get_activation
from kernel_eft.core.expectations import f_matrix
from kernel_eft.diagnose.identity import identity_decomposition
from kernel_eft.simulate.estimates import summarize
from kernel_eft.simulate.params import SimulationParams
from kernel_eft.simulate.samplers import simulate
from kernel_eft.theory.exact import exact_theory_discrete
from kernel_eft.theory.next_order import zeroth_order_XY

CASES = {"relu-P2-sb0.3": dict(activation="relu", kin=[[1.0, 0.4], [0.4, 1.2]], time=3.0, sw2=1.2, sb2=0.3),
         "tanh-P2": dict(activation="tanh", kin=[[1.0, 0.6], [0.6, 1.0]], time=4.0, sw2=1.5, sb2=0.0)}


def _order_zero(case, depth):
    act = get_activation(case["activation"])
    res = exact_theory_discrete(act, np.array(case["kin"]), case["sw2"], case["sb2"], case["time"], depth)
    X0, Y0 = zeroth_order_XY(res, case["sw2"])
    f0 = np.stack([f_matrix(act, K, case["sw2"], case["sb2"]) for K in res.K0])
    return {"K0": res.K0, "f0": f0, "V4": res.V4, "X0": X0, "Y0": Y0}


@pytest.mark.parametrize("name", list(CASES))
def test_identity_holds_on_monte_carlo_width_by_width(name):
    case, depth = CASES[name], 8
    theory = _order_zero(case, depth)
    for n in (8, 16):
        params = SimulationParams(width=n, depth=depth, samples=40000, seed=100 + n, batches=32, record_every=1,
                                  **case)
        batches, _ = simulate(params)
        s = summarize(params, batches)
        d = identity_decomposition(s, theory, width=n, **{k: case[k] for k in ("sw2", "sb2")},
                                   dt=case["time"] / depth)
        assert np.max(np.abs(d["identity_pull"])) < 4.5, (n, d["identity_pull"])
        wrong = d["identity_V4"] - d["parts"]["contraction"] / n  # the identity without c4(X)/n, c2(Y)/n
        assert np.max(np.abs((s["V4"] - wrong) / s["V4_se"])) > 6.0
        total = d["layer0"] + sum(d["parts"].values())
        assert np.allclose(total, n * (d["identity_V4"] - theory["V4"]), rtol=1e-6, atol=1e-6 * n * np.max(np.abs(theory["V4"])))
