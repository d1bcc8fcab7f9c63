"""Input validation shared by every entry point.

Each check raises InputError naming the offending field; the CLI turns that into exit code 2
before any output file is opened.
"""

from __future__ import annotations

import numpy as np

# Monte Carlo estimators: "martingale" adds exactly zero-mean control variates (simulate/controls.py). Here,
# below every room, because the simulator, the study config and the CLI all offer the choice.
CONTROL_VARIATES = ("none", "martingale")


class InputError(ValueError):
    """Bad user input.  `field` names the argument or config key."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NonFiniteError(FloatingPointError):
    """A result overflowed float64 (nothing is written); the message names the variable, layer, t and entry."""


def non_finite_message(arrays: dict, times=None, layers=None) -> str | None:
    """The first inf or NaN among float arrays whose leading axis is along `times`: the variable, the layer
    and t, and the entry; None if every value is finite."""
    for name, values in arrays.items():
        values = np.asarray(values)
        if values.dtype.kind != "f":
            continue
        bad = ~np.isfinite(values)
        if not bad.any():
            continue
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        where, entry = "", index
        if times is not None and values.ndim >= 1 and values.shape[0] == len(times):
            k, entry = index[0], index[1:]
            where = (f" at layer {int(layers[k])}" if layers is not None else "") + f" (t = {float(times[k]):.6g})"
        entry_text = f", entry {list(entry)}" if entry else ""
        return (f"non-finite {name}{where}{entry_text} = {values[index]}: the kernel overflowed float64 "
                "(reduce sw2*T or the input norm)")
    return None


def parse_kin(text: str, field: str = "--kin") -> np.ndarray:
    """Parse "1,0.6;0.6,1" (rows by ';', entries by ',') or "1.5" (1x1) into a checked K_in."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(field, "empty input kernel; expected rows separated by ';' and entries by ','")
    rows = [r for r in text.strip().split(";")]
    try:
        values = [[float(x) for x in row.split(",")] for row in rows]
    except ValueError as exc:
        raise InputError(field, f"could not parse {text!r} as numbers ({exc})") from None
    lengths = {len(r) for r in values}
    if len(lengths) != 1 or lengths.pop() != len(values):
        raise InputError(
            field, f"{text!r} is not a square matrix: {len(values)} rows of lengths {[len(r) for r in values]}"
        )
    return check_kin(np.array(values, dtype=np.float64), field)


def check_kin(K: np.ndarray, field: str = "--kin") -> np.ndarray:
    """Check that K is a finite, square, symmetric positive semi-definite float64 matrix."""
    K = np.asarray(K, dtype=np.float64)
    if K.ndim == 0:
        K = K.reshape(1, 1)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] < 1:
        raise InputError(field, f"input kernel must be a square P x P matrix, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        a, b = (int(i) for i in np.argwhere(~np.isfinite(K))[0])
        raise InputError(field, f"input kernel entry K_in[{a},{b}] is {K[a, b]}; every entry must be finite")
    scale = max(float(np.max(np.abs(K))), 1e-300)
    if not np.allclose(K, K.T, rtol=0, atol=1e-12 * scale):
        raise InputError(field, f"input kernel is not symmetric: {K.tolist()}")
    K = 0.5 * (K + K.T)
    eig = np.linalg.eigvalsh(K)
    if eig[0] < -1e-10 * scale:
        raise InputError(
            field, f"input kernel is not positive semi-definite (smallest eigenvalue {eig[0]:.3g}): {K.tolist()}"
        )
    if np.any(np.diag(K) <= 0):
        raise InputError(field, "every input needs a positive norm K_aa > 0")
    return K


def check_int(value, field: str, minimum: int) -> int:
    try:
        iv = int(value)
    except (TypeError, ValueError):
        raise InputError(field, f"expected an integer, got {value!r}") from None
    if iv != value and not (isinstance(value, str) and str(iv) == value.strip()):
        raise InputError(field, f"expected an integer, got {value!r}")
    if iv < minimum:
        raise InputError(field, f"must be >= {minimum}, got {iv}")
    return iv


def check_float(value, field: str, *, positive: bool = False, nonnegative: bool = False) -> float:
    try:
        fv = float(value)
    except (TypeError, ValueError):
        raise InputError(field, f"expected a number, got {value!r}") from None
    if not np.isfinite(fv):
        raise InputError(field, f"must be finite, got {value!r}")
    if positive and fv <= 0:
        raise InputError(field, f"must be > 0, got {fv}")
    if nonnegative and fv < 0:
        raise InputError(field, f"must be >= 0, got {fv}")
    return fv


def format_kin(K: np.ndarray) -> str:
    """Inverse of parse_kin, for provenance attributes."""
    return ";".join(",".join(repr(float(x)) for x in row) for row in np.asarray(K))


def plain(value) -> str:
    """A value as a user reads it in an error message: 8, 0.5, relu (not np.int64(8) or 'relu')."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return str(value.tolist())
    return str(value)
