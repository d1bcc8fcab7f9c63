"""The study's summary: every grid point collated on its parameters (xarray combine_by_coords), the summary
table (summary.csv, summary.nc, summary.html) and its terminal form."""

from __future__ import annotations

import csv
import math
import os

import numpy as np
import xarray as xr

from kernel_eft import schema
from kernel_eft.figures.common import point_tag
from kernel_eft.diagnose.validity import QUANTITIES, R_LIMIT, R_LIMIT_NEXT_ORDER
from kernel_eft.theory.registry import closure_names, get_closure, reference_closure
from kernel_eft.validation import InputError

# what the summary reads from each diagnostics file
NEEDS = ("max_K0_relerr", "V4_MC_norm_T", "K1_source_mismatch_t0_sigma", "residual_norm_T", "residual_norm_T_se",
         "r_max", "t_r_limit") + tuple(f"tstar_{q}{w}{s}" for q in QUANTITIES for w in ("", "_width")
                                       for s in ("", "_lo", "_hi"))

GRID_DIMS = ("activation", "sw2", "sb2", "kin", "depth", "T")
# per-closure summary variables: (diagnostics variable, its dims besides the closure)
CLOSURE_VARIABLES = {f"tstar_{q}{w}{s}": ("width",) if w else () for q in QUANTITIES for w in ("", "_width")
                     for s in ("", "_lo", "_hi")}
CLOSURE_VARIABLES.update({f"worst_pull_{q}": () for q in QUANTITIES})
# each width against V4 + V4_1/n at its own n: only where a point's diagnostics have them (a theory gave V4_1)
NEXT_ORDER_VARIABLES = {name: ("width",) for name in ("worst_pull_V4_width", "worst_pull_V4_next_width",
                                                     "tstar_V4_next_width", "tstar_V4_next_width_lo",
                                                     "tstar_V4_next_width_hi")}


def column_name(variable: str, closure: str) -> str:
    """summary.csv column of a per-closure variable: the closure after the quantity (tstar_V4_lo ->
    tstar_V4_gonly_lo, worst_pull_K1 -> worst_pull_K1_exact)."""
    for q in sorted(QUANTITIES, key=len, reverse=True):  # K1_source before K1
        for prefix in ("tstar_", "worst_pull_"):
            if variable.startswith(prefix + q) and variable[len(prefix + q):][:1] in ("", "_"):
                return f"{prefix}{q}_{closure}{variable[len(prefix + q):]}"
    raise KeyError(variable)


def closure_solutions(ds) -> dict:
    """{closure: theory label} of the solutions the summary uses: per closure, its discrete-layer solution (at
    the Monte Carlo depth) where given, else its continuum one."""
    labels = [str(label) for label in ds["theory"].values]
    out = {}
    for name in closure_names():
        closure = get_closure(name)
        for depth in (1, None):
            if closure.theory_label(depth) in labels:
                out[name] = closure.theory_label(depth)
                break
    return out


def point_summary(ds):
    """Per-point summary as a dataset whose grid parameters are length-1 dimensions (for combine_by_coords);
    per-closure numbers on a `closure` axis."""
    a = ds.attrs
    solutions = closure_solutions(ds)
    closures = list(solutions)
    data = {
        "max_K0_relerr_discrete": (("width",), ds["max_K0_relerr"].sel(k0_reference="discrete").values),
        "max_K0_relerr_continuum": (("width",), ds["max_K0_relerr"].sel(k0_reference="continuum").values
                                    if "continuum" in list(ds["k0_reference"].values)
                                    else np.full(ds.sizes["width"], np.nan)),
        "V4_MC_norm_T": (("width",), ds["V4_MC_norm_T"].values),
        "K1_source_mismatch_t0_sigma": (("width",), _nanmax_abs(ds["K1_source_mismatch_t0_sigma"].values)),
        "r_max_T": (("width",), ds["r_max"].values[:, -1]),
        "t_r_limit": (("width",), ds["t_r_limit"].values),
    }
    if "t_r_limit_next_order" in ds:  # a theory gave V4_1
        data["t_r_limit_next_order"] = (("width",), ds["t_r_limit_next_order"].values)
    for part in ("total", "transport", "source", "remainder"):
        data[f"residual_{part}_T"] = (("width",), ds["residual_norm_T"].sel(residual_part=part).values)
        data[f"residual_{part}_T_se"] = (("width",), ds["residual_norm_T_se"].sel(residual_part=part).values)
    present = {name: dims for name, dims in NEXT_ORDER_VARIABLES.items() if name in ds}
    for name, dims in {**CLOSURE_VARIABLES, **present}.items():
        values = []
        for closure in closures:
            if name in ds:
                v = ds[name].sel(theory=solutions[closure]).values
            else:  # worst pulls need >= 3 widths
                v = np.full(tuple(ds.sizes[d] for d in dims), np.nan)
            values.append(v)
        data[name] = (("closure",) + dims, np.array(values, dtype=np.float64).reshape((len(closures),) + tuple(
            ds.sizes[d] for d in dims)))
    out = xr.Dataset(data, coords={"width": ds["width"].values, "closure": np.array(closures, dtype=object)})
    out["samples"] = (("width",), np.array([int(s) for s in str(a["samples"]).split(",")]))
    out["seed"] = (("width",), np.array([str(s) for s in str(a["seeds"]).split(",")], dtype=object))
    grid = {"activation": str(a["activation"]), "sw2": float(a["sw2"]), "sb2": float(a["sb2"]),
            "kin": str(a["kin"]), "depth": int(a["depth"]), "T": float(a["time"])}
    out = out.expand_dims({k: [v] for k, v in grid.items()})
    out = out.assign_coords(rho=("kin", [float(a["rho"])]))  # NaN unless P = 2
    out["point"] = (GRID_DIMS, np.full((1,) * len(GRID_DIMS), point_tag(ds), dtype=object))
    out["fit_dof"] = (GRID_DIMS, np.full((1,) * len(GRID_DIMS), int(a.get("fit_dof", 0))))
    return out


