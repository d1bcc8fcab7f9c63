"""The comparison panels that figures 2 and 4 share: a quantity against every theory, its relative error and its
pulls, with Monte Carlo extrapolated to n -> infinity.  Not a figure itself (it defines no FIGURE).  Where a theory
gives V4_1 (a diagnostics file with `V4_1_theory`), V4 + V4_1/n is drawn at each width, each width's relative
error and pulls are taken against it (like with like, no extrapolation), and the extrapolation still against V4.

Encoding, the same in every panel and figure: colour = width (light to dark blue as n grows; black = the 1/n
extrapolation to n -> infinity), line style = closure (theory curves in the closure's colour in the value panel).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.lines import Line2D

from kernel_eft.diagnose.validity import R_LIMIT, entry_scale
from kernel_eft.figures.common import (INFINITE_WIDTH_COLOR, closure_line, closure_of, first_of_each_closure,
                                       fmt_tstar, theory_style, width_colors, width_handle)

MC_VARIABLE = {"V4": "V4_MC", "K1": "K1_MC", "K1_source": "K1_source_MC"}
PULL_LIMIT = 3.0
PULL_AXIS = 10.0  # pulls beyond are drawn at the axis edge


def has_extrapolation(ds, q: str) -> bool:
    return f"{q}_inf" in ds and f"{q}_pull" in ds


def next_order_theories(ds, q: str, theories) -> list:
    """The theories among `theories` that give V4_1 (n Cov(G) = V4 + V4_1/n + O(1/n^2)): each width is then also
    compared with V4 + V4_1/n at its own n (kernel_eft.diagnose.validity.next_order_comparison).  [] for K1 and
    the K1 source, and for a file without V4_1."""
    if q != "V4" or "V4_1_theory" not in ds or "V4_next_width_pull" not in ds:
        return []
    return [str(th) for th in theories if np.any(np.isfinite(ds["V4_1_theory"].sel(theory=th).values))]


def next_order_values(ds, th: str) -> np.ndarray:
    """V4 + V4_1/n of theory `th` at each width, (width, t, pair, pair2)."""
    n = ds["width"].values.astype(np.float64)
    V4, V4_1 = ds["V4_theory"].sel(theory=th).values, ds["V4_1_theory"].sel(theory=th).values
    return V4[None] + V4_1[None] / n[:, None, None, None]


def next_order_label(th: str) -> str:
    """Legend and caption name of a theory's next order, from its closure's label ("... + V4_1/n")."""
    return f"{closure_of(th).label} + V4_1/n"


def _entry(values: np.ndarray, entry: tuple) -> np.ndarray:
    return values[(Ellipsis,) + tuple(entry)]


def value_panel(ax, ds, q: str, entry: tuple, colors: dict, theories=None):
    """The quantity per width (bands), extrapolated (black, with error bars) and every theory; on a log axis
    where every value is positive (V4 grows exponentially in t: early depths stay readable)."""
    t = ds["t"].values
    mc, mc_se = ds[MC_VARIABLE[q]].values, ds[MC_VARIABLE[q] + "_se"].values
    for i, w in enumerate(ds["width"].values):
        y, se = _entry(mc[i], entry), _entry(mc_se[i], entry)
        ax.plot(t, y, color=colors[int(w)], lw=1.0)
        ax.fill_between(t, y - se, y + se, color=colors[int(w)], alpha=0.18, lw=0)
    if has_extrapolation(ds, q):
        y, se = _entry(ds[f"{q}_inf"].values, entry), _entry(ds[f"{q}_inf_se"].values, entry)
        every = max(1, t.size // 12)
        ax.fill_between(t, y - se, y + se, color=INFINITE_WIDTH_COLOR, alpha=0.12, lw=0)
        ax.errorbar(t[::every], y[::every], yerr=se[::every], color=INFINITE_WIDTH_COLOR, ls="none", marker="s",
                    ms=2.8, capsize=1.5, lw=0.8)
    theory_values = ds[f"{q}_theory"]
    for th in theories if theories is not None else ds["theory"].values:
        y = _entry(theory_values.sel(theory=th).values, entry)
        if np.any(np.isfinite(y)):
            style = theory_style(th)
            ax.plot(t, y, color=style["color"], ls=style["ls"], marker=style.get("marker"), ms=3,
                    markevery=max(1, t.size // 10), lw=1.4)
    for th in next_order_theories(ds, q, theories if theories is not None else ds["theory"].values):
        line = closure_line(th)
        for i, (w, y) in enumerate(zip(ds["width"].values, next_order_values(ds, th))):
            ax.plot(t, _entry(y, entry), color=colors[int(w)], lw=1.1, ls=line.get("ls", "-"),
                    marker=line.get("marker"), ms=2.5, markevery=max(1, t.size // 10), markerfacecolor="none")
    theory_all = theory_values.values
    if np.nanmin(_entry(mc, entry)) > 0 and np.nanmin(_entry(theory_all, entry)) > 0:
        ax.set_yscale("log")
    else:
        ax.axhline(0, color="0.3", lw=0.6)
    ax.grid(alpha=0.3)


def _relative(q: str, values: np.ndarray, theory: np.ndarray, se: np.ndarray, P: int, entry: tuple):
    """(MC - theory) / scale and se / scale, scale = the larger entry scale of Monte Carlo and theory (as for t*)."""
    scale = _entry(np.maximum(entry_scale(q, values, P), entry_scale(q, theory, P)), entry)
    with np.errstate(invalid="ignore", divide="ignore"):
        good = scale > 0
        safe = np.where(good, scale, 1.0)
        return (np.where(good, (_entry(values, entry) - _entry(theory, entry)) / safe, np.nan),
                np.where(good, _entry(se, entry) / safe, np.nan))


def error_panel(ax, ds, q: str, entry: tuple, colors: dict, compared: list):
    """Relative error of each width (thin) and of the extrapolation (black, band) against each closure."""
    t = ds["t"].values
    P = int(ds.attrs["P"])
    thr = float(ds.attrs["threshold"])
    mc, mc_se = ds[MC_VARIABLE[q]].values, ds[MC_VARIABLE[q] + "_se"].values
    next_order = next_order_theories(ds, q, compared)
    for th in compared:
        theory = ds[f"{q}_theory"].sel(theory=th).values
        line = closure_line(th)
        per_width = next_order_values(ds, th) if th in next_order else None  # like with like: V4 + V4_1/n at n
        for i, w in enumerate(ds["width"].values):
            err, _ = _relative(q, mc[i], theory if per_width is None else per_width[i], mc_se[i], P, entry)
            ax.plot(t, err, color=colors[int(w)], lw=0.9, alpha=0.85, markevery=max(1, t.size // 8), ms=2.5, **line)
        if has_extrapolation(ds, q):
            err, se = _relative(q, ds[f"{q}_inf"].values, theory, ds[f"{q}_inf_se"].values, P, entry)
            ax.plot(t, err, color=INFINITE_WIDTH_COLOR, lw=1.5, markevery=max(1, t.size // 8), ms=3, **line)
            ax.fill_between(t, err - se, err + se, color=INFINITE_WIDTH_COLOR, alpha=0.12, lw=0)
    for s in (-thr, thr):
        ax.axhline(s, color="0.35", ls=":", lw=1.0)
    ax.axhline(0, color="0.3", lw=0.6)
    lo, hi = ax.get_ylim()
    ax.set_ylim(max(min(lo, -1.6 * thr), -1.5), min(max(hi, 1.6 * thr), 1.5))
    shade_r_limit(ax, ds, bool(next_order))
    ax.grid(alpha=0.3)


def pull_panel(ax, ds, q: str, entry: tuple, compared: list):
    """(MC_inf - theory) / sigma against each closure, |pull| <= 3 shaded; or a note without extrapolation."""
    t = ds["t"].values
    next_order = next_order_theories(ds, q, compared)
    if not has_extrapolation(ds, q) and not next_order:
        ax.text(0.5, 0.5, "fewer than 3 widths:\nno 1/n extrapolation, no pulls", ha="center", va="center",
                transform=ax.transAxes, fontsize=8, color="0.3")
        ax.set_yticks([])
        return
    ax.axhspan(-PULL_LIMIT, PULL_LIMIT, color="0.88", lw=0)
    colors = width_colors(ds["width"].values)
    for th in next_order:  # each width against V4 + V4_1/n at its own n (thin, width colour)
        pulls = ds["V4_next_width_pull"].sel(theory=th).values
        for i, w in enumerate(ds["width"].values):
            ax.plot(t, np.clip(_entry(pulls[i], entry), -PULL_AXIS, PULL_AXIS), color=colors[int(w)], lw=0.9,
                    markevery=max(1, t.size // 8), ms=2.5, **closure_line(th))
    for th in compared if has_extrapolation(ds, q) else ():
        pull = _entry(ds[f"{q}_pull"].sel(theory=th).values, entry)
        ax.plot(t, np.clip(pull, -PULL_AXIS, PULL_AXIS), color=INFINITE_WIDTH_COLOR, lw=1.3,
                markevery=max(1, t.size // 8), ms=3, **closure_line(th))
    ax.axhline(0, color="0.3", lw=0.6)
    ax.set_ylim(-PULL_AXIS * 1.05, PULL_AXIS * 1.05)
    shade_r_limit(ax, ds, bool(next_order))
    ax.grid(alpha=0.3)


def shade_r_limit(ax, ds, next_order: bool = False):
    """Hatch the depths beyond the theory's own end at the smallest width: where r = V4/(n K0^2) > r_limit
    (the O(1/n) theory), or, in a V4 panel with V4 + V4_1/n (`next_order`), where r > r_limit_next_order, that
    theory's end (docs/exact_theory.md section 7.2); the O(1/n) limit is then a thin line."""
    t_end = float(ds["t"].values[-1])
    t_r = float(ds["t_r_limit"].values[0]) if "t_r_limit" in ds else math.inf
    if next_order and "t_r_limit_next_order" in ds:
        if math.isfinite(t_r):
            ax.axvline(t_r, color="0.7", lw=0.7, ls="-")
        t_r = float(ds["t_r_limit_next_order"].values[0])
    if math.isfinite(t_r):
        ax.axvspan(t_r, t_end, facecolor="none", edgecolor="0.82", hatch="//", lw=0)


