"""The files of one grid point: checks that they belong together, what each theory file is, and its standard
fields on the Monte Carlo times."""

from __future__ import annotations

import math

import numpy as np

from kernel_eft.core.pairs import four_index_to_pairs, to_pairs
from kernel_eft.diagnose.compare import interpolate_in_time
from kernel_eft.theory.registry import closure_names, get_closure, theory_labels
from kernel_eft.theory.closure import IDENTITY_FIELDS, NEXT_ORDER_FIELDS, STANDARD_FIELDS
from kernel_eft.validation import InputError, parse_kin, plain


GRID_ATTRS = ("activation", "time", "sw2", "sb2", "kin")


def attribute(ds, name, path):
    if name not in ds.attrs:
        raise InputError(name, f"{path} has no global attribute {name!r}; is it a kernel-eft file?")
    return ds.attrs[name]


def same_value(name, value, ref):
    if name == "kin":
        A, B = parse_kin(str(value), name), parse_kin(str(ref), name)
        return A.shape == B.shape and np.allclose(A, B, rtol=1e-12, atol=1e-14)
    if isinstance(ref, str) or isinstance(value, str):
        return str(value) == str(ref)
    return math.isclose(float(value), float(ref), rel_tol=1e-12, abs_tol=1e-15)


def theory_kind(ds, path="theory file") -> tuple[str, int | None]:
    """(closure, depth) of a theory file from its attributes: depth None means continuous depth."""
    closure = str(attribute(ds, "closure", path))
    if closure not in closure_names():
        raise InputError("closure", f"{path}: unknown closure {closure!r} (expected one of "
                                    f"{', '.join(closure_names())})")
    depth = ds.attrs.get("depth", None)
    discrete = str(ds.attrs.get("discretisation", ds.attrs.get("discretization", ""))).lower()
    if depth is None or str(depth).strip().lower() in ("none", "", "continuous", "0") or discrete == "continuous":
        return closure, None
    return closure, int(depth)


def check_point_files(mc: list, theories: list) -> dict:
    """Check that (path, dataset) pairs describe one grid point; InputError names the attribute.

    Returns the grid parameters (from the first Monte Carlo file)."""
    if not mc:
        raise InputError("mc", "at least one Monte Carlo file is needed")
    ref_path, ref = mc[0]
    params = {name: attribute(ref, name, ref_path) for name in GRID_ATTRS + ("depth", "width")}
    for path, ds in mc[1:]:
        for name in GRID_ATTRS + ("depth", "record_every"):
            value = attribute(ds, name, path)
            ref_value = attribute(ref, name, ref_path)
            if not same_value(name, value, ref_value):
                raise InputError(name, f"{path} has {name}={plain(value)} but {ref_path} has {name}="
                                       f"{plain(ref_value)}; all files of one grid point must agree")
        for coord, field in (("layer", "layers"), ("t", "times")):
            mine, theirs = ds[coord].values, ref[coord].values
            if mine.shape != theirs.shape or not np.allclose(mine, theirs, rtol=0, atol=1e-12):
                raise InputError(field, f"{path} records {coord} = {_span(mine)} but {ref_path} records "
                                        f"{_span(theirs)}; all files of one grid point must agree")
    widths = [int(attribute(ds, "width", path)) for path, ds in mc]
    if len(set(widths)) != len(widths):
        raise InputError("width", f"two Monte Carlo files have the same width: {sorted(widths)}")
    for path, ds in theories:
        for name in GRID_ATTRS:
            value = attribute(ds, name, path)
            if not same_value(name, value, params[name]):
                raise InputError(name, f"{path} has {name}={plain(value)} but {ref_path} has {name}="
                                       f"{plain(params[name])}; the theory must be solved at the Monte Carlo "
                                       "grid point")
        closure, depth = theory_kind(ds, path)
        if depth is not None and depth != int(params["depth"]):
            raise InputError("depth", f"{path} is a discrete theory with depth={depth} but the Monte Carlo "
                                      f"({ref_path}) has depth={plain(params['depth'])}")
    return params


def _span(values) -> str:
    """[0, 1, 2, ..., 8] (9 values): a recorded axis in a message."""
    values = [plain(v) for v in np.asarray(values)[:]]
    shown = values if len(values) <= 6 else values[:3] + ["..."] + values[-1:]
    return f"[{', '.join(shown)}] ({len(values)} values)"


def theory_on_mc_times(ds, depth, t_mc, layers_mc, name):
    """A theory variable at the Monte Carlo times: layer lookup (discrete) or spline (continuum)."""
    if name not in ds:
        return None
    values = ds[name].values
    values = four_index_to_pairs(values) if values.ndim == 5 else to_pairs(values)
    if depth is not None:
        if "layer" in ds.coords:
            layer_of = {int(l): i for i, l in enumerate(ds["layer"].values)}
            idx = [layer_of[int(l)] for l in layers_mc]
        else:
            idx = [int(np.argmin(np.abs(ds["t"].values - t))) for t in t_mc]
        return values[idx]
    return interpolate_in_time(ds["t"].values, values, t_mc)


def se_or_nan(ds, name):
    return ds[name + "_se"].values if name + "_se" in ds else np.full(ds[name].shape, np.nan)


def theory_label(closure: str, depth) -> str:
    """gonly_discrete, exact_continuum, ...: the name of one solution in the diagnostics' theory axis."""
    return get_closure(closure).theory_label(depth)


def standard_fields(ds):
    """The theory file with its standard fields: a standard field that a closure's older files wrote under
    another name (Closure.legacy_fields) is read from that name."""
    name = str(ds.attrs.get("closure", ""))
    legacy = get_closure(name).legacy_fields if name in closure_names() else {}
    for field, old in legacy.items():
        if field not in ds and old in ds:
            ds = ds.assign({field: ds[old]})
    return ds


def theory_curves(theories: list, t, layers) -> tuple[list[str], dict]:
    """(labels in registry order, {label: {field: (R, p[, p]) array or None}}): every standard field of every
    theory file on the Monte Carlo times, and each next-order field (V4_1) and identity field where the file has
    it (else None).
    One file per closure and depth form."""
    labels, curves = [], {}
    for path, ds in theories:
        closure, depth = theory_kind(ds, path)
        label = theory_label(closure, depth)
        if label in labels:
            raise InputError("theories", f"two theory files are both {label}: give one of each kind")
        labels.append(label)
        ds = standard_fields(ds)
        try:
            curves[label] = {name: theory_on_mc_times(ds, depth, t, layers, name)
                             for name in STANDARD_FIELDS + NEXT_ORDER_FIELDS + IDENTITY_FIELDS}
        except (ValueError, KeyError) as exc:
            raise InputError("theories", f"{path}: {exc}") from None
    return [label for label in theory_labels() if label in labels], curves
