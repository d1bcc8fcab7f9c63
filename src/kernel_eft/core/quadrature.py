"""Gaussian quadrature: every rule kernel-eft uses for expectations under a normal law, with the accuracy
passed explicitly (no module-level setting).

- `normal_rule(breaks, rule)`: composite Gauss-Legendre for E[g(x)], x ~ N(0, 1), on [-10, 10] (the tail
  beyond is e^-50), split at breakpoints and graded towards them; `NormalRule(panels, nodes)` is its
  accuracy.  Gauss-Hermite converges only algebraically for kinked integrands (relu) and slowly for steep
  smooth ones (tanh at large variance), so this is the rule of F, DF, D2F and of the tabulated moments.
- `gauss_hermite(order)`: the plain probabilists' Gauss-Hermite rule (kept as a reference rule).
- `pair_rule(nodes)`: fixed pieces for the first variable of a bivariate moment (tabulated moments).
- `BlockRule` with `rule_1d`, `rule_2d`, `line_rules`, `half_range_rule`: Gauss rules over a 1-D or 2-D
  conditioning block of the exact theory (polar in the whitened variable, sectors cut where relu kinks).
- `bivariate_normal_cdf`: Gaussian orthant probabilities (Plackett's formula by Gauss-Legendre, Owen's T
  near |rho| = 1), and `gaussian_expectation_2d` for a function of a 2 x 2 Gaussian block.

Weights include the Gaussian density: E[g] ~= sum(w * g(x)).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import special

Array = np.ndarray
INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
HALF_WIDTH = 10.0  # the composite normal rule covers [-R, R]


def std_normal_pdf(x):
    """The standard normal density (divided by sqrt(2 pi): the spelling of the F quadrature)."""
    return np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)


def normal_pdf(x):
    """The standard normal density (times 1/sqrt(2 pi): the spelling of the moment tables and two-time rules;
    the two spellings can differ in the last bit, and each keeps its results bitwise as established)."""
    return np.exp(-0.5 * x * x) * INV_SQRT_2PI


@functools.lru_cache(maxsize=32)
def legendre(n: int) -> tuple[Array, Array]:
    """Gauss-Legendre nodes and weights on [-1, 1] (cached)."""
    return np.polynomial.legendre.leggauss(n)


def legendre_on(n: int, lo, hi) -> tuple[Array, Array]:
    """Gauss-Legendre nodes and weights on [lo, hi] (arrays of intervals: a trailing node axis)."""
    x, w = legendre(n)
    lo = np.asarray(lo, float)[..., None]
    hi = np.asarray(hi, float)[..., None]
    return 0.5 * (hi - lo) * x + 0.5 * (hi + lo), 0.5 * (hi - lo) * w


def gauss_hermite(order: int) -> tuple[Array, Array]:
    """Probabilists' Gauss-Hermite rule: E[g(xi)], xi ~ N(0,1)  ~=  sum w_k g(x_k)."""
    x, w = np.polynomial.hermite_e.hermegauss(order)
    return x, w / np.sqrt(2.0 * np.pi)


# ----------------------------------------------------------------------------------------------
# Composite Gauss-Legendre rule for the standard normal, split at breakpoints
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NormalRule:
    """Accuracy of `normal_rule`: `panels` panels per piece (a piece lies between consecutive breakpoints) of
    `nodes` Gauss-Legendre nodes each.  The default reaches ~1e-11 on F, DF, D2F (tests/core/test_activations.py)."""

    panels: int = 4
    nodes: int = 16


DEFAULT_RULE = NormalRule()


def normal_rule(breaks: Array, rule: NormalRule = DEFAULT_RULE) -> tuple[Array, Array]:
    """Composite Gauss-Legendre rule for E[g(x)], x ~ N(0, 1), split at breakpoints.

    breaks: (..., k) with k >= 1 (clipped into [-R, R]; need not be sorted).  Each of the k + 1 pieces gets
    `rule.panels` panels of `rule.nodes` nodes, graded towards the breakpoints (quadratically at the two end
    pieces, cosine-clustered inside).  Returns nodes and weights (..., (k+1) panels nodes); the weights include
    the normal density, so E[g] ~= sum(w * g(x), -1).
    """
    R = HALF_WIDTH
    panels, nodes = rule.panels, rule.nodes
    breaks = np.clip(np.sort(np.asarray(breaks, dtype=np.float64), axis=-1), -R, R)
    lead, k = breaks.shape[:-1], breaks.shape[-1]
    if k < 1:
        raise ValueError("normal_rule needs at least one breakpoint")
    lo = np.concatenate([np.full(lead + (1,), -R), breaks], axis=-1)
    hi = np.concatenate([breaks, np.full(lead + (1,), R)], axis=-1)
    u = np.arange(panels + 1) / panels
    grading = np.empty((k + 1, panels + 1))
    grading[0] = 1.0 - (1.0 - u) ** 2  # fine towards the breakpoint at its upper end
    grading[1:-1] = 0.5 * (1.0 - np.cos(np.pi * u))
    grading[-1] = u**2  # fine towards the breakpoint at its lower end
    edges = lo[..., :, None] + (hi - lo)[..., :, None] * grading  # (..., k+1, panels+1)
    mid = 0.5 * (edges[..., 1:] + edges[..., :-1])
    half = 0.5 * (edges[..., 1:] - edges[..., :-1])
    xg, wg = legendre(nodes)
    x = (mid[..., None] + half[..., None] * xg).reshape(lead + (-1,))
    w = (half[..., None] * wg).reshape(lead + (-1,)) * std_normal_pdf(x)
    return x, w