def legend_entries(ds, theories: list, q: str) -> list:
    """Shared legend: the widths (one entry), the extrapolation, one entry per theory solution drawn."""
    widths = ", ".join(str(int(w)) for w in ds["width"].values)
    entries = [(width_handle(width_colors(ds["width"].values)), f"Monte Carlo, n = {widths}")]
    if has_extrapolation(ds, q):
        entries.append((Line2D([], [], color=INFINITE_WIDTH_COLOR, marker="s", ms=3, lw=1.5),
                        f"MC extrapolated to n → ∞ ({int(ds.attrs['fit_dof'])} dof)"))
    next_order = next_order_theories(ds, q, theories)
    for th in theories:
        style = theory_style(th)
        handle = Line2D([], [], color=style["color"], ls=style["ls"], marker=style.get("marker"), ms=3, lw=1.4)
        if th in next_order:  # one entry for both (at most 6 entries): the theory, then its V4 + V4_1/n per width
            colors = list(width_colors(ds["width"].values).values())
            handle = (handle, Line2D([], [], color=colors[-1], ls=style["ls"], marker=style.get("marker"), ms=2.5,
                                     markerfacecolor="none", lw=1.1))
            entries.append((handle, f"{style['label']}; + V4_1/n per width"))
        else:
            entries.append((handle, style["label"]))
    return entries


