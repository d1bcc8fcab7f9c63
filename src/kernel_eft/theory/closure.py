"""The Closure interface: one way of closing the kernel hierarchy at O(1/n).

A closure turns the network's parameters (activation, K_in, sw2, sb2, T) into the standard fields, on a
depth grid:

    K0         mean kernel (infinite width)                                      (t, a, b)
    V4         kernel covariance n Cov(G_ab, G_cd)                                (t, a, b, c, d)
    K1         1/n mean correction, E[G] = K0 + K1/n                              (t, a, b)
    K1_source  its prediction of the exact K1 source n sw2 (E[S] - F(E[G])),       (t, a, b)
               dK1/dt = J K1 + K1_source

plus closure-specific parts (declared in kernel_eft.schema or passed as `parts`).  A closure declares the
depth forms it solves (`depths`; gonly and exact solve both): `depth=L`, the network's own layer recursion
(what Monte Carlo at depth L is compared with, every layer 0..L written), and `depth=None`, the continuous-
depth limit on `points` uniform times.
The diagnostics read only the standard fields, so a new closure is compared with Monte Carlo, plotted and
summarised without any code that names it.

To add a closure: subclass `Closure` (name, label, long_label, source_label, style, default_points, and
`solve`) in a module of kernel_eft/theory/ with CLOSURE = MyClosure() (found by kernel_eft.theory.registry),
or `kernel_eft.register_closure(MyClosure())` from anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernel_eft import schema
from kernel_eft.core.activations import CollinearInputsError
from kernel_eft.core.expectations import kernel_derivatives
from kernel_eft.validation import InputError, check_float, check_int

STANDARD_FIELDS = ("K0", "V4", "K1", "K1_source")
# optional fields that the diagnostics and figures use where a theory file has them (by presence, whatever the
# closure): V4_1, the 1/n coefficient of n Cov(G) = V4 + V4_1/n + O(1/n^2), compared with each width as it is
NEXT_ORDER_FIELDS = ("V4_1",)
# optional fields with which the diagnostics split each width's n (V4(n) - V4) by the exact one-block identity
# (kernel_eft.diagnose.identity): its order 0 (E S, n Cov(G, S), n Cov(S, S) at n -> infinity) and V4_1's parts
IDENTITY_FIELDS = ("S_mean", "cov_GS", "cov_SS", "V4_1_mean", "V4_1_contraction", "V4_1_transport")
DEPTH_FORMS = ("discrete", "continuum")



@dataclass(frozen=True)
class TheoryLabel:
    """Which theory a curve is: a closure and its depth form ("discrete" at the network's L, or "continuum").
    Spelled `<closure>_<form>` only at the file edge (the diagnostics' `theory` coordinate values)."""

    closure: str
    form: str

    def __str__(self) -> str:
        return f"{self.closure}_{self.form}"

    @classmethod
    def parse(cls, text) -> "TheoryLabel":
        """The label of a file's `theory` coordinate value (the closure name may itself hold underscores)."""
        closure, _, form = str(text).rpartition("_")
        if form not in ("discrete", "continuum") or not closure:
            raise ValueError(f"not a theory label (<closure>_discrete or <closure>_continuum): {text!r}")
        return cls(closure, form)

    @classmethod
    def of(cls, closure: str, depth) -> "TheoryLabel":
        return cls(closure, "continuum" if depth is None else "discrete")


@dataclass(frozen=True)
class Option:
    """A closure-specific keyword of `solve`: its name, type (float, int or str; None: API only, e.g. an
    object), default and help.  The CLI's flag (--name, underscores as dashes), the study config key
    (theory.<closure>.<name>) and the workflow's theory jobs come from this declaration."""

    name: str
    type: type | None
    default: object
    help: str
    choices: tuple = ()
    positive: bool = False  # numbers: > 0

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value, field: str | None = None):
        """The value converted and checked; InputError naming `field` (default: the option's name)."""
        field = field or self.name
        if self.type is None:
            return value
        if self.choices:
            if value not in self.choices:
                raise InputError(field, f"{value!r} is not one of {', '.join(map(str, self.choices))}")
            return value
        if self.type is int:
            return check_int(value, field, minimum=1 if self.positive else -(2**63))
        if self.type is float:
            if isinstance(value, bool):
                raise InputError(field, f"expected a number, got {value!r}")
            return check_float(value, field, positive=self.positive)
        if not isinstance(value, str):
            raise InputError(field, f"expected text, got {value!r}")
        return value


class Closure:
    """Base class of the closures.  Subclasses set the class attributes and implement `solve`."""

    name: str = ""  # the CLI and config name
    label: str = ""  # short label in figure legends ("G-only EFT")
    long_label: str = ""  # in long_names and titles ("G-only EFT", "exact O(1/n) theory")
    description: str = ""  # one line for --help
    source_label: str = "K1 source"  # how it predicts the K1 source, in figure legends ("tadpole ½ H:V4")
    default_points: int = 201  # uniform output times of the continuous-depth form
    order: int = 100  # place among the closures (diagnostics' theory axis, figures); built in: gonly 1, exact 2
    depths: tuple = DEPTH_FORMS  # the depth forms it solves: "discrete" (depth=L), "continuum" (depth=None)
    # matplotlib styles of its two depth forms in the figures
    style: dict = {"discrete": dict(color="tab:green", ls="-"), "continuum": dict(color="tab:green", ls="--")}
    reference: bool = False  # the closure under test (one; gonly): t* of the summary, the K1 source mismatch
    # its continuous form has its own rule for `points`, hence its own config key theory.<name>_points
    # (default default_points, checked by check_points); else theory.points applies
    config_points: bool = False
    options: tuple = ()  # Option: closure-specific keywords of solve (CLI flags, config keys)
    parts: dict = {}  # schema.Variable of each part it writes that kernel_eft.schema does not declare
    # standard fields its files of earlier versions wrote under another name: {standard field: old name}
    legacy_fields: dict = {}

    def check(self, activation, kin, depth: int | None, points: int) -> None:
        """Raise InputError for input this closure cannot solve, before any compute.  Every closure here
        needs D2F at K_in (the G-only tadpole, the exact theory's Hessian): it diverges for relu at
        collinear inputs."""
        try:
            kernel_derivatives(activation, kin, order=2)
        except CollinearInputsError as exc:
            raise InputError("kin", str(exc)) from None

    def estimate_seconds(self, activation, P: int, times: int, continuous: bool) -> float | None:
        """CPU seconds of one solve on this project's machine (config/README.md's measurements), for the start
        line and the study planner; None: no cost model (the planner then assumes UNMODELLED_SECONDS)."""
        return None

    def estimate_seconds_at(self, activation, kin, *, sw2: float, sb2: float, time: float, depth: int | None,
                            times: int) -> float | None:
        """estimate_seconds at one grid point, which the start line and the planner call: by default the model
        of P and the number of times alone; a closure whose cost depends on the point itself (the exact closure's
        V4_1 grid or lattice) overrides it."""
        return self.estimate_seconds(activation, int(np.asarray(kin).shape[-1]), times, depth is None)

    def estimate_memory(self, P: int, times: int) -> int | None:
        """Peak bytes of one solve beyond the process, where they matter (checked before any compute); None:
        negligible or not known."""
        return None

    def estimate_memory_at(self, activation, kin, *, sw2: float, sb2: float, time: float, depth: int | None,
                           times: int, **options) -> int | None:
        """estimate_memory at one grid point with the given options, which the theory command checks: by default
        that of P and the times alone; a closure whose memory depends on the point (the exact closure's V4_1
        lattice) overrides it."""
        return self.estimate_memory(int(np.asarray(kin).shape[-1]), times)

    def option(self, name: str) -> Option:
        for option in self.options:
            if option.name == name:
                return option
        raise InputError(name, f"not an option of the {self.name} closure (options: "
                               f"{', '.join(o.name for o in self.options) or 'none'})")

    def check_options(self, given: dict) -> dict:
        """Given options checked against the declaration (InputError naming the option)."""
        return {name: self.option(name).check(value) for name, value in given.items()}

    def check_points(self, points: int) -> None:
        """Raise InputError("points", ...) for output times the continuous form cannot use."""

    def solve(self, activation, kin, *, sw2: float, sb2: float, time: float, depth: int | None = None,
              points: int | None = None, progress=None, **options):
        """activation: the Activation object (names are resolved once, at the API/CLI/study edge).
        The theory as an xarray Dataset of the theory schema (standard fields, parts, every parameter as an
        attribute).  A numerical failure raises FloatingPointError naming the layer (or t)."""
        raise NotImplementedError

    def theory_label(self, depth) -> str:
        """The diagnostics' name of one of its solutions: gonly_discrete, exact_continuum, ..."""
        return str(TheoryLabel.of(self.name, depth))

    def dataset(self, values: dict, times, layers, activation, kin, sw2: float, sb2: float, time: float,
                params: dict, title: str):
        """The theory file: `values` {name: (t, a, b[, c, d]) array}, the standard fields first."""
        from kernel_eft.io import provenance_attrs  # xarray loads only when a theory is solved (fast --help)

        missing = [name for name in STANDARD_FIELDS if name not in values]
        if missing:
            raise ValueError(f"closure {self.name!r} did not compute the standard fields {missing}")
        act = activation  # the Activation object: resolved once at the edge (kernel_eft.api)
        kin = np.asarray(kin, dtype=np.float64)
        P = kin.shape[-1]
        coords = {"t": np.asarray(times, float)}
        if layers is not None:
            coords["layer"] = np.asarray(layers, np.int64)
        coords.update({name: np.arange(P) for name in "abcd"})
        discrete = layers is not None
        attrs = {"closure": self.name, "activation": act.name, "time": float(time), "sw2": float(sw2),
                 "sb2": float(sb2), "kin": kin, "P": P, "mode": "discrete" if discrete else "continuous",
                 "depth": int(layers[-1]) if discrete else None, "points": int(len(times)), **params}
        return schema.dataset("theory", values, coords, provenance_attrs(title, attrs),
                              context={"closure": self.long_label}, extra=self.parts)

    def __repr__(self) -> str:
        return f"<closure {self.name}: {self.description}>"
