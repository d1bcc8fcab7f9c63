"""Activation registry and Gaussian expectations F(K) = <phi(z) phi(z)^T>_{z ~ N(0, K)} with derivatives.

One interface for every activation: closed forms where known (relu, erf, linear), quadrature otherwise.
The Monte Carlo samplers and the theory take phi from here.

Derivative convention (pair coordinates, see `kernel_eft.pairs`)
------------------------------------------------------------------
Entry F_ab depends only on the 2x2 block (K_aa, K_bb, K_ab).  For a block with a != b the three
*block coordinates* are k = (kaa, kbb, kab) and the off-diagonal kab is ONE variable that moves K_ab and
K_ba together (the symmetric perturbation).  So, by Price's theorem,

    dF_ab/dkab = <phi'(z_a) phi'(z_b)>,    dF_ab/dkaa = (1/2) <phi''(z_a) phi(z_b)>,
    d2F_ab/dkab2 = <phi''(z_a) phi''(z_b)>, ...

and for a diagonal entry F_aa(kaa) = <phi(z_a)^2> there is one coordinate, kaa.  Assembled over pairs
m = (a <= b), the Jacobian is DF[m, m'] = dF_m / dK_m' and the Hessian D2F[m, m', m''] =
d2F_m / dK_m' dK_m'' (symmetric in m', m''), so that for a symmetric perturbation dK (pair vector)

    F(K + dK)_m = F_m + DF[m, :] @ dK + (1/2) dK @ D2F[m] @ dK + O(dK^3),

covariances transport as V -> J V J^T and the G-only tadpole is (1/2) D2f : V4 (no factors of 2 anywhere).
`kernel_jacobian(act, K, sw2)` = sw2 DF(K) and `kernel_hessian(act, K, sw2)` = sw2 D2F(K) are the J and H
of the increment kernel f = sw2 F + sb2 11^T (sb2 drops out of the derivatives).

Quadrature
----------
Gauss-Hermite converges only algebraically for kinked phi (relu) and slowly for steep smooth phi
(tanh at large variance).  `bivariate_moments` therefore integrates the standard bivariate normal
(x, y = rho x + sqrt(1 - rho^2) w) by composite Gauss-Legendre on [-10, 10] in x and, for every x node,
in w, with breakpoints at every kink / feature point of phi (z = 0 for the smooth activations, graded
panels towards it).  Derivatives use only phi' and phi'' in the scale-correlation coordinates
(sa, sb, rho), sa = sqrt(kaa), rho = kab / (sa sb), then the chain rule to (kaa, kbb, kab).  A kink of
phi (phi' jumps by j at z = c, e.g. relu) makes phi'' = (regular part) + j delta(z - c); the delta
terms are integrated analytically (conditional Gaussian expectations at the kink).

ReLU and collinear inputs
-------------------------
For relu, D2F_ab ~ 1 / sqrt(K_aa K_bb - K_ab^2) diverges as the angle between inputs a and b goes
to 0 or pi.  The angle is computed with atan2 from the determinant (accurate near both ends).
Below sin(theta) = 1e-4 second derivatives warn (`CollinearWarning`: D2F is large and loses digits);
at sin(theta)^2 <= 1e-14 they raise `CollinearInputsError`.  F and DF stay finite there.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import special

from kernel_eft.pairs import n_pairs, pair_indices, pair_lookup

Array = np.ndarray

# Probabilists' Gauss-Hermite rule: E[g(xi)], xi ~ N(0,1)  ~=  sum w_k g(x_k) / sqrt(2 pi).
_GH_ORDER = 80

# Composite Gauss-Legendre rule for the standard normal on [-R, R]: the tail beyond R = 10 is e^-50.
_QUAD_HALF_WIDTH = 10.0
_QUAD_PANELS = 4  # panels per piece (a piece lies between consecutive breakpoints)
_QUAD_NODES = 16  # Gauss-Legendre nodes per panel
_QUAD_CHUNK_BLOCKS = 64  # 2x2 blocks integrated at once

# ReLU near-collinear guards on sin(theta)^2 = det / (kaa kbb).
_COLLINEAR_RAISE_SIN2 = 1e-14
_COLLINEAR_WARN_SIN = 1e-4


class CollinearInputsError(ValueError):
    """Second derivatives of F diverge (relu with collinear or anti-collinear inputs)."""


class CollinearWarning(RuntimeWarning):
    """Second derivatives of F are large and inaccurate (relu with nearly collinear inputs)."""


def _gh_rule(order: int) -> tuple[Array, Array]:
    x, w = np.polynomial.hermite_e.hermegauss(order)
    return x, w / np.sqrt(2.0 * np.pi)


@dataclass(frozen=True)
class Activation:
    """phi and its derivatives.

    `kinks` lists (c, j): phi is continuous but phi' jumps by j at z = c, so the distributional
    phi'' = d2phi (the regular part, away from the kinks) + sum_k j_k delta(z - c_k).  For relu,
    kinks = ((0, 1),) and d2phi is the zero function.  `features` are extra quadrature breakpoints
    where phi changes fast (z = 0 for tanh, gelu, silu); kinks are always breakpoints.
    """

    name: str
    phi: Callable[[Array], Array]
    dphi: Callable[[Array], Array] | None = None
    d2phi: Callable[[Array], Array] | None = None
    closed_form: bool = False
    description: str = ""
    extra: dict = field(default_factory=dict)
    kinks: tuple[tuple[float, float], ...] = ()
    features: tuple[float, ...] = (0.0,)
    jet: Callable[[Array], tuple] | None = None  # optional (phi, phi', phi'') in one pass (quadrature speed)

    def derivatives(self, x: Array, max_order: int) -> list[Array]:
        """[phi(x), phi'(x), phi''(x)][: max_order + 1] (phi'' is the regular part where phi has kinks)."""
        if self.jet is not None:
            return list(self.jet(x))[: max_order + 1]
        return [fn(x) for fn in _derivative_functions(self, max_order)]

    def breakpoints(self) -> tuple[float, ...]:
        return tuple(sorted(set(self.features) | {c for c, _ in self.kinks}))


def _relu(x):
    return np.maximum(x, 0.0)


def _relu_d(x):
    return (x > 0).astype(np.float64)


def _zero(x):
    return np.zeros(np.shape(x))


def _erf_d(x):
    return 2.0 / np.sqrt(np.pi) * np.exp(-x * x)


def _erf_d2(x):
    return -4.0 / np.sqrt(np.pi) * x * np.exp(-x * x)


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


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation("relu", _relu, _relu_d, _zero, True, "max(x, 0); arc-cosine kernel",
                       kinks=((0.0, 1.0),)),
    "erf": Activation("erf", special.erf, _erf_d, _erf_d2, True, "erf(x); Williams' arcsine kernel"),
    "linear": Activation("linear", lambda x: np.asarray(x, dtype=np.float64), lambda x: np.ones_like(x),
                         _zero, True, "identity; F(K) = K"),
    "tanh": Activation("tanh", np.tanh, _tanh_d, _tanh_d2, False, "tanh(x); quadrature", jet=_tanh_jet),
    "gelu": Activation("gelu", _gelu, _gelu_d, _gelu_d2, False, "x Phi(x) (exact GELU); quadrature", jet=_gelu_jet),
    "silu": Activation("silu", _silu, _silu_d, _silu_d2, False, "x sigmoid(x); quadrature", jet=_silu_jet),
}


