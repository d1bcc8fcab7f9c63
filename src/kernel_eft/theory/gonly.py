"""G-only collective-kernel EFT (Kawase & Ota 2026): the paper's theory, continuous and discrete.

State (pair coordinates, `kernel_eft.core.pairs`): K0 (p), V4 = n Cov(G, G) (p x p), K1 (p).  With
W = f(K0) = sw2 F(K0) + sb2 11^T, J = Df(K0), H = D2f(K0) (conventions in `kernel_eft.core.expectations`):

    dK0/dt = W
    dV4/dt = J V4 + V4 J^T + S4(K0, W)          (transport + source)
    dK1/dt = J K1 + (1/2) H : V4                (tadpole = (1/2) H : V4)
    K0(0) = K_in,  V4(0) = S2(K_in) (Wishart),  K1(0) = 0

    S4_(ab)(cd) = K_ac W_bd + K_ad W_bc + K_bc W_ad + K_bd W_ac,    S2(W)_(ab)(cd) = W_ac W_bd + W_ad W_bc.

The discrete-layer recursion (dt = T/L) keeps the dt^2 terms of the exact block law:

    K0 <- K0 + dt W;   V4 <- (I + dt J) V4 (I + dt J)^T + dt S4 + dt^2 S2(W);   K1 <- K1 + dt (J K1 + H:V4/2)

so (V4_{l+1} - V4_l)/dt = transport + source + `discrete_correction`, discrete_correction = dt (J V4 J^T + S2).
The closure's prediction of the K1 source is the tadpole: `K1_source` = (1/2) H : V4 (written beside it).
The solvers are pure functions of numpy arrays; `GOnly.solve` returns the theory Dataset.
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass, field

import numpy as np

from kernel_eft.core.activations import Activation, get_activation
from kernel_eft.core.expectations import kernel_derivatives
from kernel_eft.core.meanfield import source_s2, source_s4
from kernel_eft.core.pairs import from_pairs, n_pairs, pairs_to_four_index, to_pairs
from kernel_eft.schema import COV, KERNEL, Variable
from kernel_eft.theory.closure import Closure, Option

DEFAULT_RTOL = 1e-10
DEFAULT_ATOL = 1e-12
DEFAULT_METHOD = "DOP853"
SOLVER_METHODS = ("DOP853", "RK45", "Radau", "LSODA")


# ----------------------------------------------------------------------------------------------
# The right-hand side (S4, S2: kernel_eft.core.meanfield)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GOnlyTerms:
    """Right-hand side of the G-only EFT at one state (pair coordinates)."""

    W: np.ndarray  # (p,) f(K0) = dK0/dt
    transport: np.ndarray  # (p, p) J V4 + V4 J^T
    source: np.ndarray  # (p, p) S4(K0, f(K0))
    tadpole: np.ndarray  # (p,) (1/2) H : V4
    jacobian_k1: np.ndarray  # (p,) J K1
    J: np.ndarray  # (p, p) Df(K0)

    @property
    def dV4(self) -> np.ndarray:
        return self.transport + self.source

    @property
    def dK1(self) -> np.ndarray:
        return self.jacobian_k1 + self.tadpole


def gonly_terms(activation, K0: np.ndarray, V4: np.ndarray, K1: np.ndarray, sw2: float, sb2: float,
                method: str = "auto") -> GOnlyTerms:
    """Evaluate W, transport, source, tadpole and J K1 at one state.  K0, K1: (P, P) or (p,); V4: (p, p)."""
    K0 = np.asarray(K0, dtype=np.float64)
    if K0.ndim == 1:
        K0 = from_pairs(K0)
    P = K0.shape[-1]
    K1 = np.asarray(K1, dtype=np.float64)
    if K1.ndim == 2:
        K1 = to_pairs(K1)
    deriv = kernel_derivatives(activation, K0, order=2, method=method)
    J = sw2 * deriv.jacobian()
    W_pairs = sw2 * deriv.F + sb2
    W = from_pairs(W_pairs, P)
    JV = J @ V4
    return GOnlyTerms(
        W=W_pairs,
        transport=JV + JV.T,
        source=source_s4(K0, W),
        tadpole=0.5 * sw2 * deriv.contract_hessian(V4),
        jacobian_k1=J @ K1,
        J=J,
    )


# ----------------------------------------------------------------------------------------------
# Solutions
# ----------------------------------------------------------------------------------------------


@dataclass
class GOnlySolution:
    """The G-only EFT at output times, pair coordinates.  Arrays have a leading time axis."""

    times: np.ndarray  # (T,)
    layers: np.ndarray | None  # (T,) for the discrete recursion
    P: int
    K0: np.ndarray  # (T, p)
    V4: np.ndarray  # (T, p, p)
    K1: np.ndarray  # (T, p)
    transport: np.ndarray  # (T, p, p)
    source: np.ndarray  # (T, p, p)
    tadpole: np.ndarray  # (T, p)
    discrete_correction: np.ndarray | None = None  # (T, p, p): dt (J V4 J^T + S2), discrete only
    info: dict = field(default_factory=dict)

    def matrices(self) -> dict[str, np.ndarray]:
        """K0, K1, tadpole as (T, P, P) and V4, transport, source (, discrete_correction) as (T, P, P, P, P)."""
        out = {name: from_pairs(getattr(self, name), self.P) for name in ("K0", "K1", "tadpole")}
        for name in ("V4", "transport", "source", "discrete_correction"):
            value = getattr(self, name)
            if value is not None:
                out[name] = pairs_to_four_index(value, self.P)
        return out


def _check_finite(name: str, value: np.ndarray, where: str) -> None:
    if not np.all(np.isfinite(value)):
        raise FloatingPointError(f"G-only EFT: non-finite {name} at {where}; the kernel overflowed float64 "
                                 "(reduce sw2*T or the input norm)")


def _record_terms(activation, K0, V4, K1, sw2, sb2, method):
    """(transport, source, tadpole) stacked over the leading time axis of the states."""
    terms = [gonly_terms(activation, K0[i], V4[i], K1[i], sw2, sb2, method) for i in range(K0.shape[0])]
    return tuple(np.stack([getattr(t, name) for t in terms]) for name in ("transport", "source", "tadpole"))


def solve_gonly_continuous(activation, kin, sw2: float, sb2: float, time: float, times=None, points: int = 201,
                           rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL, solver: str = DEFAULT_METHOD,
                           method: str = "auto") -> GOnlySolution:
    """Continuous-depth G-only EFT by scipy solve_ivp on (K0, V4, K1).

    times: output times in [0, time] (default: `points` uniform times from 0 to time inclusive).
    rtol/atol: solver tolerances (defaults give >= 8 correct digits, tested).  solver: solve_ivp method.
    method: F evaluation, auto | closed | quadrature.
    """
    from scipy.integrate import solve_ivp  # lazily: the CLI imports this module to build its parser

    act = get_activation(activation)
    kin = np.asarray(kin, dtype=np.float64)
    P = kin.shape[-1]
    p = n_pairs(P)
    if times is None:
        times = np.linspace(0.0, time, points)
    times = np.asarray(times, dtype=np.float64)
    if solver not in SOLVER_METHODS:
        raise ValueError(f"solver must be one of {SOLVER_METHODS}, got {solver!r}")

    def unpack(y):
        return y[:p], y[p:p + p * p].reshape(p, p), y[p + p * p:]

    last_t = [0.0]  # where the solver was, for an overflow raised inside solve_ivp's own arithmetic

    def rhs(t, y):
        last_t[0] = t
        K0, V4, K1 = unpack(y)
        V4 = 0.5 * (V4 + V4.T)  # keep the integrated covariance exactly symmetric
        try:
            terms = gonly_terms(act, K0, V4, K1, sw2, sb2, method)
            return np.concatenate([terms.W, terms.dV4.ravel(), terms.dK1])
        except FloatingPointError as exc:  # say where: the continuum has no layers, so t
            raise FloatingPointError(f"G-only EFT: overflow in the right-hand side at t = {t:.6g} ({exc}); "
                                     "the kernel overflowed float64 (reduce sw2*T or the input norm)") from None

    y0 = np.concatenate([to_pairs(kin), source_s2(kin).ravel(), np.zeros(p)])
    started = _time.perf_counter()
    with np.errstate(over="raise", invalid="raise"):
        try:
            result = solve_ivp(rhs, (0.0, float(time)), y0, method=solver, t_eval=times, rtol=rtol, atol=atol)
        except FloatingPointError as exc:
            if str(exc).startswith("G-only EFT"):
                raise
            raise FloatingPointError(f"G-only EFT: overflow in the solver near t = {last_t[0]:.6g} ({exc}); "
                                     "reduce sw2*T or the input norm") from None
    if not result.success:
        reached = f" at t = {result.t[-1]:.6g}" if result.t.size else ""
        raise FloatingPointError(f"G-only EFT: solve_ivp failed{reached}: {result.message}")
    Y = result.y.T
    for i, state in enumerate(Y):
        _check_finite("state", state, f"t = {times[i]:.6g}")
    K0 = Y[:, :p]
    V4 = Y[:, p:p + p * p].reshape(-1, p, p)
    V4 = 0.5 * (V4 + np.swapaxes(V4, -1, -2))
    K1 = Y[:, p + p * p:]
    transport, source, tadpole = _record_terms(act, K0, V4, K1, sw2, sb2, method)
    info = {"solver": f"scipy.integrate.solve_ivp {solver}", "rtol": rtol, "atol": atol, "nfev": int(result.nfev),
            "wall_seconds": _time.perf_counter() - started}
    return GOnlySolution(times, None, P, K0, V4, K1, transport, source, tadpole, None, info)


def solve_gonly_discrete(activation, kin, sw2: float, sb2: float, time: float, depth: int,
                         method: str = "auto") -> GOnlySolution:
    """Discrete-layer G-only recursion at depth L = depth (dt = time/depth), output at every layer 0..L.

    This is the version to compare with Monte Carlo at the same L (K1 = n (E[G] - K0) is sensitive to
    the O(1/L) error of the continuum).
    """
    act = get_activation(activation)
    kin = np.asarray(kin, dtype=np.float64)
    P = kin.shape[-1]
    p = n_pairs(P)
    dt = time / depth
    started = _time.perf_counter()
    names = ("K0", "V4", "K1", "transport", "source", "tadpole", "discrete_correction")
    shapes = ((p,), (p, p), (p,), (p, p), (p, p), (p,), (p, p))
    out = {name: np.empty((depth + 1,) + shape) for name, shape in zip(names, shapes)}
    k0, v4, k1 = to_pairs(kin), source_s2(kin), np.zeros(p)
    eye = np.eye(p)
    for layer in range(depth + 1):
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked below and raised, not warned
            terms = gonly_terms(act, k0, v4, k1, sw2, sb2, method)
            s2 = source_s2(from_pairs(terms.W, P))
            values = (k0, v4, k1, terms.transport, terms.source, terms.tadpole, dt * (terms.J @ v4 @ terms.J.T + s2))
            for name, value in zip(names, values):
                out[name][layer] = value
            if layer == depth:
                break
            step = eye + dt * terms.J
            k0 = k0 + dt * terms.W
            v4 = step @ v4 @ step.T + dt * terms.source + dt * dt * s2
            v4 = 0.5 * (v4 + v4.T)
            k1 = k1 + dt * terms.dK1
        for name, value in (("K0", k0), ("V4", v4), ("K1", k1)):
            _check_finite(name, value, f"layer {layer + 1} (t = {(layer + 1) * dt:.6g})")
    layers = np.arange(depth + 1)
    info = {"solver": "discrete-layer recursion", "depth": depth, "wall_seconds": _time.perf_counter() - started}
    return GOnlySolution(layers * dt, layers, P, *(out[name] for name in names), info=info)


# ----------------------------------------------------------------------------------------------
# The closure
# ----------------------------------------------------------------------------------------------


def solution_dataset(sol: GOnlySolution, act: Activation, kin, sw2: float, sb2: float, time: float,
                     extra_attrs: dict | None = None):
    """The theory file of a G-only solution: the standard fields (K1_source = the tadpole) and the parts."""
    values = sol.matrices()
    values = {"K0": values["K0"], "V4": values["V4"], "K1": values["K1"], "K1_source": values["tadpole"],
              **{name: values[name] for name in ("transport", "source", "tadpole", "discrete_correction")
                 if name in values}}
    discrete = sol.layers is not None
    params = {
        "solver": sol.info.get("solver", ""),
        "rtol": sol.info.get("rtol"), "atol": sol.info.get("atol"),
        "F_method": "closed form" if act.closed_form else "composite Gauss-Legendre quadrature (kink-split)",
        "derivative_convention": "pair coordinates a<=b; off-diagonal K_ab and K_ba move together "
                                 "(kernel_eft.core.expectations)",
        "wall_seconds": round(float(sol.info.get("wall_seconds", 0.0)), 4),
        **({"nfev": sol.info["nfev"]} if "nfev" in sol.info else {}),
        **(extra_attrs or {}),
    }
    title = (f"G-only collective-kernel EFT ({act.name}, T={time:g}, "
             + (f"discrete L={int(sol.layers[-1])})" if discrete else "continuous)"))
    return GONLY.dataset(values, sol.times, sol.layers, act, kin, sw2, sb2, time, params, title)


class GOnly(Closure):
    """The paper's G-only closure (Kawase and Ota 2026): V4 and K1 from K0, V4 and the tadpole alone."""

    name = "gonly"
    label = "G-only EFT"
    long_label = "G-only EFT"
    description = "the paper's G-only closure (Kawase & Ota): ODEs for K0, V4, K1"
    source_label = "tadpole ½ H:V4"
    default_points = 201
    order = 1
    reference = True
    # the terms of its equations, written beside the standard fields
    parts = {
        "transport": Variable(COV, "transport term J V4 + V4 J^T of dV4/dt, J = Df(K0)"),
        "source": Variable(COV, "source term S4(K0, f(K0)) of dV4/dt"),
        "tadpole": Variable(KERNEL, "tadpole (1/2) H : V4 of dK1/dt, H = D2f(K0) (G-only: equal to K1_source)"),
        "discrete_correction": Variable(COV, "dt^2 part of the discrete V4 step per dt: dt (J V4 J^T + S2(f(K0)))",
                                        note="only with --depth"),
    }
    # its files written before K1_source became a standard field carry its prediction as the tadpole
    legacy_fields = {"K1_source": "tadpole"}
    style = {"discrete": dict(color="tab:orange", ls="--"), "continuum": dict(color="tab:orange", ls=":")}
    options = (Option("rtol", float, DEFAULT_RTOL, "continuous solver relative tolerance (>= 8 correct digits)",
                      positive=True),
               Option("atol", float, DEFAULT_ATOL, "continuous solver absolute tolerance", positive=True),
               Option("solver", str, DEFAULT_METHOD, "solve_ivp method of the continuous solver",
                      choices=SOLVER_METHODS))

    def estimate_seconds(self, activation, P, times, continuous):
        # measured (P = 2, one core): ~1.5 s at the network's depth, 2.5-3.5 s in continuous depth on 201-401
        # points (config/README.md); the ODE solve grows with its output times
        return 1.5 + (0.005 * times if continuous else 0.0)

    def solve(self, activation, kin, *, sw2, sb2, time, depth=None, points=None, progress=None, rtol=DEFAULT_RTOL,
              atol=DEFAULT_ATOL, solver=DEFAULT_METHOD):
        if depth is None:
            sol = solve_gonly_continuous(activation, kin, sw2, sb2, time, points=points or self.default_points,
                                         rtol=rtol, atol=atol, solver=solver)
        else:
            sol = solve_gonly_discrete(activation, kin, sw2, sb2, time, int(depth))
        return solution_dataset(sol, activation, kin, sw2, sb2, time)


GONLY = GOnly()
CLOSURE = GONLY  # registered by kernel_eft.theory.registry
