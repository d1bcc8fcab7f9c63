"""Figure 6: the collapse: relative error of each closure's V4 against each width's Monte Carlo, plotted
against the fluctuation ratio r = V4/(n K0^2) at that width and depth, for every point of the study."""

from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D
import matplotlib.pyplot as plt

from kernel_eft.diagnose.validity import R_LIMIT, entry_scale
from kernel_eft.figures.common import DIMLESS, Figure, finish, first_of_each_closure, shared_legend, theory_style


def errors_against_r(ds, label: str):
    """(r, max over entries |V4_MC - V4_theory| / scale, its se) for every width and recorded t > 0."""
    P = int(ds.attrs["P"])
    rs, errs, ses = [], [], []
    theory = ds["V4_theory"].sel(theory=label).values
    for i in range(ds.sizes["width"]):
        mc, se = ds["V4_MC"].values[i], ds["V4_MC_se"].values[i]
        scale = entry_scale("V4", mc, P)
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.abs(mc - theory) / scale
            rel_se = se / scale
        flat = rel.reshape(rel.shape[0], -1)
        k = np.nanargmax(np.where(np.isfinite(flat), flat, -1), axis=1)
        rs.append(ds["r_max"].values[i, 1:])
        errs.append(flat[np.arange(flat.shape[0]), k][1:])
        ses.append(rel_se.reshape(rel.shape[0], -1)[np.arange(flat.shape[0]), k][1:])
    return np.concatenate(rs), np.concatenate(errs), np.concatenate(ses)


MARKERS = "os^Dv<>ph*"


def _median_text(err, r) -> str:
    low, high = r < R_LIMIT / 3, r > R_LIMIT
    parts = [f"{np.median(err[low]):.2g} at r < {R_LIMIT / 3:.2g}" if low.any() else "",
             f"{np.median(err[high]):.2g} at r > {R_LIMIT:g}" if high.any() else ""]
    return " and ".join(p for p in parts if p) or "no points"


def render(study, outdir: str) -> list[str]:
    """study: kernel_eft.figures.study.StudyData (the collapse reads every point's diagnostics)."""
    threshold, points = study.threshold, study.points
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    labels, activations = [], []
    for ds in points:
        for label in first_of_each_closure(ds["theory"].values):
            if label not in labels:
                labels.append(label)
        if str(ds.attrs["activation"]) not in activations:
            activations.append(str(ds.attrs["activation"]))
    marker = {act: MARKERS[i % len(MARKERS)] for i, act in enumerate(activations)}
    summary, r_range = [], []
    for label in labels:
        style = theory_style(label)
        per_activation = {}
        for ds in points:
            if label not in list(ds["theory"].values) or not np.all(np.isfinite(ds["V4_theory"].sel(theory=label))):
                continue
            act = str(ds.attrs["activation"])
            r, err, se = errors_against_r(ds, label)
            good = np.isfinite(r) & np.isfinite(err) & (err > 0)
            resolved = good & (err > 2 * se)  # below 2 sigma the error is noise: drawn open
            ax.scatter(r[resolved], err[resolved], s=9, marker=marker[act], color=style["color"], alpha=0.5, lw=0)
            ax.scatter(r[good & ~resolved], err[good & ~resolved], s=9, marker=marker[act], facecolors="none",
                       edgecolors=style["color"], alpha=0.4, lw=0.5)
            rr, ee = per_activation.get(act, (np.empty(0), np.empty(0)))
            per_activation[act] = (np.concatenate([rr, r[good]]), np.concatenate([ee, err[good]]))
            if good.any():
                r_range += [r[good].min(), r[good].max()]
        summary.append(f"{style['label']}: median error " + "; ".join(
            f"{act} {_median_text(e, r)}" for act, (r, e) in per_activation.items()))
    lo, hi = (min(r_range) / 1.5, max(max(r_range), R_LIMIT) * 1.5) if r_range else (1e-3, 1.0)
    x = np.geomspace(lo, hi, 50)
    ax.plot(x, x, color="0.4", ls=":", lw=1.2)
    ax.set_xlim(lo, hi)
    ax.axhline(threshold, color="0.4", ls="--", lw=0.9)
    ax.axvline(R_LIMIT, color="0.6", ls="-", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("fluctuation ratio r = max |V4_MC| / (n K0 K0) " + DIMLESS)
    ax.set_ylabel("max relative error of V4 " + DIMLESS)
    ax.grid(alpha=0.3, which="both")
    entries = [(Line2D([], [], color=theory_style(lab)["color"], ls="none", marker="o", ms=5),
                theory_style(lab)["label"]) for lab in labels]
    entries.append((Line2D([], [], color="0.4", ls=":"), "error = r (the next order)"))
    shown = activations[:max(0, 6 - len(entries))]
    entries += [(Line2D([], [], color="0.3", ls="none", marker=marker[act], ms=5, mfc="none"), act) for act in shown]
    shared_legend(fig, entries)
    fig.tight_layout()
    markers_text = ", ".join(f"{act}: '{marker[act]}'" for act in activations)
    caption = (
        "Figure 6. Collapse: the largest relative error over entries of each closure's V4 (colour; at the Monte "
        "Carlo depth) against the Monte Carlo of one width, |V4_MC − V4_theory| / √|V4_MC[m,m] V4_MC[m',m']|, "
        "against the fluctuation ratio r = max |V4_MC[ab,cd]| / (n √(K0_aa K0_bb K0_cc K0_dd)) at the same width and "
        f"depth, for every recorded depth t > 0, every width and all {len(points)} grid point(s) of the study "
        f"(marker = activation: {markers_text}). Filled: error larger than 2 standard errors; open: within 2σ "
        "(noise). Dotted: error = r, the size of the next order; dashed: the validity threshold "
        f"{threshold:g}; grey line: r = {R_LIMIT:g}. A closure error does not fall as r → 0 (where the closure "
        "fails); an exact O(1/n) theory's error is its O(1/n²) remainder and follows r, so it ends as r "
        f"approaches {R_LIMIT:g}. " + ". ".join(summary) + ".")
    return finish(fig, caption, outdir, FIGURE.name)


FIGURE = Figure("fig6_collapse", "study", ("width",), render, 6)