def activation_names() -> list[str]:
    return sorted(ACTIVATIONS)


def get_activation(name: str | Activation) -> Activation:
    if isinstance(name, Activation):
        return name
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise KeyError(f"unknown activation {name!r}; choose one of {', '.join(activation_names())}") from None


def custom_activation(name: str, phi, dphi=None, d2phi=None, kinks=(), features=(0.0,)) -> Activation:
    """A user-supplied phi (vectorised numpy callable); expectations use quadrature.

    F needs only phi; DF needs dphi; D2F needs d2phi (its regular part if phi has kinks, see Activation).
    """
    return Activation(name, phi, dphi, d2phi, False, "user-supplied; quadrature",
                      kinks=tuple((float(c), float(j)) for c, j in kinks), features=tuple(float(c) for c in features))


def _uses_closed_form(act: Activation, method: str) -> bool:
    if method not in ("auto", "closed", "quadrature"):
        raise ValueError(f"method must be auto, closed or quadrature, got {method!r}")
    closed = act.name in _CLOSED and act is ACTIVATIONS.get(act.name)
    if method == "closed" and not closed:
        raise ValueError(f"no closed form for activation {act.name!r}")
    return closed and method != "quadrature"


# ----------------------------------------------------------------------------------------------
# Closed forms on 2x2 blocks.  Inputs are arrays of block entries (kaa, kbb, kab) of any common
# shape.  Derivatives: gradient (..., 3) and Hessian (..., 3, 3) in block coordinates (kaa, kbb, kab).
# ----------------------------------------------------------------------------------------------


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


