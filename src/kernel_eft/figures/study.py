"""The study renderer: the figures of grid points, the study figures (map, collapse) and the summary table,
each drawn into a staging folder and published into place only when complete (`stage_and_publish`).

The workflow renders each point in its own job (`render_points` of one diagnostics file) and the study once
(`render_study`); `render` draws both, for the API's one-call `kernel_eft.figures`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import matplotlib.pyplot as plt

from kernel_eft import schema
from kernel_eft.figures.common import STYLE
from kernel_eft.figures.summary import collate, summary_html, summary_table
from kernel_eft.io import provenance_attrs, staged_outputs, write_netcdf

SUMMARY_FILES = ("summary.csv", "summary.nc", "summary.html")
NEEDED_BYTES = 16 << 20  # a study's figures and summary: below this much free space a failure is a full disk


@dataclass(frozen=True)
class StudyData:
    """What a study figure draws from (its one render signature: render(study, outdir)): the collated summary
    of every point, every point's diagnostics, and the validity criterion they share."""

    combined: object  # xarray.Dataset: the points collated on their parameter coordinates
    points: tuple  # every point's diagnostics Dataset
    threshold: float
    nsigma: float


def stage_and_publish(outdir, draw, summary_dir=None) -> list[str]:
    """Call draw(staged) with a staging folder beside outdir (staged["outdir"]) and one beside summary_dir
    (staged["summary_dir"]), each on its destination's own filesystem (kernel_eft.io.staged_outputs), then
    publish everything together: a failure leaves both folders as they were.  Returns the paths written."""
    with staged_outputs({"outdir": outdir, "summary_dir": summary_dir or outdir}, NEEDED_BYTES) as staged:
        draw(staged)
    return sorted(staged.published)


def _registry():
    """The figure registry, imported on use: its discovery imports every module of this folder, this one too."""
    import importlib

    return importlib.import_module("kernel_eft.figures.registry")


def _draw_points(points: list, staged) -> None:
    figures_of = _registry().figures_of
    with plt.rc_context(STYLE):
        for _, ds in points:
            for figure in figures_of("point"):
                figure.render(ds, staged["outdir"])


def _draw_study(points: list, threshold: float, nsigma: float, staged):
    combined = collate([ds for _, ds in points])
    study = StudyData(combined, tuple(ds for _, ds in points), threshold, nsigma)
    figures_of = _registry().figures_of
    with plt.rc_context(STYLE):
        for figure in figures_of("study"):
            figure.render(study, staged["outdir"])
    return write_summary(points, combined, staged["summary_dir"], threshold, nsigma)


def render_points(points: list, outdir) -> list[str]:
    """The point figures of every point.  points: [(path, Dataset)]."""
    _registry().check_diagnostics(points)
    return stage_and_publish(outdir, lambda staged: _draw_points(points, staged))


def render_study(points: list, outdir, summary_dir=None):
    """The study figures and the summary table of all points.  Returns (paths, summary table)."""
    threshold, nsigma = _registry().check_diagnostics(points)
    tables = []
    paths = stage_and_publish(outdir, lambda staged: tables.append(_draw_study(points, threshold, nsigma,
                                                                                staged)), summary_dir)
    return paths, tables[0]


def render(points: list, outdir, summary_dir=None):
    """Every figure of every point, the study figures and the summary table, published together.
    Returns (paths written, summary table)."""
    threshold, nsigma = _registry().check_diagnostics(points)
    tables = []

    def draw(staged):
        _draw_points(points, staged)
        tables.append(_draw_study(points, threshold, nsigma, staged))

    return stage_and_publish(outdir, draw, summary_dir), tables[0]


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


__all__ = ["SUMMARY_FILES", "StudyData", "render", "render_points", "render_study", "stage_and_publish",
           "write_summary"]
