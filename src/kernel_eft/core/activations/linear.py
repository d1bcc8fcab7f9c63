"""linear phi(x) = x: F(K) = K, and every shifted Gaussian moment is a polynomial in the means.

With linear phi the G-only closure is exact at leading order in 1/n (a check of the whole pipeline).
"""

from __future__ import annotations

import numpy as np

from kernel_eft.core.activations.base import Activation, KernelForms, zero
from kernel_eft.core.moments import ClosedFormMoments


def _identity(x):
    return np.asarray(x, dtype=np.float64)


def _one(x):
    return np.ones_like(x)


def _linear_F_block(kaa, kbb, kab):
    return np.asarray(kab, dtype=np.float64) * np.ones(np.broadcast(kaa, kbb, kab).shape)


def _linear_block_derivatives(kaa, kbb, kab, order):
    F = _linear_F_block(kaa, kbb, kab)
    grad = np.zeros(F.shape + (3,))
    grad[..., 2] = 1.0
    return F, grad, (np.zeros(F.shape + (3, 3)) if order >= 2 else None)


def _linear_diag_derivatives(k):
    return k.copy(), np.ones(k.shape), np.zeros(k.shape)


class LinearMoments(ClosedFormMoments):
    """phi(x) = x: every moment is a polynomial in the means."""

    def single(self, order, mu, s):
        mu = np.asarray(mu, float)
        return (mu, np.ones_like(mu), np.zeros_like(mu))[order]

    def square(self, order, mu, s):
        mu = np.asarray(mu, float)
        return (mu * mu + float(s) ** 2, 2.0 * mu, np.full_like(mu, 2.0))[order]

    def pair(self, i, j, mu1, mu2, s11, s22, s12):
        mu1, mu2 = np.broadcast_arrays(np.asarray(mu1, float), np.asarray(mu2, float))
        table = {(0, 0): mu1 * mu2 + s12, (1, 0): mu2, (0, 1): mu1, (1, 1): np.ones_like(mu1),
                 (2, 0): np.zeros_like(mu1), (0, 2): np.zeros_like(mu1)}
        return table[(i, j)]


LINEAR = Activation("linear", _identity, _one, zero, "identity; F(K) = K",
                    kernel=KernelForms(_linear_F_block, _linear_block_derivatives, _linear_diag_derivatives),
                    moments=LinearMoments)

ACTIVATIONS = (LINEAR,)  # registered by kernel_eft.core.activations
