"""Shifted Gaussian moments of an activation, the building blocks of the exact O(1/n) theory.

For X ~ N(mu, s^2) and a bivariate X = (X1, X2) ~ N((mu1, mu2), [[s11, s12], [s12, s22]]):

    single(i, mu, s)                  = E[phi^(i)(X)]
    square(k, mu, s)                  = d^k/dmu^k E[phi(X)^2]          (k = 0, 1, 2)
    pair(i, j, mu1, mu2, s11, s22, s12) = E[phi^(i)(X1) phi^(j)(X2)]     (i + j <= 2)

with phi^(0) = phi, phi^(1) = phi', phi^(2) = phi'' taken as distributions: a kink of phi at 0 with slope
jump j contributes j delta(x) to phi''.  `pointwise(i, x)` is phi^(i) away from the kinks (the regular part).
The covariance (s or s11, s22, s12) is one value per call; the means are arrays of any common shape.  That is
how the exact theory uses them: one covariance per pair of layers, one mean per quadrature node.

Two implementations behind one interface (`moments_for`):
- closed forms (relu, linear): truncated-Gaussian moments through Phi, phi and the bivariate normal CDF
  (Owen's T), derived with Stein's lemma E[(X_k - mu_k) g(X)] = sum_l S_kl E[d_l g(X)];
- smooth activations without closed forms (tanh, gelu, silu, erf, user-supplied): the one-dimensional
  smoothings Phi_i(mu; s) = E[phi^(i)(mu + s xi)] and their squares are tabulated once on a (mu, s) grid
  (composite Gauss-Legendre with a breakpoint at phi's feature point) and interpolated by 4-point Lagrange
  in both variables; a bivariate moment is one more one-dimensional composite rule over X1 with the
  conditional smoothing of X2 from the table.  The error is measured against brute-force quadrature in
  tests/test_gaussian_moments.py (below 1e-9 relative on the default tables).
Kinks are supported at 0 only (the quadratures of the exact theory split there).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import special

from kernel_eft.activations import Activation, get_activation, normal_rule

Array = np.ndarray
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
_SQRT2 = np.sqrt(2.0)


class UnsupportedActivation(ValueError):
    """The exact theory cannot integrate this activation (missing derivatives, or a kink away from 0)."""


def _npdf(x):
    return np.exp(-0.5 * x * x) * _INV_SQRT_2PI


# ----------------------------------------------------------------------------------------------
# Bivariate normal CDF
# ----------------------------------------------------------------------------------------------


_GL20 = np.polynomial.legendre.leggauss(20)
_PLACKETT_MAX_RHO = 0.925  # beyond, the Plackett integrand peaks near theta = +-pi/2: Owen's T instead


def bivariate_normal_cdf(h: Array, k: Array, rho: Array) -> Array:
    """P(Z1 <= h, Z2 <= k) for standard normals with correlation rho.

    |rho| < 0.925: Plackett's formula Phi(h) Phi(k) + (1/2 pi) int_0^{asin rho} exp(-(h^2 + k^2 - 2 h k sin t) /
    (2 cos^2 t)) dt with 20-point Gauss-Legendre (Drezner and Wesolowsky; Genz 2004: double precision there);
    the sines are taken on rho's own shape (one per covariance, broadcast over the means).  Otherwise Owen's T
    (`bivariate_normal_cdf_owens_t`)."""
    h, k = np.broadcast_arrays(np.asarray(h, float), np.asarray(k, float))
    rho = np.asarray(rho, float)
    small = np.abs(rho) < _PLACKETT_MAX_RHO
    if np.all(small):
        return _plackett(h, k, rho)
    out = bivariate_normal_cdf_owens_t(h, k, rho)
    if np.any(small):
        out = np.where(small, _plackett(h, k, np.where(small, rho, 0.0)), out)
    return out


def _plackett(h, k, rho):
    x, w = _GL20
    asr = np.arcsin(rho)
    hk = h * k
    hs = 0.5 * (h * h + k * k)
    integral = np.zeros(np.broadcast(h, k, rho).shape)
    term = np.empty_like(integral)
    for xi, wi in zip(x, w):
        sn = np.sin(asr * (0.5 * (xi + 1.0)))
        np.multiply(sn, hk, out=term)
        term -= hs
        term *= 1.0 / (1.0 - sn * sn)
        np.exp(term, out=term)
        integral += (0.5 * wi) * term
    return np.clip(special.ndtr(h) * special.ndtr(k) + asr / (2 * np.pi) * integral, 0.0, 1.0)


def bivariate_normal_cdf_owens_t(h: Array, k: Array, rho: Array) -> Array:
    """P(Z1 <= h, Z2 <= k) for standard normals with correlation rho, through Owen's T:
    Phi2 = Phi(h)/2 + Phi(k)/2 - T(h, a_h) - T(k, a_k) - beta, a_h = (k - rho h)/(h r), r = sqrt(1 - rho^2),
    beta = 1/2 when h k < 0 (or h k = 0 and h + k < 0); at h = 0 it is Phi(k)/2 - T(k, -rho/r)."""
    h, k, rho = np.broadcast_arrays(np.asarray(h, float), np.asarray(k, float), np.asarray(rho, float))
    # |rho| = 1 is a limit of the formula; staying 1e-15 inside changes Phi2 by < 1e-7 only where
    # the integrand is a step anyway (zero conditional variance), and keeps a_h finite.
    rho = np.clip(rho, -1.0 + 1e-15, 1.0 - 1e-15)
    r = np.sqrt(1.0 - rho * rho)
    hz = h == 0.0
    kz = k == 0.0
    hs = np.where(hz, 1.0, h)
    ks = np.where(kz, 1.0, k)
    ah = (k - rho * h) / (hs * r)
    ak = (h - rho * k) / (ks * r)
    beta = np.where((h * k < 0) | ((h * k == 0) & (h + k < 0)), 0.5, 0.0)
    general = 0.5 * special.ndtr(h) + 0.5 * special.ndtr(k) - special.owens_t(hs, ah) - special.owens_t(ks, ak) - beta
    h_zero = 0.5 * special.ndtr(k) - special.owens_t(ks, -rho / r)
    k_zero = 0.5 * special.ndtr(h) - special.owens_t(hs, -rho / r)
    both = 0.25 + np.arcsin(rho) / (2 * np.pi)
    out = np.where(hz & kz, both, np.where(hz, h_zero, np.where(kz, k_zero, general)))
    return np.clip(out, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# Closed forms
# ----------------------------------------------------------------------------------------------


class ClosedFormMoments:
    """Base: the interface; subclasses fill in single, square, pair."""

    name = "closed"
    kinks: tuple = ()
    closed_form = True

    def __init__(self, act: Activation):
        self.act = act

    def pointwise(self, order: int, x: Array) -> Array:
        fn = (self.act.phi, self.act.dphi, self.act.d2phi)[order]
        return fn(x)

    def describe(self) -> str:
        return f"closed form ({self.act.name})"

    def pair_family(self, mu1, mu2, s11, s22, s12) -> dict:
        """{(i, j): E[phi^(i)(X1) phi^(j)(X2)]} for (i, j) in PAIR_FAMILY; means (R, M), covariances (R, 1)
        (one covariance per row).  Closed forms compute the family in one pass; this is the fallback."""
        rows = [{key: self.pair(*key, mu1[r], mu2[r], float(np.ravel(s11)[r]), float(np.ravel(s22)[r]),
                                float(np.ravel(s12)[r])) for key in PAIR_FAMILY} for r in range(mu1.shape[0])]
        return {key: np.stack([row[key] for row in rows]) for key in PAIR_FAMILY}

    def later_square(self, mu: Array, scales: Array) -> Array:
        """E[phi(mu + s xi)^2] for nodes mu (M,) and scales (T,): (M, T)."""
        return np.stack([self.square(0, mu, s) for s in scales], axis=1)

    def later_pair(self, mu1: Array, mu2: Array, s11: Array, s22: Array, s12: Array) -> Array:
        """E[phi(X1) phi(X2)] for nodes (mu1, mu2) (M,) and covariances (T,) each: (M, T)."""
        return np.stack([self.pair(0, 0, mu1, mu2, a, b, c) for a, b, c in zip(s11, s22, s12)], axis=1)


class ReluMoments(ClosedFormMoments):
    """relu: phi' = 1{x > 0}, phi'' = delta(x) (kink at 0, jump 1)."""

    kinks = ((0.0, 1.0),)

    def pair_family(self, mu1, mu2, s11, s22, s12):
        return relu_pair_family(mu1, mu2, s11, s22, s12)

    def later_square(self, mu, scales):
        s = np.maximum(np.asarray(scales, float), 1e-300)[None, :]
        mu = np.asarray(mu, float)[:, None]
        a = mu / s
        return (mu * mu + s * s) * special.ndtr(a) + mu * s * _npdf(a)

    def later_pair(self, mu1, mu2, s11, s22, s12):
        return relu_pair_mean(np.asarray(mu1, float)[:, None], np.asarray(mu2, float)[:, None],
                              np.asarray(s11, float)[None, :], np.asarray(s22, float)[None, :],
                              np.asarray(s12, float)[None, :])

    def single(self, order, mu, s):
        s = max(float(s), 1e-300)
        a = np.asarray(mu, float) / s
        if order == 0:
            return s * (a * special.ndtr(a) + _npdf(a))
        if order == 1:
            return special.ndtr(a)
        if order == 2:
            return _npdf(a) / s
        raise ValueError(order)

    def square(self, order, mu, s):
        mu = np.asarray(mu, float)
        if order == 0:
            s = max(float(s), 1e-300)
            a = mu / s
            return (mu * mu + s * s) * special.ndtr(a) + mu * s * _npdf(a)
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
                    + s1 * _npdf(h) * special.ndtr((k - rho * h) / r)
                    + s1 * rho * _npdf(k) * special.ndtr((h - rho * k) / r))
        if (i, j) == (0, 2):  # E[relu(X1) delta(X2)] = p_X2(0) E[relu(X1) | X2 = 0]
            m = s1 * (h - rho * k)
            return _npdf(k) / s2 * self.single(0, m, s1 * r)
        raise ValueError(f"relu pair moment ({i}, {j}) is not needed by the exact theory")


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


