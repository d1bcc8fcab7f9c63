"""The next order of V4 in 1/n: the exact one-block identity and the cases where it closes.

V4(n) := n Cov(G) = V4 + V4_1/n + O(1/n^2).  kernel_eft.core.block_identity is the law of total covariance of one
block (exact at every n); kernel_eft.theory.next_order expands it to O(1/n).  Checks, each able to fail:
- order 0 of the identity with X_0, Y_0 of the O(1/n) theory rebuilds the theory's own V4 on the layer grid;
- linear phi (S = G): V4(n) exact at every n, checked against Monte Carlo at n = 4 and 8 (where V4 alone fails),
  and V4 + V4_1/n converging to it like 1/n^2 (n^2 x residual bounded, n = 4..64);
- one layer: n Cov(G^1) in closed form from moments of i.i.d. sums, computed here by its own polar quadrature,
  equals V4 + V4_1/n exactly, and Monte Carlo at n = 4 agrees (V4 alone does not);
- P = 1 against the (00, 00) entry of a P = 2 problem;
- t = 0: V4_1 = 0.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernel_eft.core.activations import get_activation
from kernel_eft.core.expectations import f_matrix
from kernel_eft.core.pairs import four_index_to_pairs, pair_indices
from kernel_eft.simulate.estimates import summarize
from kernel_eft.simulate.params import SimulationParams
from kernel_eft.simulate.samplers import simulate
from kernel_eft.theory.exact import exact_theory_discrete, mean_path_discrete
from kernel_eft.theory.next_order import (known_terms, linear_v4_at_width, linear_v4_next_order,
                                          v4_check_leading_order)

KIN = np.array([[1.0, 0.5], [0.5, 0.8]])


def _theory(activation, kin, sw2, sb2, time, depth):
    act = get_activation(activation)
    res = exact_theory_discrete(act, kin, sw2, sb2, time, depth)
    path = mean_path_discrete(act, kin, sw2, sb2, time, depth)
    f0 = np.stack([f_matrix(act, K, sw2, sb2) for K in res.K0])
    return res, known_terms(res, path.DF, f0, sw2, time / depth), f0


def _monte_carlo(activation, width, depth, samples, seed, **kw):
    params = SimulationParams(activation=activation, width=width, depth=depth, samples=samples, seed=seed,
                              batches=32, record_every=1, **kw)
    batches, _ = simulate(params)
    return summarize(params, batches)


@pytest.mark.parametrize("activation", ["relu", "tanh", "linear"])
def test_order_zero_of_the_identity_is_the_exact_theory(activation):
    """X_0 = sw2 Cov(g, s), Y_0 = sw2^2 Cov(s, s) of the O(1/n) theory put into the identity's order 0 rebuild its
    V4 at every layer (the theory computes V4 from the free field and the feedback, not from the identity).  The
    G-only closure's X_0 = sw2 V4 DF^T (s a function of g) fails it."""
    sw2, sb2, time, depth = 1.3, 0.1, 3.0, 8
    res, _, f0 = _theory(activation, KIN, sw2, sb2, time, depth)
    rebuilt = v4_check_leading_order(res, f0, sw2, time / depth)
    scale = np.max(np.abs(res.V4))
    assert np.max(np.abs(rebuilt - res.V4)) < 1e-8 * scale
    if activation != "linear":
        DF = mean_path_discrete(activation, KIN, sw2, sb2, time, depth).DF
        res.cov_gs = np.einsum("nxy,nzy->nxz", res.V4, DF)
        wrong = v4_check_leading_order(res, f0, sw2, time / depth)
        assert np.max(np.abs(wrong - res.V4)) > 1e-3 * scale


LINEAR = dict(time=2.0, sw2=1.2, sb2=0.3, kin=[[1.0, 0.5], [0.5, 0.8]])