_PAIR_PIECES = np.array([-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0])


@functools.lru_cache(maxsize=4)
def pair_rule(nodes: int) -> tuple[Array, Array]:
    """The X1 rule of a bivariate moment: composite Gauss-Legendre for xi ~ N(0, 1) on [-8, 8] (tail e^-32),
    pieces cut at 0, +-1, +-2, +-4, `nodes` per piece; weights include the normal density.  Measured: fixed
    pieces beat pieces cut at each integrand's feature points (which leave badly placed slivers), at 7 nodes
    to 1e-9 on the final V4 and K1 (tests/core/test_moments.py)."""
    xg, wg = legendre(nodes)
    lo, hi = _PAIR_PIECES[:-1], _PAIR_PIECES[1:]
    half = 0.5 * (hi - lo)
    xi = ((lo + half)[:, None] + half[:, None] * xg).ravel()
    return xi, (half[:, None] * wg).ravel() * normal_pdf(xi)


# ----------------------------------------------------------------------------------------------
# Rules over a conditioning block (the exact theory's two-time kernels)
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def half_range_rule(n: int, power: int) -> tuple[Array, Array]:
    """Gauss rule for int_0^inf f(r) r^power exp(-r^2/2) dr: nodes and weights (exact for polynomials of
    degree 2n - 1), by the Stieltjes procedure on a fine discretisation of the weight (140 panels of 20
    Gauss-Legendre points on [0, 14]: the measure beyond 14 is below e^-98)."""
    xg, wg = legendre(20)
    edges = np.linspace(0.0, 14.0, 141)
    half = 0.5 * np.diff(edges)
    x = ((edges[:-1] + half)[:, None] + half[:, None] * xg).ravel()
    w = (half[:, None] * wg).ravel() * x ** power * np.exp(-0.5 * x * x)
    alpha, beta = np.zeros(n), np.zeros(n)
    mass = np.sum(w)
    p_prev, p = np.zeros_like(x), np.full_like(x, 1.0 / np.sqrt(mass))  # orthonormal recurrence
    for k in range(n):
        alpha[k] = np.sum(w * x * p * p)
        q = (x - alpha[k]) * p - (np.sqrt(beta[k]) if k else 0.0) * p_prev
        if k + 1 < n:
            beta[k + 1] = np.sum(w * q * q)
            p_prev, p = p, q / np.sqrt(beta[k + 1])
    off = np.sqrt(beta[1:])
    nodes, vecs = np.linalg.eigh(np.diag(alpha) + np.diag(off, 1) + np.diag(off, -1))
    return nodes, mass * vecs[0] ** 2


@dataclass(frozen=True)
class BlockRule:
    """Node counts of the Gaussian integrals over a conditioning block x (1-D or 2-D).

    n_theta: Gauss-Legendre nodes in angle per sector (4 sectors); n_rho: Gauss nodes in the whitened radius
    for the weight rho exp(-rho^2/2) on [0, inf); n_line: Gauss nodes per half-line for the weight
    exp(-x^2/2) (1-D blocks and the kink lines).  The radial and half-line rules are exact for polynomials
    of degree 2 n - 1, so relu's positively homogeneous integrands converge at once."""

    n_theta: int = 10
    n_rho: int = 12
    n_line: int = 32

    def refined(self, factor: float = 1.5) -> "BlockRule":
        return BlockRule(*(int(round(v * factor)) for v in (self.n_theta, self.n_rho, self.n_line)))

    def describe(self) -> str:
        return (f"polar Gauss rule over the conditioning block: 4 sectors x {self.n_theta} Gauss-Legendre angles x "
                f"{self.n_rho} Gauss radii (weight rho e^(-rho^2/2)); {self.n_line} Gauss nodes per half-line in 1-D")

    @property
    def radius(self) -> float:
        """The largest radial node, in standard deviations (sizes the tables of smooth activations)."""
        return float(max(half_range_rule(self.n_rho, 1)[0][-1], half_range_rule(self.n_line, 0)[0][-1]))


def rule_1d(var: float, n: int) -> tuple[Array, Array]:
    """Nodes (M,) and weights for E[g(x)], x ~ N(0, var): a Gauss rule on each half-line (split at 0)."""
    xi, w = half_range_rule(n, 0)
    xi = np.concatenate([-xi[::-1], xi])
    w = np.concatenate([w[::-1], w]) * INV_SQRT_2PI
    return np.sqrt(var) * xi, w


