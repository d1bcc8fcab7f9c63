"""Exact O(1/n) theory of V4 and K1, at the network's own depth L or in continuous depth.

Derivation: docs/exact_theory.md.  The empirical measure of the n neurons is expanded to O(1/n) around
the *free process*, a Gaussian process z in R^P with Cov(z(q), z(t)) = K0[min(q, t)] that diffuses in the
mean field Om0 = f(K0).  Everything reduces to two-time covariances of that process
(`kernel_eft.theory.two_time`) and to Price derivatives DF, D2F of F on the mean path
(`kernel_eft.core.expectations`).

Two forms, one set of kernels:
- `exact_theory_discrete(..., depth=L)`: the layer recursion itself.  Every block is exactly Gaussian given
  the empirical measure, so the expansion holds layer by layer: free process on the layer grid with the
  discrete K0 (K0 <- K0 + dt f(K0)), linear feedback y <- (I + dt J_l) y + dt sw2 A_psi, and the K1 source
  from the exact one-layer smoothing identity, including its same-layer dt^2 term.  Compare Monte Carlo at
  depth L with this, at every L, with no extrapolation in L.
- `exact_theory(..., steps)`: the continuous-depth limit (ODEs for K0 and the propagator, trapezoid
  Volterra sums on a uniform grid), the L -> infinity limit of the discrete form at O(1/L).

All arrays are float64, matrices in pair coordinates (kernel_eft.core.pairs) internally.  `Exact.solve` (the
closure) returns the theory Dataset.
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass, field

import numpy as np

from kernel_eft.core.activations import Activation
from kernel_eft.core.expectations import f_matrix, kernel_derivatives
from kernel_eft.core.meanfield import mean_kernel_discrete
from kernel_eft.core.moments import UnsupportedActivation, check_tabulable
from kernel_eft.core.pairs import (four_index_to_pairs, from_pairs, n_pairs, pair_lookup, pair_multiplicity,
                                   pairs_to_four_index, to_pairs, wishart_v4)
from kernel_eft.core.quadrature import BlockRule
from kernel_eft.resources import available_memory, format_bytes
from kernel_eft.schema import COV, KERNEL, Variable
from kernel_eft.theory.closure import Closure, Option
from kernel_eft.theory.two_time import TwoTimeKernels, two_time_kernels
from kernel_eft.validation import InputError

Array = np.ndarray


# ----------------------------------------------------------------------------------------------
# Mean paths
# ----------------------------------------------------------------------------------------------


@dataclass
class MeanPath:
    times: Array  # (N,)
    K0: Array  # (N, P, P)
    DF: Array  # (N, p, p)
    D2F: Array  # (N, p, p, p)
    U: Array | None = None  # (N, p, p) continuum only: fundamental matrix of y' = J y, U(0) = I
    layers: Array | None = None  # (N,) discrete only

    def propagator(self) -> Array:
        """Continuum: Phi[i, j] = U_i U_j^{-1}, the propagator of y' = J y from t_j to t_i, (N, N, p, p)."""
        Uinv = np.linalg.inv(self.U)
        return np.einsum("ixy,jyz->ijxz", self.U, Uinv)


def _derivatives_on(act, K0: Array, dt: float | None = None) -> tuple[Array, Array]:
    """DF and D2F along the path; a non-finite value is reported with its layer (dt given) or index."""
    derivs = []
    for index, K in enumerate(K0):
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                derivs.append(kernel_derivatives(act, K, order=2))
        except FloatingPointError:
            where = f"layer {index} (t = {index * dt:.6g})" if dt is not None else f"time index {index}"
            raise FloatingPointError(f"non-finite derivative of F at {where}; the kernel overflowed float64: "
                                     "reduce sw2*T or the input norm") from None
    return np.stack([d.jacobian() for d in derivs]), np.stack([d.hessian() for d in derivs])


def mean_path(act, kin: Array, sw2: float, sb2: float, times: Array) -> MeanPath:
    """Continuum: solve dK0/dt = f(K0) and dU/dt = sw2 DF(K0) U to rtol 1e-12 and sample them on `times`."""
    from scipy.integrate import solve_ivp  # lazily: the CLI imports the closure registry to build its parser

    kin = np.asarray(kin, float)
    P = kin.shape[0]
    p = n_pairs(P)

    def rhs(_, state):
        K = from_pairs(state[:p], P)
        U = state[p:].reshape(p, p)
        J = sw2 * kernel_derivatives(act, K, order=1).jacobian()
        return np.concatenate([to_pairs(f_matrix(act, K, sw2, sb2)), (J @ U).ravel()])

    state0 = np.concatenate([to_pairs(kin), np.eye(p).ravel()])
    with np.errstate(over="ignore", invalid="ignore"):
        sol = solve_ivp(rhs, (times[0], times[-1]), state0, method="DOP853", t_eval=times, rtol=1e-12, atol=1e-13)
    if not sol.success or not np.all(np.isfinite(sol.y)):
        bad = np.flatnonzero(~np.all(np.isfinite(sol.y), axis=0))
        where = f"t = {sol.t[bad[0]]:.6g}" if bad.size else f"t <= {times[-1]:.6g}"
        raise FloatingPointError(f"mean-kernel ODE failed at {where} ({sol.message}); the kernel overflowed "
                                 "float64: reduce sw2*T or the input norm")
    K0 = from_pairs(sol.y[:p].T, P)
    U = sol.y[p:].T.reshape(-1, p, p)
    DF, D2F = _derivatives_on(act, K0)
    return MeanPath(np.asarray(times, float), K0, DF, D2F, U=U)


def mean_path_discrete(act, kin: Array, sw2: float, sb2: float, time: float, depth: int) -> MeanPath:
    """Layer grid: K0^{l+1} = K0^l + dt f(K0^l), l = 0..L-1, and DF, D2F at every layer."""
    dt = time / depth
    K0 = mean_kernel_discrete(act, kin, sw2, sb2, time, depth, check_finite=True)
    DF, D2F = _derivatives_on(act, K0, dt)
    layers = np.arange(depth + 1)
    return MeanPath(layers * dt, K0, DF, D2F, layers=layers)


def stein_psi_zz(K0: Array, DF: Array) -> Array:
    """Cov_{K}(psi_m, z_a z_b) = sum_cd K_ac K_bd <d_c d_d psi_m> = 2 (K dF_m K)_ab (Stein's lemma),
    with <d_c d_d psi_m> = 2 dF_m/dK_cd (independent entries) = 2 DF[m, cd] / mult(cd); (N, p, p)."""
    N, P, _ = K0.shape
    lut = pair_lookup(P)
    mult = pair_multiplicity(P)
    dfull = DF[:, :, lut] / mult[lut][None, None]  # (N, p, P, P)
    M = 2.0 * np.einsum("nac,nmcd,nbd->nmab", K0, dfull, K0)
    return to_pairs(M)


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------


