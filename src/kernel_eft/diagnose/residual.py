"""The V4 equation residual R = dV4_MC/dt - RHS_EFT(V4_MC), split exactly into its transport and source parts.

V4 equation residual.  Over one residual block the exact identity (the block increments are Gaussian
given h^l, with covariance Om = sw2 S + sb2 11^T) is

    n Cov(G^{l+1}) - n Cov(G^l) = dt { n[Cov(G,Om) + Cov(Om,G)] + dt n Cov(Om,Om) }
                                  + dt { E[S4(G,Om)] + dt E[S2(Om)] },

and the discrete G-only EFT step replaces the first brace by J V4 + V4 J^T + dt J V4 J^T and the
second by S4(K0) + dt S2(K0).  So R = dV4_MC/dt - RHS_EFT(V4_MC) splits exactly into
  transport = exact transport brace - EFT transport on V4_MC,
  source    = E[S4(G,Om)] + dt E[S2(Om)] - S4(K0) - dt S2(K0)   (mean-field part + 1/n fluctuation part),
  remainder = R - transport - source, zero in expectation when every layer is recorded (a self-check).
With Om = sw2 S + sb2 11^T: n Cov(G, Om) = sw2 cov_GS, and the bilinear source is
E[G_ac Om_bd] = E[G_ac] E[Om_bd] + (sw2/n) cov_GS[ac, bd].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernel_eft.core.expectations import f_matrix
from kernel_eft.core.meanfield import mean_field_jacobian, source_s2, source_s4
from kernel_eft.core.pairs import pair_indices, pair_lookup


def contract_s4_cov(C: np.ndarray, P: int) -> np.ndarray:
    """sum of C[ac,bd] + C[ad,bc] + C[bc,ad] + C[bd,ac] for C[m, m'] = n Cov(X_m, Y_m'), (..., p, p).

    This is n * (the covariance part of E[S4(X, Y)]) by bilinearity."""
    lut = pair_lookup(P)
    a, b = pair_indices(P)
    i, j = a[:, None], b[:, None]
    k, m = a[None, :], b[None, :]
    return C[..., lut[i, k], lut[j, m]] + C[..., lut[i, m], lut[j, k]] + C[..., lut[j, m], lut[i, k]] \
        + C[..., lut[j, k], lut[i, m]]


def contract_s2_cov(C: np.ndarray, P: int) -> np.ndarray:
    """C[ac,bd] + C[ad,bc]: n * the covariance part of E[S2(Y)] for C = n Cov(Y, Y)."""
    lut = pair_lookup(P)
    a, b = pair_indices(P)
    i, j = a[:, None], b[:, None]
    k, m = a[None, :], b[None, :]
    return C[..., lut[i, k], lut[j, m]] + C[..., lut[i, m], lut[j, k]]


@dataclass(frozen=True)
class ResidualSetup:
    """Everything the residual needs besides the Monte Carlo moments, at the recorded times (R rows)."""

    times: np.ndarray  # (R,) recorded depth times, starting at 0
    width: int
    sw2: float
    sb2: float
    dt: float  # layer step T / L (not the recording step)
    K0: np.ndarray  # (R, P, P) discrete-layer mean kernel at the recorded layers
    W: np.ndarray  # (R, P, P) f(K0)
    J: np.ndarray  # (R, p, p) Df(K0)

    @property
    def P(self) -> int:
        return self.K0.shape[-1]


RESIDUAL_PARTS = ("total", "transport", "source", "source_meanfield", "source_fluctuation", "remainder")


def make_residual_setup(activation, times, width, sw2, sb2, dt, K0) -> ResidualSetup:
    K0 = np.asarray(K0, dtype=np.float64)
    return ResidualSetup(np.asarray(times, float), int(width), float(sw2), float(sb2), float(dt), K0,
                         f_matrix(activation, K0, sw2, sb2), mean_field_jacobian(activation, K0, sw2, sb2))


def residual_rates(setup: ResidualSetup, count, mean_G, mean_S, m2_GG, m2_GS, m2_SS) -> dict[str, np.ndarray]:
    """Instantaneous parts of R(t) = dV4_MC/dt - RHS_EFT(V4_MC), at the R-1 left interval ends, (R-1, p, p).

    Moments are pooled over `count` seeds in pair coordinates (see montecarlo.Moments)."""
    n, sw2, sb2, dt, P = setup.width, setup.sw2, setup.sb2, setup.dt, setup.P
    lut = pair_lookup(P)
    d = count - 1
    V4 = n * m2_GG / d
    C_GS = n * m2_GS / d
    C_SS = n * m2_SS / d
    G = mean_G[..., lut]
    Om = sw2 * mean_S[..., lut] + sb2
    J = setup.J
    JV = J @ V4
    transport_eft = JV + np.swapaxes(JV, -1, -2) + dt * JV @ np.swapaxes(J, -1, -2)
    transport_exact = sw2 * (C_GS + np.swapaxes(C_GS, -1, -2)) + dt * sw2**2 * C_SS
    source_eft = source_s4(setup.K0, setup.W) + dt * source_s2(setup.W)
    source_meanfield = source_s4(G, Om) + dt * source_s2(Om) - source_eft
    source_fluct = (sw2 * contract_s4_cov(C_GS, P) + dt * sw2**2 * contract_s2_cov(C_SS, P)) / n
    step = np.diff(setup.times)[:, None, None]
    dV4dt = np.diff(V4, axis=0) / step
    total = dV4dt - (transport_eft + source_eft)[:-1]
    transport = (transport_exact - transport_eft)[:-1]
    source = (source_meanfield + source_fluct)[:-1]
    return {
        "total": total,
        "transport": transport,
        "source": source,
        "source_meanfield": source_meanfield[:-1],
        "source_fluctuation": source_fluct[:-1],
        "remainder": total - transport - source,
    }


def accumulate(times: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Left-rule integral int_0^t rate dt' at every recorded time (R, ...), zero at t = 0.

    The left rule matches the Euler-type layer recursion exactly when every layer is recorded."""
    step = np.diff(times).reshape((-1,) + (1,) * (rates.ndim - 1))
    out = np.zeros((rates.shape[0] + 1,) + rates.shape[1:])
    out[1:] = np.cumsum(rates * step, axis=0)
    return out


def residual_estimator(setup: ResidualSetup):
    """Estimator for montecarlo.jackknife: Moments -> flat array of every rate and accumulated part,
    plus the Frobenius norms of the accumulated parts at t = T (so the summary norms get errors too)."""

    def estimate(m) -> np.ndarray:
        rates = residual_rates(setup, m.count, m.mean_G, m.mean_S, m.m2_GG, m.m2_GS, m.m2_SS)
        chunks = []
        for name in RESIDUAL_PARTS:
            acc = accumulate(setup.times, rates[name])
            chunks += [rates[name].ravel(), acc.ravel(), [np.sqrt(np.sum(acc[-1] ** 2))]]
        return np.concatenate([np.ravel(c) for c in chunks])

    return estimate


def unpack_residual(flat: np.ndarray, R: int, p: int) -> dict[str, np.ndarray]:
    """Inverse of the packing in residual_estimator: {part: (rate (R-1,p,p), accumulated (R,p,p), norm_T)}."""
    out = {}
    pos = 0
    for name in RESIDUAL_PARTS:
        nr, na = (R - 1) * p * p, R * p * p
        rate = flat[pos:pos + nr].reshape(R - 1, p, p)
        acc = flat[pos + nr:pos + nr + na].reshape(R, p, p)
        norm = flat[pos + nr + na]
        pos += nr + na + 1
        out[name] = (rate, acc, norm)
    return out
