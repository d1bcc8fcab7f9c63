"""The figure registry: every module of kernel_eft/figures/ that defines FIGURE (kernel_eft.figures.common.Figure:
its name, whether it draws one grid point or the whole study, the variables it needs, its render function).

Modules are found by themselves, so adding a figure is adding one module; `register_figure` adds one from
elsewhere (a notebook).  The study renderer (staging, publishing, the summary table) is
kernel_eft.figures.study.
"""

from __future__ import annotations

from kernel_eft.discovery import declared_in, folder_of
from kernel_eft.figures.common import Figure, point_tag
from kernel_eft.figures.summary import NEEDS as SUMMARY_NEEDS
from kernel_eft.validation import InputError

FIGURES: dict[str, Figure] = {}


def register_figure(figure: Figure, replace: bool = False) -> Figure:
    if figure.kind not in ("point", "study"):
        raise ValueError(f"figure {figure.name!r}: kind must be 'point' or 'study', got {figure.kind!r}")
    if figure.name in FIGURES and not replace and FIGURES[figure.name] is not figure:
        raise ValueError(f"figure {figure.name!r} is already registered (pass replace=True to replace it)")
    FIGURES[figure.name] = figure
    return figure


def _discover() -> None:
    for figure in declared_in(__name__.rpartition(".")[0], folder_of(__file__), "FIGURE"):
        if isinstance(figure, Figure):
            register_figure(figure)


_discover()


def figures_of(kind: str) -> list[Figure]:
    return sorted((f for f in FIGURES.values() if f.kind == kind), key=lambda f: (f.order, f.name))


def check_diagnostics(points: list) -> tuple[float, float]:
    """Every file has what the figures and the summary read, one validity criterion, one tag per point.
    points: [(path, Dataset)].  Returns (threshold, nsigma)."""
    needs = sorted({name for figure in figures_of("point") for name in figure.needs} | set(SUMMARY_NEEDS))
    for path, ds in points:
        missing = [name for name in needs if name not in ds]
        if missing:
            raise InputError("diagnostics", f"{path} is not a kernel-eft diagnostics file (lacks {missing})")
    threshold = float(points[0][1].attrs["threshold"])
    nsigma = float(points[0][1].attrs["nsigma"])
    for path, ds in points[1:]:
        if float(ds.attrs["threshold"]) != threshold or float(ds.attrs["nsigma"]) != nsigma:
            raise InputError("diagnostics", f"{path} was diagnosed with threshold {ds.attrs['threshold']}, "
                                            f"nsigma {ds.attrs['nsigma']}; {points[0][0]} with {threshold:g}, "
                                            f"{nsigma:g}: one validity criterion per figure")
    tags = {}
    for path, ds in points:  # one file name per point: two points with one tag would overwrite each other
        tag = point_tag(ds)
        if tag in tags:
            raise InputError("diagnostics", f"{tags[tag]} and {path} are both grid point {tag!r}; "
                                            "their figures would overwrite each other")
        tags[tag] = path
    return threshold, nsigma


__all__ = ["FIGURES", "Figure", "check_diagnostics", "figures_of", "register_figure"]