PAIR_FAMILY = ((0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2))


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
    d1, d2 = _npdf(u1), _npdf(u2)
    ph, pk = _npdf(h), _npdf(k)
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
        dens = np.where(r > 0, np.exp(-0.5 * ((k - rho * h) / rs) ** 2) * _INV_SQRT_2PI, 0.0)
    ph = _npdf(h)
    pk = _npdf(k)
    # With W = -Z standard: E[(h - W1)(k - W2) 1{W1<h, W2<k}] expanded with Stein's lemma.
    e_w1 = -ph * ck - rho * pk * ch
    e_w2 = -pk * ch - rho * ph * ck
    e_w12 = rho * L - rho * h * ph * ck - rho * k * pk * ch + r * ph * dens
    return m1 * m2 * L - m1 * sig2 * e_w2 - m2 * sig1 * e_w1 + sig1 * sig2 * e_w12


def erf_pair_mean(m1, m2, s11, s22, s12) -> Array:
    """E[erf(x1) erf(x2)]: erf(x) = 2 Phi(sqrt2 x) - 1 turns it into bivariate normal orthants.
    (An independent closed form used to test the tabulated route.)"""
    d1 = np.sqrt(1.0 + 2.0 * s11)
    d2 = np.sqrt(1.0 + 2.0 * s22)
    h = _SQRT2 * m1 / d1
    k = _SQRT2 * m2 / d2
    rho = 2.0 * s12 / (d1 * d2)
    return 4.0 * bivariate_normal_cdf(h, k, rho) - 2.0 * special.ndtr(h) - 2.0 * special.ndtr(k) + 1.0