def _linear_F_block(kaa, kbb, kab):
    return np.asarray(kab, dtype=np.float64) * np.ones(np.broadcast(kaa, kbb, kab).shape)


def _linear_block_derivatives(kaa, kbb, kab, order):
    F = _linear_F_block(kaa, kbb, kab)
    grad = np.zeros(F.shape + (3,))
    grad[..., 2] = 1.0
    return F, grad, (np.zeros(F.shape + (3, 3)) if order >= 2 else None)


def _linear_diag_derivatives(k):
    return k.copy(), np.ones(k.shape), np.zeros(k.shape)


_CLOSED = {
    "relu": (_relu_F_block, _relu_block_derivatives, _relu_diag_derivatives),
    "erf": (_erf_F_block, _erf_block_derivatives, _erf_diag_derivatives),
    "linear": (_linear_F_block, _linear_block_derivatives, _linear_diag_derivatives),
}
_CLOSED_F = {name: forms[0] for name, forms in _CLOSED.items()}


# ----------------------------------------------------------------------------------------------
# Quadrature
# ----------------------------------------------------------------------------------------------


def _std_normal_pdf(x):
    return np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)


@functools.lru_cache(maxsize=8)
def _legendre(nodes: int) -> tuple[Array, Array]:
    return np.polynomial.legendre.leggauss(nodes)


def normal_rule(breaks: Array, panels: int | None = None, nodes: int | None = None) -> tuple[Array, Array]:
    """Composite Gauss-Legendre rule for E[g(x)], x ~ N(0, 1), split at breakpoints.

    breaks: (..., k) with k >= 1 (clipped into [-R, R]; need not be sorted).  Each of the k + 1 pieces gets
    `panels` panels of `nodes` Gauss-Legendre nodes (defaults: module settings, see `quadrature_settings`), graded towards the breakpoints (quadratically at the
    two end pieces, cosine-clustered inside).  Returns nodes and weights (..., (k+1) panels nodes); the
    weights include the normal density, so E[g] ~= sum(w * g(x), -1).
    """
    R = _QUAD_HALF_WIDTH
    panels = _QUAD_PANELS if panels is None else panels
    nodes = _QUAD_NODES if nodes is None else nodes
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
    xg, wg = _legendre(nodes)
    x = (mid[..., None] + half[..., None] * xg).reshape(lead + (-1,))
    w = (half[..., None] * wg).reshape(lead + (-1,)) * _std_normal_pdf(x)
    return x, w


@contextlib.contextmanager
def quadrature_settings(panels: int | None = None, nodes: int | None = None):
    """Temporarily change the panels per piece and Gauss-Legendre nodes per panel (convergence checks)."""
    global _QUAD_PANELS, _QUAD_NODES
    saved = _QUAD_PANELS, _QUAD_NODES
    _QUAD_PANELS = saved[0] if panels is None else int(panels)
    _QUAD_NODES = saved[1] if nodes is None else int(nodes)
    try:
        yield
    finally:
        _QUAD_PANELS, _QUAD_NODES = saved