def first_pull_exit(ds, q: str, th: str) -> float:
    """First t where |pull| > 3 in any entry (inf: never)."""
    pull = np.abs(ds[f"{q}_pull"].sel(theory=th).values)
    hit = (pull > PULL_LIMIT).reshape(pull.shape[0], -1).any(axis=1)
    return float(ds["t"].values[np.argmax(hit)]) if hit.any() else math.inf


def pull_summary(ds, q: str, compared: list) -> str:
    """Caption sentence: per closure, the worst pull and where the pulls leave +-3; t* with its interval."""
    if not has_extrapolation(ds, q):
        return (f"With {ds.sizes['width']} width(s) there is no 1/n extrapolation with a degree of freedom left "
                "(it needs 3 widths): widths shown only, "
                + ("no extrapolated pulls." if next_order_theories(ds, q, compared) else "no pulls."))
    parts = []
    for th in compared:
        worst = float(ds[f"worst_pull_{q}"].sel(theory=th))
        exit_t = first_pull_exit(ds, q, th)
        where = "stays within ±3 at every depth" if math.isinf(exit_t) else f"leaves ±3 at t = {exit_t:.3g}"
        parts.append(f"{theory_style(th)['label']}: max |pull| {worst:.1f}, {where}, t* = {tstar_text(ds, q, th)}")
    return "; ".join(parts) + "."