def rule_2d(K: Array, rule: BlockRule) -> tuple[Array, Array]:
    """Nodes (M, 2) and weights (M,) for E[g(x)], x ~ N(0, K), polar in the whitened variable, the angle
    split into the four sectors cut by x_0 = 0 and x_1 = 0."""
    l11 = np.sqrt(K[0, 0])
    l21 = K[0, 1] / l11
    l22 = np.sqrt(max(K[1, 1] - l21 * l21, 1e-300))
    # x_0 = l11 xi1 vanishes at theta = pi/2, 3pi/2; x_1 = l21 xi1 + l22 xi2 at theta0 and theta0 + pi.
    theta0 = np.mod(np.arctan2(-l21, l22), np.pi)
    cuts = np.sort(np.array([0.5 * np.pi, 1.5 * np.pi, theta0, theta0 + np.pi]))
    hi = np.concatenate([cuts[1:], cuts[:1] + 2 * np.pi])
    th, wth = legendre_on(rule.n_theta, cuts, hi)
    th, wth = th.ravel(), wth.ravel()
    rho, wr = half_range_rule(rule.n_rho, 1)
    wr = wr / (2 * np.pi)
    xi1 = np.cos(th)[:, None] * rho[None, :]
    xi2 = np.sin(th)[:, None] * rho[None, :]
    x = np.stack([l11 * xi1, l21 * xi1 + l22 * xi2], axis=-1).reshape(-1, 2)
    return x, (wth[:, None] * wr[None, :]).ravel()


def line_rules(K: Array, rule: BlockRule) -> list[tuple[int, Array, Array]]:
    """For each block coordinate i: nodes on the line x_i = 0 and weights for p_{x_i}(0) E[g(x) | x_i = 0]."""
    k = K.shape[0]
    out = []
    for i in range(k):
        dens0 = 1.0 / np.sqrt(2.0 * np.pi * K[i, i])
        if k == 1:
            out.append((i, np.zeros((1, 1)), np.array([dens0])))
            continue
        j = 1 - i
        cvar = K[j, j] - K[i, j] ** 2 / K[i, i]
        v, w = rule_1d(cvar, rule.n_line)
        x = np.zeros((v.size, 2))
        x[:, j] = v
        out.append((i, x, w * dens0))
    return out


# ----------------------------------------------------------------------------------------------
# Bivariate normal probabilities and expectations over a 2 x 2 block
# ----------------------------------------------------------------------------------------------


_PLACKETT_NODES = 20
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
    x, w = legendre(_PLACKETT_NODES)
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


def block_factor(kaa, kbb, kab):
    """Lower-triangular L with L L^T = [[kaa, kab], [kab, kbb]], robust to singular blocks."""
    kaa = np.maximum(np.asarray(kaa, dtype=np.float64), 0.0)
    kbb = np.maximum(np.asarray(kbb, dtype=np.float64), 0.0)
    l11 = np.sqrt(kaa)
    with np.errstate(invalid="ignore", divide="ignore"):
        l21 = np.where(l11 > 0, kab / np.where(l11 > 0, l11, 1.0), 0.0)
    l22 = np.sqrt(np.maximum(kbb - l21 * l21, 0.0))
    return l11, l21, l22


def gaussian_expectation_2d(g, kaa, kbb, kab, order: int | None = None, rule: NormalRule = DEFAULT_RULE):
    """E[g(z_a, z_b)] for (z_a, z_b) ~ N(0, [[kaa, kab], [kab, kbb]]).

    Default: the composite `normal_rule`, split at z_a = 0 and, conditionally, at z_b = 0 (the kink of
    relu-like integrands).  order=int: tensor Gauss-Hermite of that order instead.
    kaa, kbb, kab broadcast together; g must be vectorised over trailing node axes.
    """
    if order is not None:
        x, w = gauss_hermite(order)
        l11, l21, l22 = block_factor(kaa, kbb, kab)
        l11, l21, l22 = (np.asarray(v)[..., None, None] for v in (l11, l21, l22))
        za = l11 * x[:, None]
        zb = l21 * x[:, None] + l22 * x[None, :]
        return np.sum(g(za, zb) * (w[:, None] * w[None, :]), axis=(-2, -1))
    shape = np.broadcast(kaa, kbb, kab).shape
    l11, l21, l22 = (np.broadcast_to(v, shape).ravel() for v in block_factor(kaa, kbb, kab))
    x, wx = normal_rule(np.zeros(l11.shape + (1,)), rule)
    with np.errstate(divide="ignore", invalid="ignore"):
        target = -l21[:, None] * x
        wb = np.where(l22[:, None] > 0, target / np.where(l22 > 0, l22, 1.0)[:, None], np.sign(target) * 20.0)
    w, ww = normal_rule(wb[..., None], rule)
    za = (l11[:, None] * x)[..., None] * np.ones_like(w)
    zb = l21[:, None, None] * x[..., None] + l22[:, None, None] * w
    return np.sum(wx * np.sum(ww * g(za, zb), axis=-1), axis=-1).reshape(shape)