def _nanmax_abs(values):
    """max |x| over the last axis, NaN where every entry is NaN (no warning)."""
    a = np.abs(values)
    allnan = np.all(np.isnan(a), axis=-1)
    return np.where(allnan, np.nan, np.max(np.where(np.isnan(a), -np.inf, a), axis=-1))


def collate(datasets):
    """Collate per-point summaries on the grid coordinates (combine_by_coords; outer merge for sparse grids)."""
    parts = [point_summary(ds) for ds in datasets]
    try:
        combined = xr.combine_by_coords(parts, combine_attrs="drop", join="outer", data_vars="all",
                                        compat="no_conflicts")
    except ValueError:  # not a full hypercube: merge with NaN fill
        combined = xr.merge(parts, join="outer", combine_attrs="drop", compat="no_conflicts")
    a = datasets[0].attrs
    context = {"reference": reference_closure().label, "threshold": float(a["threshold"]),
               "r_limit": float(a.get("r_limit", R_LIMIT)),
               "r_limit_next_order": float(a.get("r_limit_next_order", R_LIMIT_NEXT_ORDER))}
    combined = schema.set_attributes(combined, "summary", context)
    for name in combined.data_vars:  # the criterion travels with every t* (summary.nc is read on its own)
        if name.startswith("tstar_"):
            combined[name].attrs.update(threshold=float(a["threshold"]), nsigma_resolution=float(a["nsigma"]),
                                        comment="per closure: see the closure coordinate; inf: never up to T")
    return combined


def summary_table(combined):
    """Flat table (pandas DataFrame), one row per existing grid point and width: the point's tag first, then
    the grid parameters and the numbers; per-closure numbers in columns named by column_name."""
    closures = [str(c) for c in combined["closure"].values] if "closure" in combined.dims else []
    per_closure = [name for name in combined.data_vars if "closure" in combined[name].dims]
    flat = combined.drop_vars(per_closure + (["closure"] if closures else []))
    for closure in closures:
        for name in per_closure:
            flat[column_name(name, closure)] = combined[name].sel(closure=closure, drop=True)
    df = flat.to_dataframe().reset_index()
    df = df.dropna(subset=["V4_MC_norm_T"])
    df["transport_fraction_T"] = df["residual_transport_T"] / (df["residual_transport_T"] + df["residual_source_T"])
    first = ["point"]
    return df[first + [c for c in df.columns if c not in first]].reset_index(drop=True)


