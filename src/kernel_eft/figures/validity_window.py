"""Figure 5: the validity window t* of the reference closure over the grid (one figure for the study)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from kernel_eft.figures.common import DIMLESS, Figure, finish, reference_label
from kernel_eft.figures.summary import summary_table


def render(combined, outdir: str, threshold: float, nsigma: float) -> list[str]:
    """t* for V4 and K1 over the grid: x axis = the first varying numeric grid axis (width if none varies)."""
    table = summary_table(combined)
    varying = [d for d in ("sw2", "rho", "sb2", "T", "depth") if table[d].nunique() > 1]
    xaxis = varying[0] if varying else "width"
    groups = [c for c in ("activation", "sw2", "rho", "sb2", "T", "depth", "width") if c != xaxis
              and table[c].nunique() > 1]
    if table.duplicated(subset=groups + [xaxis]).any():  # points told apart only by K_in: one line per point
        groups.append("point")
    tmax = float(table["T"].max())
    never = 1.1 * tmax
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8), squeeze=False)
    markers = "osD^v<>ph*"
    reference = reference_label()
    for k, (col, title) in enumerate((("tstar_V4", f"V4 ({reference})"), ("tstar_K1", f"K1 ({reference})"))):
        ax = axes[0, k]
        keyed = table.groupby(groups, dropna=False) if groups else [((), table)]  # rho is NaN unless P = 2
        for g, (key, sub) in enumerate(keyed):
            key = key if isinstance(key, tuple) else (key,)
            sub = sub.sort_values(xaxis)
            y = sub[col].to_numpy(dtype=float)
            x = sub[xaxis].to_numpy(dtype=float)
            yplot = np.where(np.isinf(y), never, y)
            label = ", ".join(f"{n}={v}" for n, v in zip(groups, key)) or "all points"
            line, = ax.plot(x, yplot, marker=markers[g % len(markers)], ms=5, lw=1.0, label=label)
            inf = np.isinf(y)
            if inf.any():
                ax.plot(x[inf], yplot[inf], ls="none", marker="^", ms=9, mfc="none", color=line.get_color())
        ax.axhline(never, color="0.5", ls=":", lw=0.9)
        ax.set_ylim(0, 1.18 * tmax)
        ticks = [v for v in ax.get_yticks() if 0 <= v <= tmax * 1.001]
        ax.set_yticks(ticks + [never], [f"{v:g}" for v in ticks] + ["∞ (never)"])
        ax.set_xlabel(f"{xaxis} " + ("[neurons]" if xaxis == "width" else DIMLESS))
        if xaxis == "width":
            ax.set_xscale("log", base=2)
            widths = sorted(table["width"].unique())
            ax.set_xticks(widths, [str(int(w)) for w in widths])
            ax.minorticks_off()
        ax.set_ylabel("validity window t* " + DIMLESS)
        ax.set_title(f"{title}: first t with error > {threshold:g} + {nsigma:g}σ")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", frameon=True, framealpha=0.85)
    fig.tight_layout()
    pts = table[["activation", "sw2", "sb2", "kin", "depth", "T"]].drop_duplicates()
    desc = "; ".join(f"{r.activation}, sw2={r.sw2:g}, sb2={r.sb2:g}, K_in=[{r.kin}], L={r.depth}, T={r.T:g}"
                     for r in pts.itertuples())
    seeds = "; ".join(f"{r.activation} n={int(r.width)}: seed {r.seed}, {int(r.samples)} samples"
                      for r in table.itertuples())
    caption = (f"Figure 5. Validity window of the {reference}: t* is the first recorded depth at which any entry "
               f"of the relative error of V4 (left) or K1 (right) against the {reference} (discrete layers where "
               f"available) exceeds {threshold:g} by more than {nsigma:g} standard errors; open triangles at the "
               f"dotted line (∞): never exceeded up to T. Where the EFT K1 vanishes the K1 test is a pure "
               f"{nsigma:g}σ significance test, so its t* also grows with the statistical power. Grid points: {desc}. Monte Carlo: {seeds}. Errors: "
               "delete-one-batch jackknife over seed batches.")
    return finish(fig, caption, outdir, FIGURE.name)


FIGURE = Figure("fig5_validity_window", "study", ("tstar_V4", "tstar_K1", "T", "width", "seed", "samples"), render, 5)