@dataclass
class ExactResult:
    times: Array
    K0: Array  # (N, P, P)
    V4_free: Array  # (N, p, p) pair coordinates
    V4_cross: Array
    V4_feedback: Array
    B: Array  # (N, p): K1 source / sw2
    K1: Array  # (N, p)
    layers: Array | None = None
    info: dict = field(default_factory=dict)
    cov_gs: Array | None = None  # (N, p, p) discrete only: lim n Cov(G, S), [(ab), m] (the next order's X_0 / sw2)
    cov_ss: Array | None = None  # (N, p, p) discrete only: lim n Cov(S, S)
    DF: Array | None = None  # (N, p, p) discrete only: the Jacobian of F on the mean path (the next order's Sigma1)

    @property
    def V4(self) -> Array:
        return self.V4_free + self.V4_cross + self.V4_feedback

    def four_index(self, name: str) -> Array:
        P = self.K0.shape[-1]
        return pairs_to_four_index(getattr(self, name), P)

    def K1_matrix(self) -> Array:
        return from_pairs(self.K1, self.K0.shape[-1])


def _term13_rows(kernels: TwoTimeKernels, P: int):
    """Per combo k = (cd, ab): the pair cd (row of DF and of Q's first index), ab, and mult(cd)."""
    cd, ab = kernels.combo_arrays()
    return cd, ab, pair_multiplicity(P)[cd]


# ----------------------------------------------------------------------------------------------
# Discrete: the layer recursion (docs/exact_theory.md section 4)
# ----------------------------------------------------------------------------------------------


def assemble_discrete(path: MeanPath, kernels: TwoTimeKernels, sw2: float, dt: float,
                      same_layer: bool = True) -> ExactResult:
    """V4 (free, cross, feedback), B and K1 on the layer grid, by forward recursions over layers.

    same_layer: include the dt^2 same-layer term of the K1 source (the second-order term of the one-layer
    Gaussian smoothing); False gives the plain left-point sum of the continuum integrand (for validation)."""
    K0, DF, D2F = path.K0, path.DF, path.D2F
    N, P, _ = K0.shape
    p = n_pairs(P)
    Cpp, Q = kernels.Cpp, kernels.Q
    nk = Q.shape[-1]
    cd, ab_of, mult_cd = _term13_rows(kernels, P)
    eye = np.eye(p)
    step = eye + dt * sw2 * DF  # (N, p, p): I + dt J_l

    V4_free = four_index_to_pairs(np.stack([wishart_v4(K) for K in K0]))
    Cst = stein_psi_zz(K0, DF)
    X = np.zeros((N, p, p))  # E[y^l A_hh^l^T]
    Y = np.zeros((N, p, p))  # Cov(y^l)
    EyA = np.zeros((N, p, p))  # running E[y^l A_psi^t^T] over later t (index t), at the current l
    EyQ = np.zeros((N, p, nk))  # running E[y^l A_{d d psi}^t] (index t, combo k), at the current l
    M_acc = np.zeros((N, p, p))  # sum_{l' < l} (E[s y^T] + (dt/2) sw2 Cov(s)) at layer l'
    cov_gs = np.zeros((N, p, p))  # Cov(g^l, s^l), g = A_hh + y, s = A_psi + DF y (the next order needs it)
    cov_ss = np.zeros((N, p, p))
    B13 = np.zeros((N, p))  # sum_{l < t} term13[l, t]
    Msum = np.zeros((p, p))
    for layer in range(N):
        EyA_ll = EyA[layer]
        Esy = EyA_ll.T + DF[layer] @ Y[layer]
        cov_gs[layer] = Cst[layer].T + X[layer].T @ DF[layer].T + EyA_ll + Y[layer] @ DF[layer].T
        cov_ss[layer] = (Cpp[layer, layer] + DF[layer] @ EyA_ll + EyA_ll.T @ DF[layer].T
                         + DF[layer] @ Y[layer] @ DF[layer].T)
        if same_layer:
            cov_s = (Cpp[layer, layer] + DF[layer] @ EyA_ll + EyA_ll.T @ DF[layer].T
                     + DF[layer] @ Y[layer] @ DF[layer].T)
            Esy = Esy + 0.5 * dt * sw2 * cov_s
        M_acc[layer] = Msum
        if layer == N - 1:
            break
        Msum = Msum + Esy
        # term13[l, t] for t > l: sum_k mult(cd_k) (Q[l,t,cd_k,k] + DF[l][cd_k,:] . E[y^l A_Qk^t])
        later = slice(layer + 1, N)
        direct = Q[layer, later][:, cd, np.arange(nk)]  # (nt, nk)
        fb = np.einsum("ky,tyk->tk", DF[layer][cd], EyQ[later])
        contrib = (direct + fb) * mult_cd
        _scatter_add(B13, later, ab_of, contrib)
        # advance the feedback y^l -> y^{l+1} = step_l y^l + dt sw2 A_psi^l
        S = step[layer]
        X[layer + 1] = S @ X[layer] + dt * sw2 * Cst[layer]
        Y[layer + 1] = (S @ Y[layer] @ S.T + dt * sw2 * (S @ EyA_ll + EyA_ll.T @ S.T)
                        + (dt * sw2) ** 2 * Cpp[layer, layer])
        EyA[later] = np.einsum("xy,tyz->txz", S, EyA[later]) + dt * sw2 * Cpp[layer, later]
        EyQ[later] = np.einsum("xy,tyk->txk", S, EyQ[later]) + dt * sw2 * Q[layer, later]
    # B^t = (sw2/2) dt sum_{l<t} [term13 + 2 D2F(t) : M_l]
    term24 = 2.0 * np.einsum("tbxy,txy->tb", D2F, M_acc)
    B = 0.5 * sw2 * dt * (B13 + term24)
    B[0] = 0.0
    K1 = np.zeros((N, p))
    for layer in range(N - 1):
        K1[layer + 1] = step[layer] @ K1[layer] + dt * sw2 * B[layer]
    V4_cross = X + np.swapaxes(X, 1, 2)
    return ExactResult(path.times, K0, V4_free, V4_cross, Y, B, K1, layers=path.layers, cov_gs=cov_gs,
                       cov_ss=cov_ss, DF=DF)


def _scatter_add(target: Array, rows: slice, cols: Array, values: Array) -> None:
    """target[rows][:, cols[k]] += values[:, k] for every k (several k can share one column)."""
    block = target[rows]
    for k, col in enumerate(cols):
        block[:, col] += values[:, k]
    target[rows] = block


# ----------------------------------------------------------------------------------------------
# Continuum: trapezoid Volterra sums (docs/exact_theory.md section 3)
# ----------------------------------------------------------------------------------------------


def volterra_weights(times: Array) -> Array:
    """W[i, j]: trapezoid weights of int_0^{t_i} g(t_j) dt on a uniform grid (zero for j > i)."""
    N = len(times)
    h = np.diff(times)
    if N > 1 and not np.allclose(h, h[0], rtol=1e-9, atol=0):
        raise ValueError("exact closure needs a uniform time grid")
    W = np.zeros((N, N))
    for i in range(1, N):
        W[i, : i + 1] = h[0]
        W[i, 0] = W[i, i] = 0.5 * h[0]
    return W


