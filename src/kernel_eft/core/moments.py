"""Shifted Gaussian moments of an activation, the building blocks of the exact O(1/n) theory.

For X ~ N(mu, s^2) and a bivariate X = (X1, X2) ~ N((mu1, mu2), [[s11, s12], [s12, s22]]):

    single(i, mu, s)                  = E[phi^(i)(X)]
    square(k, mu, s)                  = d^k/dmu^k E[phi(X)^2]          (k = 0, 1, 2)
    pair(i, j, mu1, mu2, s11, s22, s12) = E[phi^(i)(X1) phi^(j)(X2)]     (i + j <= 2)

with phi^(0) = phi, phi^(1) = phi', phi^(2) = phi'' taken as distributions: a kink of phi at 0 with slope
jump j contributes j delta(x) to phi''.  `pointwise(i, x)` is phi^(i) away from the kinks (the regular part).
The covariance (s or s11, s22, s12) is one value per call; the means are arrays of any common shape.  That is
how the exact theory uses them: one covariance per pair of layers, one mean per quadrature node.

One interface (`MomentProvider`), two routes, chosen by `Activation.gaussian_moments` (or
`kernel_eft.core.activations.moments_for(name)`):
- closed forms, owned by the activation (`Activation.moments`: relu and linear, in
  kernel_eft/core/activations/), derived with Stein's lemma E[(X_k - mu_k) g(X)] = sum_l S_kl E[d_l g(X)];
- every other activation with phi' and phi'' (tanh, gelu, silu, erf, user-supplied): `TabulatedMoments`, the
  one-dimensional smoothings Phi_i(mu; s) = E[phi^(i)(mu + s xi)] and their squares tabulated once on a
  (mu, s) grid (FFT convolution; quadrature at small s) and interpolated (piecewise quintic in mu, 6-point
  Lagrange in s); a bivariate moment is one more one-dimensional composite rule over X1 with the conditional
  smoothing of X2 from the table.  The error is measured against brute-force quadrature in
  tests/core/test_moments.py (below 1e-9 relative on the default tables).
Kinks are supported at 0 only (the quadratures of the exact theory split there), and only through closed forms.
"""

from __future__ import annotations

import numpy as np

from kernel_eft.core.quadrature import NormalRule, normal_rule, pair_rule

Array = np.ndarray

PAIR_FAMILY = ((0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2))
_TABLE_RULE = NormalRule(panels=4, nodes=12)  # direct quadrature of the table columns at small s


def check_tabulable(act) -> None:
    """UnsupportedActivation unless the tables can integrate phi: smooth, with phi' and phi''."""
    if act.kinks:
        raise UnsupportedActivation(f"activation {act.name!r} has kinks but no closed-form moments; the exact "
                                    "theory integrates kinked activations only through closed forms (an activation's `moments`)")
    if act.dphi is None or act.d2phi is None:
        raise UnsupportedActivation(f"activation {act.name!r} needs phi' and phi'' (dphi=, d2phi=) for the "
                                    "exact theory")


class UnsupportedActivation(ValueError):
    """The exact theory cannot integrate this activation (missing derivatives, or a kink away from 0)."""


class MomentProvider:
    """The interface; subclasses fill in single, square, pair (and may compute families in one pass)."""

    closed_form = False

    def __init__(self, act):
        self.act = act

    @property
    def kinks(self) -> tuple:
        return self.act.kinks

    def pointwise(self, order: int, x: Array) -> Array:
        fn = (self.act.phi, self.act.dphi, self.act.d2phi)[order]
        return fn(x)

    def describe(self) -> str:
        raise NotImplementedError

    def single(self, order, mu, s):
        raise NotImplementedError

    def square(self, order, mu, s):
        raise NotImplementedError

    def pair(self, i, j, mu1, mu2, s11, s22, s12):
        raise NotImplementedError

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


class ClosedFormMoments(MomentProvider):
    """Base of the closed forms an activation owns (Activation.moments)."""

    closed_form = True

    def describe(self) -> str:
        return f"closed form ({self.act.name})"


# ----------------------------------------------------------------------------------------------
# Tabulated smoothings for smooth activations
# ----------------------------------------------------------------------------------------------


class TabulatedMoments(MomentProvider):
    """Smooth phi: Phi_i(mu; s) = E[phi^(i)(mu + s xi)] and the squares, tabulated on a uniform (mu, s) grid;
    piecewise-quintic interpolation in mu, 6-point Lagrange in s.  Built once for the range of means and scales a run needs."""

    closed_form = False

    # Table resolution (defaults measured in tests/core/test_moments.py: < 1e-9 relative).
    DMU = 0.04  # grid step in mu (piecewise-quintic interpolation: < 1e-8 for tanh and its derivatives)
    DS = 0.03  # grid step in s (the grid is mirrored to s < 0: Phi is even in s)
    PAIR_NODES = 7  # Gauss-Legendre nodes per piece of the X1 rule of a bivariate moment (8 pieces)

    def __init__(self, act, mu_max: float, s_max: float):  # act: kernel_eft.core.activations.Activation
        check_tabulable(act)
        super().__init__(act)
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
            x, w = normal_rule(np.stack([np.zeros_like(brk), brk], axis=-1), _TABLE_RULE)
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


def tabulated_moments(act, mu_max: float, s_max: float) -> TabulatedMoments:
    """Tables of an Activation covering |mean| <= mu_max and scale <= s_max, built once per process (nearby
    requests share one).  Raises UnsupportedActivation with the reason where tables cannot serve."""
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
