"""The figure registry: every module of kernel_eft/figures/ that defines FIGURE (kernel_eft.figures.common.Figure:
its name, whether it draws one grid point or the whole study, the variables it needs, its render function).

Modules are found by themselves, so adding a figure is adding one module; `register_figure` adds one from
elsewhere (a notebook).  `render` draws every figure of a study and its summary table into a staging folder
and moves them into place only when all are written.
"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt

from kernel_eft import schema
from kernel_eft.discovery import declared_in, folder_of
from kernel_eft.figures.common import STYLE, Figure, point_tag
from kernel_eft.figures.summary import NEEDS as SUMMARY_NEEDS
from kernel_eft.figures.summary import collate, summary_html, summary_table
from kernel_eft.io import provenance_attrs, staged_outputs, write_netcdf
from kernel_eft.validation import InputError

FIGURES: dict[str, Figure] = {}
SUMMARY_FILES = ("summary.csv", "summary.nc", "summary.html")
NEEDED_BYTES = 16 << 20  # a study's figures and summary: below this much free space a failure is a full disk


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


def render(points: list, outdir, summary_dir=None):
    """Every figure of every point, the study figures and the summary table.  points: [(path, Dataset)].
    Written in staging folders beside outdir and summary_dir (kernel_eft.io.staged_outputs) and published
    together when complete: a failure leaves both as they were.
    Returns (paths written, summary table)."""
    threshold, nsigma = check_diagnostics(points)
    summary_dir = summary_dir or outdir
    with staged_outputs({"outdir": outdir, "summary_dir": summary_dir}, NEEDED_BYTES) as staged:
        combined = collate([ds for _, ds in points])
        with plt.rc_context(STYLE):
            for _, ds in points:
                for figure in figures_of("point"):
                    figure.render(ds, staged["outdir"])
            for figure in figures_of("study"):
                figure.render(combined, staged["outdir"], threshold, nsigma, [ds for _, ds in points])
        table = write_summary(points, combined, staged["summary_dir"], threshold, nsigma)
    return sorted(staged.published), table


def write_summary(points: list, combined, directory: str, threshold: float, nsigma: float):
    """summary.csv, summary.html and summary.nc of the collated points in `directory`; returns the table."""
    table = summary_table(combined)
    table.to_csv(os.path.join(directory, "summary.csv"), index=False, float_format="%.6g")
    with open(os.path.join(directory, "summary.html"), "w") as fh:
        fh.write(summary_html(table))
    combined.attrs = provenance_attrs("Summary of the closure diagnostics over grid points",
                                      {"threshold": threshold, "nsigma": nsigma,
                                       "diagnostics_files": ",".join(str(path) for path, _ in points)})
    write_netcdf(netcdf_summary(combined), os.path.join(directory, "summary.nc"))
    return table


def netcdf_summary(combined):
    """summary.nc: the collated summary with its depth axis named L (CF reads a coordinate named depth as a
    vertical axis; summary.csv keeps the column name depth)."""
    out = combined.rename({"depth": "L"})
    out["L"].attrs = schema.coordinate("L", None)[2]
    return out


__all__ = ["FIGURES", "Figure", "SUMMARY_FILES", "check_diagnostics", "figures_of", "register_figure", "render"]
