"""Gaussian expectations F(K) = <phi(z) phi(z)^T>_{z ~ N(0, K)} and their derivatives DF, D2F.

One interface for every activation: the activation's own closed forms (`Activation.kernel`) where it has
them, quadrature otherwise.  The Monte Carlo estimators, the theories and the diagnostics take F from here.

Derivative convention (pair coordinates, see `kernel_eft.core.pairs`)
-----------------------------------------------------------------------
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

Quadrature (the fallback)
-------------------------
`bivariate_moments` integrates the standard bivariate normal (x, y = rho x + sqrt(1 - rho^2) w) by the
composite Gauss-Legendre rule of `kernel_eft.core.quadrature.normal_rule` in x and, for every x node, in w,
with breakpoints at every kink / feature point of phi (z = 0 for the smooth activations, graded panels
towards it); its accuracy is the `rule` argument (`NormalRule`).  Derivatives use only phi' and phi'' in
the scale-correlation coordinates (sa, sb, rho), sa = sqrt(kaa), rho = kab / (sa sb), then the chain rule
to (kaa, kbb, kab).  A kink of phi (phi' jumps by j at z = c, e.g. relu) makes phi'' = (regular part) +
j delta(z - c); the delta terms are integrated analytically (conditional Gaussian expectations at the kink),
so a user-supplied kinked activation keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernel_eft.core.activations import Activation, CollinearInputsError, get_activation
from kernel_eft.core.pairs import n_pairs, pair_indices, pair_lookup
from kernel_eft.core.quadrature import DEFAULT_RULE, HALF_WIDTH, NormalRule, normal_rule, std_normal_pdf

Array = np.ndarray

_QUAD_CHUNK_BLOCKS = 64  # 2x2 blocks integrated at once (bounds the work arrays)


def _uses_closed_form(act: Activation, method: str) -> bool:
    if method not in ("auto", "closed", "quadrature"):
        raise ValueError(f"method must be auto, closed or quadrature, got {method!r}")
    if method == "closed" and act.kernel is None:
        raise ValueError(f"no closed form for activation {act.name!r}")
    return act.kernel is not None and method != "quadrature"


def _breaks(act: Activation, scale):
    """Breakpoints of phi(scale * x) in x, (..., k)."""
    pts = np.array(act.breakpoints() or (0.0,))
    return pts / np.asarray(scale)[..., None]


def _inner_rule(act: Activation, scale_b, rho, s, x, rule: NormalRule):
    """Rule for w in y = rho x + s w, split where phi(scale_b y) has breakpoints.  x: (B, N) -> (B, N, M)."""
    pts = np.array(act.breakpoints() or (0.0,))
    target = pts[None, None, :] / scale_b[:, None, None] - rho[:, None, None] * x[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        wb = np.where(s[:, None, None] > 0, target / np.where(s > 0, s, 1.0)[:, None, None],
                      np.sign(target) * 2 * HALF_WIDTH)
    return normal_rule(wb, rule)


def bivariate_moments(act: Activation, sa, sb, rho, wanted, rule: NormalRule = DEFAULT_RULE) -> dict:
    """E[x^pa y^pb phi^(da)(sa x) phi^(db)(sb y)] for a standard bivariate normal (x, y) with correlation rho.

    sa, sb, rho: 1-D arrays (blocks).  wanted: iterable of (pa, pb, da, db), da, db in {0, 1, 2}; phi'' is
    distributional: the delta terms from kinks are added analytically.  Returns {key: (B,) array}.
    """
    wanted = list(wanted)
    sa, sb, rho = (np.asarray(v, dtype=np.float64) for v in (sa, sb, rho))
    if sa.size > _QUAD_CHUNK_BLOCKS:  # bound the (blocks x nodes x nodes) work arrays to a few MB each
        parts = [bivariate_moments(act, sa[i:i + _QUAD_CHUNK_BLOCKS], sb[i:i + _QUAD_CHUNK_BLOCKS],
                                   rho[i:i + _QUAD_CHUNK_BLOCKS], wanted, rule)
                 for i in range(0, sa.size, _QUAD_CHUNK_BLOCKS)]
        return {key: np.concatenate([part[key] for part in parts]) for key in wanted}
    max_d = max(max(k[2], k[3]) for k in wanted)
    funcs = act.derivative_functions(max_d)  # validates before any work; the jet is used for bulk values
    s = np.sqrt(np.maximum(1.0 - rho * rho, 0.0))
    x, wx = normal_rule(_breaks(act, sa), rule)  # (B, N)
    w, ww = _inner_rule(act, sb, rho, s, x, rule)  # (B, N, M)
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
            val = val + _delta_terms(act, funcs, sa, sb, rho, s, pa, pb, db, rule)
        if db == 2:
            # the same with the roles of (x, a) and (y, b) swapped; the law of (x, y) is symmetric
            val = val + _delta_terms(act, funcs, sb, sa, rho, s, pb, pa, da, rule, skip_double=(da == 2))
        out[key] = val
    return out


def _delta_terms(act, funcs, sa, sb, rho, s, pa, pb, db, rule, skip_double=False):
    """Kink deltas of phi''(sa x): sum_k j_k/sa x_k^pa n(x_k) E[y^pb phi^(db)(sb y) | x = x_k], x_k = c_k/sa.

    With db = 2 the conditional expectation includes the delta-delta term (added once: skip_double).
    """
    total = np.zeros(sa.shape)
    for c, jump in act.kinks:
        xk = c / sa
        w, ww = _inner_rule(act, sb, rho, s, xk[:, None], rule)  # (B, 1, M)
        y = rho[:, None, None] * xk[:, None, None] + s[:, None, None] * w
        cond = np.sum(ww * y**pb * funcs[db](sb[:, None, None] * y), axis=-1)[:, 0]
        if db == 2 and not skip_double:
            for c2, jump2 in act.kinks:
                yl = c2 / sb
                if np.any(s <= 0):
                    raise CollinearInputsError(
                        f"{act.name}: collinear inputs; <phi''(z_a) phi''(z_b)> has a delta-delta term that diverges")
                cond = cond + jump2 / sb * yl**pb * std_normal_pdf((yl - rho * xk) / s) / s
        total = total + jump / sa * xk**pa * std_normal_pdf(xk) * cond
    return total


def _diag_moments(act: Activation, scale, order: int, rule: NormalRule):
    """Derivatives of F_aa(s) = E[phi(s x)^2] in s: (F, F_s, F_ss), with kink deltas for F_ss."""
    act.derivative_functions(order)  # clear error if a needed derivative is missing
    scale = np.asarray(scale, dtype=np.float64)
    x, wx = normal_rule(_breaks(act, scale), rule)
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
        F_ss = F_ss + 2.0 * jump / scale * xk * xk * act.phi(np.array(c)) * std_normal_pdf(xk)
    return F, F_s, F_ss


def _quadrature_block_derivatives(act: Activation, kaa, kbb, kab, order, rule: NormalRule):
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
    m = bivariate_moments(act, sa, sb, rho, keys, rule)
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


def _quadrature_diag_derivatives(act: Activation, k, order, rule: NormalRule):
    k = np.asarray(k, dtype=np.float64)
    s = np.sqrt(k.ravel())
    F, F_s, F_ss = _diag_moments(act, s, order, rule)
    if order == 0:
        return F.reshape(k.shape), None, None
    dF = F_s / (2 * s)
    if order == 1:
        return F.reshape(k.shape), dF.reshape(k.shape), None
    # s = sqrt(k): ds/dk = 1/(2s), d2s/dk2 = -1/(4 s^3)
    d2F = F_ss / (4 * s * s) - F_s / (4 * s**3)
    return F.reshape(k.shape), dF.reshape(k.shape), d2F.reshape(k.shape)


def F_block(act: str | Activation, kaa, kbb, kab, method: str = "auto", rule: NormalRule = DEFAULT_RULE):
    """<phi(z_a) phi(z_b)> over a 2x2 Gaussian block.  method: auto | closed | quadrature."""
    act = get_activation(act)
    if _uses_closed_form(act, method):
        return act.kernel.F_block(np.asarray(kaa, float), np.asarray(kbb, float), np.asarray(kab, float))
    return _quadrature_block_derivatives(act, kaa, kbb, kab, 0, rule)[0]


def F_block_derivatives(act: str | Activation, kaa, kbb, kab, order: int = 2, method: str = "auto",
                        rule: NormalRule = DEFAULT_RULE):
    """(F, grad, hess) of F_ab for an off-diagonal block (a != b) in block coordinates (kaa, kbb, kab).

    grad: (..., 3) = (dF/dkaa, dF/dkbb, dF/dkab); hess: (..., 3, 3) (None when order < 2).
    kab is the symmetric off-diagonal coordinate (moves K_ab and K_ba together).
    """
    act = get_activation(act)
    kaa, kbb, kab = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (kaa, kbb, kab)))
    if _uses_closed_form(act, method):
        return act.kernel.block_derivatives(kaa, kbb, kab, order)
    return _quadrature_block_derivatives(act, kaa, kbb, kab, order, rule)


def F_diag_derivatives(act: str | Activation, k, order: int = 2, method: str = "auto",
                       rule: NormalRule = DEFAULT_RULE):
    """(F_aa, dF_aa/dk, d2F_aa/dk2) for a diagonal entry F_aa(k) = <phi(z)^2>, z ~ N(0, k)."""
    act = get_activation(act)
    k = np.asarray(k, dtype=np.float64)
    if _uses_closed_form(act, method):
        F, d1, d2 = act.kernel.diag_derivatives(k)
    else:
        return _quadrature_diag_derivatives(act, k, order, rule)
    return F, (d1 if order >= 1 else None), (d2 if order >= 2 else None)


def F_matrix(act: str | Activation, K: Array, method: str = "auto", rule: NormalRule = DEFAULT_RULE) -> Array:
    """F(K) for a (..., P, P) kernel: entry (a, b) from the 2x2 block of K on {a, b} (diagonal: 1-D rule)."""
    K = np.asarray(K, dtype=np.float64)
    P = K.shape[-1]
    a, b = pair_indices(P)
    diag = a == b
    vals = np.empty(K.shape[:-2] + (a.size,))
    vals[..., diag] = F_diag_derivatives(act, K[..., a[diag], a[diag]], order=0, method=method, rule=rule)[0]
    if not np.all(diag):
        off = ~diag
        vals[..., off] = F_block(act, K[..., a[off], a[off]], K[..., b[off], b[off]], K[..., a[off], b[off]],
                                 method=method, rule=rule)
    out = np.empty(K.shape, dtype=np.float64)
    out[..., a, b] = vals
    out[..., b, a] = vals
    return out


def f_matrix(act: str | Activation, K: Array, sw2: float, sb2: float, method: str = "auto",
             rule: NormalRule = DEFAULT_RULE) -> Array:
    """The mean-field map: the increment kernel f(K) = sw2 F(K) + sb2 11^T."""
    return sw2 * F_matrix(act, K, method=method, rule=rule) + sb2


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


def kernel_derivatives(act: str | Activation, K: Array, order: int = 2, method: str = "auto",
                       rule: NormalRule = DEFAULT_RULE) -> KernelDerivatives:
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
    Fd, d1, d2 = F_diag_derivatives(act, K[a[diag], a[diag]], order=order, method=method, rule=rule)
    F[diag] = Fd
    grad[diag, 0] = d1
    if order >= 2:
        hess[diag, 0, 0] = d2
    if np.any(off):
        Fo, go, ho = F_block_derivatives(act, K[a[off], a[off]], K[b[off], b[off]], K[a[off], b[off]],
                                         order=order, method=method, rule=rule)
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
