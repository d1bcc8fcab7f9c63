"""Figure 3: the accumulated V4 equation residual and its transport / source split."""

from __future__ import annotations

import matplotlib.pyplot as plt

from kernel_eft.figures.common import (DIMLESS, PART_STYLE, Figure, band, entry_label, finish, legend_above,
                                       panel_layout, point_caption, point_tag, representative_entries)


def render(ds, outdir: str) -> list[str]:
    P = int(ds.attrs["P"])
    t = ds["t"].values
    entries = representative_entries(P)
    widths = ds["width"].values
    fig, axes = plt.subplots(len(widths), len(entries), figsize=(max(3.8 * len(entries), 7.0), 2.9 * len(widths)),
                             squeeze=False, sharex=True)
    acc, acc_se = ds["residual_acc"], ds["residual_acc_se"]
    for r, w in enumerate(widths):
        for c, (cls, (m, mp)) in enumerate(entries.items()):
            ax = axes[r, c]
            for part, style in PART_STYLE.items():
                band(ax, t, acc.sel(residual_part=part, width=w).values[:, m, mp],
                      acc_se.sel(residual_part=part, width=w).values[:, m, mp], style["color"], ls=style["ls"],
                      label=style["label"])
            v4 = ds["V4_MC"].sel(width=w).values[:, m, mp]
            ax.text(0.03, 0.95, f"scale: V4_MC(T) − V4_MC(0) = {v4[-1] - v4[0]:.3g}", transform=ax.transAxes,
                    va="top", fontsize=7.5, bbox=dict(boxstyle="round", fc="white", ec="0.7", alpha=0.85))
            ax.axhline(0, color="0.3", lw=0.7)
            ax.set_title(f"n = {int(w)}, {cls}: {entry_label(m, mp, P)}")
            if c == 0:
                ax.set_ylabel("accumulated ∫₀ᵗ R dt' " + DIMLESS)
            if r == len(widths) - 1:
                ax.set_xlabel("depth time t " + DIMLESS)
            ax.grid(alpha=0.3)
    panel_layout(fig)
    legend_above(fig, axes, ncol=3)
    norms = ds["residual_norm_T"]
    norms_se = ds["residual_norm_T_se"]
    split = "; ".join(
        f"n={int(w)}: total {float(norms.sel(residual_part='total', width=w)):.3g}±"
        f"{float(norms_se.sel(residual_part='total', width=w)):.2g}, transport "
        f"{float(norms.sel(residual_part='transport', width=w)):.3g}±"
        f"{float(norms_se.sel(residual_part='transport', width=w)):.2g}, source "
        f"{float(norms.sel(residual_part='source', width=w)):.3g}±"
        f"{float(norms_se.sel(residual_part='source', width=w)):.2g} (|V4_MC(T)| = "
        f"{float(ds['V4_MC_norm_T'].sel(width=w)):.3g})" for w in widths)
    caption = point_caption(ds, (
        "Figure 3. Accumulated V4 equation residual ∫₀ᵗ R dt', R = dV4_MC/dt − [J V4_MC + V4_MC Jᵀ + S4(K0)] "
        "(discrete-layer form, J = Df(K0)), split into the transport part n[Cov(G,Ω)+Cov(Ω,G)]_MC − "
        "(J V4_MC + V4_MC Jᵀ) and the source part E[S4(G,Ω)]_MC − S4(K0); E[G_ac Ω_bd] = E[G_ac]E[Ω_bd] + "
        "(sw2/n) Cov(G_ac, S_bd), and that covariance part (cyan) is an O(1/n) term absent from any O(1) V4 "
        "equation (it is the whole residual for linear φ, where the closure is exact at O(1)). The remainder is the statistical "
        "difference R − transport − source (zero in expectation when every layer is recorded). Errors are "
        f"propagated through the batch-resolved raw moments by the jackknife. Frobenius norms at t = T: {split}."))
    return finish(fig, caption, outdir, f"{point_tag(ds)}_{FIGURE.name}")


# the variables it reads (optional ones, V4_inf and the 1/n fits, are drawn when present)
NEEDS = ("V4_MC", "V4_MC_norm_T", "residual_acc", "residual_acc_se", "residual_norm_T", "residual_norm_T_se",)
FIGURE = Figure("fig3_residual", "point", NEEDS, render, 3)
