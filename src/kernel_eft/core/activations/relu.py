"""relu = max(x, 0): the arc-cosine kernel in closed form, and closed-form shifted Gaussian moments.

F_ab = sqrt(kaa kbb) (sin th + (pi - th) cos th) / (2 pi) (Cho and Saul), with its first and second
derivatives in block coordinates (kaa, kbb, kab).  D2F_ab ~ 1 / sqrt(K_aa K_bb - K_ab^2) diverges as the
angle between inputs a and b goes to 0 or pi; the angle is computed with atan2 from the determinant
(accurate near both ends).  Below sin(theta) = 1e-4 second derivatives warn (`CollinearWarning`: D2F is
large and loses digits); at sin(theta)^2 <= 1e-14 they raise `CollinearInputsError`.  F and DF stay
finite there.  The moments of the exact theory are truncated-Gaussian moments through Phi, phi and the
bivariate normal CDF, derived with Stein's lemma.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import special

from kernel_eft.core.activations.base import Activation, CollinearInputsError, CollinearWarning, KernelForms, zero
from kernel_eft.core.moments import ClosedFormMoments
from kernel_eft.core.quadrature import INV_SQRT_2PI, bivariate_normal_cdf, normal_pdf

Array = np.ndarray

_COLLINEAR_RAISE_SIN2 = 1e-14


_COLLINEAR_WARN_SIN = 1e-4


def _relu(x):
    return np.maximum(x, 0.0)


def _relu_d(x):
    return (x > 0).astype(np.float64)


def _relu_det_angle(kaa, kbb, kab):
    """det = kaa kbb - kab^2 >= 0 and theta = atan2(sqrt(det), kab): accurate near 0 and pi."""
    det = np.maximum(kaa * kbb - kab * kab, 0.0)
    root = np.sqrt(det)
    return det, root, np.arctan2(root, kab)


def _relu_F_block(kaa, kbb, kab):
    # F = (sqrt(det) + (pi - theta) kab) / (2 pi) = sqrt(kaa kbb) (sin th + (pi - th) cos th) / (2 pi)
    _, root, theta = _relu_det_angle(kaa, kbb, kab)
    return (root + (np.pi - theta) * kab) / (2.0 * np.pi)


def _relu_collinear_guard(kaa, kbb, det):
    sin2 = det / (kaa * kbb)
    if np.any(sin2 <= _COLLINEAR_RAISE_SIN2):
        worst = float(np.min(sin2))
        raise CollinearInputsError(
            f"relu: two inputs are collinear or anti-collinear (sin^2 theta = {worst:.3g}); the second "
            "derivative of F (and the G-only tadpole) diverges like 1/sin(theta)"
        )
    if np.any(sin2 < _COLLINEAR_WARN_SIN**2):
        warnings.warn(
            f"relu: nearly collinear inputs (sin theta = {np.sqrt(float(np.min(sin2))):.3g}); D2F ~ 1/sin(theta) is "
            "large and has lost digits to cancellation", CollinearWarning, stacklevel=3)


def _relu_block_derivatives(kaa, kbb, kab, order):
    det, root, theta = _relu_det_angle(kaa, kbb, kab)
    F = (root + (np.pi - theta) * kab) / (2.0 * np.pi)
    grad = np.stack([root / (4 * np.pi * kaa), root / (4 * np.pi * kbb), (np.pi - theta) / (2 * np.pi)], axis=-1)
    if order < 2:
        return F, grad, None
    _relu_collinear_guard(kaa, kbb, det)
    hess = np.empty(F.shape + (3, 3))
    hess[..., 0, 0] = (kab * kab - 0.5 * kaa * kbb) / (4 * np.pi * kaa * kaa * root)
    hess[..., 1, 1] = (kab * kab - 0.5 * kaa * kbb) / (4 * np.pi * kbb * kbb * root)
    hess[..., 2, 2] = 1.0 / (2 * np.pi * root)
    hess[..., 0, 1] = hess[..., 1, 0] = 1.0 / (8 * np.pi * root)
    hess[..., 0, 2] = hess[..., 2, 0] = -kab / (4 * np.pi * kaa * root)
    hess[..., 1, 2] = hess[..., 2, 1] = -kab / (4 * np.pi * kbb * root)
    return F, grad, hess


def _relu_diag_derivatives(k):
    return 0.5 * k, np.full(k.shape, 0.5), np.zeros(k.shape)


class ReluMoments(ClosedFormMoments):
    """relu: phi' = 1{x > 0}, phi'' = delta(x) (kink at 0, jump 1)."""

    def pair_family(self, mu1, mu2, s11, s22, s12):
        return relu_pair_family(mu1, mu2, s11, s22, s12)

    def later_square(self, mu, scales):
        s = np.maximum(np.asarray(scales, float), 1e-300)[None, :]
        mu = np.asarray(mu, float)[:, None]
        a = mu / s
        return (mu * mu + s * s) * special.ndtr(a) + mu * s * normal_pdf(a)

    def later_pair(self, mu1, mu2, s11, s22, s12):
        return relu_pair_mean(np.asarray(mu1, float)[:, None], np.asarray(mu2, float)[:, None],
                              np.asarray(s11, float)[None, :], np.asarray(s22, float)[None, :],
                              np.asarray(s12, float)[None, :])

    def single(self, order, mu, s):
        s = max(float(s), 1e-300)
        a = np.asarray(mu, float) / s
        if order == 0:
            return s * (a * special.ndtr(a) + normal_pdf(a))
        if order == 1:
            return special.ndtr(a)
        if order == 2:
            return normal_pdf(a) / s
        raise ValueError(order)

    def square(self, order, mu, s):
        mu = np.asarray(mu, float)
        if order == 0:
            s = max(float(s), 1e-300)
            a = mu / s
            return (mu * mu + s * s) * special.ndtr(a) + mu * s * normal_pdf(a)
        if order == 1:
            return 2.0 * self.single(0, mu, s)  # (phi^2)' = 2 relu
        if order == 2:
            return 2.0 * self.single(1, mu, s)  # (phi^2)'' = 2 step (relu(0) delta = 0)
        raise ValueError(order)

    def pair(self, i, j, mu1, mu2, s11, s22, s12):
        if i > j:
            return self.pair(j, i, mu2, mu1, s22, s11, s12)
        s1, s2 = np.sqrt(max(s11, 1e-300)), np.sqrt(max(s22, 1e-300))
        rho = float(np.clip(s12 / (s1 * s2), -1.0, 1.0))
        r = np.sqrt(max(1.0 - rho * rho, 1e-300))
        h = np.asarray(mu1, float) / s1
        k = np.asarray(mu2, float) / s2
        if (i, j) == (0, 0):
            return relu_pair_mean(mu1, mu2, s11, s22, s12)
        if (i, j) == (1, 1):
            return bivariate_normal_cdf(h, k, rho)
        if (i, j) == (0, 1):  # E[relu(X1) 1{X2 > 0}]: Stein on (X1 - mu1)
            return (np.asarray(mu1, float) * bivariate_normal_cdf(h, k, rho)
                    + s1 * normal_pdf(h) * special.ndtr((k - rho * h) / r)
                    + s1 * rho * normal_pdf(k) * special.ndtr((h - rho * k) / r))
        if (i, j) == (0, 2):  # E[relu(X1) delta(X2)] = p_X2(0) E[relu(X1) | X2 = 0]
            m = s1 * (h - rho * k)
            return normal_pdf(k) / s2 * self.single(0, m, s1 * r)
        raise ValueError(f"relu pair moment ({i}, {j}) is not needed by the exact theory")


