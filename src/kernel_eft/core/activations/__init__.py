"""The activation registry: one Activation object per name, carrying phi and all it knows about itself.

Built in: relu, erf, linear (closed-form F; relu and linear also closed-form exact-theory moments) and
tanh, gelu, silu (quadrature and tables).  Adding an activation is one place: a module in this folder whose
ACTIVATIONS tuple holds its Activation objects (found by itself, like relu.py), or, from a notebook,
`register_activation(custom_activation(...))`.  The CLI choices, the workflow's config check and every
theory take the names from this registry.
"""

from __future__ import annotations

from kernel_eft.core.activations.base import (Activation, CollinearInputsError, CollinearWarning, KernelForms,
                                              zero)
from kernel_eft.discovery import declared_in, folder_of, lookup

__all__ = ["ACTIVATIONS", "Activation", "CollinearInputsError", "CollinearWarning", "KernelForms",
           "activation_names", "custom_activation", "get_activation", "moments_for", "register_activation", "zero"]

ACTIVATIONS: dict[str, Activation] = {}


def register_activation(act: Activation, replace: bool = False) -> Activation:
    """Add an activation to the registry (the CLI, the API and the workflow then accept its name)."""
    if not isinstance(act, Activation):
        raise TypeError(f"register_activation needs an Activation, got {type(act).__name__}")
    if act.name in ACTIVATIONS and not replace and ACTIVATIONS[act.name] is not act:
        raise ValueError(f"activation {act.name!r} is already registered (pass replace=True to replace it)")
    ACTIVATIONS[act.name] = act
    return act


def activation_names() -> list[str]:
    return sorted(ACTIVATIONS)


def get_activation(name: str | Activation) -> Activation:
    return lookup(ACTIVATIONS, "activation", name, Activation, activation_names())


def custom_activation(name: str, phi, dphi=None, d2phi=None, kinks=(), features=(0.0,), jet=None,
                      description: str = "user-supplied; quadrature") -> Activation:
    """A user-supplied phi (vectorised numpy callable) without closed forms: F, DF, D2F by quadrature, the
    exact theory's moments by tables.  F needs only phi; DF needs dphi; D2F needs d2phi (its regular part if
    phi has kinks, see Activation).  Not registered: pass it to register_activation to use it by name."""
    return Activation(name, phi, dphi, d2phi, description,
                      kinks=tuple((float(c), float(j)) for c, j in kinks),
                      features=tuple(float(c) for c in features), jet=jet)


def moments_for(activation, mu_max: float = 60.0, s_max: float = 5.0):
    """The shifted Gaussian moments of an activation (name or object) for the exact theory: its closed forms,
    else tables covering |mean| <= mu_max and scale <= s_max (Activation.gaussian_moments)."""
    return get_activation(activation).gaussian_moments(mu_max, s_max)


def _discover() -> None:
    """Register the ACTIVATIONS of every module in this folder."""
    for acts in declared_in(__name__, folder_of(__file__), "ACTIVATIONS"):
        for act in acts:
            register_activation(act)


_discover()
