"""Two-time covariances of the free Gaussian process, the kernels of the exact O(1/n) theory.

The free process z lives on a grid of times (layers, or a uniform grid of continuous depth) with
Cov(z(q), z(t)) = K0[min(q, t)].  The exact theory needs, for q <= t and pairs m, ab, cd (pair coordinates):

    Cpp[q, t, m, ab]   = Cov(psi_m(z(q)), psi_ab(z(t)))                       psi = phi phi^T
    Q[q, t, m, k]      = Cov(psi_m(z(q)), (d_c d_d psi_ab)(z(t)))             k = (cd, ab), {c, d} within {a, b}

Algorithm (one pass per earlier time q, all later times t at once).  The process is Markov with independent
increments, z(t) = z(q) + delta, delta ~ N(0, K0[t] - K0[q]) independent of z(q).  Condition on the block
x = z_c(q) of the coordinates c = (a, b) that psi_ab depends on (for P <= 2: all coordinates):

    Cov(psi_m(z(q)), chi(z(t))) = E_x[ g~_m(x) (T chi)(x) ],
    g~_m(x) = E[psi_m(z(q)) | z_c(q) = x] - F_m(K0[q])       (depends on q only),
    (T chi)(x) = E[chi(x + delta)]                            (depends on (q, t) only).

For chi = psi_ab, T psi_ab is a shifted Gaussian moment of phi phi (`kernel_eft.core.moments`).  For the
second derivatives, T (d_c d_d psi_ab) = d_c d_d (T psi_ab), and Gaussian integration by parts under
x ~ N(0, K), K = K0[q]_cc, moves the derivatives onto g~:

    E[g~ d_c d_d u] = E[u D_cd g~],   D_cd g = d_c d_d g - w_c d_d g - w_d d_c g + (w_c w_d - (K^-1)_cd) g,   w = K^-1 x.

So every kernel is an integral of (a function of q) times (one function T psi_ab of (q, t)): a matrix
product over quadrature nodes.  A kink of phi at 0 (relu) makes d_c d_c g carry jump * delta(x_c) * (rest);
those terms are line integrals on x_c = 0, added exactly.  Nothing is ever integrated against a delta
function of the later time, so no narrow peaks appear as q -> t.

Quadrature over x: polar coordinates of the whitened x, split into the angular sectors cut by x_a = 0 and
x_b = 0 (where relu and its derivatives have their kinks), Gauss-Legendre in angle and radius; a 1-D block
uses Gauss-Legendre on each half-line (`kernel_eft.core.quadrature`).  Node counts in `BlockRule`; the error is
measured by refinement in tests/test_exact.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernel_eft.core.expectations import F_matrix
from kernel_eft.core.pairs import n_pairs, pair_indices, pair_lookup, to_pairs
from kernel_eft.core.quadrature import BlockRule, line_rules, rule_1d, rule_2d

Array = np.ndarray


def q_combos(P: int) -> list[tuple[int, int]]:
    """The (cd, ab) pairs of the second-derivative kernels: {c, d} within {a, b}; in the order of pairs ab."""
    a, b = pair_indices(P)
    lut = pair_lookup(P)
    out = []
    for ab in range(n_pairs(P)):
        if a[ab] == b[ab]:
            out.append((ab, ab))
        else:
            out += [(int(lut[a[ab], a[ab]]), ab), (int(lut[b[ab], b[ab]]), ab), (ab, ab)]
    return out


@dataclass
class TwoTimeKernels:
    Cpp: Array  # (N, N, p, p): [q, t, m, ab], zero for q > t
    Q: Array  # (N, N, p, nk): [q, t, m, k], zero for q > t
    combos: list  # k -> (cd, ab)

    def combo_arrays(self) -> tuple[Array, Array]:
        cd = np.array([c for c, _ in self.combos], dtype=np.intp)
        ab = np.array([a for _, a in self.combos], dtype=np.intp)
        return cd, ab


# ----------------------------------------------------------------------------------------------
# The conditional functions g of the earlier time, with gradients, Hessians and kink-line terms
# ----------------------------------------------------------------------------------------------


class _BlockAtTime:
    """Everything about one conditioning block c at one earlier time q that does not depend on t."""

    def __init__(self, moments, K: Array, coords: list[int], P: int, rule: BlockRule):
        self.moments = moments
        self.coords = coords
        self.K = K
        Kc = K[np.ix_(coords, coords)]
        self.Kc = Kc
        self.Kc_inv = np.linalg.inv(Kc)
        if len(coords) == 1:
            x, w = rule_1d(Kc[0, 0], rule.n_line)
            self.x, self.w = x[:, None], w
        else:
            self.x, self.w = rule_2d(Kc, rule)
        self.lines = line_rules(Kc, rule) if moments.kinks else []
        others = [o for o in range(P) if o not in coords]
        self.others = others
        if others:
            reg = K[np.ix_(others, coords)] @ self.Kc_inv  # regression of z_o on x
            self.regression = {o: reg[i] for i, o in enumerate(others)}
            cond = K[np.ix_(others, others)] - reg @ K[np.ix_(coords, others)]
            self.cond_cov = {(o1, o2): float(cond[i1, i2]) for i1, o1 in enumerate(others)
                             for i2, o2 in enumerate(others)}

    def derivatives(self, e: int, f: int, x: Array):
        """g = E[phi(z_e) phi(z_f) | z_c = x] at nodes x (M, k): (g, grad (k, M), hess (k, k, M))."""
        mom = self.moments
        c = self.coords
        k = len(c)
        M = x.shape[0]
        grad = np.zeros((k, M))
        hess = np.zeros((k, k, M))
        e_in, f_in = e in c, f in c
        if e_in and f_in:
            ie, jf = c.index(e), c.index(f)
            xe, xf = x[:, ie], x[:, jf]
            pe = [mom.pointwise(o, xe) for o in range(3)]
            pf = [mom.pointwise(o, xf) for o in range(3)]
            g = pe[0] * pf[0]
            grad[ie] += pe[1] * pf[0]
            grad[jf] += pe[0] * pf[1]
            hess[ie, ie] += pe[2] * pf[0]
            hess[jf, jf] += pe[0] * pf[2]
            hess[ie, jf] += pe[1] * pf[1]
            hess[jf, ie] += pe[1] * pf[1]
            return g, grad, hess
        if f_in and not e_in:
            e, f = f, e
            e_in, f_in = True, False
        if e_in:  # e in the block, f outside: g = phi(x_e) E[phi(z_f) | x]
            ie = c.index(e)
            A = self.regression[f]
            mu = x @ A
            s = np.sqrt(max(self.cond_cov[(f, f)], 0.0))
            S = [mom.single(o, mu, s) for o in range(3)]
            pe = [mom.pointwise(o, x[:, ie]) for o in range(3)]
            g = pe[0] * S[0]
            grad += pe[0] * S[1] * A[:, None]
            grad[ie] += pe[1] * S[0]
            hess += pe[0] * S[2] * A[:, None, None] * A[None, :, None]
            hess[ie] += pe[1] * S[1] * A[:, None]
            hess[:, ie] += pe[1] * S[1] * A[:, None]
            hess[ie, ie] += pe[2] * S[0]
            return g, grad, hess
        Ae, Af = self.regression[e], self.regression[f]
        mue, muf = x @ Ae, x @ Af
        if e == f:
            s = np.sqrt(max(self.cond_cov[(e, e)], 0.0))
            S = [mom.square(o, mue, s) for o in range(3)]
            g = S[0]
            grad += S[1] * Ae[:, None]
            hess += S[2] * Ae[:, None, None] * Ae[None, :, None]
            return g, grad, hess
        cov = (self.cond_cov[(e, e)], self.cond_cov[(f, f)], self.cond_cov[(e, f)])
        g = mom.pair(0, 0, mue, muf, *cov)
        p10, p01 = mom.pair(1, 0, mue, muf, *cov), mom.pair(0, 1, mue, muf, *cov)
        p20, p11, p02 = (mom.pair(2, 0, mue, muf, *cov), mom.pair(1, 1, mue, muf, *cov),
                         mom.pair(0, 2, mue, muf, *cov))
        grad += p10 * Ae[:, None] + p01 * Af[:, None]
        hess += (p20 * Ae[:, None, None] * Ae[None, :, None] + p02 * Af[:, None, None] * Af[None, :, None]
                 + p11 * (Ae[:, None, None] * Af[None, :, None] + Af[:, None, None] * Ae[None, :, None]))
        return g, grad, hess

    def all_derivatives(self, x: Array, pairs: list[tuple[int, int]]):
        """derivatives() for every pair (e, f) at once: (g (p, M), grad (p, k, M), hess (p, k, k, M)).  The
        pairs with both inputs outside the block share one call of the moment family (one bivariate CDF per
        node and pair for relu)."""
        p, M, k = len(pairs), x.shape[0], len(self.coords)
        g = np.empty((p, M))
        grad = np.zeros((p, k, M))
        hess = np.zeros((p, k, k, M))
        outside = [m for m, (e, f) in enumerate(pairs) if e not in self.coords and f not in self.coords and e != f]
        for m, (e, f) in enumerate(pairs):
            if m not in outside:
                g[m], grad[m], hess[m] = self.derivatives(e, f, x)
        if outside:
            Ae = np.array([self.regression[pairs[m][0]] for m in outside])  # (R, k)
            Af = np.array([self.regression[pairs[m][1]] for m in outside])
            cov = [np.array([self.cond_cov[(pairs[m][0], pairs[m][1])] if i == 2 else
                             self.cond_cov[(pairs[m][i], pairs[m][i])] for m in outside])[:, None] for i in range(3)]
            fam = self.moments.pair_family(Ae @ x.T, Af @ x.T, cov[0], cov[1], cov[2])  # (R, M) each
            idx = np.array(outside)
            g[idx] = fam[(0, 0)]
            grad[idx] = fam[(1, 0)][:, None, :] * Ae[:, :, None] + fam[(0, 1)][:, None, :] * Af[:, :, None]
            AeAe = Ae[:, :, None] * Ae[:, None, :]
            AfAf = Af[:, :, None] * Af[:, None, :]
            AeAf = Ae[:, :, None] * Af[:, None, :]
            hess[idx] = (fam[(2, 0)][:, None, None, :] * AeAe[..., None] + fam[(0, 2)][:, None, None, :] * AfAf[..., None]
                         + fam[(1, 1)][:, None, None, :] * (AeAf + np.swapaxes(AeAf, 1, 2))[..., None])
        return g, grad, hess

    def kink_coefficient(self, e: int, f: int, i: int, x: Array) -> Array:
        """r(x) with d_i d_i g = (regular part) + r(x) delta(x_i), on line nodes x (x_i = 0), for kinks at 0."""
        mom = self.moments
        c = self.coords
        ci = c[i]
        out = np.zeros(x.shape[0])
        for c0, jump in mom.kinks:
            # phi''(x_e) = ... + jump delta(x_e): the factor multiplying phi''(x_ci) in g, on the line
            if e == ci:
                out += jump * self._partner(f, x)
            if f == ci:
                out += jump * self._partner(e, x)
        return out

    def _partner(self, o: int, x: Array) -> Array:
        """phi(x_o) if o is in the block, else E[phi(z_o) | x]."""
        c = self.coords
        if o in c:
            return self.moments.pointwise(0, x[:, c.index(o)])
        mu = x @ self.regression[o]
        return self.moments.single(0, mu, np.sqrt(max(self.cond_cov[(o, o)], 0.0)))


# ----------------------------------------------------------------------------------------------
# The kernels
# ----------------------------------------------------------------------------------------------


def _blocks(P: int) -> list[tuple[list[int], list[int]]]:
    """(block coordinates, pairs ab integrated with it).  P <= 2: one block of all coordinates."""
    a, b = pair_indices(P)
    if P <= 2:
        return [(list(range(P)), list(range(n_pairs(P))))]
    return [([int(a[ab])] if a[ab] == b[ab] else [int(a[ab]), int(b[ab])], [ab]) for ab in range(n_pairs(P))]


def two_time_kernels(moments, K0: Array, rule: BlockRule = BlockRule(), progress=None) -> TwoTimeKernels:
    """Cpp and Q (module docstring) on the time grid of K0 (N, P, P); q <= t filled, q > t zero.

    moments: a provider from kernel_eft.core.moments.moments_for.  progress(done, total) is called after
    every earlier time q."""
    K0 = np.asarray(K0, float)
    N, P, _ = K0.shape
    p = n_pairs(P)
    a_idx, b_idx = pair_indices(P)
    combos = q_combos(P)
    nk = len(combos)
    Cpp = np.zeros((N, N, p, p))
    Q = np.zeros((N, N, p, nk))
    F = to_pairs(F_matrix(moments.act, K0))  # (N, p): E psi_m(z(q)), exact closed form or quadrature
    blocks = _blocks(P)
    for q in range(N):
        for coords, abs_in_block in blocks:
            block = _BlockAtTime(moments, K0[q], coords, P, rule)
            cpos = {o: i for i, o in enumerate(coords)}
            # Rows of the earlier-time functions: g~_m for every m, then D_cd g~_m for every combo of the block.
            my_combos = [k for k, (cd, ab) in enumerate(combos) if ab in abs_in_block]
            w = block.Kc_inv @ block.x.T  # (k, M): K^-1 x at the nodes
            rows_main = []
            rows_line = {i: [] for i, _, _ in block.lines}
            line_cache = {}
            pairs = [(int(a_idx[m]), int(b_idx[m])) for m in range(p)]
            G_all, grad_all, hess_all = block.all_derivatives(block.x, pairs)
            for m in range(p):
                e, f = pairs[m]
                g, grad, hess = G_all[m], grad_all[m], hess_all[m]
                gt = g - F[q, m]
                rows_main.append(gt)
                for i, xl, _ in block.lines:
                    rows_line[i].append(np.zeros(xl.shape[0]))
                for k in my_combos:
                    cd, _ = combos[k]
                    ic, id_ = cpos[int(a_idx[cd])], cpos[int(b_idx[cd])]
                    D = (hess[ic, id_] - w[ic] * grad[id_] - w[id_] * grad[ic]
                         + (w[ic] * w[id_] - block.Kc_inv[ic, id_]) * gt)
                    rows_main.append(D)
                    for i, xl, _ in block.lines:
                        if ic == id_ == i:
                            key = (e, f, i)
                            if key not in line_cache:
                                line_cache[key] = block.kink_coefficient(e, f, i, xl)
                            rows_line[i].append(line_cache[key])
                        else:
                            rows_line[i].append(np.zeros(xl.shape[0]))
            G = np.array(rows_main) * block.w  # (rows, M)
            nt = N - q
            H = np.empty((block.x.shape[0], nt, len(abs_in_block)))
            Hl = {i: np.empty((xl.shape[0], nt, len(abs_in_block))) for i, xl, _ in block.lines}
            Delta = (K0[q + 1:] - K0[q])  # (nt - 1, P, P): increments to every later time
            for col, ab in enumerate(abs_in_block):
                aa, bb = int(a_idx[ab]), int(b_idx[ab])
                ia, ib = cpos[aa], cpos[bb]
                for xs, target in [(block.x, H)] + [(xl, Hl[i]) for i, xl, _ in block.lines]:
                    target[:, 0, col] = moments.pointwise(0, xs[:, ia]) * moments.pointwise(0, xs[:, ib])
                    if nt > 1:
                        if aa == bb:
                            target[:, 1:, col] = moments.later_square(xs[:, ia], np.sqrt(np.maximum(
                                Delta[:, aa, aa], 0.0)))
                        else:
                            target[:, 1:, col] = moments.later_pair(xs[:, ia], xs[:, ib], Delta[:, aa, aa],
                                                                    Delta[:, bb, bb], Delta[:, aa, bb])
            R = G @ H.reshape(H.shape[0], -1)
            for i, xl, wl in block.lines:
                Lrows = np.array(rows_line[i]) * wl
                R += Lrows @ Hl[i].reshape(xl.shape[0], -1)
            R = R.reshape(len(rows_main), nt, len(abs_in_block))
            stride = 1 + len(my_combos)
            for col, ab in enumerate(abs_in_block):
                Cpp[q, q:, :, ab] = R[0::stride, :, col].T
            for slot, k in enumerate(my_combos):
                col = abs_in_block.index(combos[k][1])
                Q[q, q:, :, k] = R[1 + slot::stride, :, col].T
        if progress is not None:
            progress(q + 1, N)
    return TwoTimeKernels(Cpp, Q, combos)