def summary_html(table) -> str:
    """The summary table as a standalone HTML page (for the Snakemake report)."""
    import html

    style = ("body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse} "
             "td,th{border:1px solid #bbb;padding:2px 6px;text-align:right} th{background:#eee}")
    caption = ("Summary of the study: one row per grid point and width. tstar_{quantity}_{closure}: validity window "
               "of the closure for V4, K1 and the K1 source against Monte Carlo extrapolated to n -> infinity (first "
               "depth t where the relative error exceeds the threshold; inf: never up to T), with its 68% bootstrap "
               "interval (_lo, _hi); ..._width: the same against each width. worst_pull: max |(MC_inf - theory) / "
               "sigma| over depth and entries. r_max_T, t_r_limit: the fluctuation ratio r = V4 / (n K0^2) at T and "
               f"the first t where it exceeds {R_LIMIT:g} (the O(1/n) theory's own limit). Errors: delete-one-batch "
               "jackknife over seed batches.")
    if any(str(c).endswith("_next_width") for c in table.columns):  # a theory gave V4_1 (exact at a depth, P <= 2)
        caption += (" worst_pull_V4_{closure}_next_width: max |(V4_MC(n) - V4 - V4_1/n) / sigma| over depth and "
                    "entries at each width n, no extrapolation, where the theory gives V4_1 (worst_pull_V4_{closure}"
                    "_width: the same against V4 alone); tstar_V4_{closure}_next_width: t* of V4 + V4_1/n per width; "
                    "t_r_limit_next_order: the first t where r exceeds V4 + V4_1/n's own limit.")
    body = table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-", border=0)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Summary</title><style>{style}</style>"
            f"</head><body><p>{html.escape(caption)}</p>{body}</body></html>\n")


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _t(value) -> str:
    v = _number(value)
    return "never" if v == math.inf else ("-" if math.isnan(v) else f"{v:.3g}")


def format_summary_table(table) -> str:
    """The summary as a terminal table, one row per grid point and closure: t* of V4, K1 and the K1 source
    against Monte Carlo extrapolated to n -> infinity with the 68% interval, the worst pull, and the depth at
    which the exact theory's own limit r > R_LIMIT is reached at the smallest width."""
    rows = table.to_dict("records") if hasattr(table, "to_dict") else list(table)
    if not rows:
        return "(empty summary)"
    closures = [c[len("tstar_V4_"):] for c in rows[0] if c.startswith("tstar_V4_")
                and not c.endswith(("_lo", "_hi")) and "_width" not in c]
    columns = ["point", "closure"] + [f"t* {q} [68%]" for q in QUANTITIES] + [f"worst pull {q}" for q in QUANTITIES]
    columns.append(f"r>{R_LIMIT:g} from t")
    # where a theory gave V4_1: each width's worst |pull| against V4 + V4_1/n (and V4 alone), smallest; largest n
    next_order = any(f"worst_pull_V4_{c}_next_width" in rows[0] for c in closures)
    if next_order:
        columns += ["pull V4(n) vs V4+V4_1/n [n min; max]", "vs V4 alone"]
    points: dict[str, list] = {}
    for row in rows:
        points.setdefault(str(row["point"]), []).append(row)
    cells = []
    for point, group in points.items():
        r_limit = min((_number(r.get("t_r_limit")) for r in group), default=math.nan)
        for closure in closures:
            row = group[0]
            line = [point, closure]
            extrapolated = _number(row.get("fit_dof", 0)) > 0
            for q in QUANTITIES:
                est, lo, hi = (row.get(f"tstar_{q}_{closure}{s}") for s in ("", "_lo", "_hi"))
                if math.isnan(_number(est)):
                    line.append("n.r." if extrapolated else "-")
                else:
                    line.append(f"{_t(est)} [{_t(lo)}, {_t(hi)}]")
            line += [_t(row.get(f"worst_pull_{q}_{closure}")) for q in QUANTITIES]
            line.append(_t(r_limit))
            if next_order:
                ends = sorted(group, key=lambda r: _number(r.get("width")))
                ends = [ends[0], ends[-1]] if len(ends) > 1 else ends
                for name in (f"worst_pull_V4_{closure}_next_width", f"worst_pull_V4_{closure}_width"):
                    values = [_number(r.get(name)) for r in ends]
                    line.append("-" if all(math.isnan(v) for v in values) else "; ".join(_t(v) for v in values))
            cells.append(line)
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    lines.append("t*: first depth where |theory - MC extrapolated to n -> inf| exceeds the threshold, 68% bootstrap "
                 "interval (never: up to T; n.r.: the Monte Carlo does not resolve the threshold at T; -: fewer than "
                 "3 widths, per-width t* in summary.csv). Pull: (MC - theory)/sigma.")
    if next_order:
        lines.append("pull V4(n): max |V4_MC(n) - V4 - V4_1/n| / sigma per width, no extrapolation (where the theory "
                     "gives V4_1), at the smallest; largest width; vs V4 alone: the same without V4_1/n.")
    return "\n".join(lines)


def read_summary(path) -> list[dict]:
    """The rows of a summary.csv written by `figures` (InputError naming the file otherwise)."""
    if not os.path.isfile(path):
        raise InputError("summary", f"no such file: {path}")
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            columns = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError("summary", f"cannot read {path}: {exc}") from None
    if "point" not in columns:  # the header decides: a foreign table with no rows is still foreign
        raise InputError("summary", f"{path} is not a kernel-eft summary table (no 'point' column"
                                    + ("; the file is empty)" if not columns else ")"))
    return rows
