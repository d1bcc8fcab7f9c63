"""Figure 6: the collapse: relative error of each closure's V4 against each width's Monte Carlo, plotted
against the fluctuation ratio r = V4/(n K0^2) at that width and depth, for every point of the study."""

from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D
import matplotlib.pyplot as plt

from kernel_eft.diagnose.compare import kernel_scale_pairs
from kernel_eft.diagnose.validity import NEXT_ORDER_ERROR, R_LIMIT, R_LIMIT_NEXT_ORDER, entry_scale, ratio_of
from kernel_eft.figures.common import DIMLESS, Figure, finish, first_of_each_closure, shared_legend, theory_style
from kernel_eft.figures.comparison import next_order_theories, next_order_values


NEXT_ORDER_GID = "V4 + V4_1/n"  # the crosses' artist id (tests find them by it)


def has_next_order(ds, label: str) -> bool:
    """Whether the theory `label` gives V4_1 at this point (exact closure at a depth, P <= 2)."""
    return bool(next_order_theories(ds, "V4", [label]))


def errors_against_r(ds, label: str, next_order: bool = False):
    """(r, max over entries |V4_MC - V4_theory| / scale, its se) for every width and recorded t > 0, with r and
    the scale from the Monte Carlo's V4.  With next_order: against V4_theory + V4_1_theory / n at each width n,
    with r = V4_theory / (n K0^2) and the scale from V4_theory (the theory's own r, in which its error is
    measured to follow 0.25 r^2: docs/exact_theory.md section 7.2)."""
    P = int(ds.attrs["P"])
    rs, errs, ses = [], [], []
    V4 = ds["V4_theory"].sel(theory=label).values
    per_width = next_order_values(ds, label) if next_order else None
    for i in range(ds.sizes["width"]):
        n = float(ds["width"].values[i])
        theory = per_width[i] if next_order else V4
        mc, se = ds["V4_MC"].values[i], ds["V4_MC_se"].values[i]
        scale = entry_scale("V4", V4 if next_order else mc, P)
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.abs(mc - theory) / scale
            rel_se = se / scale
        flat = rel.reshape(rel.shape[0], -1)
        k = np.nanargmax(np.where(np.isfinite(flat), flat, -1), axis=1)
        if next_order:
            rs.append(theory_ratio(ds, V4, n)[1:])
        else:
            rs.append(ds["r_max"].values[i, 1:])
        errs.append(flat[np.arange(flat.shape[0]), k][1:])
        ses.append(rel_se.reshape(rel.shape[0], -1)[np.arange(flat.shape[0]), k][1:])
    return np.concatenate(rs), np.concatenate(errs), np.concatenate(ses)


def theory_ratio(ds, V4: np.ndarray, n: float) -> np.ndarray:
    """r(t) = max over entries |V4[ab,cd]| / (n sqrt(K0_aa K0_bb K0_cc K0_dd)) of a theory's V4 (t, pair, pair2),
    with the discrete K0 (as the diagnostics' r_max, which reads the Monte Carlo's V4)."""
    k0_scale = kernel_scale_pairs(ds["K0_discrete"].values, int(ds.attrs["P"]))
    return ratio_of(V4[None], k0_scale, [n])[0]


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
    # each theory's V4, and, where a point's theory gives V4_1, its V4 + V4_1/n (crosses)
    curves = [(label, False) for label in labels] + [(label, True) for label in labels
                                                      if any(label in list(ds["theory"].values)
                                                             and has_next_order(ds, label) for ds in points)]
    for label, next_order in curves:
        style = theory_style(label)
        per_activation = {}
        for ds in points:
            if label not in list(ds["theory"].values) or not np.all(np.isfinite(ds["V4_theory"].sel(theory=label))):
                continue
            if next_order and not has_next_order(ds, label):
                continue
            act = str(ds.attrs["activation"])
            r, err, se = errors_against_r(ds, label, next_order)
            if next_order:  # crosses: filled where resolved, thin where within 2 sigma
                good = np.isfinite(r) & np.isfinite(err) & (err > 0)
                resolved = good & (err > 2 * se)
                ax.scatter(r[resolved], err[resolved], s=14, marker="x", color=style["color"], alpha=0.7, lw=0.9,
                           gid=NEXT_ORDER_GID)
                ax.scatter(r[good & ~resolved], err[good & ~resolved], s=14, marker="x", color=style["color"],
                           alpha=0.3, lw=0.5, gid=NEXT_ORDER_GID)
                rr, ee = per_activation.get(act, (np.empty(0), np.empty(0)))
                per_activation[act] = (np.concatenate([rr, r[good]]), np.concatenate([ee, err[good]]))
                if good.any():
                    r_range += [r[good].min(), r[good].max()]
                continue
            good = np.isfinite(r) & np.isfinite(err) & (err > 0)
            resolved = good & (err > 2 * se)  # below 2 sigma the error is noise: drawn open
            ax.scatter(r[resolved], err[resolved], s=9, marker=marker[act], color=style["color"], alpha=0.5, lw=0)
            ax.scatter(r[good & ~resolved], err[good & ~resolved], s=9, marker=marker[act], facecolors="none",
                       edgecolors=style["color"], alpha=0.4, lw=0.5)
            rr, ee = per_activation.get(act, (np.empty(0), np.empty(0)))
            per_activation[act] = (np.concatenate([rr, r[good]]), np.concatenate([ee, err[good]]))
            if good.any():
                r_range += [r[good].min(), r[good].max()]
        summary.append(f"{style['label']}{' + V4_1/n' if next_order else ''}: median error " + "; ".join(
            f"{act} {_median_text(e, r)}" for act, (r, e) in per_activation.items()))
    lo, hi = (min(r_range) / 1.5, max(max(r_range), R_LIMIT) * 1.5) if r_range else (1e-3, 1.0)
    x = np.geomspace(lo, hi, 50)
    ax.plot(x, x, color="0.4", ls=":", lw=1.2)
    any_next = any(next_order for _, next_order in curves)
    if any_next:
        ax.plot(x, NEXT_ORDER_ERROR * x ** 2, color="0.4", ls="-.", lw=1.0)
        ax.axvline(R_LIMIT_NEXT_ORDER, color="0.75", ls="-", lw=0.8)
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
    if any_next:
        entries.append((Line2D([], [], color="0.3", ls="-.", marker="x", ms=5),
                        f"× V4 + V4_1/n; error = {NEXT_ORDER_ERROR:g} r² (measured)"))
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
        f"approaches {R_LIMIT:g}. " + (
            f"Crosses: V4 + V4_1/n against the same width (where a theory gives V4_1: exact at a depth, P <= 2), error relative "
            f"to the theory's V4 and plotted at the theory's own r = V4/(n K0²) (the Monte Carlo's r holds the "
            f"error itself); its error follows r², measured as {NEXT_ORDER_ERROR:g} r² (dash-dotted; "
            f"docs/exact_theory.md section 7.2), and reaches the threshold at r = {R_LIMIT_NEXT_ORDER:g} (light grey "
            "line). " if any_next else "")
        + ". ".join(summary) + ".")
    return finish(fig, caption, outdir, FIGURE.name)


FIGURE = Figure("fig6_collapse", "study", ("width",), render, 6)
