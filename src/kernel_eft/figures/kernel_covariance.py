"""Figure 2: the kernel covariance V4 against every theory, and its relative error."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from kernel_eft.figures.common import (DIMLESS, Figure, band, entry_label, finish, first_of_each_closure, fmt_tstar,
                                       legend_above, point_caption, point_tag, representative_entries, theory_style,
                                       width_colors)


def render(ds, outdir: str) -> list[str]:
    P = int(ds.attrs["P"])
    t = ds["t"].values
    colors = width_colors(ds["width"].values)
    entries = representative_entries(P)
    theories = list(ds["theory"].values)
    # Bottom row: one solution per closure (discrete layers when given: the MC has finite L), so that
    # colour = width and line style = theory stay readable; every theory is drawn in the top row.
    compared = first_of_each_closure(theories)
    thr = float(ds.attrs["threshold"])
    ncol = len(entries)
    fig, axes = plt.subplots(2, ncol, figsize=(max(3.8 * ncol, 7.0), 6.0), squeeze=False, sharex=True)
    for c, (cls, (m, mp)) in enumerate(entries.items()):
        ax = axes[0, c]
        for w in ds["width"].values:
            band(ax, t, ds["V4_MC"].sel(width=w).values[:, m, mp], ds["V4_MC_se"].sel(width=w).values[:, m, mp],
                  colors[int(w)], label=f"Monte Carlo, n = {int(w)}")
        for th in theories:
            ax.plot(t, ds["V4_theory"].sel(theory=th).values[:, m, mp], lw=1.2, ms=3.5,
                    markevery=max(1, len(t) // 10), **theory_style(th))
        ax.set_title(f"{cls}: {entry_label(m, mp, P)}")
        if np.all(ds["V4_MC"].values[..., m, mp] > 0) and np.all(ds["V4_theory"].values[..., m, mp] > 0):
            ax.set_yscale("log")  # V4 grows exponentially in t; a log axis keeps early times readable
        if c == 0:
            ax.set_ylabel("V4 = n Cov(G, G) " + DIMLESS)
        ax.grid(alpha=0.3)
        ax = axes[1, c]
        for th in compared:
            style = theory_style(th)
            for w in ds["width"].values:
                band(ax, t, ds["V4_relerr"].sel(theory=th, width=w).values[:, m, mp],
                      ds["V4_relerr_se"].sel(theory=th, width=w).values[:, m, mp], colors[int(w)], ls=style["ls"],
                      label=f"n = {int(w)} vs {style['label']}", alpha=0.2, marker=style.get("marker"))
        if "V4_inf" in ds and theories:
            th0 = theories[0]
            ref = ds["V4_theory"].sel(theory=th0).values
            scale = np.sqrt(np.abs(ref[:, m, m] * ref[:, mp, mp]))
            band(ax, t, (ds["V4_inf"].values[:, m, mp] - ref[:, m, mp]) / scale,
                  ds["V4_inf_se"].values[:, m, mp] / scale, "tab:purple", ls="-.", alpha=0.15,
                  label=f"MC extrapolated to n → ∞ vs {theory_style(th0)['label']}")
        for s in (-thr, thr):
            ax.axhline(s, color="0.15", ls=":", lw=1.1, label=f"validity threshold ±{thr:g}")
        ax.axhline(0, color="0.3", lw=0.7)
        lo, hi = ax.get_ylim()
        ax.set_ylim(min(lo, -1.6 * thr), max(hi, 1.6 * thr))  # both threshold lines always visible
        ax.set_xlabel("depth time t " + DIMLESS)
        if c == 0:
            ax.set_ylabel("relative error of V4 " + DIMLESS)
        ax.grid(alpha=0.3)
    fig.align_ylabels(axes[:, 0])
    fig.tight_layout()
    legend_above(fig, axes, ncol=3)
    tstar = "; ".join(f"{theory_style(th)['label']}: " + ", ".join(
        f"n={int(w)}: {fmt_tstar(ds['tstar_V4'].sel(theory=th, width=w))}" for w in ds["width"].values)
        for th in theories)
    caption = point_caption(ds, (
        "Figure 2. Kernel covariance V4 = n Cov(G_m, G_m') from Monte Carlo against the EFT, one representative "
        "entry per class (pairs m = ab; diag-diag, diag-off, off-off). Bottom: relative error "
        "(V4_MC − V4_EFT)[m,m'] / √(V4_EFT[m,m] V4_EFT[m',m']), the plain relative error for m = m' and the "
        "Cauchy-Schwarz scale otherwise, against " + " and ".join(theory_style(th)["label"] for th in compared)
        + "; dotted: the "
        "validity "
        f"threshold ±{thr:g}. Validity window t* (first t where the threshold is exceeded by more than "
        f"{float(ds.attrs['nsigma']):g} sigma in any entry): {tstar}"
        + (f"; MC extrapolated to n → ∞ (weighted fit V4_inf + c/n over the widths, purple): "
           f"{fmt_tstar(ds['tstar_V4_inf'].values[0])}." if "V4_inf" in ds and theories else ".")))
    return finish(fig, caption, outdir, f"{point_tag(ds)}_{FIGURE.name}")


# the variables it reads (optional ones, V4_inf and the 1/n fits, are drawn when present)
NEEDS = ("V4_MC", "V4_MC_se", "V4_relerr", "V4_relerr_se", "V4_theory", "tstar_V4", "tstar_V4_inf",)
FIGURE = Figure("fig2_kernel_covariance", "point", NEEDS, render, 2)
