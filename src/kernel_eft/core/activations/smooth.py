"""Smooth activations without closed forms: tanh, gelu, silu.

F, DF, D2F come from quadrature (kernel_eft.core.expectations) and the exact theory's moments from tables
(kernel_eft.core.moments); each carries a jet (phi, phi', phi'') computed in one pass for speed.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from kernel_eft.core.activations.base import Activation


def _tanh_d(x):
    t = np.tanh(x)  # sech^2 = 1 - tanh^2 never overflows (cosh would)
    return 1.0 - t * t


def _tanh_d2(x):
    t = np.tanh(x)
    return -2.0 * t * (1.0 - t * t)


def _tanh_jet(x):
    t = np.tanh(x)
    sech2 = 1.0 - t * t
    return t, sech2, -2.0 * t * sech2


def _silu_jet(x):
    s = special.expit(x)
    return x * s, s * (1.0 + x * (1.0 - s)), s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))


def _gelu_jet(x):
    cdf = special.ndtr(x)
    pdf = np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
    return x * cdf, cdf + x * pdf, (2.0 - x * x) * pdf


def _gelu(x):
    return x * special.ndtr(x)


def _gelu_d(x):
    return special.ndtr(x) + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)


def _gelu_d2(x):
    return (2.0 - x * x) * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)


def _silu(x):
    return x * special.expit(x)


def _silu_d(x):
    s = special.expit(x)
    return s * (1.0 + x * (1.0 - s))


def _silu_d2(x):
    s = special.expit(x)
    return s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))


TANH = Activation("tanh", np.tanh, _tanh_d, _tanh_d2, "tanh(x); quadrature", jet=_tanh_jet,
                  block_cost=(115e-9, 3.2e-6))  # block_cost: measured, config/README.md
GELU = Activation("gelu", _gelu, _gelu_d, _gelu_d2, "x Phi(x) (exact GELU); quadrature", jet=_gelu_jet,
                  block_cost=(112e-9, 1.5e-6))  # block_cost: measured, config/README.md
SILU = Activation("silu", _silu, _silu_d, _silu_d2, "x sigmoid(x); quadrature", jet=_silu_jet)

ACTIVATIONS = (TANH, GELU, SILU)  # registered by kernel_eft.core.activations