def assemble_continuous(path: MeanPath, kernels: TwoTimeKernels, sw2: float) -> ExactResult:
    """V4 (free, cross, feedback), B and K1 from the kernels by trapezoid Volterra sums."""
    K0, DF, D2F = path.K0, path.DF, path.D2F
    N, P, _ = K0.shape
    Cpp, Q = kernels.Cpp, kernels.Q
    nk = Q.shape[-1]
    cd, ab_of, mult_cd = _term13_rows(kernels, P)
    W = volterra_weights(path.times)
    Phi = path.propagator()  # (N, N, p, p)

    V4_free = four_index_to_pairs(np.stack([wishart_v4(K) for K in K0]))
    Cst = stein_psi_zz(K0, DF)  # Cov(psi_m(z(r)), (zz^T)_ab(z(t))) for r <= t
    cross = sw2 * np.einsum("ij,ijxy,jyz->ixz", W, Phi, Cst)
    V4_cross = cross + np.swapaxes(cross, 1, 2)

    # Full two-time psi-psi covariance for any order of the times.
    Cfull = Cpp + np.swapaxes(np.swapaxes(Cpp, 0, 1), 2, 3) * (1.0 - np.eye(N))[:, :, None, None]
    Mfb = np.einsum("ij,ijxy,jkyz->ikxz", W, Phi, Cfull)  # int dr1 Phi(t_i, r1) C(r1, r2=t_k)
    V4_feedback = sw2 ** 2 * np.einsum("ik,ikxz,ikwz->ixw", W, Mfb, Phi)

    # E[y(r) A_psi(r)^T] and E[s(r) y(r)^T] = E[A_psi y^T] + DF E[y y^T]
    Ycross = sw2 * np.einsum("rq,rqxy,qryz->rxz", W, Phi, Cpp)
    Esy = np.swapaxes(Ycross, 1, 2) + np.einsum("rxy,ryz->rxz", DF, V4_feedback)

    # term13[r, t, k] = mult(cd_k) [Q(r,t)[cd_k, k] + sw2 int_0^r (DF(r) Phi(r,q))[cd_k, :] . Q(q,t)[:, k] dq]
    R = np.einsum("rxy,rqyz->rqxz", DF, Phi)[:, :, cd, :]  # (r, q, k, y)
    fb = sw2 * np.einsum("rq,rqky,qtyk->rtk", W, R, Q)
    direct = Q[:, :, cd, np.arange(nk)]  # (r, t, k)
    term13k = (direct + fb) * mult_cd
    p = n_pairs(P)
    term13 = np.zeros((N, N, p))
    for k in range(nk):
        term13[:, :, ab_of[k]] += term13k[:, :, k]
    term24 = 2.0 * np.einsum("tbxy,rxy->rtb", D2F, Esy)
    integrand = term13 + term24  # (r, t, ab), valid for r <= t
    B = 0.5 * sw2 * np.einsum("tr,rtb->tb", W, integrand)
    K1 = sw2 * np.einsum("ij,ijxy,jy->ix", W, Phi, B)
    return ExactResult(path.times, K0, V4_free, V4_cross, V4_feedback, B, K1)


# ----------------------------------------------------------------------------------------------
# Drivers
# ----------------------------------------------------------------------------------------------


def check_exact_inputs(act: Activation, kin) -> None:
    """Raise UnsupportedActivation / ValueError for inputs the exact theory cannot integrate."""
    if any(c != 0.0 for c, _ in act.kinks):
        raise UnsupportedActivation(f"activation {act.name!r} has a kink away from 0; the exact theory's "
                                    "quadratures split at 0 only")
    if act.moments is None:
        check_tabulable(act)  # the tables' own check, before any compute
    kin = np.asarray(kin, float)
    if np.linalg.eigvalsh(kin)[0] <= 1e-10 * np.max(np.abs(kin)):
        raise ValueError("the exact theory conditions on pairs of inputs and needs a positive definite K_in "
                         "(collinear inputs: drop the duplicate input)")


def moments_for_path(act, K0: Array, rule: BlockRule):
    """The moment provider, with tables (smooth activations) covering every mean and scale the run uses."""
    diag = np.max(np.diagonal(K0, axis1=-2, axis2=-1))
    scale = np.sqrt(diag)
    return act.gaussian_moments(mu_max=(rule.radius + 8.5) * scale * 1.05 + 1.0, s_max=1.05 * scale + 0.1)


def check_finite(res: ExactResult) -> None:
    """Report the first time (and layer) at which V4 or K1 is not finite."""
    for name in ("V4_free", "V4_cross", "V4_feedback", "K1", "B"):
        values = getattr(res, name)
        bad = ~np.all(np.isfinite(values.reshape(values.shape[0], -1)), axis=1)
        if np.any(bad):
            i = int(np.argmax(bad))
            where = (f"layer {int(res.layers[i])} (t = {res.times[i]:.6g})" if res.layers is not None
                     else f"t = {res.times[i]:.6g}")
            raise FloatingPointError(f"non-finite {name} at {where}; the kernel overflowed float64: reduce sw2*T "
                                     "or the input norm")


def exact_theory_discrete(act: Activation, kin, sw2: float, sb2: float, time: float, depth: int,
                          rule: BlockRule = BlockRule(), same_layer: bool = True, progress=None) -> ExactResult:
    """The exact O(1/n) theory of the layer recursion at depth L = depth, every layer 0..L (act: the resolved
    Activation object; names are resolved once at the edge, kernel_eft.api)."""
    check_exact_inputs(act, kin)
    started = _time.perf_counter()
    path = mean_path_discrete(act, kin, sw2, sb2, time, depth)
    mom = moments_for_path(act, path.K0, rule)
    kernels = two_time_kernels(mom, path.K0, rule, progress=progress)
    with np.errstate(over="ignore", invalid="ignore"):
        res = assemble_discrete(path, kernels, sw2, time / depth, same_layer=same_layer)
    check_finite(res)
    res.info = {"moments": mom.describe(), "quadrature": rule.describe(),
                "wall_seconds": _time.perf_counter() - started}
    return res


def exact_theory(act: Activation, kin, sw2: float, sb2: float, time: float, steps: int,
                 rule: BlockRule = BlockRule(), progress=None) -> ExactResult:
    """The continuous-depth exact O(1/n) theory on the uniform grid t_j = j T / steps, j = 0..steps."""
    check_exact_inputs(act, kin)
    started = _time.perf_counter()
    times = np.linspace(0.0, time, steps + 1)
    path = mean_path(act, kin, sw2, sb2, times)
    mom = moments_for_path(act, path.K0, rule)
    kernels = two_time_kernels(mom, path.K0, rule, progress=progress)
    with np.errstate(over="ignore", invalid="ignore"):
        res = assemble_continuous(path, kernels, sw2)
    check_finite(res)
    res.info = {"moments": mom.describe(), "quadrature": rule.describe(),
                "wall_seconds": _time.perf_counter() - started}
    return res


_QUADRATURE_FIELDS = ("V4_cross", "V4_feedback", "B", "K1")  # the Volterra sums; K0 and V4_free are exact