def _derivative_functions(act: Activation, max_order: int):
    funcs = [act.phi, act.dphi, act.d2phi][: max_order + 1]
    for order, fn in enumerate(funcs):
        if fn is None:
            what = ["phi", "dphi", "d2phi"][order]
            raise ValueError(
                f"activation {act.name!r} has no {what}: quadrature of {'D' * order}F needs it "
                f"(pass {what}= to custom_activation)")
    return funcs


def _breaks(act: Activation, scale):
    """Breakpoints of phi(scale * x) in x, (..., k)."""
    pts = np.array(act.breakpoints() or (0.0,))
    return pts / np.asarray(scale)[..., None]


def _inner_rule(act: Activation, scale_b, rho, s, x):
    """Rule for w in y = rho x + s w, split where phi(scale_b y) has breakpoints.  x: (B, N) -> (B, N, M)."""
    pts = np.array(act.breakpoints() or (0.0,))
    target = pts[None, None, :] / scale_b[:, None, None] - rho[:, None, None] * x[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        wb = np.where(s[:, None, None] > 0, target / np.where(s > 0, s, 1.0)[:, None, None],
                      np.sign(target) * 2 * _QUAD_HALF_WIDTH)
    return normal_rule(wb)


def bivariate_moments(act: Activation, sa, sb, rho, wanted) -> dict:
    """E[x^pa y^pb phi^(da)(sa x) phi^(db)(sb y)] for a standard bivariate normal (x, y) with correlation rho.

    sa, sb, rho: 1-D arrays (blocks).  wanted: iterable of (pa, pb, da, db), da, db in {0, 1, 2}; phi'' is
    distributional: the delta terms from kinks are added analytically.  Returns {key: (B,) array}.
    """
    wanted = list(wanted)
    sa, sb, rho = (np.asarray(v, dtype=np.float64) for v in (sa, sb, rho))
    if sa.size > _QUAD_CHUNK_BLOCKS:  # bound the (blocks x nodes x nodes) work arrays to a few MB each
        parts = [bivariate_moments(act, sa[i:i + _QUAD_CHUNK_BLOCKS], sb[i:i + _QUAD_CHUNK_BLOCKS],
                                   rho[i:i + _QUAD_CHUNK_BLOCKS], wanted)
                 for i in range(0, sa.size, _QUAD_CHUNK_BLOCKS)]
        return {key: np.concatenate([part[key] for part in parts]) for key in wanted}
    max_d = max(max(k[2], k[3]) for k in wanted)
    funcs = _derivative_functions(act, max_d)  # validates before any work; the jet is used for bulk values
    s = np.sqrt(np.maximum(1.0 - rho * rho, 0.0))
    x, wx = normal_rule(_breaks(act, sa))  # (B, N)
    w, ww = _inner_rule(act, sb, rho, s, x)  # (B, N, M)
    y = rho[:, None, None] * x[..., None] + s[:, None, None] * w
    A = act.derivatives(sa[:, None] * x, max_d)
    Bv = act.derivatives(sb[:, None, None] * y, max_d)
    out = {}
    inner_sums = {}  # E[y^pb phi^(db)(sb y) | x] is shared between several moments
    for key in wanted:
        pa, pb, da, db = key
        if (pb, db) not in inner_sums:
            inner_sums[pb, db] = np.sum(ww * y**pb * Bv[db], axis=-1)
        val = np.sum(wx * x**pa * A[da] * inner_sums[pb, db], axis=-1)
        if da == 2:
            val = val + _delta_terms(act, funcs, sa, sb, rho, s, pa, pb, db)
        if db == 2:
            # the same with the roles of (x, a) and (y, b) swapped; the law of (x, y) is symmetric
            val = val + _delta_terms(act, funcs, sb, sa, rho, s, pb, pa, da, skip_double=(da == 2))
        out[key] = val
    return out


def _delta_terms(act, funcs, sa, sb, rho, s, pa, pb, db, skip_double=False):
    """Kink deltas of phi''(sa x): sum_k j_k/sa x_k^pa n(x_k) E[y^pb phi^(db)(sb y) | x = x_k], x_k = c_k/sa.

    With db = 2 the conditional expectation includes the delta-delta term (added once: skip_double).
    """
    total = np.zeros(sa.shape)
    for c, jump in act.kinks:
        xk = c / sa
        w, ww = _inner_rule(act, sb, rho, s, xk[:, None])  # (B, 1, M)
        y = rho[:, None, None] * xk[:, None, None] + s[:, None, None] * w
        cond = np.sum(ww * y**pb * funcs[db](sb[:, None, None] * y), axis=-1)[:, 0]
        if db == 2 and not skip_double:
            for c2, jump2 in act.kinks:
                yl = c2 / sb
                if np.any(s <= 0):
                    raise CollinearInputsError(
                        f"{act.name}: collinear inputs; <phi''(z_a) phi''(z_b)> has a delta-delta term that diverges")
                cond = cond + jump2 / sb * yl**pb * _std_normal_pdf((yl - rho * xk) / s) / s
        total = total + jump / sa * xk**pa * _std_normal_pdf(xk) * cond
    return total


def _diag_moments(act: Activation, scale, order: int):
    """Derivatives of F_aa(s) = E[phi(s x)^2] in s: (F, F_s, F_ss), with kink deltas for F_ss."""
    _derivative_functions(act, order)  # clear error if a needed derivative is missing
    scale = np.asarray(scale, dtype=np.float64)
    x, wx = normal_rule(_breaks(act, scale))
    vals = act.derivatives(scale[:, None] * x, order)
    F = np.sum(wx * vals[0] ** 2, axis=-1)
    if order == 0:
        return F, None, None
    F_s = 2.0 * np.sum(wx * x * vals[0] * vals[1], axis=-1)
    if order == 1:
        return F, F_s, None
    F_ss = 2.0 * np.sum(wx * x * x * (vals[1] ** 2 + vals[0] * vals[2]), axis=-1)
    for c, jump in act.kinks:
        xk = c / scale
        F_ss = F_ss + 2.0 * jump / scale * xk * xk * act.phi(np.array(c)) * _std_normal_pdf(xk)
    return F, F_s, F_ss


def _quadrature_block_derivatives(act: Activation, kaa, kbb, kab, order):
    """F, grad (.., 3), hess (.., 3, 3) in (kaa, kbb, kab) from moments in (sa, sb, rho) and the chain rule."""
    shape = np.broadcast(kaa, kbb, kab).shape
    kaa, kbb, kab = (np.broadcast_to(np.asarray(v, np.float64), shape).ravel() for v in (kaa, kbb, kab))
    sa, sb = np.sqrt(kaa), np.sqrt(kbb)
    rho = np.clip(kab / (sa * sb), -1.0, 1.0)
    keys = [(0, 0, 0, 0)]
    if order >= 1:
        keys += [(1, 0, 1, 0), (0, 1, 0, 1), (0, 0, 1, 1)]
    if order >= 2:
        keys += [(2, 0, 2, 0), (0, 2, 0, 2), (1, 1, 1, 1), (0, 0, 2, 2), (1, 0, 2, 1), (0, 1, 1, 2)]
    m = bivariate_moments(act, sa, sb, rho, keys)
    F = m[(0, 0, 0, 0)].reshape(shape)
    if order == 0:
        return F, None, None
    # u = (sa, sb, rho): first derivatives of F in u, and du/dk
    Fu = np.stack([m[(1, 0, 1, 0)], m[(0, 1, 0, 1)], sa * sb * m[(0, 0, 1, 1)]], axis=-1)
    du = np.zeros(kaa.shape + (3, 3))  # du[..., u, k]
    du[:, 0, 0] = 0.5 / sa
    du[:, 1, 1] = 0.5 / sb
    du[:, 2, 0] = -0.5 * rho / kaa
    du[:, 2, 1] = -0.5 * rho / kbb
    du[:, 2, 2] = 1.0 / (sa * sb)
    grad = np.einsum("bu,buk->bk", Fu, du)
    if order == 1:
        return F, grad.reshape(shape + (3,)), None
    Fuu = np.empty(kaa.shape + (3, 3))
    Fuu[:, 0, 0] = m[(2, 0, 2, 0)]
    Fuu[:, 1, 1] = m[(0, 2, 0, 2)]
    Fuu[:, 2, 2] = (sa * sb) ** 2 * m[(0, 0, 2, 2)]
    Fuu[:, 0, 1] = Fuu[:, 1, 0] = m[(1, 1, 1, 1)]
    Fuu[:, 0, 2] = Fuu[:, 2, 0] = sb * m[(0, 0, 1, 1)] + sa * sb * m[(1, 0, 2, 1)]
    Fuu[:, 1, 2] = Fuu[:, 2, 1] = sa * m[(0, 0, 1, 1)] + sa * sb * m[(0, 1, 1, 2)]
    d2u = np.zeros(kaa.shape + (3, 3, 3))  # d2u[..., u, k, k']
    d2u[:, 0, 0, 0] = -0.25 / sa**3
    d2u[:, 1, 1, 1] = -0.25 / sb**3
    d2u[:, 2, 0, 0] = 0.75 * rho / kaa**2
    d2u[:, 2, 1, 1] = 0.75 * rho / kbb**2
    d2u[:, 2, 0, 1] = d2u[:, 2, 1, 0] = 0.25 * rho / (kaa * kbb)
    d2u[:, 2, 0, 2] = d2u[:, 2, 2, 0] = -0.5 / (kaa * sa * sb)
    d2u[:, 2, 1, 2] = d2u[:, 2, 2, 1] = -0.5 / (kbb * sa * sb)
    hess = np.einsum("buv,bui,bvj->bij", Fuu, du, du) + np.einsum("bu,buij->bij", Fu, d2u)
    return F, grad.reshape(shape + (3,)), hess.reshape(shape + (3, 3))


def _quadrature_diag_derivatives(act: Activation, k, order=2):
    k = np.asarray(k, dtype=np.float64)
    s = np.sqrt(k.ravel())
    F, F_s, F_ss = _diag_moments(act, s, order)
    if order == 0:
        return F.reshape(k.shape), None, None
    dF = F_s / (2 * s)
    if order == 1:
        return F.reshape(k.shape), dF.reshape(k.shape), None
    # s = sqrt(k): ds/dk = 1/(2s), d2s/dk2 = -1/(4 s^3)
    d2F = F_ss / (4 * s * s) - F_s / (4 * s**3)
    return F.reshape(k.shape), dF.reshape(k.shape), d2F.reshape(k.shape)


# ----------------------------------------------------------------------------------------------
# Public block-level API
# ----------------------------------------------------------------------------------------------


def block_factor(kaa, kbb, kab):
    """Lower-triangular L with L L^T = [[kaa, kab], [kab, kbb]], robust to singular blocks."""
    kaa = np.maximum(np.asarray(kaa, dtype=np.float64), 0.0)
    kbb = np.maximum(np.asarray(kbb, dtype=np.float64), 0.0)
    l11 = np.sqrt(kaa)
    with np.errstate(invalid="ignore", divide="ignore"):
        l21 = np.where(l11 > 0, kab / np.where(l11 > 0, l11, 1.0), 0.0)
    l22 = np.sqrt(np.maximum(kbb - l21 * l21, 0.0))
    return l11, l21, l22


def gaussian_expectation_2d(g, kaa, kbb, kab, order: int | None = None):
    """E[g(z_a, z_b)] for (z_a, z_b) ~ N(0, [[kaa, kab], [kab, kbb]]).

    Default: the composite rule of `normal_rule`, split at z_a = 0 and, conditionally, at z_b = 0 (the
    kink of relu-like integrands).  order=int: tensor Gauss-Hermite of that order (the old rule).
    kaa, kbb, kab broadcast together; g must be vectorised over trailing node axes.
    """
    if order is not None:
        x, w = _gh_rule(order)
        l11, l21, l22 = block_factor(kaa, kbb, kab)
        l11, l21, l22 = (np.asarray(v)[..., None, None] for v in (l11, l21, l22))
        za = l11 * x[:, None]
        zb = l21 * x[:, None] + l22 * x[None, :]
        return np.sum(g(za, zb) * (w[:, None] * w[None, :]), axis=(-2, -1))
    shape = np.broadcast(kaa, kbb, kab).shape
    l11, l21, l22 = (np.broadcast_to(v, shape).ravel() for v in block_factor(kaa, kbb, kab))
    x, wx = normal_rule(np.zeros(l11.shape + (1,)))
    with np.errstate(divide="ignore", invalid="ignore"):
        target = -l21[:, None] * x
        wb = np.where(l22[:, None] > 0, target / np.where(l22 > 0, l22, 1.0)[:, None], np.sign(target) * 20.0)
    w, ww = normal_rule(wb[..., None])
    za = (l11[:, None] * x)[..., None] * np.ones_like(w)
    zb = l21[:, None, None] * x[..., None] + l22[:, None, None] * w
    return np.sum(wx * np.sum(ww * g(za, zb), axis=-1), axis=-1).reshape(shape)


def F_block(act: str | Activation, kaa, kbb, kab, method: str = "auto"):
    """<phi(z_a) phi(z_b)> over a 2x2 Gaussian block.  method: auto | closed | quadrature."""
    act = get_activation(act)
    if _uses_closed_form(act, method):
        return _CLOSED[act.name][0](np.asarray(kaa, float), np.asarray(kbb, float), np.asarray(kab, float))
    return _quadrature_block_derivatives(act, kaa, kbb, kab, order=0)[0]


def F_block_derivatives(act: str | Activation, kaa, kbb, kab, order: int = 2, method: str = "auto"):
    """(F, grad, hess) of F_ab for an off-diagonal block (a != b) in block coordinates (kaa, kbb, kab).

    grad: (..., 3) = (dF/dkaa, dF/dkbb, dF/dkab); hess: (..., 3, 3) (None when order < 2).
    kab is the symmetric off-diagonal coordinate (moves K_ab and K_ba together).
    """
    act = get_activation(act)
    kaa, kbb, kab = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (kaa, kbb, kab)))
    if _uses_closed_form(act, method):
        return _CLOSED[act.name][1](kaa, kbb, kab, order)
    return _quadrature_block_derivatives(act, kaa, kbb, kab, order)