def relu_pair_family(m1, m2, s11, s22, s12) -> dict:
    """Every E[relu^(i)(X1) relu^(j)(X2)] with i + j <= 2 in one pass (one bivariate CDF): the truncated
    moments by Stein's lemma, and the delta terms as densities at 0 times conditional relu means."""
    m1, m2 = np.asarray(m1, float), np.asarray(m2, float)
    s1 = np.sqrt(np.maximum(s11, 1e-300))
    s2 = np.sqrt(np.maximum(s22, 1e-300))
    rho = np.clip(s12 / (s1 * s2), -1.0 + 1e-15, 1.0 - 1e-15)
    r = np.sqrt(1.0 - rho * rho)
    h, k = m1 / s1, m2 / s2
    Phi2 = bivariate_normal_cdf(h, k, rho)
    u1, u2 = (k - rho * h) / r, (h - rho * k) / r  # standardised conditional means of X2 | X1 = 0, X1 | X2 = 0
    A1, A2 = special.ndtr(u1), special.ndtr(u2)
    d1, d2 = normal_pdf(u1), normal_pdf(u2)
    ph, pk = normal_pdf(h), normal_pdf(k)
    p01 = m1 * Phi2 + s1 * ph * A1 + s1 * rho * pk * A2  # E[relu(X1) 1{X2 > 0}]
    p10 = m2 * Phi2 + s2 * pk * A2 + s2 * rho * ph * A1  # E[1{X1 > 0} relu(X2)]
    p02 = pk / s2 * s1 * (u2 * A2 + d2) * r  # E[relu(X1) delta(X2)]
    p20 = ph / s1 * s2 * (u1 * A1 + d1) * r  # E[delta(X1) relu(X2)]
    # E[relu relu]: Stein on the orthant, as in relu_pair_mean (W = -Z standard)
    e_w1 = -ph * A1 - rho * pk * A2
    e_w2 = -pk * A2 - rho * ph * A1
    e_w12 = rho * Phi2 - rho * h * ph * A1 - rho * k * pk * A2 + r * ph * d1
    p00 = m1 * m2 * Phi2 - m1 * s2 * e_w2 - m2 * s1 * e_w1 + s1 * s2 * e_w12
    return {(0, 0): p00, (1, 0): p10, (0, 1): p01, (2, 0): p20, (1, 1): Phi2, (0, 2): p02}