def richardson(fine: ExactResult, coarse: ExactResult) -> ExactResult:
    """Remove the O(h^2) trapezoid error: X + (X - X_2h)/3 on the fine grid.  The correction is computed at
    the common times and carried to the others by a cubic spline in t (it is a smooth function of t)."""
    from scipy.interpolate import CubicSpline, interp1d

    out = ExactResult(fine.times, fine.K0, fine.V4_free, fine.V4_cross.copy(), fine.V4_feedback.copy(),
                      fine.B.copy(), fine.K1.copy(), info=dict(fine.info))
    for name in _QUADRATURE_FIELDS:
        X, Xc = getattr(fine, name), getattr(coarse, name)
        correction = (X[::2] - Xc) / 3.0
        spline = CubicSpline if coarse.times.size >= 4 else (lambda x, y, axis: interp1d(x, y, axis=axis))
        full = spline(coarse.times, correction, axis=0)(fine.times)
        full[::2] = correction
        setattr(out, name, X + full)
    return out


def exact_theory_extrapolated(activation, kin, sw2: float, sb2: float, time: float, steps: int,
                              rule: BlockRule = BlockRule(), progress=None) -> tuple[ExactResult, dict]:
    """The continuous theory on `steps` steps (divisible by 4), Richardson-extrapolated with `steps`/2, and its
    accuracy measured by refinement:

    time_step: relative change of max|V4|, max|K1| between the extrapolations (steps, steps/2) and
      (steps/2, steps/4): the error of the coarser one, an upper bound for the result's (the trapezoid error
      is O(h^2) with measured order 2.00, tests/test_exact.py);
    gaussian: the same between the Gaussian rule and the 1.5x refined rule, on the steps/4 grid.
    """
    if steps % 4 or steps < 8:
        raise ValueError(f"the extrapolated continuum needs a number of steps divisible by 4 and >= 8, got {steps}")
    fine = exact_theory(activation, kin, sw2, sb2, time, steps, rule, progress=progress)
    mid = exact_theory(activation, kin, sw2, sb2, time, steps // 2, rule)
    coarse = exact_theory(activation, kin, sw2, sb2, time, steps // 4, rule)
    refined = exact_theory(activation, kin, sw2, sb2, time, steps // 4, rule.refined())
    result = richardson(fine, mid)
    result.info["wall_seconds"] = sum(r.info["wall_seconds"] for r in (fine, mid, coarse, refined))
    time_err = relative_change(richardson(mid, coarse), result, 1, 2)
    gauss_err = relative_change(coarse, refined)
    accuracy = {"time_step_error_V4": time_err["V4"], "time_step_error_K1": time_err["K1"],
                "gaussian_error_V4": gauss_err["V4"], "gaussian_error_K1": gauss_err["K1"],
                "relative_accuracy": max(*time_err.values(), *gauss_err.values())}
    return result, accuracy


def relative_change(a: ExactResult, b: ExactResult, stride_a: int = 1, stride_b: int = 1) -> dict:
    """max |X_a - X_b| / max |X_b| for X = V4, K1 on common times (every stride-th point)."""
    def rel(x, y):
        return float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-300))

    return {"V4": rel(a.V4[::stride_a], b.V4[::stride_b]), "K1": rel(a.K1[::stride_a], b.K1[::stride_b])}


# ----------------------------------------------------------------------------------------------
# The closure
# ----------------------------------------------------------------------------------------------


def default_rule(act: Activation) -> BlockRule:
    """The Gaussian rule of the closure.  Closed-form moments (relu, linear: piecewise polynomial along rays)
    converge faster: 10 x 10 per sector reaches 1e-8 on V4 and 2e-6 on K1; tabulated smooth activations
    use 12 x 12 (1e-7 on V4, 4e-5 on K1), measured against refined rules (docs/exact_theory.md)."""
    return BlockRule(10, 10, 32) if act.moments is not None else BlockRule(12, 12, 32)


# Wall time of the V4_1 grid for one input (next_order_one_input) = NEXT_ORDER_SECONDS x grid_points^3 x depth,
# fitted to its measured time on this project's machine (one core of two, shared): relu, kin 1, sw2 1, sb2 0, T 1 at
# L = 4, 8, 12 (121, 171, 211 grid points) took 0.67-0.94, 4.3-4.9 and 13.1-13.2 s, i.e. 1.13e-7, 1.15e-7 and
# 1.17e-7 s per points^3 x L (points^3, not points^4: the time per point^4 fell by 1.7x from L = 4 to 12); checked
# on relu T = 2, L = 8 (153 points: 3.1 s measured, 3.3 s predicted) and tanh sw2 1.5, L = 8 (159: 3.1, 3.7).
NEXT_ORDER_SECONDS = 1.15e-7


def next_order_grid_points(act: Activation, kin, sw2: float, sb2: float, time: float, depth: int) -> tuple[int, bool]:
    """(grid points of the V4_1 hierarchy at this point, whether next_order_one_input computes it): not beyond
    MAX_GRID_POINTS points or MAX_GRID_WORK."""
    from kernel_eft.theory import next_order_grid as nog

    points = nog.automatic_grid_points(act, kin, sw2, sb2, time, depth)
    return points, points <= nog.MAX_GRID_POINTS and points ** 4 * depth <= nog.MAX_GRID_WORK


# Wall time of the V4_1 lattice for two or more inputs (next_order_inputs) = LATTICE_SECONDS x its work, the work
# being sum over layers of N_l^3 x (LATTICE_PRODUCTS + 2 p (L - 1 - l)) (the N x N products of one layer and of the
# third-cumulant chain it carries; N_l: lattice l's points), fitted on this project's machine (two cores, quiet) to
# relu P = 2, L = 8 at two points (833 and 887 points: 11.9 and 12.1 s measured, work 3.3e10 and 3.7e10; the
# same point at 0.9 x the step std, 1 245 points, took 41.9 s: N^3 holds); docs/exact_theory.md section 7.3.
# Computed by default up to MAX_LATTICE_SECONDS; beyond, the theory file says why V4_1 is absent and
# kernel_eft.theory.next_order_lattice can be called directly.
LATTICE_SECONDS = 6.0e-11  # conservative since the chain's update was regrouped (relu L = 8: 58.3 -> 51.0 s)
LATTICE_PRODUCTS = 33
MAX_LATTICE_SECONDS = 120.0


def lattice_estimate(act: Activation, kin, sw2: float, sb2: float, time: float, depth: int,
                     limit: float = np.inf, spacing_per_step_std: float | None = None) -> tuple[float, int | None]:
    """(estimated wall seconds, peak bytes) of the V4_1 lattice hierarchy at P >= 2, from one walk of the lattices'
    sizes: LATTICE_SECONDS x its work, and (55 + L + 2 p L) N_max^2 floats (transition derivatives and
    temporaries, the L linear responses, the third-cumulant chain twice during its update).  Where a lower bound
    from layer 0 already exceeds `limit`: (that bound, None).  spacing_per_step_std: the lattice's (default: the
    module's)."""
    from kernel_eft.theory import next_order_lattice as nol

    spacing = nol.SPACING_PER_STEP_STD if spacing_per_step_std is None else float(spacing_per_step_std)
    p = n_pairs(np.asarray(kin).shape[-1])
    # a lower bound from layer 0 alone first (one f call; K0 and the step grow together, so N_l >~ N_0 / 2): deep
    # networks are rejected without walking the mean path
    first = nol.lattice_sizes(act, kin, sw2, sb2, time / depth, 1, spacing)[0]  # layer 0 of a net of step dt
    bound = LATTICE_SECONDS * (first / 2) ** 3 * sum(LATTICE_PRODUCTS + 2 * p * (depth - 1 - l) for l in range(depth))
    if bound > limit:
        return bound, None
    sizes = nol.lattice_sizes(act, kin, sw2, sb2, time, depth, spacing)
    work = sum(float(N) ** 3 * (LATTICE_PRODUCTS + 2 * p * (depth - 1 - layer)) for layer, N in enumerate(sizes[:-1]))
    return LATTICE_SECONDS * work, int(8 * (55 + depth + 2 * p * depth) * float(np.max(sizes)) ** 2)


def next_order_lattice_seconds(act: Activation, kin, sw2: float, sb2: float, time: float, depth: int,
                               limit: float = np.inf) -> float:
    """Estimated wall seconds of the V4_1 lattice hierarchy at P >= 2 (lattice_estimate); a lower bound where
    that already exceeds `limit`."""
    return lattice_estimate(act, kin, sw2, sb2, time, depth, limit)[0]


# The continuum's V4_1: the layer form's at these depths, Richardson-extrapolated in 1/L (docs/exact_theory.md 7.5)
CONTINUUM_DEPTHS = (16, 32, 64, 128)


@dataclass(frozen=True)
class NextOrderPlan:
    """How V4_1 is computed at a point, or why not, and what it costs: method "grid" (one input, section 7.1),
    "lattice" (a layer form by the lattice, 7.3), "continuum" (the lattice at CONTINUUM_DEPTHS, 7.5), or None with
    `reason`; seconds (estimated wall time) and memory (bytes, beyond the O(1/n) theory)."""

    method: str | None
    seconds: float = 0.0
    memory: int = 0
    reason: str = ""
    grid_points: int = 0


def next_order_plan(act: Activation, kin, sw2: float, sb2: float, time: float, depth,
                    limit: float = MAX_LATTICE_SECONDS) -> NextOrderPlan:
    """V4_1's method at this point within `limit` estimated seconds (the closure's option next_order_seconds):
    one input at a depth: the grid where it is within its limits and `limit`, else the lattice; two inputs at a
    depth: the lattice; the continuum (depth None): the lattice at CONTINUUM_DEPTHS.  None beyond `limit`, for
    P >= 3 and where the mean path itself fails (the solve then says why)."""
    kin = np.atleast_2d(np.asarray(kin, dtype=np.float64))
    P = kin.shape[-1]
    if limit <= 0:
        return NextOrderPlan(None, reason="not computed: next_order_seconds = 0")
    if P > 2:
        return NextOrderPlan(None, reason=f"not computed: the hierarchy is implemented for P <= 2 inputs, not {P} "
                                          "(a lattice in R^3 is out of reach)")
    try:
        if depth is None:
            seconds, memory = 0.0, 0
            for L in CONTINUUM_DEPTHS:
                cost, peak = lattice_estimate(act, kin, sw2, sb2, time, L, limit - seconds)
                seconds, memory = seconds + cost, max(memory, peak or 0)
                if seconds > limit:
                    return NextOrderPlan(None, seconds, reason=(
                        f"not computed: the continuum's V4_1 needs the lattice hierarchy at L = "
                        f"{', '.join(map(str, CONTINUUM_DEPTHS))}, {seconds:.3g} s or more (limit "
                        f"next_order_seconds = {limit:g} s)"))
            return NextOrderPlan("continuum", seconds, memory)
        L, why_not_grid = int(depth), ""
        if P == 1:
            points, computed = next_order_grid_points(act, kin, sw2, sb2, time, L)
            seconds = NEXT_ORDER_SECONDS * points ** 3 * L
            if computed and seconds <= limit:
                return NextOrderPlan("grid", seconds, 4 * 8 * points ** 3, grid_points=points)
            why_not_grid = (f"the grid would need {points} points; " if not computed else
                            f"the grid would take {seconds:.3g} s; ")
        seconds, memory = lattice_estimate(act, kin, sw2, sb2, time, L, limit)
        if seconds > limit:
            return NextOrderPlan(None, seconds, reason=(
                f"not computed: {why_not_grid}the lattice hierarchy would take {seconds:.3g} s or more at depth {L} "
                f"(limit next_order_seconds = {limit:g} s); raise it, or call "
                "kernel_eft.theory.next_order_lattice.v4_next_order_lattice directly"))
        return NextOrderPlan("lattice", seconds, memory)
    except (ValueError, ArithmeticError, FloatingPointError, np.linalg.LinAlgError) as exc:
        return NextOrderPlan(None, reason=f"not computed: {exc}")


def next_order_seconds(act: Activation, kin, sw2: float, sb2: float, time: float, depth,
                       limit: float = MAX_LATTICE_SECONDS) -> float:
    """Estimated wall seconds of V4_1 (next_order_plan): 0 where it is not computed."""
    plan = next_order_plan(act, kin, sw2, sb2, time, depth, limit)
    return plan.seconds if plan.method else 0.0


# The lattice's own accuracy check at a depth: its V4 (the same hierarchy at order 0) against the exact theory's,
# max over layers >= 1 of |difference| / sqrt(V4[m,m] V4[m',m']).  Where it exceeds LATTICE_V4_TOLERANCE the lattice
# is refined (spacing x LATTICE_REFINEMENT, about 1.8x the points for P = 2) while the estimated time fits
# next_order_seconds and the next lattice's memory fits what the process may still allocate.  Measured
# (docs/exact_theory.md section 7.3): V4_1's relative error is 1-21x the check (one input, tanh sw2 3, T 5, L 8:
# check 4.2e-3 and V4_1 off by 7.7%; refined once, 4.3e-4 and 0.9%), so the tolerance keeps V4_1 / n within ~1e-3
# of V4 at n >= 16 where relu's V4_1 / V4 reaches 15 and tanh's 0.25.
LATTICE_V4_TOLERANCE = 5e-4
LATTICE_REFINEMENT = 0.75


def lattice_v4_check(V4_lattice: Array, V4: Array) -> float:
    """max over layers >= 1 and entries of |V4_lattice - V4| / sqrt(V4[m,m] V4[m',m']) (pair coordinates)."""
    V4_lattice, V4 = np.asarray(V4_lattice, float), np.asarray(V4, float)
    diag = np.abs(np.einsum("lmm->lm", V4[1:]))
    scale = np.sqrt(diag[:, :, None] * diag[:, None, :])
    return float(np.max(np.abs(V4_lattice[1:] - V4[1:]) / np.where(scale > 0, scale, 1.0)))


def next_order_inputs(act: Activation, kin, sw2: float, sb2: float, time: float, depth: int, V4: Array | None = None,
                      limit: float = np.inf, progress=None):
    """V4_1 of a layer form by the lattice hierarchy (kernel_eft.theory.next_order_lattice, docs/exact_theory.md
    section 7.3), P <= 2: (V4_1 as (L+1, P, P, P, P), file attributes).  The caller checks the cost
    (next_order_plan; deep networks: the points grow like L, the work like L^5).  V4: the exact theory's (pair
    coordinates, (L+1, p, p)); given, the lattice is checked against it and refined (LATTICE_V4_TOLERANCE) while
    the estimated total stays within `limit` seconds.  progress: the job's progress(done, total); where it has
    them, its stage(what, unit) and note(message) announce each lattice and each refinement."""
    from kernel_eft.theory import next_order_lattice as nol

    stage, note = getattr(progress, "stage", None), getattr(progress, "note", None)

    def lattice(spacing, what):
        if stage is not None:
            stage(what, "layers")
        layers = None if progress is None else (lambda layer, total, seconds: progress(layer, total))
        return nol.v4_next_order_lattice(act, kin, sw2, sb2, time, depth, spacing_per_step_std=spacing,
                                         progress=layers)

    started = _time.monotonic()
    spacing = nol.SPACING_PER_STEP_STD
    lat = lattice(spacing, "V4_1 lattice")
    refined, change, why = 0, None, ""
    check = None if V4 is None else lattice_v4_check(lat.V4, V4)
    while check is not None and check > LATTICE_V4_TOLERANCE:
        finer = spacing * LATTICE_REFINEMENT
        cost, memory = lattice_estimate(act, kin, sw2, sb2, time, depth, limit, spacing_per_step_std=finer)
        available, source = available_memory()
        if _time.monotonic() - started + cost > limit:
            why = (f"; not refined further: the next lattice (spacing {finer:.3g} step std) would take about "
                   f"{cost:.3g} s more (limit next_order_seconds = {limit:g} s)")
        elif available is not None and memory is not None and memory > available:
            why = (f"; not refined further: the next lattice (spacing {finer:.3g} step std) would need about "
                   f"{format_bytes(memory)}, more than the {format_bytes(available)} left by {source}")
        said = (f"V4_1: the lattice's V4 is {check:.2g} of its scale off the exact theory's (tolerance "
                f"{LATTICE_V4_TOLERANCE:g})")
        if why:
            if note is not None:
                note(said + why)
            break
        if note is not None:
            note(f"{said}: refining the spacing to {finer:.3g} step std, about {cost:.2g} s")
        fine = lattice(finer, f"V4_1 lattice refined x{LATTICE_REFINEMENT ** (refined + 1):.3g}")
        change = float(np.max(np.abs(fine.V4_1 - lat.V4_1))) / (float(np.max(np.abs(fine.V4_1))) or 1.0)
        lat, spacing, refined, check = fine, finer, refined + 1, lattice_v4_check(fine.V4, V4)
    attrs = {"V4_1_method": ("cumulant hierarchy of the empirical measure on a lattice in R^P per layer, third "
                             "cumulant along the back-propagated psi vectors (docs/exact_theory.md section 7.3); "
                             "error O(spacing^4) for a kinked phi, spectral for a smooth one"),
             "V4_1_grid_points": int(lat.info["points"]),
             "V4_1_spacing_per_step_std": spacing, "V4_1_radius_sd": nol.RADIUS_SD,
             "V4_1_seconds": round(_time.monotonic() - started, 2)}
    if check is not None:
        attrs["V4_1_V4_check"] = check
        attrs["V4_1_V4_check_method"] = (
            "max over layers >= 1 of |the lattice's V4 - this file's V4| / sqrt(V4[m,m] V4[m',m']): the lattice "
            f"checked where the answer is known; refined (spacing x {LATTICE_REFINEMENT}) while above "
            f"{LATTICE_V4_TOLERANCE:g}, within next_order_seconds and the memory left: {refined} refinement(s){why}")
    if change is not None:
        attrs["V4_1_accuracy"] = change
        attrs["V4_1_accuracy_method"] = ("max |change of V4_1| against the last coarser lattice, relative to "
                                         "max |V4_1| (an upper bound where the refinement converges)")
    return lat.four_index("V4_1"), attrs


def next_order_one_input(act: Activation, kin, sw2: float, sb2: float, time: float, depth: int,
                         limit: float = MAX_LATTICE_SECONDS):
    """V4_1 (1/n coefficient of n Cov(G)) for one input on the layer grid, by the grid cumulant hierarchy
    (kernel_eft.theory.next_order_grid, docs/exact_theory.md section 7.1) on the automatic grid; returns (V4_1 as
    (L+1, 1, 1, 1, 1) or None, file attributes).  None when the grid would need more than MAX_GRID_POINTS points
    or more work than MAX_GRID_WORK (deep networks: the one-layer step shrinks like sqrt(T/L), the cost grows
    like L^3), or more than `limit` seconds; next_order_plan then takes the lattice."""
    from kernel_eft.theory import next_order_grid as nog

    points, computed = next_order_grid_points(act, kin, sw2, sb2, time, depth)
    if not computed:
        return None, {"V4_1_method": f"not computed: the grid hierarchy would need {points} grid points at depth "
                                     f"{depth} (limits: {nog.MAX_GRID_POINTS} points, points^4 x depth <= "
                                     f"{nog.MAX_GRID_WORK:.3g}); call kernel_eft.theory.next_order_grid directly"}
    seconds = NEXT_ORDER_SECONDS * points ** 3 * depth
    if seconds > limit:
        return None, {"V4_1_method": f"not computed: the grid hierarchy would take about {seconds:.3g} s (limit "
                                     f"next_order_seconds = {limit:g} s)"}
    grid = nog.v4_next_order_grid(act, kin, sw2, sb2, time, depth, grid_points=points)
    attrs = {"V4_1_method": ("cumulant hierarchy of the empirical measure on a uniform spatial grid (docs/"
                             "exact_theory.md section 7.1); error O(spacing^4) for a kinked phi, spectral for a "
                             "smooth one"),
             "V4_1_grid_points": int(grid.info["grid_points"]), "V4_1_grid_spacing": grid.info["spacing"],
             "V4_1_min_step_std": grid.info["min_step_std"]}
    return grid.V4_1.reshape(-1, 1, 1, 1, 1), attrs


# Richardson weights for layer forms at L, 2L, 4L (, 8L): v_L = v + a/L + b/L^2 (+ c/L^3) + ... -> v
RICHARDSON_WEIGHTS = {3: np.array([1.0, -6.0, 8.0]) / 3.0, 4: np.array([-1.0, 14.0, -56.0, 64.0]) / 21.0}


def richardson_in_depth(values: dict) -> Array:
    """The L -> infinity limit of values {L: v, 2L: v, ...} (3 or 4 doubling depths, common times), removing the
    1/L, 1/L^2 (and 1/L^3) terms."""
    depths = sorted(values)
    return sum(w * values[L] for w, L in zip(RICHARDSON_WEIGHTS[len(depths)], depths))


def next_order_continuum(act: Activation, kin, sw2: float, sb2: float, time: float, times, V4_continuum):
    """The continuum's V4_1 (docs/exact_theory.md section 7.5): the lattice hierarchy's layer form at
    CONTINUUM_DEPTHS (16, 32, 64, 128), Richardson-extrapolated in 1/L to third order on the times of L = 32
    (L = 16 splined onto them in t: its weight is 1/21), then a cubic spline in t onto `times`.  Its accuracy: the
    change against the second-order extrapolation from L = 32, 64, 128; its check: the same extrapolation of the
    lattices' V4 against the exact continuum's V4_continuum ((N, p, p) on `times`).  Returns (V4_1 as
    (N, P, P, P, P), file attributes)."""
    from scipy.interpolate import CubicSpline

    from kernel_eft.theory import next_order_lattice as nol

    started = _time.monotonic()
    kin = np.atleast_2d(np.asarray(kin, dtype=np.float64))
    P = kin.shape[-1]
    base = CONTINUUM_DEPTHS[1]
    grid = np.linspace(0.0, float(time), base + 1)
    V4_1, V4, points = {}, {}, 0
    for L in CONTINUUM_DEPTHS:
        lat = nol.v4_next_order_lattice(act, kin, sw2, sb2, time, L)
        points = max(points, int(lat.info["points"]))
        for out, values in ((V4_1, lat.V4_1), (V4, lat.V4)):  # (L+1, p, p) on the times k T / L
            values = np.asarray(values)
            out[L] = (values[:: L // base] if L >= base else
                      CubicSpline(np.linspace(0.0, float(time), L + 1), values, axis=0)(grid))
    limit = richardson_in_depth(V4_1)
    scale = float(np.max(np.abs(limit))) or 1.0
    accuracy = float(np.max(np.abs(limit - richardson_in_depth({L: V4_1[L] for L in CONTINUUM_DEPTHS[1:]})))) / scale
    times = np.asarray(times, dtype=np.float64)
    V4_1_on_times = CubicSpline(grid, limit, axis=0)(times)
    V4_limit = CubicSpline(grid, richardson_in_depth(V4), axis=0)(times)
    V4_check = float(np.max(np.abs(V4_limit - V4_continuum))) / float(np.max(np.abs(V4_continuum)))
    depths = ", ".join(map(str, CONTINUUM_DEPTHS))
    attrs = {"V4_1_method": ("the lattice hierarchy's layer form (docs/exact_theory.md section 7.3) at L = "
                             f"{depths}, Richardson-extrapolated in 1/L to third order ((64 v_8L - 56 v_4L + 14 v_2L - "
                             f"v_L)/21) on the {base + 1} times of L = {base}, then a cubic spline in t "
                             "(docs/exact_theory.md section 7.5)"),
             "V4_1_accuracy": accuracy,
             "V4_1_accuracy_method": ("max |change| against the second-order extrapolation from L = "
                                      f"{', '.join(map(str, CONTINUUM_DEPTHS[1:]))}, relative to max |V4_1| (a "
                                      "conservative estimate)"),
             "V4_1_V4_check": V4_check,
             "V4_1_V4_check_method": ("max |the same extrapolation of the lattices' V4 - this file's V4| relative to "
                                      "max |V4|: the limit checked where it is known"),
             "V4_1_grid_points": points, "V4_1_seconds": round(_time.monotonic() - started, 2)}
    return pairs_to_four_index(V4_1_on_times, P), attrs


def identity_fields(res: ExactResult, act: Activation, sw2: float, sb2: float, dt: float, V4_1: Array) -> dict:
    """What the diagnostics need to split each width's n (V4(n) - V4) by the exact one-block identity
    (kernel_eft.diagnose.identity): the identity's order-0 inputs on the layer grid (S_mean = E phi phi^T at K0,
    cov_GS, cov_SS at n -> infinity) and V4_1's three parts, predicted (theory.next_order: the mean shift and
    the contractions are known; the transport, the X_1, Y_1 part, is V4_1 minus both).  Four-index arrays."""
    from kernel_eft.theory.next_order import known_terms

    P = res.K0.shape[-1]
    S0 = np.stack([f_matrix(act, K, 1.0, 0.0) for K in res.K0])  # F(K0): f(K0) = sw2 F(K0) + sb2 11^T
    known = known_terms(res, res.DF, sw2 * S0 + sb2, sw2, dt)
    mean, contraction = known.mean_shift_V4_1(), known.contraction_V4_1()
    transport = four_index_to_pairs(V4_1) - mean - contraction
    return {"S_mean": S0, "cov_GS": pairs_to_four_index(res.cov_gs, P), "cov_SS": pairs_to_four_index(res.cov_ss, P),
            **{f"V4_1_{name}": pairs_to_four_index(part, P)
               for name, part in (("mean", mean), ("contraction", contraction), ("transport", transport))}}


def result_dataset(res: ExactResult, act: Activation, kin, sw2: float, sb2: float, time: float, extra_attrs=None,
                   V4_1=None):
    """The theory file of an exact-theory result: the standard fields (K1_source = sw2 B), the V4 parts and, where
    given (layer grid, P <= 2), V4_1."""
    P = res.K0.shape[-1]
    values = {"K0": res.K0, "V4": res.four_index("V4"), "K1": res.K1_matrix(), "K1_source": from_pairs(sw2 * res.B, P),
              "V4_free": res.four_index("V4_free"), "V4_cross": res.four_index("V4_cross"),
              "V4_feedback": res.four_index("V4_feedback")}
    discrete = res.layers is not None
    if V4_1 is not None:
        values["V4_1"] = V4_1
        if discrete:  # the identity is one of layers
            values.update(identity_fields(res, act, sw2, sb2, time / int(res.layers[-1]), V4_1))
    params = {
        "time_quadrature": ("none: exact sums over layers (left point), same-layer dt^2 term of the K1 source "
                            "included" if discrete else
                            "trapezoid Volterra sums on the uniform output grid (see time_quadrature_method)"),
        "gaussian_quadrature": res.info.get("quadrature", ""),
        "gaussian_moments": res.info.get("moments", ""),
        "derivative_convention": "pair coordinates a<=b; off-diagonal K_ab and K_ba move together",
        "wall_seconds": round(float(res.info.get("wall_seconds", 0.0)), 4),
        **(extra_attrs or {}),
    }
    title = (f"Exact O(1/n) kernel theory ({act.name}, T={time:g}, "
             + (f"discrete L={int(res.layers[-1])})" if discrete else "continuous)"))
    return EXACT.dataset(values, res.times, res.layers, act, kin, sw2, sb2, time, params, title)


_WITH_V4_1 = ("only with --depth where V4_1 is written (P <= 2 inputs, within next_order_seconds), "
              "docs/exact_theory.md section 7.4")


class Exact(Closure):
    """The exact O(1/n) theory (docs/exact_theory.md): the empirical measure expanded around the free two-time
    Gaussian process, with linear feedback through the kernel Jacobian."""

    name = "exact"
    label = "exact O(1/n)"
    long_label = "exact O(1/n) theory"
    description = "the O(1/n) theory beyond the G-only closure (docs/exact_theory.md)"
    source_label = "source sw2·B"
    order = 2
    config_points = True
    default_points = 101  # two-time integrals cost O(points^2); 101 points reach 1e-4 (file attribute)
    style = {"discrete": dict(color="tab:red", ls="-", marker="o"),
             "continuum": dict(color="tab:red", ls="-.", marker="o")}
    options = (Option("rule", None, None, "NormalRule of the moment quadrature (API only)"),
               Option("next_order_seconds", float, MAX_LATTICE_SECONDS,
                      "the most estimated seconds V4_1 (n Cov(G) = V4 + V4_1/n) may take: at a depth the one-input "
                      "grid or the lattice, in continuous depth the lattices at L = 16-128 (docs/exact_theory.md 7.1, "
                      "7.3, 7.5); 0: never"))
    # V4's three parts (docs/exact_theory.md section 2), written beside the standard fields
    parts = {
        "V4_free": Variable(COV, "free part of V4: Wishart form of K0(t), Cov of the free field A_hh"),
        "V4_cross": Variable(COV, "cross part of V4: Cov(y, A_hh) + transpose, feedback y against the free field"),
        "V4_feedback": Variable(COV, "feedback part of V4: Cov(y, y)"),
        "V4_1": Variable(COV, "1/n coefficient of n Cov(G): n Cov(G) = V4 + V4_1/n + O(1/n^2)",
                         note="only with P <= 2 inputs within next_order_seconds, at a depth or in the continuum, "
                              "docs/exact_theory.md sections 7.1, 7.3 and 7.5"),
        # the exact one-block identity's order 0 and V4_1's parts (docs/exact_theory.md section 7.4)
        "S_mean": Variable(KERNEL, "sigma kernel E phi(h) phi(h)^T at n -> infinity (at K0)", note=_WITH_V4_1),
        "cov_GS": Variable(COV, "cross covariance n Cov(G_ab, S_cd) at n -> infinity", note=_WITH_V4_1),
        "cov_SS": Variable(COV, "sigma-kernel covariance n Cov(S_ab, S_cd) at n -> infinity", note=_WITH_V4_1),
        "V4_1_mean": Variable(COV, "part of V4_1 from the 1/n shifts of E G and E Om (K1, Sigma1)", note=_WITH_V4_1),
        "V4_1_contraction": Variable(COV, "part of V4_1 from the contractions c4(X_0), c2(Y_0)", note=_WITH_V4_1),
        "V4_1_transport": Variable(COV, "part of V4_1 from X_1, Y_1 (the 1/n corrections of n Cov(G, Om), "
                                   "n Cov(Om, Om)): V4_1 - V4_1_mean - V4_1_contraction", note=_WITH_V4_1),
    }

    def check(self, activation, kin, depth, points):
        super().check(activation, kin, depth, points)
        try:
            check_exact_inputs(activation, kin)
        except UnsupportedActivation as exc:
            raise InputError("activation", str(exc)) from None
        except ValueError as exc:
            raise InputError("kin", str(exc)) from None
        if depth is None:
            self.check_points(points)

    def estimate_seconds(self, activation, P, times, continuous):
        """a + c N^2 over its N times (the two-time kernels), fitted to config/README.md's measurements at
        L = 32 and 128 (P = 2): (a, c) = (1.2 s, 1.45e-4 s) with closed-form moments (relu), (2.9 s, 1.03e-3 s)
        with tabulated ones; continuous depth also solves on N/2 and N/4 times (x1.5)."""
        a, c = (1.2, 1.45e-4) if activation.moments is not None else (2.9, 1.03e-3)
        return a + c * times * times * (1.5 if continuous else 1.0)

    def estimate_seconds_at(self, activation, kin, *, sw2, sb2, time, depth, times):
        """estimate_seconds, plus V4_1 where it will be computed (next_order_plan at the default limit)."""
        seconds = super().estimate_seconds_at(activation, kin, sw2=sw2, sb2=sb2, time=time, depth=depth, times=times)
        return seconds + next_order_seconds(activation, kin, sw2, sb2, time, depth)

    def estimate_memory(self, P, times):
        """The two-time kernels on the N x N grid of times (two_time: Cpp (N, N, p, p), Q (N, N, p, nk) with
        nk = P + 3 P(P-1)/2, and the Volterra sums' (N, N) and (N, N, p) arrays), with half again for
        temporaries (float64)."""
        p, nk = n_pairs(P), P + 3 * P * (P - 1) // 2
        return int(1.5 * 8 * times * times * (p * p + p * nk + p + 1))

    def estimate_memory_at(self, activation, kin, *, sw2, sb2, time, depth, times, **options):
        """estimate_memory plus V4_1's arrays where it will be computed (NextOrderPlan.memory: the one-input grid's
        K3, N^3 with four copies live, or the largest lattice's (55 + L + 2 p L) N^2 floats)."""
        base = self.estimate_memory(int(np.asarray(kin).shape[-1]), times) or 0
        limit = float(options.get("next_order_seconds", MAX_LATTICE_SECONDS))
        plan = next_order_plan(activation, kin, sw2, sb2, time, depth, limit)
        return base + (plan.memory if plan.method else 0)

    def check_points(self, points):
        if (int(points) - 1) % 4 or int(points) < 9:
            raise InputError("points", f"the exact continuum is Richardson-extrapolated from points, (points+1)/2 "
                                       f"and (points+3)/4 times: give points = 4k + 1 >= 9 (e.g. 101), got {points}")

    def solve(self, activation, kin, *, sw2, sb2, time, depth=None, points=None, progress=None, rule=None,
              next_order_seconds=MAX_LATTICE_SECONDS):
        """The discrete theory at depth L, else the continuous one at `points` uniform times, Richardson-
        extrapolated, with its accuracy estimated by refinement (file attributes).  activation: the Activation
        object (resolved once at the edge)."""
        act = activation
        rule = rule or default_rule(act)
        extra = {}
        try:
            V4_1 = None
            if depth is not None:
                res = exact_theory_discrete(act, kin, sw2, sb2, time, int(depth), rule, progress=progress)
            else:
                steps = int(points or self.default_points) - 1
                res, extra = exact_theory_extrapolated(act, kin, sw2, sb2, time, steps, rule, progress=progress)
                extra["time_quadrature_method"] = (f"trapezoid Volterra sums on {steps} and {steps // 2} steps, "
                                                   "Richardson-extrapolated (the O(h^2) error removed)")
                extra["accuracy_method"] = ("relative change of max|V4|, max|K1| against the extrapolation on half "
                                            "the steps, and against the 1.5x refined Gaussian rule on a quarter "
                                            "of the steps (upper bounds for this file's error)")
            plan = next_order_plan(act, kin, sw2, sb2, time, depth, float(next_order_seconds))
            if plan.method == "grid":  # one input (section 7.1)
                V4_1, next_attrs = next_order_one_input(act, kin, sw2, sb2, time, int(depth), float(next_order_seconds))
            elif plan.method == "lattice":  # one or two inputs (section 7.3)
                V4_1, next_attrs = next_order_inputs(act, kin, sw2, sb2, time, int(depth), res.V4,
                                                      float(next_order_seconds), progress)
            elif plan.method == "continuum":  # the layer forms' limit (section 7.5)
                V4_1, next_attrs = next_order_continuum(act, kin, sw2, sb2, time, res.times, res.V4)
            else:
                next_attrs = {"V4_1_method": plan.reason}
            extra.update(next_attrs)
        except (FloatingPointError, ArithmeticError, ValueError) as exc:
            raise FloatingPointError(f"exact theory: {exc}") from None
        return result_dataset(res, act, kin, sw2, sb2, time, extra, V4_1=V4_1)


EXACT = Exact()
CLOSURE = EXACT  # registered by kernel_eft.theory.registry