def F_diag_derivatives(act: str | Activation, k, order: int = 2, method: str = "auto"):
    """(F_aa, dF_aa/dk, d2F_aa/dk2) for a diagonal entry F_aa(k) = <phi(z)^2>, z ~ N(0, k)."""
    act = get_activation(act)
    k = np.asarray(k, dtype=np.float64)
    if _uses_closed_form(act, method):
        F, d1, d2 = _CLOSED[act.name][2](k)
    else:
        return _quadrature_diag_derivatives(act, k, order)
    return F, (d1 if order >= 1 else None), (d2 if order >= 2 else None)


def F_matrix(act: str | Activation, K: Array, method: str = "auto") -> Array:
    """F(K) for a (..., P, P) kernel: entry (a, b) from the 2x2 block of K on {a, b} (diagonal: 1-D rule)."""
    K = np.asarray(K, dtype=np.float64)
    P = K.shape[-1]
    a, b = pair_indices(P)
    diag = a == b
    vals = np.empty(K.shape[:-2] + (a.size,))
    vals[..., diag] = F_diag_derivatives(act, K[..., a[diag], a[diag]], order=0, method=method)[0]
    if not np.all(diag):
        off = ~diag
        vals[..., off] = F_block(act, K[..., a[off], a[off]], K[..., b[off], b[off]], K[..., a[off], b[off]],
                                 method=method)
    out = np.empty(K.shape, dtype=np.float64)
    out[..., a, b] = vals
    out[..., b, a] = vals
    return out


