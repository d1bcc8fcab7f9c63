"""The Activation object: phi with everything the simulator and the theories need to know about it.

An activation carries its function and derivatives, where it has kinks, and whatever closed forms are
known: `kernel` for F(K) = <phi(z) phi(z)^T> and its derivatives DF, D2F (`KernelForms`), and `moments`
for the shifted Gaussian moments of the exact theory (a provider class, `kernel_eft.core.moments`).
Anything not given is computed by quadrature (F, DF, D2F) or from tables built by quadrature (moments),
so a new activation needs only phi, phi' and phi'' (neural-tangents' stax carries an activation's
function and its kernel function the same way: closed form first, quadrature as the fallback).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from kernel_eft.core.moments import tabulated_moments

Array = np.ndarray


def zero(x):
    """phi'' of a piecewise-linear phi away from its kinks."""
    return np.zeros(np.shape(x))


class CollinearInputsError(ValueError):
    """Second derivatives of F diverge (relu with collinear or anti-collinear inputs)."""


class CollinearWarning(RuntimeWarning):
    """Second derivatives of F are large and inaccurate (relu with nearly collinear inputs)."""


class KernelForms(NamedTuple):
    """Closed forms of F = <phi(z_a) phi(z_b)> on 2 x 2 Gaussian blocks (see kernel_eft.core.expectations).

    F_block(kaa, kbb, kab) -> F;  block_derivatives(kaa, kbb, kab, order) -> (F, grad (..., 3), hess (..., 3, 3)
    or None) in block coordinates (kaa, kbb, kab);  diag_derivatives(k) -> (F_aa, dF_aa/dk, d2F_aa/dk2)."""

    F_block: Callable
    block_derivatives: Callable
    diag_derivatives: Callable


@dataclass(frozen=True)
class Activation:
    """phi, its derivatives and its closed forms.

    `kinks` lists (c, j): phi is continuous but phi' jumps by j at z = c, so the distributional
    phi'' = d2phi (the regular part, away from the kinks) + sum_k j_k delta(z - c_k).  For relu,
    kinks = ((0, 1),) and d2phi is the zero function.  `features` are extra quadrature breakpoints
    where phi changes fast (z = 0 for tanh, gelu, silu); kinks are always breakpoints.
    `jet` (optional) returns (phi, phi', phi'') in one pass (quadrature speed).
    `kernel` (optional): closed forms of F, DF, D2F; `moments` (optional): a class, called with the
    activation, providing closed forms of the shifted Gaussian moments of the exact theory.
    `block_cost` (optional): the block sampler's measured cost (a, b), seconds per (sample, layer) = a n + b at
    P = 2 on one core (config/README.md, "Size and cost"); without it the cost models take the dearest measured.
    """

    name: str
    phi: Callable[[Array], Array]
    dphi: Callable[[Array], Array] | None = None
    d2phi: Callable[[Array], Array] | None = None
    description: str = ""
    kinks: tuple[tuple[float, float], ...] = ()
    features: tuple[float, ...] = (0.0,)
    jet: Callable[[Array], tuple] | None = None
    kernel: KernelForms | None = None
    moments: Callable | None = None
    block_cost: tuple[float, float] | None = None

    @property
    def closed_form(self) -> bool:
        """True when F, DF and D2F have closed forms (else they are integrated by quadrature)."""
        return self.kernel is not None

    def derivatives(self, x: Array, max_order: int) -> list[Array]:
        """[phi(x), phi'(x), phi''(x)][: max_order + 1] (phi'' is the regular part where phi has kinks)."""
        if self.jet is not None:
            return list(self.jet(x))[: max_order + 1]
        return [fn(x) for fn in self.derivative_functions(max_order)]

    def derivative_functions(self, max_order: int) -> list[Callable]:
        """[phi, phi', phi''][: max_order + 1]; a missing one is a ValueError that says what to pass."""
        funcs = [self.phi, self.dphi, self.d2phi][: max_order + 1]
        for order, fn in enumerate(funcs):
            if fn is None:
                what = ["phi", "dphi", "d2phi"][order]
                raise ValueError(
                    f"activation {self.name!r} has no {what}: quadrature of {'D' * order}F needs it "
                    f"(pass {what}= to custom_activation)")
        return funcs

    def gaussian_moments(self, mu_max: float = 60.0, s_max: float = 5.0):
        """The shifted Gaussian moments of the exact theory (kernel_eft.core.moments): the activation's own
        closed forms where it has them, else tables covering |mean| <= mu_max and scale <= s_max.  Raises
        UnsupportedActivation with the reason otherwise (kinks without closed forms, missing derivatives)."""
        if self.moments is not None:
            return self.moments(self)
        return tabulated_moments(self, mu_max, s_max)

    def breakpoints(self) -> tuple[float, ...]:
        return tuple(sorted(set(self.features) | {c for c, _ in self.kinks}))
