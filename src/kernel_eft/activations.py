"""Activation registry and Gaussian expectations F(K) = <phi(z) phi(z)^T>_{z ~ N(0, K)}.

One interface for every activation: closed forms where known (relu, erf, linear), 2-D
Gauss-Hermite quadrature otherwise.  The Monte Carlo samplers and the theory take phi from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import special

from kernel_eft.pairs import pair_indices

Array = np.ndarray

# Probabilists' Gauss-Hermite rule: E[g(xi)], xi ~ N(0,1)  ~=  sum w_k g(x_k) / sqrt(2 pi).
_GH_ORDER = 80


def _gh_rule(order: int) -> tuple[Array, Array]:
    x, w = np.polynomial.hermite_e.hermegauss(order)
    return x, w / np.sqrt(2.0 * np.pi)


@dataclass(frozen=True)
class Activation:
    """phi and its derivatives (None where they do not exist as functions, e.g. relu'')."""

    name: str
    phi: Callable[[Array], Array]
    dphi: Callable[[Array], Array] | None = None
    d2phi: Callable[[Array], Array] | None = None
    closed_form: bool = False
    description: str = ""
    extra: dict = field(default_factory=dict)


def _relu(x):
    return np.maximum(x, 0.0)


def _relu_d(x):
    return (x > 0).astype(np.float64)


def _erf_d(x):
    return 2.0 / np.sqrt(np.pi) * np.exp(-x * x)


def _erf_d2(x):
    return -4.0 / np.sqrt(np.pi) * x * np.exp(-x * x)


def _tanh_d(x):
    return 1.0 / np.cosh(x) ** 2


def _tanh_d2(x):
    t = np.tanh(x)
    return -2.0 * t * (1.0 - t * t)


_SQRT2 = np.sqrt(2.0)


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
    "relu": Activation("relu", _relu, _relu_d, None, True, "max(x, 0); arc-cosine kernel"),
    "erf": Activation("erf", special.erf, _erf_d, _erf_d2, True, "erf(x); Williams' arcsine kernel"),
    "linear": Activation("linear", lambda x: np.asarray(x, dtype=np.float64), lambda x: np.ones_like(x),
                         lambda x: np.zeros_like(x), True, "identity; F(K) = K"),
    "tanh": Activation("tanh", np.tanh, _tanh_d, _tanh_d2, False, "tanh(x); quadrature"),
    "gelu": Activation("gelu", _gelu, _gelu_d, _gelu_d2, False, "x Phi(x) (exact GELU); quadrature"),
    "silu": Activation("silu", _silu, _silu_d, _silu_d2, False, "x sigmoid(x); quadrature"),
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


def custom_activation(name: str, phi, dphi=None, d2phi=None) -> Activation:
    """A user-supplied phi (vectorised numpy callable); expectations use quadrature."""
    return Activation(name, phi, dphi, d2phi, False, "user-supplied; quadrature")


# ----------------------------------------------------------------------------------------------
# F on 2x2 blocks.  Inputs are arrays of block entries (kaa, kbb, kab) of any common shape.
# ----------------------------------------------------------------------------------------------


def relu_cos_angle(kaa, kbb, kab):
    """cos(theta) = kab / sqrt(kaa kbb), clipped into [-1, 1] (round-off near collinear inputs)."""
    norm = np.sqrt(np.maximum(kaa, 0.0) * np.maximum(kbb, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(norm > 0, kab / np.where(norm > 0, norm, 1.0), 0.0)
    return np.clip(c, -1.0, 1.0), norm


def _relu_F_block(kaa, kbb, kab):
    c, norm = relu_cos_angle(kaa, kbb, kab)
    theta = np.arccos(c)
    s = np.sqrt(np.maximum(1.0 - c * c, 0.0))
    return norm * (s + (np.pi - theta) * c) / (2.0 * np.pi)


def _erf_F_block(kaa, kbb, kab):
    arg = 2.0 * kab / np.sqrt((1.0 + 2.0 * kaa) * (1.0 + 2.0 * kbb))
    return (2.0 / np.pi) * np.arcsin(np.clip(arg, -1.0, 1.0))


def _linear_F_block(kaa, kbb, kab):
    return np.asarray(kab, dtype=np.float64) * np.ones(np.broadcast(kaa, kbb, kab).shape)


_CLOSED_F = {"relu": _relu_F_block, "erf": _erf_F_block, "linear": _linear_F_block}


def block_factor(kaa, kbb, kab):
    """Lower-triangular L with L L^T = [[kaa, kab], [kab, kbb]], robust to singular blocks."""
    kaa = np.maximum(np.asarray(kaa, dtype=np.float64), 0.0)
    kbb = np.maximum(np.asarray(kbb, dtype=np.float64), 0.0)
    l11 = np.sqrt(kaa)
    with np.errstate(invalid="ignore", divide="ignore"):
        l21 = np.where(l11 > 0, kab / np.where(l11 > 0, l11, 1.0), 0.0)
    l22 = np.sqrt(np.maximum(kbb - l21 * l21, 0.0))
    return l11, l21, l22


def gaussian_expectation_2d(g, kaa, kbb, kab, order: int = _GH_ORDER):
    """E[g(z_a, z_b)] for (z_a, z_b) ~ N(0, [[kaa, kab], [kab, kbb]]) by tensor Gauss-Hermite.

    kaa, kbb, kab broadcast together; g must be vectorised over trailing node axes.
    """
    x, w = _gh_rule(order)
    l11, l21, l22 = block_factor(kaa, kbb, kab)
    l11, l21, l22 = (np.asarray(v)[..., None, None] for v in (l11, l21, l22))
    xi1 = x[:, None]
    xi2 = x[None, :]
    za = l11 * xi1
    zb = l21 * xi1 + l22 * xi2
    ww = w[:, None] * w[None, :]
    return np.sum(g(za, zb) * ww, axis=(-2, -1))


def gaussian_expectation_1d(g, k, order: int = _GH_ORDER):
    """E[g(z)], z ~ N(0, k), by Gauss-Hermite; k broadcasts."""
    x, w = _gh_rule(order)
    s = np.sqrt(np.maximum(np.asarray(k, dtype=np.float64), 0.0))[..., None]
    return np.sum(g(s * x) * w, axis=-1)


def F_block(act: str | Activation, kaa, kbb, kab, method: str = "auto"):
    """<phi(z_a) phi(z_b)> over a 2x2 Gaussian block.  method: auto | closed | quadrature."""
    act = get_activation(act)
    if method not in ("auto", "closed", "quadrature"):
        raise ValueError(f"method must be auto, closed or quadrature, got {method!r}")
    if method != "quadrature" and act.name in _CLOSED_F and act is ACTIVATIONS.get(act.name):
        return _CLOSED_F[act.name](np.asarray(kaa, float), np.asarray(kbb, float), np.asarray(kab, float))
    if method == "closed":
        raise ValueError(f"no closed form for activation {act.name!r}")
    phi = act.phi
    return gaussian_expectation_2d(lambda za, zb: phi(za) * phi(zb), kaa, kbb, kab)


def F_matrix(act: str | Activation, K: Array, method: str = "auto") -> Array:
    """F(K) for a (..., P, P) kernel: entry (a, b) from the 2x2 block of K on {a, b}."""
    K = np.asarray(K, dtype=np.float64)
    P = K.shape[-1]
    a, b = pair_indices(P)
    vals = F_block(act, K[..., a, a], K[..., b, b], K[..., a, b], method=method)
    out = np.empty(K.shape, dtype=np.float64)
    out[..., a, b] = vals
    out[..., b, a] = vals
    return out


def f_matrix(act: str | Activation, K: Array, sw2: float, sb2: float, method: str = "auto") -> Array:
    """Increment kernel of the mean field, f(K) = sw2 F(K) + sb2 11^T."""
    return sw2 * F_matrix(act, K, method=method) + sb2
