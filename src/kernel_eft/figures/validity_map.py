"""Figure 5: the validity map: t* of each closure's V4 and K1 over the grid axes that vary, with its 68%
interval, and the depth where the theory's own limit is reached: r = V4/(n K0^2) > 0.15 (O(1/n)), or > 0.63
where V4 + V4_1/n is compared."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from kernel_eft.diagnose.validity import BOOTSTRAP_REPLICATES, R_LIMIT, R_LIMIT_NEXT_ORDER
from kernel_eft.figures.common import DIMLESS, Figure, finish, fmt_tstar
from kernel_eft.figures.summary import summary_table
from kernel_eft.theory.registry import closure_names, get_closure

# grid axes in the order they take the roles x, y, panel (activation last: categorical rows read best)
AXES = ("rho", "sb2", "sw2", "T", "depth", "kin", "activation")
MAP_QUANTITIES = ("V4", "K1")
# panels of one (quantity, closure) side by side, then wrapped onto further rows: the paper grid's 32 panels
# in one row made a figure 146 inches wide
MAX_PANEL_COLUMNS = 8


def varying_axes(table) -> list[str]:
    """The grid axes with more than one value (rho only where every point has two inputs; else kin)."""
    out = []
    for axis in AXES:
        if axis == "rho" and table["rho"].isna().any():
            continue
        if axis == "kin" and "rho" in out:
            continue
        if table[axis].nunique(dropna=False) > 1:
            out.append(axis)
    return out


def closures_in(table) -> list[str]:
    return [c for c in closure_names() if f"tstar_V4_{c}" in table.columns]


def gave_v4_1(row, closure: str) -> bool:
    """Whether the closure's theory gave V4_1 at this point (its per-width next-order pulls are written)."""
    return not math.isnan(float(row.get(f"worst_pull_V4_{closure}_next_width", math.nan)))


def cell_value(row, q: str, closure: str) -> tuple[float, float, float, str]:
    """(t*, lo, hi, source) of one point: against the extrapolated Monte Carlo, or, with fewer than 3 widths,
    against the largest width (V4 of a closure that gave V4_1: against V4 + V4_1/n at that width's n)."""
    est = float(row[f"tstar_{q}_{closure}"])
    if not math.isnan(est) or int(row.get("fit_dof", 0)) > 0:
        return est, float(row[f"tstar_{q}_{closure}_lo"]), float(row[f"tstar_{q}_{closure}_hi"]), "n → ∞"
    name = f"tstar_V4_{closure}_next_width"  # the closure gave V4_1: the width against V4 + V4_1/n at its n
    if q == "V4" and gave_v4_1(row, closure):
        return (float(row[name]), float(row[name + "_lo"]), float(row[name + "_hi"]),
                f"n = {int(row['width'])} (V4 + V4_1/n)")
    return (float(row[f"tstar_{q}_{closure}_width"]), float(row[f"tstar_{q}_{closure}_width_lo"]),
            float(row[f"tstar_{q}_{closure}_width_hi"]), f"n = {int(row['width'])}")


def own_limit(row, q: str, closure: str) -> tuple[float, float]:
    """(first t, r limit) of the theory's own end at the smallest width: r > R_LIMIT for an O(1/n) theory; for
    V4 of a closure that gave V4_1 (its cells compare each width with V4 + V4_1/n), r > R_LIMIT_NEXT_ORDER."""
    if q == "V4" and gave_v4_1(row, closure) and not math.isnan(float(row.get("t_r_limit_next_order", math.nan))):
        return float(row["t_r_limit_next_order"]), R_LIMIT_NEXT_ORDER
    return float(row["t_r_limit"]), R_LIMIT


def _label(value) -> str:
    return f"{value}" if isinstance(value, str) else f"{value:g}"


