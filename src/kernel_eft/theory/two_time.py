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
        self.P = P
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
        """g = E[phi(z_e) phi(z_f) | z_c = x] at nodes x (M, k): (g, grad (k, M), hess (k, k, M)), for e or f in
        the block or e == f; all_derivatives handles the pairs with two different inputs outside the block."""
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
        raise ValueError("pairs with both inputs outside the block go through all_derivatives (pair_family)")

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


def _earlier_rows(block: _BlockAtTime, F_q: Array, pairs: list[tuple[int, int]], combos: list,
                  block_combos: list[int]) -> tuple[Array, dict[int, Array]]:
    """The functions of the earlier time q on the block's nodes, one row each, in the order (for every m)
    g~_m, then D_cd g~_m for every combo k of the block (module docstring), already multiplied by the node weights.

    Returns (rows on the area nodes (rows, M), {kink line i: rows on its line nodes}); only d_c d_c with c the kink's
    coordinate carries a line term, the other rows are zero there."""
    a_idx, b_idx = pair_indices(block.P)
    position = {o: i for i, o in enumerate(block.coords)}
    Kinv = block.Kc_inv
    white = Kinv @ block.x.T  # (k, M): w = K^-1 x at the nodes
    value, grad, hess = block.all_derivatives(block.x, pairs)
    area_rows = []
    line_rows = {i: [] for i, _, _ in block.lines}
    kink_terms = {}
    for m, (e, f) in enumerate(pairs):
        centred = value[m] - F_q[m]
        area_rows.append(centred)
        for i, line_x, _ in block.lines:
            line_rows[i].append(np.zeros(line_x.shape[0]))
        for k in block_combos:
            cd = combos[k][0]
            c, d = position[int(a_idx[cd])], position[int(b_idx[cd])]
            area_rows.append(hess[m, c, d] - white[c] * grad[m, d] - white[d] * grad[m, c]
                             + (white[c] * white[d] - Kinv[c, d]) * centred)
            for i, line_x, _ in block.lines:
                if c == d == i:
                    if (e, f, i) not in kink_terms:
                        kink_terms[(e, f, i)] = block.kink_coefficient(e, f, i, line_x)
                    line_rows[i].append(kink_terms[(e, f, i)])
                else:
                    line_rows[i].append(np.zeros(line_x.shape[0]))
    weighted_area = np.array(area_rows) * block.w
    weighted_lines = {i: np.array(line_rows[i]) * line_w for i, _, line_w in block.lines}
    return weighted_area, weighted_lines


def _later_smoothed_psi(moments, nodes: Array, block: _BlockAtTime, ab_list: list[int], increments: Array,
                        P: int) -> Array:
    """(T_{q,t} psi_ab)(x) on the nodes x of the earlier time, for t = q (no smoothing) and every later time:
    (M, number of times, len(ab_list)); increments: K0[t] - K0[q] for the later times (nt - 1, P, P)."""
    a_idx, b_idx = pair_indices(P)
    position = {o: i for i, o in enumerate(block.coords)}
    out = np.empty((nodes.shape[0], increments.shape[0] + 1, len(ab_list)))
    for col, ab in enumerate(ab_list):
        a, b = int(a_idx[ab]), int(b_idx[ab])
        xa, xb = nodes[:, position[a]], nodes[:, position[b]]
        out[:, 0, col] = moments.pointwise(0, xa) * moments.pointwise(0, xb)
        if increments.shape[0]:
            if a == b:
                out[:, 1:, col] = moments.later_square(xa, np.sqrt(np.maximum(increments[:, a, a], 0.0)))
            else:
                out[:, 1:, col] = moments.later_pair(xa, xb, increments[:, a, a], increments[:, b, b],
                                                     increments[:, a, b])
    return out


def two_time_kernels(moments, K0: Array, rule: BlockRule = BlockRule(), progress=None) -> TwoTimeKernels:
    """Cpp and Q (module docstring) on the time grid of K0 (N, P, P); q <= t filled, q > t zero.

    For each earlier time q and conditioning block: the earlier-time rows (g~_m and D_cd g~_m, weighted) times
    the later-time functions T_{q,t} psi_ab at every t >= q, one matrix product over the nodes (plus the kink
    lines).  moments: a provider from kernel_eft.core.moments.moments_for.  progress(done, total) is called after
    every earlier time q."""
    K0 = np.asarray(K0, float)
    N, P, _ = K0.shape
    p = n_pairs(P)
    a_idx, b_idx = pair_indices(P)
    pairs = [(int(a_idx[m]), int(b_idx[m])) for m in range(p)]
    combos = q_combos(P)
    Cpp = np.zeros((N, N, p, p))
    Q = np.zeros((N, N, p, len(combos)))
    F = to_pairs(F_matrix(moments.act, K0))  # (N, p): E psi_m(z(q)), exact closed form or quadrature
    for q in range(N):
        increments = K0[q + 1:] - K0[q]  # to every later time
        n_times = N - q
        for coords, ab_list in _blocks(P):
            block = _BlockAtTime(moments, K0[q], coords, P, rule)
            block_combos = [k for k, (_, ab) in enumerate(combos) if ab in ab_list]
            area_rows, line_rows = _earlier_rows(block, F[q], pairs, combos, block_combos)
            later = _later_smoothed_psi(moments, block.x, block, ab_list, increments, P)
            product = area_rows @ later.reshape(later.shape[0], -1)
            for i, line_x, _ in block.lines:
                on_line = _later_smoothed_psi(moments, line_x, block, ab_list, increments, P)
                product += line_rows[i] @ on_line.reshape(line_x.shape[0], -1)
            product = product.reshape(area_rows.shape[0], n_times, len(ab_list))
            # Rows come in groups of (1 + len(block_combos)) per m: g~_m first, then the D_cd rows.
            stride = 1 + len(block_combos)
            for col, ab in enumerate(ab_list):
                Cpp[q, q:, :, ab] = product[0::stride, :, col].T
            for slot, k in enumerate(block_combos):
                col = ab_list.index(combos[k][1])
                Q[q, q:, :, k] = product[1 + slot::stride, :, col].T
        if progress is not None:
            progress(q + 1, N)
    return TwoTimeKernels(Cpp, Q, combos)
