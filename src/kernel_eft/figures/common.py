"""What every figure shares: the Figure description, styles, captions, bands, saving (PDF, PNG, caption file).

A figure is a module in kernel_eft/figures/ that defines FIGURE = Figure(name, kind, needs, render, order):
kind "point" renders one diagnostics file (render(ds, outdir) -> paths; files named by the point's tag),
kind "study" renders the whole study (render(study, outdir); study: kernel_eft.figures.study.StudyData, the
collated summary, every point's diagnostics and the validity criterion).
`needs` lists the variables it reads, checked before anything is drawn.  Theories are drawn in the style
their closure declares (kernel_eft.theory.closure.Closure.style), so a new closure needs no figure code.
"""

from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass
from typing import Callable

import matplotlib.pyplot as plt  # the CLI selects the Agg backend; a notebook keeps its own
import numpy as np

from kernel_eft.diagnose.compare import ENTRY_CLASSES, entry_classes, pair_label
from kernel_eft.diagnose.tags import default_point_tag
from kernel_eft.theory.registry import get_closure, reference_closure
from kernel_eft.theory.closure import TheoryLabel
from kernel_eft.validation import parse_kin

# applied while a study is rendered (kernel_eft.figures.study), not to the caller's matplotlib
STYLE = {"font.size": 9, "axes.titlesize": 9.5, "legend.fontsize": 7.5, "axes.labelsize": 9,
         # titles at the top of their axes: no axes here has anything above it for matplotlib's automatic
         # title placement to avoid, and that search costs a third of each drawing of a many-panel figure
         "axes.titley": 1.0}


@dataclass(frozen=True)
class Figure:
    name: str  # file stem (a point figure's files are <point tag>_<name>)
    kind: str  # "point" or "study"
    needs: tuple  # variables it reads from a diagnostics file ("point") or the collated summary ("study")
    render: Callable
    order: int  # rendering order (the figure number)


def theory_style(label: str) -> dict:
    """Line style and legend label of a theory (gonly_discrete, exact_continuum, ...) from its closure."""
    parsed = TheoryLabel.parse(label)
    closure, form = get_closure(parsed.closure), parsed.form
    return dict(closure.style[form], label=f"{closure.label}, "
                                           f"{'discrete layers' if form == 'discrete' else 'continuum'}")


def closure_of(label: str):
    return get_closure(TheoryLabel.parse(label).closure)


def first_of_each_closure(labels) -> list:
    """The first solution of each closure among theory labels (discrete layers come before the continuum)."""
    out, seen = [], set()
    for label in labels:
        if closure_of(label).name not in seen:
            seen.add(closure_of(label).name)
            out.append(str(label))
    return out


def reference_label() -> str:
    """The label of the reference closure (the closure under test) in captions and titles."""
    return reference_closure().label


PART_STYLE = {
    "total": dict(color="black", ls="-", label="total  ∫R dt'"),
    "transport": dict(color="tab:red", ls="-", label="transport part"),
    "source": dict(color="tab:blue", ls="--", label="source part"),
    "source_fluctuation": dict(color="tab:cyan", ls=(0, (1, 1)), label="of which the O(1/n) part (sw2/n) Cov(G,S) terms"),
    "remainder": dict(color="0.55", ls=":", label="remainder (statistical, expect 0)"),
}


DIMLESS = "[dimensionless]"


MAX_LEGEND_ENTRIES = 6
INFINITE_WIDTH_COLOR = "black"  # Monte Carlo extrapolated to n -> infinity: the "width" the theories predict


def width_colors(widths) -> dict:
    """Colour = width, the same in every panel and figure of a study: light to dark blue as n grows."""
    import matplotlib

    widths = sorted(int(w) for w in widths)
    cmap = matplotlib.colormaps["Blues"]
    shades = np.linspace(0.4, 0.9, len(widths)) if len(widths) > 1 else [0.7]
    return {w: cmap(float(x)) for w, x in zip(widths, shades)}


def closure_line(label: str) -> dict:
    """Line style (ls, marker) of a theory: line style = closure (and depth form), in every panel."""
    style = theory_style(label)
    return {k: style[k] for k in ("ls", "marker") if k in style}


def width_handle(colors: dict):
    """One legend entry for every width: a tuple of their colours, light to dark."""
    from matplotlib.lines import Line2D

    return tuple(Line2D([], [], color=c, lw=2.2) for c in colors.values())


