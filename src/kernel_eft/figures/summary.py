"""The study's summary: every grid point collated on its parameters (xarray combine_by_coords), the summary
table (summary.csv, summary.nc, summary.html) and its terminal form."""

from __future__ import annotations

import csv
import os

import numpy as np
import xarray as xr

from kernel_eft import schema
from kernel_eft.figures.common import point_tag
from kernel_eft.theory.registry import REFERENCE_CLOSURE, get_closure
from kernel_eft.validation import InputError

# what the summary reads from each diagnostics file
NEEDS = ("tstar_V4", "tstar_K1", "tstar_K1_fit", "tstar_V4_inf", "max_K0_relerr", "V4_MC_norm_T",
         "K1_source_mismatch_t0_sigma", "residual_norm_T", "residual_norm_T_se")


GRID_DIMS = ("activation", "sw2", "sb2", "kin", "depth", "T")


def point_summary(ds):
    """Per-point summary as a dataset whose grid parameters are length-1 dimensions (for combine_by_coords);
    its t* refer to the reference closure (discrete layers where given)."""
    a = ds.attrs
    reference = get_closure(REFERENCE_CLOSURE)
    solutions = [reference.theory_label(depth) for depth in (1, None)]  # discrete layers first
    found = [th for th in solutions if th in list(ds["theory"].values)]
    pick = found[0] if found else None
    nan_w = np.full(ds.sizes["width"], np.nan)

    def sel(name):
        return ds[name].sel(theory=pick).values if pick is not None else nan_w

    data = {
        "tstar_V4": (("width",), sel("tstar_V4")),
        "tstar_K1": (("width",), sel("tstar_K1")),
        "tstar_K1_fit": ((), float(ds["tstar_K1_fit"].sel(theory=pick)) if pick is not None else np.nan),
        "tstar_V4_inf": ((), float(ds["tstar_V4_inf"].sel(theory=pick)) if pick is not None and
                         "tstar_V4_inf" in ds else np.nan),
        "max_K0_relerr_discrete": (("width",), ds["max_K0_relerr"].sel(k0_reference="discrete").values),
        "max_K0_relerr_continuum": (("width",), ds["max_K0_relerr"].sel(k0_reference="continuum").values
                                    if "continuum" in list(ds["k0_reference"].values) else nan_w),
        "V4_MC_norm_T": (("width",), ds["V4_MC_norm_T"].values),
        "K1_source_mismatch_t0_sigma": (("width",), _nanmax_abs(ds["K1_source_mismatch_t0_sigma"].values)),
    }
    for part in ("total", "transport", "source", "remainder"):
        data[f"residual_{part}_T"] = (("width",), ds["residual_norm_T"].sel(residual_part=part).values)
        data[f"residual_{part}_T_se"] = (("width",), ds["residual_norm_T_se"].sel(residual_part=part).values)
    out = xr.Dataset(data, coords={"width": ds["width"].values})
    out["samples"] = (("width",), np.array([int(s) for s in str(a["samples"]).split(",")]))
    out["seed"] = (("width",), np.array([str(s) for s in str(a["seeds"]).split(",")], dtype=object))
    grid = {"activation": str(a["activation"]), "sw2": float(a["sw2"]), "sb2": float(a["sb2"]),
            "kin": str(a["kin"]), "depth": int(a["depth"]), "T": float(a["time"])}
    out = out.expand_dims({k: [v] for k, v in grid.items()})
    out = out.assign_coords(rho=("kin", [float(a["rho"])]))  # NaN unless P = 2
    out["theory_used"] = (GRID_DIMS, np.full((1,) * len(GRID_DIMS), pick or "none", dtype=object))
    out["point"] = (GRID_DIMS, np.full((1,) * len(GRID_DIMS), point_tag(ds), dtype=object))
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
    return schema.set_attributes(combined, "summary", {"reference": get_closure(REFERENCE_CLOSURE).label})


def summary_table(combined):
    """Flat table (pandas DataFrame) with one row per existing grid point and width: the point's tag and
    the theory its t* refer to first, then the grid parameters and the numbers."""
    df = combined.to_dataframe().reset_index()
    df = df.dropna(subset=["V4_MC_norm_T"]).rename(columns={"theory_used": "theory"})
    df["transport_fraction_T"] = df["residual_transport_T"] / (df["residual_transport_T"] + df["residual_source_T"])
    first = ["point", "theory"]
    return df[first + [c for c in df.columns if c not in first]].reset_index(drop=True)


def summary_html(table) -> str:
    """The summary table as a standalone HTML page (for the Snakemake report)."""
    import html

    style = ("body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse} "
             "td,th{border:1px solid #bbb;padding:2px 6px;text-align:right} th{background:#eee}")
    caption = ("Summary of the study: one row per grid point and width. t* columns: validity window of the "
               f"{get_closure(REFERENCE_CLOSURE).label} (first t where the relative error exceeds the threshold by "
               "more than nsigma standard errors; inf: never). Errors: delete-one-batch jackknife over seed batches.")
    body = table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-", border=0)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Summary</title><style>{style}</style>"
            f"</head><body><p>{html.escape(caption)}</p>{body}</body></html>\n")


SUMMARY_KEY_COLUMNS = ("point", "theory", "width")


def format_summary_table(table) -> str:
    """The summary as a terminal table: point, closure, width, and every t* and pull column present
    (so columns that later diagnostics add, such as t* intervals, appear by themselves)."""
    rows = table.to_dict("records") if hasattr(table, "to_dict") else list(table)
    if not rows:
        return "(empty summary)"
    columns = [c for c in SUMMARY_KEY_COLUMNS if c in rows[0]]
    columns += [c for c in rows[0] if c.startswith(("tstar", "pull", "worst_pull"))]

    def cell(value) -> str:
        if isinstance(value, float):
            return "never" if value == float("inf") else ("-" if value != value else f"{value:.3g}")
        text = str(value)
        try:
            return cell(float(text)) if text.lower() in ("inf", "nan") or text[:1].isdigit() else text
        except ValueError:
            return text

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def read_summary(path) -> list[dict]:
    """The rows of a summary.csv written by `figures` (InputError naming the file otherwise)."""
    if not os.path.isfile(path):
        raise InputError("summary", f"no such file: {path}")
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError("summary", f"cannot read {path}: {exc}") from None
    if rows and "point" not in rows[0]:
        raise InputError("summary", f"{path} is not a kernel-eft summary table (no 'point' column)")
    return rows