def f_matrix(act: str | Activation, K: Array, sw2: float, sb2: float, method: str = "auto") -> Array:
    """Increment kernel of the mean field, f(K) = sw2 F(K) + sb2 11^T."""
    return sw2 * F_matrix(act, K, method=method) + sb2


# ----------------------------------------------------------------------------------------------
# Pair-coordinate Jacobian and Hessian
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelDerivatives:
    """F(K) and its derivatives in pair coordinates, stored sparsely.

    Row m = (a, b) of DF and D2F is non-zero only in the columns `index[m]` = pairs (aa, bb, ab) of its block
    (for a diagonal pair all three are (aa) and only slot 0 is non-zero).  grad: (p, 3), hess: (p, 3, 3).
    """

    P: int
    F: Array  # (p,)
    index: Array  # (p, 3) pair indices of the block coordinates
    grad: Array  # (p, 3)
    hess: Array | None  # (p, 3, 3)

    def jacobian(self) -> Array:
        """DF (p, p), DF[m, m'] = dF_m / dK_m'."""
        p = self.F.shape[0]
        J = np.zeros((p, p))
        np.add.at(J, (np.arange(p)[:, None], self.index), self.grad)
        return J

    def hessian(self) -> Array:
        """D2F (p, p, p), symmetric in the last two indices."""
        if self.hess is None:
            raise ValueError("second derivatives were not computed (order < 2)")
        p = self.F.shape[0]
        H = np.zeros((p, p, p))
        np.add.at(H, (np.arange(p)[:, None, None], self.index[:, :, None], self.index[:, None, :]), self.hess)
        return H

    def contract_hessian(self, V: Array) -> Array:
        """(D2F : V)_m = sum_{m', m''} D2F[m, m', m''] V[m', m''] for V (..., p, p); returns (..., p)."""
        if self.hess is None:
            raise ValueError("second derivatives were not computed (order < 2)")
        block = V[..., self.index[:, :, None], self.index[:, None, :]]  # (..., p, 3, 3)
        return np.einsum("mij,...mij->...m", self.hess, block)


