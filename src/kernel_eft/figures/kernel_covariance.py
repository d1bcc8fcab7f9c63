"""Figure 2: the kernel covariance V4 against every theory: values, relative error and pulls against Monte Carlo
extrapolated to n -> infinity (kernel_eft.figures.comparison); where a theory gives V4_1, V4 + V4_1/n against
each width at its own n."""

from __future__ import annotations

import matplotlib.pyplot as plt

from kernel_eft.figures.common import (DIMLESS, Figure, entry_label, finish, panel_layout, point_caption, point_tag,
                                       representative_entries, shared_legend, width_colors)
from kernel_eft.figures.comparison import (YLABEL_PULL, compared_theories, error_panel, legend_entries,
                                           next_order_label, next_order_summary, next_order_theories, pull_panel,
                                           pull_summary, r_limit_text, value_panel, width_tstar_text)


def render(ds, outdir: str) -> list[str]:
    P = int(ds.attrs["P"])
    colors = width_colors(ds["width"].values)
    entries = representative_entries(P)
    theories = [str(th) for th in ds["theory"].values]
    compared = compared_theories(ds)
    thr = float(ds.attrs["threshold"])
    ncol = len(entries)
    fig, axes = plt.subplots(3, ncol, figsize=(max(3.8 * ncol, 7.0), 7.6), squeeze=False, sharex=True,
                             gridspec_kw={"height_ratios": [1.3, 1.0, 0.8]})
    for c, (cls, (m, mp)) in enumerate(entries.items()):
        value_panel(axes[0, c], ds, "V4", (m, mp), colors, theories)
        axes[0, c].set_title(f"{cls}: {entry_label(m, mp, P)}")
        error_panel(axes[1, c], ds, "V4", (m, mp), colors, compared)
        pull_panel(axes[2, c], ds, "V4", (m, mp), compared)
        axes[2, c].set_xlabel("depth time t " + DIMLESS)
    axes[0, 0].set_ylabel("V4 = n Cov(G, G) " + DIMLESS)
    axes[1, 0].set_ylabel("relative error of V4 " + DIMLESS)
    # per-width pulls against V4 + V4_1/n are of MC(n), the extrapolation's of MC∞
    axes[2, 0].set_ylabel(YLABEL_PULL if not next_order_theories(ds, "V4", compared) else "pull (MC − theory)/σ")
    fig.align_ylabels(axes[:, 0])
    panel_layout(fig)
    shared_legend(fig, legend_entries(ds, theories, "V4"))
    caption = point_caption(ds, (
        "Figure 2. Kernel covariance V4 = n Cov(G_m, G_m'), one representative entry per class (pairs m = ab; "
        "diag-diag, diag-off, off-off). Top: Monte Carlo per width (blue, light to dark as n grows; bands ±1 "
        "standard error), Monte Carlo extrapolated to n → ∞ by a weighted fit in 1/n (linear, with a 1/n² term where four or more widths and the χ² test call for it; black squares) and "
        "every theory at the Monte Carlo depth (line style = closure). Middle: relative error "
        "(V4_MC − V4_theory) / scale, scale = the larger of √|V4[m,m] V4[m',m']| of Monte Carlo and theory, of each width (thin, blue) and of the extrapolation "
        f"(black) against each closure (line style); dotted: the validity threshold ±{thr:g}. Bottom: pulls "
        "(V4_MC∞ − V4_theory)/σ against each closure, |pull| ≤ 3 shaded grey, clipped at ±10. "
        + pull_summary(ds, "V4", compared) + next_order_caption(ds, compared)
        + f" t* (first depth where the relative error exceeds {thr:g}, counted where the deviation exceeds "
        f"{float(ds.attrs['nsigma']):g}σ; 68% bootstrap interval over seed batches) per width: "
        + width_tstar_text(ds, "V4", compared) + ". "
        + r_limit_text(ds, bool(next_order_theories(ds, "V4", compared)))))
    return finish(fig, caption, outdir, f"{point_tag(ds)}_{FIGURE.name}")


def next_order_caption(ds, compared: list) -> str:
    """Where a theory gives V4_1: what the thin per-width curves of that theory are, and its per-width verdict."""
    theories = next_order_theories(ds, "V4", compared)
    if not theories:
        return ""
    names = ", ".join(next_order_label(th) for th in theories)
    return (f" Where a theory gives V4_1 ({names}): top, V4 + V4_1/n at each width (width colour, the closure's line "
            "style, open markers); middle and bottom, each width's relative error and pull (V4_MC(n) − V4 − V4_1/n)/σ "
            "against it at its own n, with no extrapolation (the black curves stay against V4). "
            + next_order_summary(ds, "V4", compared))


NEEDS = ("V4_MC", "V4_MC_se", "V4_theory", "tstar_V4", "tstar_V4_lo", "tstar_V4_hi", "tstar_V4_width",
         "tstar_V4_width_lo", "tstar_V4_width_hi", "t_r_limit")
FIGURE = Figure("fig2_kernel_covariance", "point", NEEDS, render, 2)
