"""Figure 4: K1 and its source against every theory."""

from __future__ import annotations

import numpy as np

from kernel_eft.figures.common import (DIMLESS, Figure, band, closure_of, entry_grid, finish, first_of_each_closure,
                                       fmt_tstar, legend_above, point_caption, point_tag, reference_label, theory_style,
                                       width_colors)


def render(ds, outdir: str) -> list[str]:
    p = ds.sizes["pair"]
    t = ds["t"].values
    colors = width_colors(ds["width"].values)
    theories = [th for th in ds["theory"].values if np.any(np.isfinite(ds["K1_theory"].sel(theory=th).values))]
    fig, axes, where = entry_grid(p, 2, (3.7, 3.0))
    for m in range(p):
        a, b = ds["pair_a"].values[m], ds["pair_b"].values[m]
        ax = where(0, m)
        for w in ds["width"].values:
            band(ax, t, ds["K1_MC"].sel(width=w).values[:, m], ds["K1_MC_se"].sel(width=w).values[:, m],
                  colors[int(w)], label=f"n (mean G − K0_discrete), n = {int(w)}")
        if "K1_fit" in ds:
            band(ax, t, ds["K1_fit"].values[:, m], ds["K1_fit_se"].values[:, m], "tab:purple", ls="-.",
                  label=f"K1 from weighted 1/n fit ({int(ds.attrs['fit_terms'])} terms)", alpha=0.18)
        for th in theories:
            ax.plot(t, ds["K1_theory"].sel(theory=th).values[:, m], lw=1.3, ms=3.5,
                    markevery=max(1, len(t) // 10), **theory_style(th))
        ax.axhline(0, color="0.3", lw=0.7)
        ax.set_title(f"K1, entry ({a},{b})")
        if ax.get_subplotspec().colspan.start == 0:
            ax.set_ylabel("K1 " + DIMLESS)
        ax.grid(alpha=0.3)
        ax = where(1, m)
        for w in ds["width"].values:
            src = ds["K1_source_MC"].sel(width=w).values[:, m]
            se = ds["K1_source_MC_se"].sel(width=w).values[:, m]
            band(ax, t, src, se, colors[int(w)], label=f"exact source n·sw2·(E[S] − F(E[G])), n = {int(w)}")
            ax.errorbar([t[0]], [src[0]], yerr=[se[0]], color=colors[int(w)], marker="o", ms=3.5, capsize=2)
        for th in ds["theory"].values:
            tad = ds["K1_source_theory"].sel(theory=th).values[:, m]
            if np.any(np.isfinite(tad)):
                style = theory_style(th)
                style["label"] = f"{closure_of(th).source_label}, " + style["label"]
                ax.plot(t, tad, lw=1.3, ms=3.5, markevery=max(1, len(t) // 10), **style)
                ax.plot([t[0]], [tad[0]], marker="s", ms=4, color=style["color"])
        ax.axhline(0, color="0.3", lw=0.7)
        ax.set_title(f"K1 source, entry ({a},{b})")
        ax.set_xlabel("depth time t " + DIMLESS)
        if ax.get_subplotspec().colspan.start == 0:
            ax.set_ylabel("dK1/dt source term " + DIMLESS)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    legend_above(fig, axes, ncol=2)
    mism = ds["K1_source_mismatch_t0_sigma"]
    sources = first_of_each_closure(ds["theory"].values)

    def sigma(v):
        return "n/a (zero MC error)" if not np.isfinite(v) else f"{v:+.1f}σ"

    t0 = "; ".join(f"n={int(w)}: " + ", ".join(
        f"({ds['pair_a'].values[m]},{ds['pair_b'].values[m]}) {sigma(float(mism.sel(width=w).values[m]))}"
        for m in range(p)) for w in ds["width"].values)
    tstar = ", ".join(f"n={int(w)}: {fmt_tstar(ds['tstar_K1'].sel(width=w).values[0])}"
                      for w in ds["width"].values) if ds.sizes["theory"] else "n/a"
    caption = point_caption(ds, (
        "Figure 4. Top: the 1/n mean correction K1 from Monte Carlo, n (mean G − K0_discrete) per width and the "
        "weighted least-squares fit of mean G against 1/n across widths, against the EFT K1. Bottom: the exact "
        "K1 source n·sw2·(E[S] − F(E[G])) measured in Monte Carlo against each theory's prediction of it ("
        + "; ".join(f"{closure_of(th).label}: {closure_of(th).source_label}" for th in sources)
        + "), including t = 0 (markers), where the exact source vanishes. MC source minus the "
        f"{reference_label()} prediction at t = 0, in MC standard "
        f"errors: {t0}. K1 validity window t* against {ds['theory'].values[0] if ds.sizes['theory'] else '-'}: "
        f"{tstar}."))
    return finish(fig, caption, outdir, f"{point_tag(ds)}_{FIGURE.name}")


# the variables it reads (optional ones, V4_inf and the 1/n fits, are drawn when present)
NEEDS = ("K1_MC", "K1_MC_se", "K1_source_MC", "K1_source_MC_se", "K1_source_mismatch_t0_sigma", "K1_source_theory",
         "K1_theory", "tstar_K1",)
FIGURE = Figure("fig4_k1_source", "point", NEEDS, render, 4)
