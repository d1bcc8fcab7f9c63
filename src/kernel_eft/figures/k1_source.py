"""Figure 4: the 1/n mean correction K1 and its source against every theory, with pulls against Monte Carlo
extrapolated to n -> infinity (kernel_eft.figures.comparison)."""

from __future__ import annotations

import numpy as np

from kernel_eft.figures.common import (DIMLESS, Figure, closure_of, entry_grid, finish, panel_layout, point_caption,
                                       point_tag, reference_label, shared_legend, width_colors)
from kernel_eft.figures.comparison import (YLABEL_PULL, compared_theories, legend_entries, pull_panel, pull_summary,
                                           value_panel)


def render(ds, outdir: str) -> list[str]:
    p = ds.sizes["pair"]
    colors = width_colors(ds["width"].values)
    theories = [str(th) for th in ds["theory"].values]
    compared = compared_theories(ds)
    fig, axes, where = entry_grid(p, 4, (3.7, 2.5))
    for m in range(p):
        a, b = ds["pair_a"].values[m], ds["pair_b"].values[m]
        for block, (q, what) in enumerate((("K1", "K1"), ("K1_source", "K1 source"))):
            ax = where(2 * block, m)
            value_panel(ax, ds, q, (m,), colors, theories)
            ax.set_title(f"{what}, entry ({a},{b})")
            if ax.get_subplotspec().colspan.start == 0:
                ax.set_ylabel(f"{what} " + DIMLESS)
            ax = where(2 * block + 1, m)
            pull_panel(ax, ds, q, (m,), compared)
            if ax.get_subplotspec().colspan.start == 0:
                ax.set_ylabel(YLABEL_PULL)
        where(3, m).set_xlabel("depth time t " + DIMLESS)
    panel_layout(fig)
    shared_legend(fig, legend_entries(ds, theories, "K1"))
    mism = ds["K1_source_mismatch_t0_sigma"]

    def sigma(v):
        return "n/a (zero MC error)" if not np.isfinite(v) else f"{v:+.1f}σ"

    t0 = "; ".join(f"n={int(w)}: " + ", ".join(
        f"({ds['pair_a'].values[m]},{ds['pair_b'].values[m]}) {sigma(float(mism.sel(width=w).values[m]))}"
        for m in range(p)) for w in ds["width"].values)
    caption = point_caption(ds, (
        "Figure 4. Rows 1-2: the 1/n mean correction K1 = n (mean G − K0_discrete) per width (blue, light to dark "
        "as n grows; with the input layer's fluctuation n (mean G(0) − K_in), of mean exactly zero, subtracted "
        "as a control variate, which also makes K1(0) = 0) and extrapolated to n → ∞ by a weighted fit in 1/n (linear, with a 1/n² term where four or more widths and the χ² test call for it; black squares), against every "
        "theory's K1 (line style = closure), and the pulls (K1_MC∞ − K1_theory)/σ (|pull| ≤ 3 shaded, clipped at "
        "±10). K1: " + pull_summary(ds, "K1", compared) + " Rows 3-4: the exact K1 source n·sw2·(E[S] − F(E[G])) "
        "measured in Monte Carlo against each theory's prediction of it ("
        + "; ".join(f"{closure_of(th).label}: {closure_of(th).source_label}" for th in compared)
        + "), and its pulls. K1 source: " + pull_summary(ds, "K1_source", compared)
        + f" At t = 0 the exact source vanishes (h^0 is Gaussian); MC source minus the {reference_label()} "
        f"prediction there, in MC standard errors: {t0}."))
    return finish(fig, caption, outdir, f"{point_tag(ds)}_{FIGURE.name}")


NEEDS = ("K1_MC", "K1_MC_se", "K1_source_MC", "K1_source_MC_se", "K1_source_mismatch_t0_sigma", "K1_source_theory",
         "K1_theory", "tstar_K1", "tstar_K1_source")
FIGURE = Figure("fig4_k1_source", "point", NEEDS, render, 4)