def kernel_derivatives(act: str | Activation, K: Array, order: int = 2, method: str = "auto") -> KernelDerivatives:
    """F(K), DF(K) and (order 2) D2F(K) in pair coordinates for one P x P kernel."""
    act = get_activation(act)
    K = np.asarray(K, dtype=np.float64)
    P = K.shape[-1]
    p = n_pairs(P)
    a, b = pair_indices(P)
    lut = pair_lookup(P)
    off = a != b
    diag = ~off
    index = np.stack([lut[a, a], lut[b, b], lut[a, b]], axis=-1)
    F = np.empty(p)
    grad = np.zeros((p, 3))
    hess = np.zeros((p, 3, 3)) if order >= 2 else None
    Fd, d1, d2 = F_diag_derivatives(act, K[a[diag], a[diag]], order=order, method=method)
    F[diag] = Fd
    grad[diag, 0] = d1
    if order >= 2:
        hess[diag, 0, 0] = d2
    if np.any(off):
        Fo, go, ho = F_block_derivatives(act, K[a[off], a[off]], K[b[off], b[off]], K[a[off], b[off]],
                                         order=order, method=method)
        F[off] = Fo
        grad[off] = go
        if order >= 2:
            hess[off] = ho
    for name, value in (("F", F), ("DF", grad), ("D2F", hess)):
        if value is not None and not np.all(np.isfinite(value)):
            raise FloatingPointError(f"{act.name}: non-finite {name} at K = {K.tolist()}")
    return KernelDerivatives(P, F, index, grad, hess)


def kernel_jacobian(act: str | Activation, K: Array, sw2: float, method: str = "auto") -> Array:
    """J = Df(K) (p x p) for f = sw2 F + sb2 11^T, in the pair convention of the module docstring."""
    return sw2 * kernel_derivatives(act, K, order=1, method=method).jacobian()


def kernel_hessian(act: str | Activation, K: Array, sw2: float, method: str = "auto") -> Array:
    """H = D2f(K) (p x p x p), H[m, m', m''] = d2 f_m / dK_m' dK_m''."""
    return sw2 * kernel_derivatives(act, K, order=2, method=method).hessian()