@pytest.mark.parametrize("width", [4, 8])
def test_linear_v4_at_width_against_monte_carlo(width):
    """Linear phi: the identity closes (X = sw2 V4(n), Y = sw2^2 V4(n)), so V4(n) is exact at every n.  Monte Carlo
    at n = 4 and 8 (L = 4, 40000 networks) agrees within 4.5 sigma at every entry and layer; V4 at n = infinity
    misses by more than 8 sigma."""
    s = _monte_carlo("linear", width, 4, 40000, seed=3 + width, **LINEAR)
    exact = linear_v4_at_width(LINEAR["kin"], LINEAR["sw2"], LINEAR["sb2"], LINEAR["time"], 4, width)
    limit = linear_v4_at_width(LINEAR["kin"], LINEAR["sw2"], LINEAR["sb2"], LINEAR["time"], 4, np.inf)
    se = s["V4_se"]
    assert np.max(np.abs(s["V4"] - exact)[1:] / se[1:]) < 4.5
    assert np.max(np.abs(s["V4"] - limit)[1:] / se[1:]) > 8.0


def test_linear_next_order_converges_like_one_over_n_squared():
    """n^2 (V4(n) - V4 - V4_1/n) stays bounded (its spread over n = 4..64 within a factor 2 of its n = 64 value) while
    n (V4(n) - V4) - V4_1 shrinks like 1/n; the O(1/n) theory alone leaves n (V4(n) - V4) -> V4_1 != 0."""
    args = (LINEAR["kin"], LINEAR["sw2"], LINEAR["sb2"], LINEAR["time"], 16)
    V4 = linear_v4_at_width(*args, np.inf)
    V4_1 = linear_v4_next_order(*args)
    assert np.all(np.abs(V4_1[0]) == 0.0)  # t = 0: Wishart at every n
    resid2 = []
    for n in (4, 8, 16, 32, 64):
        Vn = linear_v4_at_width(*args, n)
        resid2.append(np.max(np.abs(n ** 2 * (Vn - V4 - V4_1 / n))))
        assert np.max(np.abs(n * (Vn - V4))) > 0.5 * np.max(np.abs(V4_1))  # the 1/n term is there
    resid2 = np.array(resid2)
    assert resid2.max() < 2.0 * resid2[-1] and resid2.min() > 0.5 * resid2[-1], resid2
    assert resid2[-1] < 10 * np.max(np.abs(V4_1)) ** 2 / np.max(np.abs(V4))  # O(1/n^2) of natural size


def _polar_covariances(activation, K, n_angle=40, n_radius=80):
    """Cov_K(z z^T, psi), Cov_K(psi, psi), Cov_K(zz^T, zz^T) (four-index) and F = <psi>_K by a product rule in polar
    coordinates of the whitened z, split at the angles where z_0 = 0 or z_1 = 0 (the kinks of relu), Gauss-Legendre
    in angle and in radius on [0, 12] (independent of the package's quadrature)."""
    phi = get_activation(activation).phi
    chol = np.linalg.cholesky(K)
    cuts = []  # angles theta with (chol u)_a = 0, u = (cos, sin)
    for row in chol:
        base = np.arctan2(-row[0], row[1])
        cuts += [base % (2 * np.pi), (base + np.pi) % (2 * np.pi)]
    edges = np.unique(np.concatenate([[0.0, 2 * np.pi], cuts]))
    xa, wa = np.polynomial.legendre.leggauss(n_angle)
    xr, wr = np.polynomial.legendre.leggauss(n_radius)
    r, wr = 6.0 * (xr + 1.0), 6.0 * wr * 6.0 * (xr + 1.0) * np.exp(-0.5 * (6.0 * (xr + 1.0)) ** 2) / (2 * np.pi)
    thetas, wth = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        thetas.append(0.5 * (hi - lo) * xa + 0.5 * (hi + lo))
        wth.append(0.5 * (hi - lo) * wa)
    th, wt = np.concatenate(thetas), np.concatenate(wth)
    U = (r[:, None, None] * np.stack([np.cos(th), np.sin(th)], -1)[None]).reshape(-1, 2)
    W = (wr[:, None] * wt[None]).ravel()
    W = W / W.sum()
    Z = U @ chol.T
    zz = Z[:, :, None] * Z[:, None, :]
    ps = phi(Z)[:, :, None] * phi(Z)[:, None, :]

    def cov(A, B):
        A0, B0 = A - np.einsum("m,mab->ab", W, A), B - np.einsum("m,mab->ab", W, B)
        return np.einsum("m,mab,mcd->abcd", W, A0, B0)

    return cov(zz, ps), cov(ps, ps), cov(zz, zz), np.einsum("m,mab->ab", W, ps)