# ----------------------------------------------------------------------------------------------
# Tabulated smoothings for smooth activations
# ----------------------------------------------------------------------------------------------


class TabulatedMoments:
    """Smooth phi: Phi_i(mu; s) = E[phi^(i)(mu + s xi)] and the squares, tabulated on a uniform (mu, s) grid;
    piecewise-quintic interpolation in mu, 6-point Lagrange in s.  Built once for the range of means and scales a run needs."""

    closed_form = False
    kinks = ()

    # Table resolution (defaults measured in tests/test_gaussian_moments.py: < 1e-9 relative).
    DMU = 0.04  # grid step in mu (piecewise-quintic interpolation: < 1e-8 for tanh and its derivatives)
    DS = 0.03  # grid step in s (the grid is mirrored to s < 0: Phi is even in s)
    PAIR_NODES = 7  # Gauss-Legendre nodes per piece of the X1 rule of a bivariate moment (8 pieces)

    def __init__(self, act: Activation, mu_max: float, s_max: float):
        if act.kinks:
            raise UnsupportedActivation(f"activation {act.name!r} has kinks but no closed-form moments; the exact "
                                        "theory integrates kinked activations only through closed forms (relu)")
        if act.dphi is None or act.d2phi is None:
            raise UnsupportedActivation(f"activation {act.name!r} needs phi' and phi'' (dphi=, d2phi=) for the "
                                        "exact theory")
        self.act = act
        self.name = act.name
        self.mu_max = float(mu_max)
        self.s_max = float(s_max)
        n_mu = int(np.ceil(self.mu_max / self.DMU)) + 1
        self.mu = np.arange(-n_mu - 3, n_mu + 4) * self.DMU
        self.s = np.arange(-3, int(np.ceil(self.s_max / self.DS)) + 5) * self.DS
        self._tables = self._build()
        self._coefficients = {key: self._quintic_coefficients(table) for key, table in self._tables.items()}

    def describe(self) -> str:
        return (f"tabulated Gaussian smoothings of {self.act.name} (dmu = {self.DMU:g}, ds = {self.DS:g}, "
                f"|mu| <= {self.mu_max:.3g}, s <= {self.s_max:.3g}), piecewise-quintic interpolation; "
                f"bivariate moments by a {8 * self.PAIR_NODES}-node composite Gauss-Legendre rule")

    def pointwise(self, order: int, x: Array) -> Array:
        return (self.act.phi, self.act.dphi, self.act.d2phi)[order](x)

    @staticmethod
    def _functions(f0, f1, f2) -> dict:
        """The six tabulated functions from the jet (phi, phi', phi'')."""
        return {"d0": f0, "d1": f1, "d2": f2, "q0": f0 * f0, "q1": 2 * f0 * f1, "q2": 2 * (f1 * f1 + f0 * f2)}

    def _build(self) -> dict:
        """Columns with s >= 3 dmu by FFT convolution of the sampled functions with the Gaussian (spectrally
        accurate: phi is analytic, and the Gaussian's transform at the Nyquist frequency is below
        exp(-pi^2 s^2 / 2 dmu^2) < 1e-19); the few columns of smaller s by direct quadrature."""
        scales = np.abs(self.s)
        small = scales < 3 * self.DMU
        tables = {key: np.empty((self.mu.size, self.s.size)) for key in ("d0", "d1", "d2", "q0", "q1", "q2")}
        # direct quadrature for small s (and s = 0)
        MU, S = np.meshgrid(self.mu, scales[small], indexing="ij")
        MU, S = MU.ravel(), S.ravel()
        direct = {key: np.empty(MU.size) for key in tables}
        chunk = 4096
        for lo in range(0, MU.size, chunk):
            m, sc = MU[lo:lo + chunk], S[lo:lo + chunk]
            with np.errstate(divide="ignore", invalid="ignore"):
                brk = np.where(sc > 0, -m / np.where(sc > 0, sc, 1.0), 0.0)
            # cut at the Gaussian's centre and at phi's feature point: both matter for any s
            x, w = normal_rule(np.stack([np.zeros_like(brk), brk], axis=-1), panels=4, nodes=12)
            vals = self._functions(*self.act.derivatives(m[:, None] + sc[:, None] * x, 2))
            for key, v in vals.items():
                direct[key][lo:lo + chunk] = np.sum(w * v, axis=-1)
        for key in tables:
            tables[key][:, small] = direct[key].reshape(self.mu.size, -1)
        # FFT convolution on a grid padded by 10 s_max on each side (wrap-around stays in the padding)
        pad = int(np.ceil(10 * scales.max() / self.DMU)) + 8
        n = 1 << int(np.ceil(np.log2(self.mu.size + 2 * pad)))
        grid = self.mu[0] + (np.arange(n) - pad) * self.DMU
        funcs = self._functions(*self.act.derivatives(grid, 2))
        k = 2 * np.pi * np.fft.rfftfreq(n, d=self.DMU)
        big = np.flatnonzero(~small)
        kernel = np.exp(-0.5 * np.outer(scales[big] ** 2, k * k))  # (columns, frequencies)
        for key, values in funcs.items():
            smoothed = np.fft.irfft(np.fft.rfft(values)[None, :] * kernel, n=n, axis=1)  # (columns, n)
            tables[key][:, big] = smoothed[:, pad:pad + self.mu.size].T
        return tables

    @staticmethod
    def _quintic_coefficients(table: Array) -> Array:
        """Monomial coefficients of the piecewise quintic in mu of every s column: (6, s columns, cells), cell c
        covering [mu_c, mu_c+1] through the values at mu_{c-2} .. mu_{c+3} (zero at the two ends)."""
        n = table.shape[0]
        coef = np.zeros((6, table.shape[1], n))
        for j in range(6):
            acc = np.zeros((n - 5, table.shape[1]))
            for k in range(6):
                acc += _QUINTIC_FROM_VALUES[j, k] * table[k:n - 5 + k]
            coef[j, :, 2:n - 3] = acc.T
        return coef

    def _lookup(self, key: str, mu: Array, s: float) -> Array:
        mu = np.asarray(mu, float)
        if mu.size == 0:
            return np.empty(mu.shape)
        if float(np.max(np.abs(mu))) > self.mu_max:
            raise ValueError(f"mean {float(np.max(np.abs(mu))):.4g} outside the tabulated range {self.mu_max:.4g}")
        coef, first, cells = self._stacked(key, np.array([float(s)]), float(mu.min()), float(mu.max()))
        return self._lookup_stacked(coef, first, cells, np.zeros((), np.intp), mu)

    def single(self, order, mu, s):
        return self._lookup("d%d" % order, mu, s)

    def square(self, order, mu, s):
        return self._lookup("q%d" % order, mu, s)

    def _stacked(self, key: str, scales: Array, mu_lo: float, mu_hi: float) -> tuple[Array, int, int]:
        """Quintic coefficients at several scales side by side for the cells covering [mu_lo, mu_hi]:
        (6, T * C) with scale t in columns t*C .. t*C+C-1, the first cell index, and C.  6-point Lagrange in s
        (the grid is mirrored at s = 0, where the smoothing is even in s)."""
        scales = np.asarray(scales, float)
        if scales.size and (scales.min() < 0 or scales.max() > self.s[-4]):
            raise ValueError(f"scale outside the tabulated range [0, {self.s[-4]:.4g}]")
        lo = max(int((mu_lo - self.mu[0]) / self.DMU) - 1, 0)
        hi = min(int((mu_hi - self.mu[0]) / self.DMU) + 2, self.mu.size)
        pos = (scales - self.s[0]) / self.DS
        i = np.clip(np.floor(pos).astype(np.intp) - 2, 0, self.s.size - 6)
        w = _lagrange6(pos - i)  # 6 x (T,)
        C = self._coefficients[key][:, :, lo:hi]  # (6, s columns, cells)
        coef = C[:, i, :] * w[0][None, :, None]
        for k in range(1, 6):
            coef += C[:, i + k, :] * w[k][None, :, None]  # (6, T, cells)
        return coef.reshape(6, -1), lo, hi - lo

    def _lookup_stacked(self, coef: Array, first: int, cells: int, which: Array, mu: Array) -> Array:
        """Interpolate slice `which` (int array) at mu (same shape), coefficients from `_stacked`."""
        flat_mu = mu.reshape(-1)
        flat_t = np.broadcast_to(which, mu.shape).reshape(-1)
        out = np.empty(flat_mu.size)
        step = 1 << 15
        for lo in range(0, flat_mu.size, step):
            pos = flat_mu[lo:lo + step] - self.mu[0]
            pos *= 1.0 / self.DMU
            cell = pos.astype(np.intp)
            pos -= cell
            cell += flat_t[lo:lo + step] * cells - first
            acc = coef[5].take(cell)
            acc *= pos
            for k in (4, 3, 2, 1):
                acc += coef[k].take(cell)
                acc *= pos
            acc += coef[0].take(cell)
            out[lo:lo + step] = acc
        return out.reshape(mu.shape)

    def later_square(self, mu, scales):
        mu = np.asarray(mu, float)
        if float(np.max(np.abs(mu))) > self.mu_max:
            raise ValueError(f"mean {float(np.max(np.abs(mu))):.4g} outside the tabulated range {self.mu_max:.4g}")
        coef, first, cells = self._stacked("q0", scales, float(mu.min()), float(mu.max()))
        which = np.arange(len(scales))[None, :]
        return self._lookup_stacked(coef, first, cells, which, np.broadcast_to(mu[:, None], (mu.size, len(scales))))

    def later_pair(self, mu1, mu2, s11, s22, s12):
        """All T covariances at once: the X1 rule of `pair` per (node, t), slices of the table per t."""
        mu1, mu2 = np.asarray(mu1, float), np.asarray(mu2, float)
        s11, s22, s12 = (np.asarray(v, float) for v in (s11, s22, s12))
        T = s11.size
        out = np.empty((mu1.size, T))
        chunk = max(1, 200_000 // max(mu1.size * 8 * self.PAIR_NODES, 1) * 8)
        for lo in range(0, T, chunk):
            sl = slice(lo, min(T, lo + chunk))
            s1 = np.sqrt(np.maximum(s11[sl], 1e-300))
            beta = s12[sl] / s1
            s_cond = np.sqrt(np.maximum(s22[sl] - beta * beta, 0.0))
            if float(np.max(np.abs(mu2))) + 8.0 * float(np.max(np.abs(beta))) > self.mu_max:
                raise ValueError("bivariate moment outside the tabulated range of means")
            xi, w = pair_rule(self.PAIR_NODES)
            nt = s1.size
            f1 = self.act.phi(mu1[:, None, None] + s1[None, :, None] * xi)
            args2 = mu2[:, None, None] + beta[None, :, None] * xi
            coef, first, cells = self._stacked("d0", s_cond, float(args2.min()), float(args2.max()))
            f2 = self._lookup_stacked(coef, first, cells, np.arange(nt)[None, :, None], args2)
            f1 *= f2
            out[:, sl] = f1 @ w
        return out

    def pair(self, i, j, mu1, mu2, s11, s22, s12):
        """E[phi^(i)(X1) Phi_j(X2 | X1)]: X1 = mu1 + s1 xi by `pair_rule`, Phi_j from the table."""
        mu1, mu2 = np.broadcast_arrays(np.asarray(mu1, float), np.asarray(mu2, float))
        shape = mu1.shape
        mu1, mu2 = mu1.ravel(), mu2.ravel()
        s1 = np.sqrt(max(s11, 0.0))
        if s1 == 0.0:
            return (self.pointwise(i, mu1) * self.single(j, mu2, np.sqrt(max(s22, 0.0)))).reshape(shape)
        beta = s12 / s1  # X2 | X1 = mu1 + s1 xi  has mean mu2 + beta xi
        s_cond = np.sqrt(max(s22 - beta * beta, 0.0))
        xi, w = pair_rule(self.PAIR_NODES)
        f1 = self.pointwise(i, mu1[:, None] + s1 * xi)
        f2 = self._lookup("d%d" % j, mu2[:, None] + beta * xi, s_cond)
        return (f1 * f2) @ w


def _quintic_from_values() -> Array:
    """M with coef = M @ values: monomial coefficients in t (cell fraction, 0..1) of the quintic through
    the values at t = -2, -1, 0, 1, 2, 3."""
    nodes = np.arange(-2, 4, dtype=float)
    return np.linalg.inv(np.vander(nodes, 6, increasing=True))


_QUINTIC_FROM_VALUES = _quintic_from_values()

_PAIR_PIECES = np.array([-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0])


@functools.lru_cache(maxsize=4)
def pair_rule(nodes: int) -> tuple[Array, Array]:
    """The X1 rule of a bivariate moment: composite Gauss-Legendre for xi ~ N(0, 1) on [-8, 8] (tail e^-32),
    pieces cut at 0, +-1, +-2, +-4, `nodes` per piece; weights include the normal density.  Measured: fixed
    pieces beat pieces cut at each integrand's feature points (which leave badly placed slivers), at 7 nodes
    to 1e-9 on the final V4 and K1 (tests/test_gaussian_moments.py)."""
    xg, wg = _legendre(nodes)
    lo, hi = _PAIR_PIECES[:-1], _PAIR_PIECES[1:]
    half = 0.5 * (hi - lo)
    xi = ((lo + half)[:, None] + half[:, None] * xg).ravel()
    return xi, (half[:, None] * wg).ravel() * _npdf(xi)


@functools.lru_cache(maxsize=16)
def _legendre(n: int):
    return np.polynomial.legendre.leggauss(n)


def _lagrange6(t):
    """Weights of 6-point Lagrange interpolation at nodes 0..5 evaluated at t (in [2, 3] for accuracy)."""
    t = np.asarray(t, float)
    d = [t - k for k in range(6)]
    denom = (-120.0, 24.0, -12.0, 12.0, -24.0, 120.0)
    out = []
    for k in range(6):
        prod = np.ones_like(t)
        for m in range(6):
            if m != k:
                prod = prod * d[m]
        out.append(prod / denom[k])
    return out


_CLOSED_MOMENTS = {"relu": ReluMoments, "linear": LinearMoments}


def moments_for(activation, mu_max: float = 60.0, s_max: float = 5.0):
    """The moment provider of an activation: closed forms where registered, else tables covering
    |mean| <= mu_max and scale <= s_max.  Raises UnsupportedActivation with the reason otherwise."""
    act = get_activation(activation)
    cls = _CLOSED_MOMENTS.get(act.name)
    if cls is not None and act.closed_form:
        return cls(act)
    key = (id(act), _round_up(mu_max), _round_up(s_max))
    table = _TABLES.get(key)
    if table is None or table.act is not act:
        if len(_TABLES) >= 8:
            _TABLES.clear()
        table = _TABLES[key] = TabulatedMoments(act, key[1], key[2])
    return table


def _round_up(x: float) -> float:
    """Coarse ceiling so that nearby requests share one table."""
    x = max(float(x), 1.0)
    step = 2.0 ** np.floor(np.log2(x) - 2)
    return float(np.ceil(x / step) * step)


_TABLES: dict = {}  # (id(activation), mu_max, s_max) -> TabulatedMoments, built once per process
