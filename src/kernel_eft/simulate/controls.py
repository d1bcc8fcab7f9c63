"""Control variates with exactly zero mean, built along the layers of each simulated network
(docs/control_variates.md).

Given h^l, the increments u of a block are i.i.d. over neurons, N(0, Om^l) with Om^l = sw2 S^l + sb2 11^T, so

    M^{l+1} = G^{l+1} - G^l - dt Om^l,   M^0 = G^0 - K_in        E[M^{l+1} | h^l] = 0   (h^0 ~ N(0, K_in))
    N^{l+1} = sqrt(dt) [(phi'(h^l) * u) phi(h^l)^T + transpose] / n  E[N^{l+1} | h^l] = 0   (linear in u)

and any deterministic linear transform of these martingale increments has mean exactly zero.  Per seed and in
pair coordinates, with A_l = I + dt J(K0^l) the discrete mean-field Jacobian at the infinite-width K0:

    Y^{l+1} = A_l Y^l + M^{l+1}           (Y^0 = M^0)  the linear response of G - K0 to the G noise
    W^{l+1} = W^l + N^{l+1}               (W^0 = 0)    the accumulated linear noise of S
    Z^{l+1} = A_l Z^l + dt sw2 W^l        (Z^0 = 0)    the linear response of G to that S noise
    Q^{l+1} = A_l Q^l A_l^T + Cov(M^{l+1} | h^l),  Q^0 = Cov(G^0) = S2(K_in) / n
    C = Y Y^T - Q                                      (mean zero: E[Y Y^T] = E[Q] by the martingale property)

with the exact one-block noise n Cov(M^{l+1} | h^l) = dt S4(G^l, Om^l) + dt^2 S2(Om^l) (core/meanfield.py).
The controls at a recorded layer are x = (Y, W, Z, upper triangle of C), k = 3p + p(p+1)/2 of them; the
controlled quantities are q = (G, S, upper triangle of D = (G - K0)(G - K0)^T), whose adjusted means give
K1, its source and V4 (simulate/estimates.py).  A_l only has to be deterministic for the zero mean; the closer
it is to the true linear response, the more variance the controls remove.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from kernel_eft.core.meanfield import mean_field_jacobian, mean_kernel_discrete, source_s2, source_s4
from kernel_eft.core.pairs import n_pairs
from kernel_eft.simulate.params import CONTROL_VARIATES


def n_controls(P: int) -> int:
    p = n_pairs(P)
    return 3 * p + p * (p + 1) // 2


def n_controlled(P: int) -> int:
    p = n_pairs(P)
    return 2 * p + p * (p + 1) // 2


def control_names(P: int) -> list[str]:
    """Labels of the controls x, in order (for the file's `control` coordinate documentation)."""
    p = n_pairs(P)
    iu, ju = np.triu_indices(p)
    return ([f"Y{m}" for m in range(p)] + [f"W{m}" for m in range(p)] + [f"Z{m}" for m in range(p)]
            + [f"C{i}_{j}" for i, j in zip(iu, ju)])


@dataclass(frozen=True)
class ControlSetup:
    """What the features need, fixed for a run: K0 (L+1, p) in pairs and A_l = I + dt J(K0^l), (L, p, p)."""

    K0: np.ndarray
    A: np.ndarray
    AA: np.ndarray  # kron(A_l, A_l), (L, p^2, p^2): Q -> A Q A^T on the flattened Q as one matrix product
    Q0: np.ndarray  # S2(K_in) / n in pairs, (p, p)


@lru_cache(maxsize=16)
def _setup(activation: str, kin_bytes: bytes, P: int, sw2: float, sb2: float, time: float, depth: int,
           width: int) -> ControlSetup:
    kin = np.frombuffer(kin_bytes, dtype=np.float64).reshape(P, P)
    K0 = mean_kernel_discrete(activation, kin, sw2, sb2, time, depth)
    a, b = np.triu_indices(P)
    dt = time / depth
    J = mean_field_jacobian(activation, K0[:-1], sw2, sb2)  # (L, p, p)
    A = np.eye(J.shape[-1])[None] + dt * J
    AA = np.einsum("lij,lkm->likjm", A, A).reshape(A.shape[0], A.shape[1] ** 2, A.shape[1] ** 2)
    Q0 = source_s2(kin) / width
    for x in (K0, A, AA, Q0):
        x.setflags(write=False)
    return ControlSetup(np.ascontiguousarray(K0[:, a, b]), A, AA, Q0)


def control_setup(params) -> ControlSetup:
    """The run's ControlSetup (cached: every batch of a run shares it)."""
    kin = np.ascontiguousarray(params.kin, dtype=np.float64)
    return _setup(params.activation, kin.tobytes(), params.P, float(params.sw2), float(params.sb2),
                  float(params.time), int(params.depth), int(params.width))


class ControlState:
    """The features Y, W, Z, Q of a chunk of seeds, advanced layer by layer inside the sampler."""

    def __init__(self, setup: ControlSetup, G0_pairs: np.ndarray, width: int, dt: float, sw2: float, P: int):
        self.setup = setup
        self.n, self.dt, self.sw2 = width, dt, sw2
        self.a, self.b = np.triu_indices(P)
        p = n_pairs(P)
        self.iu, self.ju = np.triu_indices(p)
        seeds = G0_pairs.shape[0]
        self.Y = G0_pairs - setup.K0[0][None]
        self.W = np.zeros((seeds, p))
        self.Z = np.zeros((seeds, p))
        self.Q = np.broadcast_to(setup.Q0.reshape(-1), (seeds, p * p)).copy()  # flattened (p, p)
        # flat indices of K_ac, K_bd, K_ad, K_bc for pair rows (ab) and columns (cd): S4 as four products
        flat = np.arange(P * P).reshape(P, P)
        rows, cols = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
        ar, br, ac, bc = self.a[rows], self.b[rows], self.a[cols], self.b[cols]
        self._s4 = tuple(flat[i, j].reshape(-1) for i, j in ((ar, ac), (br, bc), (ar, bc), (br, ac)))
        self._pending = None  # (G^l in pairs, dt Om^l in pairs, Cov(M^{l+1} | h^l), N^{l+1}) of the step

    def _noise_covariance(self, G: np.ndarray, omega: np.ndarray) -> np.ndarray:
        """Cov(M^{l+1} | h^l) flattened, (c, p^2): (dt S4(G, Om) + dt^2 S2(Om)) / n = dt S4(G + dt Om / 2, Om) / n
        (S4 is bilinear and S4(Om, Om) = 2 S2(Om))."""
        c = G.shape[0]
        K = (G + (0.5 * self.dt) * omega).reshape(c, -1)
        W = omega.reshape(c, -1)
        ac, bd, ad, bc = self._s4
        s4 = K[:, ac] * W[:, bd] + K[:, ad] * W[:, bc] + K[:, bc] * W[:, ad] + K[:, bd] * W[:, ac]
        return s4 * (self.dt / self.n)

    def begin_step(self, G: np.ndarray, omega: np.ndarray, h: np.ndarray, act: np.ndarray, u: np.ndarray,
                   dphi) -> None:
        """At layer l, before h moves: G^l, Om^l (c, P, P), h^l, phi(h^l), the block's u (c, P, n)."""
        a, b = self.a, self.b
        cov_M = self._noise_covariance(G, omega)
        # N^{l+1}: the part of the S increment linear in the noise, sqrt(dt) (phi'(h) u) phi(h)^T + transpose
        lin = np.matmul(dphi(h) * u, act.transpose(0, 2, 1))
        N = (np.sqrt(self.dt) / self.n) * (lin + lin.transpose(0, 2, 1))
        self._pending = (G[:, a, b], self.dt * omega[:, a, b], cov_M, N[:, a, b])

    def end_step(self, layer: int, G_next: np.ndarray) -> None:
        """After the block l -> l+1, with G^{l+1} (c, P, P)."""
        G_prev, dt_omega, cov_M, N = self._pending
        A = self.setup.A[layer]
        M = G_next[:, self.a, self.b] - G_prev - dt_omega
        self.Z = self.Z @ A.T + (self.dt * self.sw2) * self.W
        self.W = self.W + N
        self.Y = self.Y @ A.T + M
        self.Q = self.Q @ self.setup.AA[layer].T + cov_M
        self._pending = None

    def record(self, layer: int, G: np.ndarray, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(q, x) of the chunk at this layer: q = (G, S, D upper), x = (Y, W, Z, C upper)."""
        Gp = G[:, self.a, self.b]
        dG = Gp - self.setup.K0[layer][None]
        D = dG[:, self.iu] * dG[:, self.ju]
        p = self.Y.shape[1]
        C = self.Y[:, self.iu] * self.Y[:, self.ju] - self.Q[:, self.iu * p + self.ju]
        q = np.concatenate([Gp, S[:, self.a, self.b], D], axis=1)
        x = np.concatenate([self.Y, self.W, self.Z, C], axis=1)
        return q, x


__all__ = ["CONTROL_VARIATES", "ControlSetup", "ControlState", "control_names", "control_setup", "n_controlled",
           "n_controls"]