def render(study, outdir: str) -> list[str]:
    """study: kernel_eft.figures.study.StudyData (the map reads the collated summary)."""
    threshold, nsigma = study.threshold, study.nsigma
    table = summary_table(study.combined)
    widest = table.sort_values("width").groupby("point", sort=False).tail(1)  # one row per point
    smallest = table.sort_values("width").groupby("point", sort=False).head(1).set_index("point")
    axes_vary = varying_axes(widest)
    x_axis = axes_vary[0] if axes_vary else None
    y_axis = axes_vary[1] if len(axes_vary) > 1 else None
    panel_axes = axes_vary[2:]
    xs = sorted(widest[x_axis].unique(), key=str if x_axis in ("kin", "activation") else float) if x_axis else [None]
    ys = sorted(widest[y_axis].unique(), key=str if y_axis in ("kin", "activation") else float) if y_axis else [None]
    panels = list(widest.groupby(panel_axes, sort=True)) if panel_axes else [((), widest)]
    closures = closures_in(widest)
    rows = [(q, c) for c in closures for q in MAP_QUANTITIES]
    tmax = float(widest["T"].max())
    cmap = plt.get_cmap("viridis").with_extremes(over="#1a9641", bad="0.85")  # over: never (inf); bad: not resolved
    cw, ch = 1.25 + 0.2 * (x_axis == "kin"), 0.62
    ncols = min(len(panels), MAX_PANEL_COLUMNS)
    panel_rows = -(-len(panels) // ncols)
    fig_w = max(7.0, ncols * (1.6 + cw * len(xs)))
    fig_h = len(rows) * panel_rows * (1.0 + ch * len(ys))
    fig, axs = plt.subplots(len(rows) * panel_rows, ncols, figsize=(fig_w, fig_h), squeeze=False)
    for r in range(len(rows)):
        for c in range(len(panels), panel_rows * ncols):
            axs[r * panel_rows + c // ncols, c % ncols].set_visible(False)
    image = None
    sources = set()
    for r, (q, closure) in enumerate(rows):
        for c, (key, sub) in enumerate(panels):
            ax = axs[r * panel_rows + c // ncols, c % ncols]
            grid = np.full((len(ys), len(xs)), np.nan)
            for row in sub.itertuples(index=False):
                row = row._asdict()
                i = ys.index(row[y_axis]) if y_axis else 0
                j = xs.index(row[x_axis]) if x_axis else 0
                est, lo, hi, source = cell_value(row, q, closure)
                sources.add(source)
                grid[i, j] = tmax * 1.5 if math.isinf(est) else est
                t_r, limit = own_limit(smallest.loc[row["point"]], q, closure)
                text = ("not\nresolved" if math.isnan(est) else
                        f"{fmt_tstar(est)}\n[{fmt_tstar(lo)}, {fmt_tstar(hi)}]").replace("never (∞)", "never")
                if math.isfinite(t_r):
                    text += f"\nr>{limit:g}: {t_r:.3g}"
                dark = not math.isnan(est) and not math.isinf(est) and est < 0.55 * tmax
                ax.text(j, i, text, ha="center", va="center", fontsize=6.3, color="white" if dark else "black")
                if math.isfinite(t_r) and not math.isnan(est) and t_r < est:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", ec="0.4", lw=0))
            image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=tmax, aspect="auto")
            ax.set_xticks(range(len(xs)), [_label(x) for x in xs] if x_axis else [""])
            ax.set_yticks(range(len(ys)), [_label(y) for y in ys] if y_axis else [""])
            if r == len(rows) - 1 and x_axis:
                ax.set_xlabel(x_axis + ("" if x_axis in ("activation", "kin") else " " + DIMLESS))
            if c % ncols == 0 and y_axis:
                ax.set_ylabel(y_axis)
            key = key if isinstance(key, tuple) else (key,)
            where = ", ".join(f"{a}={_label(v)}" for a, v in zip(panel_axes, key))
            ax.set_title(f"t* of {q}, {get_closure(closure).label}" + (f"\n{where}" if where else ""), fontsize=8.5)
    fig.tight_layout()
    if image is not None:
        bar = fig.colorbar(image, ax=[ax for ax in axs.ravel() if ax.get_visible()], extend="max", shrink=0.9,
                           pad=0.02)
        bar.set_label("validity window t* " + DIMLESS + " (green: never up to T)")
    pts = table[["activation", "sw2", "sb2", "kin", "depth", "T"]].drop_duplicates()
    desc = "; ".join(f"{r.activation}, sw2={r.sw2:g}, sb2={r.sb2:g}, K_in=[{r.kin}], L={r.depth}, T={r.T:g}"
                     for r in pts.itertuples())
    widths = ", ".join(str(int(w)) for w in sorted(table["width"].unique()))
    samples = ", ".join(sorted({str(int(s)) for s in table["samples"]}))
    varying = ", ".join(axes_vary) if axes_vary else "none (one grid point)"
    caption = (
        f"Figure 5. Validity map: t*, the first depth at which the relative error of V4 or K1 against Monte Carlo "
        f"extrapolated to n → ∞ (weighted fit in 1/n over the widths {widths}, linear, with a 1/n² term where four or more widths and the χ² test call for it) exceeds {threshold:g} in any "
        f"entry (deviations counted where they exceed {nsigma:g}σ), for each closure at the Monte Carlo depth, "
        f"over the grid axes that vary ({varying}). Each cell: t* and its 68% interval from {BOOTSTRAP_REPLICATES} bootstrap "
        "resamplings of the seed batches; green: never up to T; grey, 'not resolved': the Monte Carlo cannot "
        f"resolve a {threshold:g} error at T. Last line and hatching: the depth from which r = V4/(n K0²) > {R_LIMIT:g} at "
        "the smallest width, where an O(1/n) expansion itself is no longer expected to hold (hatched where this "
        f"comes before t*); in V4 cells of a theory that gave V4_1, r > {R_LIMIT_NEXT_ORDER:g}, the end of V4 + "
        "V4_1/n (docs/exact_theory.md section 7.2). "
        + ("Cells with fewer than 3 widths use the largest width instead of the extrapolation"
           + (", compared with V4 + V4_1/n at its own n in the V4 cells of a theory that gave V4_1"
              if any("V4_1" in s for s in sources) else "") + ". " if any(s != "n → ∞" for s in sources) else "")
        + f"Grid points: {desc}. Monte Carlo samples per width: {samples}. Errors: bootstrap and delete-one-batch "
        "jackknife over seed batches.")
    return finish(fig, caption, outdir, FIGURE.name)


FIGURE = Figure("fig5_validity_map", "study", ("T", "width", "samples", "t_r_limit"), render, 5)