@pytest.mark.parametrize("activation, sb2", [("tanh", 0.0), ("relu", 0.3)])
def test_one_layer_in_closed_form(activation, sb2):
    """One layer: h^0 is i.i.d. Gaussian and, given it, the block is Gaussian with Om = sw2 S^0 + sb2, so
        n Cov(G^1) = Cov(zz^T + dt sw2 psi) + dt E[S4(G^0, Om^0)] + dt^2 E[S2(Om^0)]
    with E[G^0_ac Om^0_bd] = K_ac f_bd + sw2 Cov(z_a z_c, psi_bd) / n, E[Om_ac Om_bd] = f_ac f_bd
    + sw2^2 Cov(psi_ac, psi_bd) / n: exactly V4 + V4_1 / n.  The theory's V4 and known V4_1 at layer 1 must equal
    it (no X_1, Y_1 after one layer), and Monte Carlo at n = 4 must agree, where V4 alone does not."""
    sw2, time = 1.4, 1.5
    dt = time
    res, known, _ = _theory(activation, KIN, sw2, sb2, time, 1)
    Czp, Cpp, Czz, F = _polar_covariances(activation, KIN)
    f = sw2 * F + sb2
    K = KIN
    order0 = (Czz + dt * sw2 * (Czp + np.einsum("abcd->cdab", Czp)) + (dt * sw2) ** 2 * Cpp
              + dt * (np.einsum("ac,bd->abcd", K, f) + np.einsum("ad,bc->abcd", K, f)
                      + np.einsum("bc,ad->abcd", K, f) + np.einsum("bd,ac->abcd", K, f))
              + dt ** 2 * (np.einsum("ac,bd->abcd", f, f) + np.einsum("ad,bc->abcd", f, f)))
    C = sw2 * Czp  # C[a, c, b, d] = Cov(z_a z_c, Om_bd)
    D = sw2 ** 2 * Cpp
    order1 = (dt * (np.einsum("acbd->abcd", C) + np.einsum("adbc->abcd", C) + np.einsum("bcad->abcd", C)
                    + np.einsum("bdac->abcd", C))
              + dt ** 2 * (np.einsum("acbd->abcd", D) + np.einsum("adbc->abcd", D)))
    V4_closed, V4_1_closed = four_index_to_pairs(order0), four_index_to_pairs(order1)
    tol = 1e-6 * np.max(np.abs(V4_closed))  # the tabulated moments of smooth activations reach ~1e-7 (docs)
    assert np.max(np.abs(res.V4[1] - V4_closed)) < tol
    assert np.max(np.abs(known.known_V4_1()[1] - V4_1_closed)) < tol
    assert np.max(np.abs(V4_1_closed)) > 0.1 * np.max(np.abs(V4_closed))  # the 1/n term matters
    n = 4
    s = _monte_carlo(activation, n, 1, 60000, seed=17, time=time, sw2=sw2, sb2=sb2, kin=KIN.tolist())
    z_next = (s["V4"][1] - V4_closed - V4_1_closed / n) / s["V4_se"][1]
    z_lead = (s["V4"][1] - V4_closed) / s["V4_se"][1]
    assert np.max(np.abs(z_next)) < 4.5, z_next
    assert np.max(np.abs(z_lead)) > 6.0, z_lead


def test_one_input_is_the_diagonal_sub_problem_of_two():
    """Input 0's column of h evolves on its own, so every (00, 00) quantity of a P = 2 problem is the P = 1
    problem with K_in = K_in[0, 0]: V4, the known terms of V4_1 (mean shift and contractions)."""
    sw2, sb2, time, depth = 1.2, 0.2, 3.0, 6
    res2, known2, _ = _theory("tanh", KIN, sw2, sb2, time, depth)
    res1, known1, _ = _theory("tanh", KIN[:1, :1], sw2, sb2, time, depth)
    assert np.allclose(res2.V4[:, 0, 0], res1.V4[:, 0, 0], rtol=1e-6)  # tables: ~1e-7
    assert np.allclose(known2.mean_shift[:, 0, 0], known1.mean_shift[:, 0, 0], rtol=1e-4)  # K1: 4e-5
    assert np.allclose(known2.contraction[:, 0, 0], known1.contraction[:, 0, 0], rtol=1e-5)
    a, b = pair_indices(2)
    assert (a[0], b[0]) == (0, 0)