def shared_legend(fig, entries: list, ncol: int | None = None):
    """The figure's one legend above the axes (the caption goes below them), from (handle, label) pairs; at most MAX_LEGEND_ENTRIES (the built-in
    figures need at most 6; beyond, the last entry says how many more there are)."""
    from matplotlib.legend_handler import HandlerTuple

    if len(entries) > MAX_LEGEND_ENTRIES:  # many closures registered: never fail a study over its legend
        from matplotlib.lines import Line2D

        more = len(entries) - MAX_LEGEND_ENTRIES + 1
        entries = list(entries[:MAX_LEGEND_ENTRIES - 1]) + [(Line2D([], [], ls="none"),
                                                             f"... {more} more (line styles: see the caption)")]
    handles, labels = zip(*entries) if entries else ((), ())
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=ncol or min(3, len(entries)),
               frameon=False, handler_map={tuple: HandlerTuple(ndivide=None, pad=0.0)}, handlelength=3.2)


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
    return default_point_tag(a["activation"], a["depth"], a["time"], a["sw2"], a["sb2"],
                             parse_kin(str(a["kin"]), "kin"))


def band(ax, x, y, se, color, ls="-", label=None, alpha=0.25, lw=1.4, marker=None):
    ax.plot(x, y, color=color, ls=ls, lw=lw, label=label, marker=marker, ms=3.5, markevery=max(1, len(x) // 10))
    ax.fill_between(x, y - se, y + se, color=color, alpha=alpha, lw=0)


def panel_layout(fig, left=0.95, right=0.15, bottom=0.55, top=0.35, wspace=0.34, hspace=0.32):
    """Fixed margins (inches) and gaps (fractions of a panel) for a grid of panels: what tight_layout would
    find for this project's panels, without its extra layout pass (a quarter of a point's figure time; the
    saved image is cropped to its tight bounding box anyway, so only the gaps matter)."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=wspace, hspace=hspace)
    fig.kernel_eft_fixed_margins = True  # finish() may bound the saved image without laying it all out


def saved_box(fig, pad: float = 0.08):
    """The region of the figure to save (inches): the tight bounding box of everything drawn.  A figure laid
    out by panel_layout keeps its axes, tick labels and axis labels inside its fixed margins, so only the
    figure's legends (above the axes) and texts (the caption, below them) can stick out: their union with the
    figure's own box is the same region, without a layout pass over every panel (the dearest part of saving
    a many-panel figure)."""
    renderer = fig.canvas.get_renderer()
    if not getattr(fig, "kernel_eft_fixed_margins", False):
        return fig.get_tightbbox(renderer).padded(pad)
    from matplotlib.transforms import Bbox

    inches = fig.dpi_scale_trans.inverted()
    boxes = [fig.bbox_inches] + [artist.get_window_extent(renderer).transformed(inches)
                                 for artist in list(fig.legends) + list(fig.texts)]
    return Bbox.union(boxes).padded(pad)


def finish(fig, caption: str, outdir: str, stem: str) -> list[str]:
    """Add the caption under the axes, save PDF and PNG (bbox tight: nothing clipped), write caption text."""
    os.makedirs(outdir, exist_ok=True)
    width_in = fig.get_size_inches()[0]
    wrapped = "\n".join(textwrap.wrap(caption, width=int(width_in * 15.5)))
    fig.text(0.01, -0.01, wrapped, ha="left", va="top", fontsize=7.5, wrap=False)
    fig.set_label(stem)  # the figure names itself (tests read its legend when it is closed; no global list)
    # the bounding box once (nothing clipped), for both formats: bbox_inches="tight" would lay the whole
    # figure out again for each file
    box = saved_box(fig)
    paths = []
    for ext in ("pdf", "png"):
        path = os.path.join(outdir, f"{stem}.{ext}")
        # PNG: zlib level 1 (the default 6 spends several times longer for files ~15% smaller)
        fig.savefig(path, dpi=150 if ext == "png" else None, bbox_inches=box,
                    **({"pil_kwargs": {"compress_level": 1}} if ext == "png" else {}))
        paths.append(path)
    with open(os.path.join(outdir, f"{stem}.caption.txt"), "w") as fh:
        fh.write(caption + "\n")
    plt.close(fig)
    return paths




def legend_labels(fig) -> list[str]:
    """Every legend entry of a figure: its figure legends and its axes' legends."""
    labels = []
    for legend in list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]:
        labels += [text.get_text() for text in legend.get_texts()]
    return labels


def legend_above(fig, axes, ncol=4):
    """The shared legend from the labelled artists of the axes (each label once)."""
    entries, labels = [], set()
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                entries.append((h, lab))
                labels.add(lab)
    shared_legend(fig, entries, ncol)


def entry_grid(n_entries: int, blocks: int = 1, panel=(3.7, 3.0)):
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


def representative_entries(P: int) -> dict[str, tuple[int, int]]:
    classes = entry_classes(P)
    return {name: classes[name][0] for name in ENTRY_CLASSES if classes[name]}


def entry_label(m: int, mp: int, P: int) -> str:
    return f"V4[{pair_label(m, P)},{pair_label(mp, P)}]"


def fmt_tstar(value) -> str:
    v = float(value)
    return "never (∞)" if math.isinf(v) else ("n/a" if math.isnan(v) else f"{v:.3g}")
