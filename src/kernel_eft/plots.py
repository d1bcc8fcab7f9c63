"""Figures of the diagnostics (issue 5).  One function per figure; each writes PDF, PNG and a caption file.

Inputs are diagnostics datasets written by `kernel-eft diagnose` (one grid point each) and, for the
validity window and the summary, the collated summary dataset of `kernel_eft.plots.collate`.
"""

from __future__ import annotations

import math
import os
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kernel_eft.diagnostics import ENTRY_CLASSES, entry_classes, pair_label  # noqa: E402

THEORY_STYLE = {
    "gonly_discrete": dict(color="black", ls="-", label="G-only EFT, discrete layers"),
    "gonly_continuum": dict(color="0.45", ls="--", label="G-only EFT, continuum"),
    "exact_discrete": dict(color="tab:red", ls="-", marker="o", label="exact O(1/n), discrete layers"),
    "exact_continuum": dict(color="tab:red", ls="--", marker="o", label="exact O(1/n), continuum"),
}
PART_STYLE = {
    "total": dict(color="black", ls="-", label="total  ∫R dt'"),
    "transport": dict(color="tab:red", ls="-", label="transport part"),
    "source": dict(color="tab:blue", ls="--", label="source part"),
    "source_fluctuation": dict(color="tab:cyan", ls=(0, (1, 1)), label="of which the O(1/n) part (sw2/n) Cov(G,S) terms"),
    "remainder": dict(color="0.55", ls=":", label="remainder (statistical, expect 0)"),
}
DIMLESS = "[dimensionless]"
plt.rcParams.update({"font.size": 9, "axes.titlesize": 9.5, "legend.fontsize": 7.5, "axes.labelsize": 9})


# Width colours avoid black/grey/red, which mark the theories.
_WIDTH_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:cyan", "tab:olive",
                 "tab:pink")


def width_colors(widths) -> dict:
    return {int(w): _WIDTH_COLORS[i % len(_WIDTH_COLORS)] for i, w in enumerate(widths)}


def point_caption(ds, what: str) -> str:
    """The caption every per-point figure carries: what is shown, then every parameter and the error method."""
    a = ds.attrs
    widths = a["widths"]
    seeds = ", ".join(f"n={w}: seed {s}, {m} samples in {b} batches" for w, s, m, b in zip(
        str(widths).split(","), str(a["seeds"]).split(","), str(a["samples"]).split(","),
        str(a["batches"]).split(",")))
    kin = str(a["kin"]).replace(";", "; ")
    return (f"{what} Activation {a['activation']}, widths n = {widths}, depth L = {a['depth']} blocks, "
            f"T = {float(a['time']):g} (dt = T/L = {float(a['time']) / int(a['depth']):.4g}), "
            f"sw2 = {float(a['sw2']):g}, sb2 = {float(a['sb2']):g}, K_in = [{kin}]. Monte Carlo: {seeds}. "
            f"Bands: ±1 standard error, {a['error_method']}.")


def point_tag(ds) -> str:
    """File-name tag of a grid point: the `point` attribute of its diagnostics (diagnose --tag, or derived
    from every parameter including the whole K_in); derived the same way for files that predate it."""
    a = ds.attrs
    if "point" in a:
        return str(a["point"])
    from kernel_eft.diagnostics import default_point_tag
    from kernel_eft.validation import parse_kin

    return default_point_tag(a["activation"], a["depth"], a["time"], a["sw2"], a["sb2"],
                             parse_kin(str(a["kin"]), "kin"))


