"""erf: Williams' arcsine kernel F = (2/pi) arcsin(2 kab / sqrt((1 + 2 kaa)(1 + 2 kbb))) in closed form.

The shifted moments of the exact theory come from tables (kernel_eft.core.moments); `erf_pair_mean` is an
independent closed form of E[erf(x1) erf(x2)] that the tests use to check them.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from kernel_eft.core.activations.base import Activation, KernelForms
from kernel_eft.core.quadrature import bivariate_normal_cdf

SQRT2 = np.sqrt(2.0)


def _erf_d(x):
    return 2.0 / np.sqrt(np.pi) * np.exp(-x * x)


def _erf_d2(x):
    return -4.0 / np.sqrt(np.pi) * x * np.exp(-x * x)


def _erf_F_block(kaa, kbb, kab):
    arg = 2.0 * kab / np.sqrt((1.0 + 2.0 * kaa) * (1.0 + 2.0 * kbb))
    return (2.0 / np.pi) * np.arcsin(np.clip(arg, -1.0, 1.0))


def _erf_block_derivatives(kaa, kbb, kab, order):
    # F = (2/pi) arcsin(u), u = 2 kab / sqrt(A B), A = 1 + 2 kaa, B = 1 + 2 kbb; |u| < 1 for PSD blocks.
    A, B = 1.0 + 2.0 * kaa, 1.0 + 2.0 * kbb
    sqrtAB = np.sqrt(A * B)
    u = 2.0 * kab / sqrtAB
    one_minus = 1.0 - u * u
    F = (2.0 / np.pi) * np.arcsin(u)
    dFdu = (2.0 / np.pi) / np.sqrt(one_minus)
    du = np.stack([-u / A, -u / B, 2.0 / sqrtAB], axis=-1)
    grad = dFdu[..., None] * du
    if order < 2:
        return F, grad, None
    d2Fdu2 = (2.0 / np.pi) * u / one_minus**1.5
    d2u = np.zeros(F.shape + (3, 3))
    d2u[..., 0, 0] = 3.0 * u / A**2
    d2u[..., 1, 1] = 3.0 * u / B**2
    d2u[..., 0, 1] = d2u[..., 1, 0] = u / (A * B)
    d2u[..., 0, 2] = d2u[..., 2, 0] = -2.0 / (sqrtAB * A)
    d2u[..., 1, 2] = d2u[..., 2, 1] = -2.0 / (sqrtAB * B)
    hess = d2Fdu2[..., None, None] * du[..., :, None] * du[..., None, :] + dFdu[..., None, None] * d2u
    return F, grad, hess


def _erf_diag_derivatives(k):
    # F = (2/pi) arcsin(u), u = 2k / (1 + 2k)
    A = 1.0 + 2.0 * k
    u = 2.0 * k / A
    one_minus = (1.0 + 4.0 * k) / A**2
    dFdu = (2.0 / np.pi) / np.sqrt(one_minus)
    d2Fdu2 = (2.0 / np.pi) * u / one_minus**1.5
    du, d2u = 2.0 / A**2, -8.0 / A**3
    return (2.0 / np.pi) * np.arcsin(u), dFdu * du, d2Fdu2 * du * du + dFdu * d2u


def erf_pair_mean(m1, m2, s11, s22, s12) -> np.ndarray:
    """E[erf(x1) erf(x2)]: erf(x) = 2 Phi(sqrt2 x) - 1 turns it into bivariate normal orthants.
    (An independent closed form used to test the tabulated route.)"""
    d1 = np.sqrt(1.0 + 2.0 * s11)
    d2 = np.sqrt(1.0 + 2.0 * s22)
    h = SQRT2 * m1 / d1
    k = SQRT2 * m2 / d2
    rho = 2.0 * s12 / (d1 * d2)
    return 4.0 * bivariate_normal_cdf(h, k, rho) - 2.0 * special.ndtr(h) - 2.0 * special.ndtr(k) + 1.0


ERF = Activation("erf", special.erf, _erf_d, _erf_d2, "erf(x); Williams' arcsine kernel",
                 kernel=KernelForms(_erf_F_block, _erf_block_derivatives, _erf_diag_derivatives),
                 block_cost=(97e-9, 0.4e-6))  # block_cost: measured, config/README.md

ACTIVATIONS = (ERF,)  # registered by kernel_eft.core.activations