def relu_pair_mean(m1, m2, s11, s22, s12) -> Array:
    """E[relu(x1) relu(x2)], x ~ N((m1, m2), [[s11, s12], [s12, s22]]) (truncated bivariate moments)."""
    sig1 = np.sqrt(np.maximum(s11, 1e-300))
    sig2 = np.sqrt(np.maximum(s22, 1e-300))
    rho = np.clip(s12 / (sig1 * sig2), -1.0, 1.0)
    r = np.sqrt(np.maximum(1.0 - rho * rho, 0.0))
    h, k = m1 / sig1, m2 / sig2
    L = bivariate_normal_cdf(h, k, rho)
    rs = np.where(r > 0, r, 1.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ck = np.where(r > 0, special.ndtr((k - rho * h) / rs), np.where(k - rho * h >= 0, 1.0, 0.0))
        ch = np.where(r > 0, special.ndtr((h - rho * k) / rs), np.where(h - rho * k >= 0, 1.0, 0.0))
        dens = np.where(r > 0, np.exp(-0.5 * ((k - rho * h) / rs) ** 2) * INV_SQRT_2PI, 0.0)
    ph = normal_pdf(h)
    pk = normal_pdf(k)
    # With W = -Z standard: E[(h - W1)(k - W2) 1{W1<h, W2<k}] expanded with Stein's lemma.
    e_w1 = -ph * ck - rho * pk * ch
    e_w2 = -pk * ch - rho * ph * ck
    e_w12 = rho * L - rho * h * ph * ck - rho * k * pk * ch + r * ph * dens
    return m1 * m2 * L - m1 * sig2 * e_w2 - m2 * sig1 * e_w1 + sig1 * sig2 * e_w12


RELU = Activation("relu", _relu, _relu_d, zero, "max(x, 0); arc-cosine kernel", kinks=((0.0, 1.0),),
                  kernel=KernelForms(_relu_F_block, _relu_block_derivatives, _relu_diag_derivatives),
                  moments=ReluMoments, block_cost=(50e-9, 1.4e-6))  # block_cost: measured, config/README.md

ACTIVATIONS = (RELU,)  # registered by kernel_eft.core.activations