def _band(ax, x, y, se, color, ls="-", label=None, alpha=0.25, lw=1.4, marker=None):
    ax.plot(x, y, color=color, ls=ls, lw=lw, label=label, marker=marker, ms=3.5, markevery=max(1, len(x) // 10))
    ax.fill_between(x, y - se, y + se, color=color, alpha=alpha, lw=0)


def _finish(fig, caption: str, outdir: str, stem: str) -> list[str]:
    """Add the caption under the axes, save PDF and PNG (bbox tight: nothing clipped), write caption text."""
    os.makedirs(outdir, exist_ok=True)
    width_in = fig.get_size_inches()[0]
    wrapped = "\n".join(textwrap.wrap(caption, width=int(width_in * 15.5)))
    fig.text(0.01, -0.01, wrapped, ha="left", va="top", fontsize=7.5, wrap=False)
    paths = []
    for ext in ("pdf", "png"):
        path = os.path.join(outdir, f"{stem}.{ext}")
        fig.savefig(path, dpi=150 if ext == "png" else None, bbox_inches="tight", pad_inches=0.08)
        paths.append(path)
    with open(os.path.join(outdir, f"{stem}.caption.txt"), "w") as fh:
        fh.write(caption + "\n")
    plt.close(fig)
    return paths


def _legend_above(fig, axes, ncol=4):
    handles, labels = [], []
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    # Above the axes: the caption goes below them, so the two never overlap.
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=ncol, frameon=False)


def _entry_grid(n_entries: int, blocks: int = 1, panel=(3.7, 3.0)):
    """Figure with `blocks` stacked grids of at most 3 columns, one panel per entry; returns (fig, axes, where)
    with where(block, m) the axis of entry m in block.  Unused panels are hidden."""
    ncols = min(3, n_entries)
    nrows = -(-n_entries // ncols)
    fig, axes = plt.subplots(blocks * nrows, ncols, figsize=(max(panel[0] * ncols, 7.0), panel[1] * blocks * nrows),
                             squeeze=False, sharex=True)
    for blk in range(blocks):
        for k in range(n_entries, nrows * ncols):
            axes[blk * nrows + k // ncols, k % ncols].set_visible(False)

    def where(block: int, m: int):
        return axes[block * nrows + m // ncols, m % ncols]

    return fig, axes, where


def _representative_entries(P: int) -> dict[str, tuple[int, int]]:
    classes = entry_classes(P)
    return {name: classes[name][0] for name in ENTRY_CLASSES if classes[name]}


def _entry_label(m: int, mp: int, P: int) -> str:
    return f"V4[{pair_label(m, P)},{pair_label(mp, P)}]"


# ----------------------------------------------------------------------------------------------
# Figure 1: mean kernel
# ----------------------------------------------------------------------------------------------


def figure_mean_kernel(ds, outdir: str) -> list[str]:
    p = ds.sizes["pair"]
    t = ds["t"].values
    colors = width_colors(ds["width"].values)
    refs = list(ds["k0_reference"].values)
    fig, axes, where = _entry_grid(p, 1, (3.6, 3.2))
    for m in range(p):
        ax = where(0, m)
        for r, ref in enumerate(refs):
            for w in ds["width"].values:
                err = ds["K0_relerr"].sel(k0_reference=ref, width=w).values[:, m]
                se = ds["K0_relerr_se"].sel(k0_reference=ref, width=w).values[:, m]
                _band(ax, t, err, se, colors[int(w)], ls="-" if ref == "discrete" else "--",
                      label=f"n = {int(w)}, K0 {'discrete layers' if ref == 'discrete' else 'continuum'}",
                      alpha=0.25 if ref == "discrete" else 0.12)
        ax.axhline(0, color="0.3", lw=0.7)
        a, b = ds["pair_a"].values[m], ds["pair_b"].values[m]
        ax.set_title(f"entry ({a},{b})")
        ax.set_xlabel("depth time t " + DIMLESS)
        if ax.get_subplotspec().colspan.start == 0:
            ax.set_ylabel("(mean G − K0)_ab / √(K0_aa K0_bb)\n" + DIMLESS)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _legend_above(fig, axes, ncol=min(4, 2 * ds.sizes["width"]))
    maxerr = ds["max_K0_relerr"]
    summary = "; ".join(f"{ref}: " + ", ".join(f"n={int(w)}: {float(maxerr.sel(k0_reference=ref, width=w)):.2g}"
                                               for w in ds["width"].values) for ref in refs)
    caption = point_caption(ds, (
        "Figure 1. Relative error of the infinite-width mean kernel K0 against the Monte Carlo mean of G, "
        "per entry (a,b), normalised by √(K0_aa K0_bb). Solid: K0 from the discrete-layer recursion at the "
        "simulated depth" + ("; dashed: continuum K0 (interpolated to the recorded layers)" if "continuum" in refs
                             else "") + ". The offset is the "
        f"expected finite-width correction K1/n. Max |error| over t and entries: {summary}."))
    return _finish(fig, caption, outdir, f"{point_tag(ds)}_fig1_mean_kernel")


# ----------------------------------------------------------------------------------------------
# Figure 2: kernel covariance V4
# ----------------------------------------------------------------------------------------------


def figure_kernel_covariance(ds, outdir: str) -> list[str]:
    P = int(ds.attrs["P"])
    t = ds["t"].values
    colors = width_colors(ds["width"].values)
    entries = _representative_entries(P)
    theories = list(ds["theory"].values)
    # Bottom row: one G-only reference (discrete layers when given: the MC has finite L) and one exact, so
    # that colour = width and line style = theory stay readable; every theory is drawn in the top row.
    compared = [next((th for th in theories if th.startswith(k)), None) for k in ("gonly", "exact")]
    compared = [th for th in compared if th is not None]
    thr = float(ds.attrs["threshold"])
    ncol = len(entries)
    fig, axes = plt.subplots(2, ncol, figsize=(max(3.8 * ncol, 7.0), 6.0), squeeze=False, sharex=True)
    for c, (cls, (m, mp)) in enumerate(entries.items()):
        ax = axes[0, c]
        for w in ds["width"].values:
            _band(ax, t, ds["V4_MC"].sel(width=w).values[:, m, mp], ds["V4_MC_se"].sel(width=w).values[:, m, mp],
                  colors[int(w)], label=f"Monte Carlo, n = {int(w)}")
        for th in theories:
            ax.plot(t, ds["V4_theory"].sel(theory=th).values[:, m, mp], lw=1.2, ms=3.5,
                    markevery=max(1, len(t) // 10), **THEORY_STYLE[th])
        ax.set_title(f"{cls}: {_entry_label(m, mp, P)}")
        if np.all(ds["V4_MC"].values[..., m, mp] > 0) and np.all(ds["V4_theory"].values[..., m, mp] > 0):
            ax.set_yscale("log")  # V4 grows exponentially in t; a log axis keeps early times readable
        if c == 0:
            ax.set_ylabel("V4 = n Cov(G, G) " + DIMLESS)
        ax.grid(alpha=0.3)
        ax = axes[1, c]
        for th in compared:
            style = THEORY_STYLE[th]
            for w in ds["width"].values:
                _band(ax, t, ds["V4_relerr"].sel(theory=th, width=w).values[:, m, mp],
                      ds["V4_relerr_se"].sel(theory=th, width=w).values[:, m, mp], colors[int(w)], ls=style["ls"],
                      label=f"n = {int(w)} vs {style['label']}", alpha=0.2, marker=style.get("marker"))
        if "V4_inf" in ds and theories:
            th0 = theories[0]
            ref = ds["V4_theory"].sel(theory=th0).values
            scale = np.sqrt(np.abs(ref[:, m, m] * ref[:, mp, mp]))
            _band(ax, t, (ds["V4_inf"].values[:, m, mp] - ref[:, m, mp]) / scale,
                  ds["V4_inf_se"].values[:, m, mp] / scale, "tab:purple", ls="-.", alpha=0.15,
                  label=f"MC extrapolated to n → ∞ vs {THEORY_STYLE[th0]['label']}")
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
    _legend_above(fig, axes, ncol=3)
    tstar = "; ".join(f"{THEORY_STYLE[th]['label']}: " + ", ".join(
        f"n={int(w)}: {_fmt_tstar(ds['tstar_V4'].sel(theory=th, width=w))}" for w in ds["width"].values)
        for th in theories)
    caption = point_caption(ds, (
        "Figure 2. Kernel covariance V4 = n Cov(G_m, G_m') from Monte Carlo against the EFT, one representative "
        "entry per class (pairs m = ab; diag-diag, diag-off, off-off). Bottom: relative error "
        "(V4_MC − V4_EFT)[m,m'] / √(V4_EFT[m,m] V4_EFT[m',m']), the plain relative error for m = m' and the "
        "Cauchy-Schwarz scale otherwise, against " + " and ".join(THEORY_STYLE[th]["label"] for th in compared)
        + "; dotted: the "
        "validity "
        f"threshold ±{thr:g}. Validity window t* (first t where the threshold is exceeded by more than "
        f"{float(ds.attrs['nsigma']):g} sigma in any entry): {tstar}"
        + (f"; MC extrapolated to n → ∞ (weighted fit V4_inf + c/n over the widths, purple): "
           f"{_fmt_tstar(ds['tstar_V4_inf'].values[0])}." if "V4_inf" in ds and theories else ".")))
    return _finish(fig, caption, outdir, f"{point_tag(ds)}_fig2_kernel_covariance")


def _fmt_tstar(value) -> str:
    v = float(value)
    return "never (∞)" if math.isinf(v) else ("n/a" if math.isnan(v) else f"{v:.3g}")


# ----------------------------------------------------------------------------------------------
# Figure 3: V4 equation residual, decomposed
# ----------------------------------------------------------------------------------------------


def figure_residual(ds, outdir: str) -> list[str]:
    P = int(ds.attrs["P"])
    t = ds["t"].values
    entries = _representative_entries(P)
    widths = ds["width"].values
    fig, axes = plt.subplots(len(widths), len(entries), figsize=(max(3.8 * len(entries), 7.0), 2.9 * len(widths)),
                             squeeze=False, sharex=True)
    acc, acc_se = ds["residual_acc"], ds["residual_acc_se"]
    for r, w in enumerate(widths):
        for c, (cls, (m, mp)) in enumerate(entries.items()):
            ax = axes[r, c]
            for part, style in PART_STYLE.items():
                _band(ax, t, acc.sel(residual_part=part, width=w).values[:, m, mp],
                      acc_se.sel(residual_part=part, width=w).values[:, m, mp], style["color"], ls=style["ls"],
                      label=style["label"])
            v4 = ds["V4_MC"].sel(width=w).values[:, m, mp]
            ax.text(0.03, 0.95, f"scale: V4_MC(T) − V4_MC(0) = {v4[-1] - v4[0]:.3g}", transform=ax.transAxes,
                    va="top", fontsize=7.5, bbox=dict(boxstyle="round", fc="white", ec="0.7", alpha=0.85))
            ax.axhline(0, color="0.3", lw=0.7)
            ax.set_title(f"n = {int(w)}, {cls}: {_entry_label(m, mp, P)}")
            if c == 0:
                ax.set_ylabel("accumulated ∫₀ᵗ R dt' " + DIMLESS)
            if r == len(widths) - 1:
                ax.set_xlabel("depth time t " + DIMLESS)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    _legend_above(fig, axes, ncol=3)
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
    return _finish(fig, caption, outdir, f"{point_tag(ds)}_fig3_residual")


# ----------------------------------------------------------------------------------------------
# Figure 4: K1 and the source closure
# ----------------------------------------------------------------------------------------------


def figure_k1(ds, outdir: str) -> list[str]:
    p = ds.sizes["pair"]
    t = ds["t"].values
    colors = width_colors(ds["width"].values)
    theories = [th for th in ds["theory"].values if np.any(np.isfinite(ds["K1_theory"].sel(theory=th).values))]
    fig, axes, where = _entry_grid(p, 2, (3.7, 3.0))
    for m in range(p):
        a, b = ds["pair_a"].values[m], ds["pair_b"].values[m]
        ax = where(0, m)
        for w in ds["width"].values:
            _band(ax, t, ds["K1_MC"].sel(width=w).values[:, m], ds["K1_MC_se"].sel(width=w).values[:, m],
                  colors[int(w)], label=f"n (mean G − K0_discrete), n = {int(w)}")
        if "K1_fit" in ds:
            _band(ax, t, ds["K1_fit"].values[:, m], ds["K1_fit_se"].values[:, m], "tab:purple", ls="-.",
                  label=f"K1 from weighted 1/n fit ({int(ds.attrs['fit_terms'])} terms)", alpha=0.18)
        for th in theories:
            ax.plot(t, ds["K1_theory"].sel(theory=th).values[:, m], lw=1.3, ms=3.5,
                    markevery=max(1, len(t) // 10), **THEORY_STYLE[th])
        ax.axhline(0, color="0.3", lw=0.7)
        ax.set_title(f"K1, entry ({a},{b})")
        if ax.get_subplotspec().colspan.start == 0:
            ax.set_ylabel("K1 " + DIMLESS)
        ax.grid(alpha=0.3)
        ax = where(1, m)
        for w in ds["width"].values:
            src = ds["K1_source_MC"].sel(width=w).values[:, m]
            se = ds["K1_source_MC_se"].sel(width=w).values[:, m]
            _band(ax, t, src, se, colors[int(w)], label=f"exact source n·sw2·(E[S] − F(E[G])), n = {int(w)}")
            ax.errorbar([t[0]], [src[0]], yerr=[se[0]], color=colors[int(w)], marker="o", ms=3.5, capsize=2)
        for th in ds["theory"].values:
            tad = ds["K1_source_theory"].sel(theory=th).values[:, m]
            if np.any(np.isfinite(tad)):
                style = dict(THEORY_STYLE[th])
                term = "source sw2·B, " if str(th).startswith("exact") else "tadpole ½ H:V4, "
                style["label"] = term + style["label"]
                ax.plot(t, tad, lw=1.3, ms=3.5, markevery=max(1, len(t) // 10), **style)
                ax.plot([t[0]], [tad[0]], marker="s", ms=4, color=style["color"])
        ax.axhline(0, color="0.3", lw=0.7)
        ax.set_title(f"K1 source, entry ({a},{b})")
        ax.set_xlabel("depth time t " + DIMLESS)
        if ax.get_subplotspec().colspan.start == 0:
            ax.set_ylabel("dK1/dt source term " + DIMLESS)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _legend_above(fig, axes, ncol=2)
    mism = ds["K1_source_mismatch_t0_sigma"]

    def sigma(v):
        return "n/a (zero MC error)" if not np.isfinite(v) else f"{v:+.1f}σ"

    t0 = "; ".join(f"n={int(w)}: " + ", ".join(
        f"({ds['pair_a'].values[m]},{ds['pair_b'].values[m]}) {sigma(float(mism.sel(width=w).values[m]))}"
        for m in range(p)) for w in ds["width"].values)
    tstar = ", ".join(f"n={int(w)}: {_fmt_tstar(ds['tstar_K1'].sel(width=w).values[0])}"
                      for w in ds["width"].values) if ds.sizes["theory"] else "n/a"
    caption = point_caption(ds, (
        "Figure 4. Top: the 1/n mean correction K1 from Monte Carlo, n (mean G − K0_discrete) per width and the "
        "weighted least-squares fit of mean G against 1/n across widths, against the EFT K1. Bottom: the exact "
        "K1 source n·sw2·(E[S] − F(E[G])) measured in Monte Carlo against the G-only tadpole ½ H:V4 (and, where "
        "present, the exact O(1/n) theory's source sw2·B), including t = 0 (markers), where the exact source "
        "vanishes. MC source minus tadpole at t = 0, in MC standard "
        f"errors: {t0}. K1 validity window t* against {ds['theory'].values[0] if ds.sizes['theory'] else '-'}: "
        f"{tstar}."))
    return _finish(fig, caption, outdir, f"{point_tag(ds)}_fig4_k1_source")


# ----------------------------------------------------------------------------------------------
# Collation over grid points, figure 5 (validity window) and the summary table
# ----------------------------------------------------------------------------------------------

GRID_DIMS = ("activation", "sw2", "sb2", "kin", "depth", "T")


def point_summary(ds):
    """Per-point summary as a dataset whose grid parameters are length-1 dimensions (for combine_by_coords)."""
    import xarray as xr

    a = ds.attrs
    gonly = [th for th in ("gonly_discrete", "gonly_continuum") if th in list(ds["theory"].values)]
    pick = gonly[0] if gonly else None
    nan_w = np.full(ds.sizes["width"], np.nan)

    def sel(name):
        return ds[name].sel(theory=pick).values if pick is not None else nan_w

    data = {
        "tstar_V4": (("width",), sel("tstar_V4"), {"units": "1", "long_name": "V4 validity window t* (G-only)"}),
        "tstar_K1": (("width",), sel("tstar_K1"), {"units": "1", "long_name": "K1 validity window t* (G-only)"}),
        "tstar_K1_fit": ((), float(ds["tstar_K1_fit"].sel(theory=pick)) if pick is not None else np.nan,
                         {"units": "1", "long_name": "K1 validity window t* for the 1/n-fit K1"}),
        "tstar_V4_inf": ((), float(ds["tstar_V4_inf"].sel(theory=pick)) if pick is not None and
                         "tstar_V4_inf" in ds else np.nan,
                         {"units": "1", "long_name": "V4 validity window t* for the n -> infinity extrapolation"}),
        "max_K0_relerr_discrete": (("width",), ds["max_K0_relerr"].sel(k0_reference="discrete").values,
                                   {"units": "1", "long_name": "max |K0 relative error|, discrete K0"}),
        "max_K0_relerr_continuum": (("width",), ds["max_K0_relerr"].sel(k0_reference="continuum").values
                                    if "continuum" in list(ds["k0_reference"].values) else nan_w,
                                    {"units": "1", "long_name": "max |K0 relative error|, continuum K0"}),
        "V4_MC_norm_T": (("width",), ds["V4_MC_norm_T"].values, {"units": "1", "long_name": "|V4_MC(T)|_F"}),
        "K1_source_mismatch_t0_sigma": (("width",), _nanmax_abs(ds["K1_source_mismatch_t0_sigma"].values),
                                        {"units": "1", "long_name": "max over entries |tadpole - MC source| at "
                                                                     "t=0 in MC standard errors"}),
    }
    for part in ("total", "transport", "source", "remainder"):
        data[f"residual_{part}_T"] = (("width",), ds["residual_norm_T"].sel(residual_part=part).values,
                                      {"units": "1", "long_name": f"|accumulated {part} residual at t=T|_F"})
        data[f"residual_{part}_T_se"] = (("width",), ds["residual_norm_T_se"].sel(residual_part=part).values,
                                         {"units": "1", "long_name": f"standard error of residual_{part}_T"})
    out = xr.Dataset(data, coords={"width": ds["width"].values})
    out["samples"] = (("width",), np.array([int(s) for s in str(a["samples"]).split(",")]),
                      {"units": "1", "long_name": "Monte Carlo seeds"})
    out["seed"] = (("width",), np.array([str(s) for s in str(a["seeds"]).split(",")], dtype=object),
                   {"long_name": "Monte Carlo run seed"})
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
    import xarray as xr

    parts = [point_summary(ds) for ds in datasets]
    try:
        combined = xr.combine_by_coords(parts, combine_attrs="drop", join="outer", data_vars="all",
                                        compat="no_conflicts")
    except ValueError:  # not a full hypercube: merge with NaN fill
        combined = xr.merge(parts, join="outer", combine_attrs="drop", compat="no_conflicts")
    return combined


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
               "G-only closure (first t where the relative error exceeds the threshold by more than nsigma "
               "standard errors; inf: never). Errors: delete-one-batch jackknife over seed batches.")
    body = table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-", border=0)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Summary</title><style>{style}</style>"
            f"</head><body><p>{html.escape(caption)}</p>{body}</body></html>\n")


def figure_validity_window(combined, outdir: str, threshold: float, nsigma: float) -> list[str]:
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
    for k, (col, title) in enumerate((("tstar_V4", "V4 (G-only)"), ("tstar_K1", "K1 (G-only)"))):
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
    caption = (f"Figure 5. Validity window of the G-only closure: t* is the first recorded depth at which any entry "
               f"of the relative error of V4 (left) or K1 (right) against the G-only EFT (discrete layers where "
               f"available) exceeds {threshold:g} by more than {nsigma:g} standard errors; open triangles at the "
               f"dotted line (∞): never exceeded up to T. Where the EFT K1 vanishes the K1 test is a pure "
               f"{nsigma:g}σ significance test, so its t* also grows with the statistical power. Grid points: {desc}. Monte Carlo: {seeds}. Errors: "
               "delete-one-batch jackknife over seed batches.")
    return _finish(fig, caption, outdir, "fig5_validity_window")