def next_order_summary(ds, q: str, compared: list) -> str:
    """Caption sentence for the theories with V4_1: per width, the worst |pull| of V4_MC(n) against V4 + V4_1/n
    and against V4 alone, and t* against V4 + V4_1/n; '' where no theory gives V4_1."""
    parts = []
    for th in next_order_theories(ds, q, compared):
        widths = ds["width"].values
        worst = ds["worst_pull_V4_next_width"].sel(theory=th).values
        alone = ds["worst_pull_V4_width"].sel(theory=th).values
        parts.append(f"{next_order_label(th)} against each width (no extrapolation): max |pull| " + ", ".join(
            f"n={int(w)}: {_pull(a)} ({_pull(b)} against V4 alone)" for w, a, b in zip(widths, worst, alone))
            + "; t* " + ", ".join(f"n={int(w)}: {tstar_text(ds, q, th, w, '_next_width')}" for w in widths))
    return ("; ".join(parts) + ".") if parts else ""


def _pull(value) -> str:
    return "-" if not np.isfinite(value) else f"{float(value):.1f}"


def tstar_text(ds, q: str, th: str, width=None, suffix=None) -> str:
    suffix = ("" if width is None else "_width") if suffix is None else suffix
    sel = {"theory": th} if width is None else {"theory": th, "width": width}
    est, lo, hi = (float(ds[f"tstar_{q}{suffix}{s}"].sel(**sel)) for s in ("", "_lo", "_hi"))
    if math.isnan(est):
        return "not resolved"
    if math.isinf(est) and math.isinf(lo):
        return "never"
    return f"{_t(est)} [{_t(lo)}, {_t(hi)}]"


def _t(value: float) -> str:
    return "never" if math.isinf(value) else fmt_tstar(value)


def width_tstar_text(ds, q: str, compared: list) -> str:
    return "; ".join(f"{theory_style(th)['label']}: " + ", ".join(
        f"n={int(w)}: {tstar_text(ds, q, th, w)}" for w in ds["width"].values) for th in compared)


def r_limit_text(ds, next_order: bool = False) -> str:
    """What the hatching marks: the O(1/n) theory's end, r > r_limit; with `next_order` (V4 panels compared
    with V4 + V4_1/n, as shade_r_limit) that theory's own end, r > r_limit_next_order, and a thin line at the
    O(1/n) end."""
    if not (next_order and "t_r_limit_next_order" in ds):
        return _r_limit_text(ds)
    limit, first = float(ds.attrs["r_limit_next_order"]), float(ds.attrs.get("r_limit", R_LIMIT))
    values, widths = ds["t_r_limit_next_order"].values, ds["width"].values
    text = (f"Hatched: depths where the theory's r = V4/(n K0²) > {limit:g} at n = {int(widths[0])}, beyond the "
            f"validity of V4 + V4_1/n (its error, 0.25 r², reaches 0.1 there; docs/exact_theory.md section 7.2; "
            + ("never reached" if not np.any(np.isfinite(values)) else "first t " + ", ".join(
                f"n={int(w)}: {fmt_tstar(v)}" for w, v in zip(widths, values))) + ")")
    t_first = ds["t_r_limit"].values
    if np.isfinite(t_first[0]):
        text += (f"; thin grey line: r > {first:g} at n = {int(widths[0])}, where the O(1/n) theory alone ends "
                 "(first t " + ", ".join(f"n={int(w)}: {fmt_tstar(v)}" for w, v in zip(widths, t_first)) + ")")
    return text + "."


def _r_limit_text(ds) -> str:
    limit = float(ds.attrs.get("r_limit", R_LIMIT))
    if not np.any(np.isfinite(ds["t_r_limit"].values)):
        return f"r = V4/(n K0²) stays below {limit:g} (the O(1/n) theory's own limit) at every width and depth."
    return (f"Hatched: depths where r = V4/(n K0²) > {limit:g} at n = {int(ds['width'].values[0])}, beyond the O(1/n) "
            "theory's own validity (first t with r > " + f"{limit:g}: " + ", ".join(
                f"n={int(w)}: {fmt_tstar(v)}" for w, v in zip(ds["width"].values, ds["t_r_limit"].values)) + ").")


def compared_theories(ds) -> list:
    """One solution per closure in the error and pull panels: the discrete one (at the Monte Carlo depth)."""
    return first_of_each_closure(ds["theory"].values)


YLABEL_PULL = "pull (MC∞ − theory)/σ"
