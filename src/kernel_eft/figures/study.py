"""The study renderer: the figures of grid points, the study figures (map, collapse) and the summary table,
each drawn into a staging folder and published into place only when complete (`stage_and_publish`).

The workflow renders each point in its own job (`render_points` of one diagnostics file) and the study once
(`render_study`); `render` draws both, for the API's one-call `kernel_eft.figures`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

import matplotlib.pyplot as plt

from kernel_eft import schema
from kernel_eft.figures.common import STYLE
from kernel_eft.figures.summary import collate, summary_html, summary_table
from kernel_eft.io import provenance_attrs, usual_permissions, write_failure, write_netcdf

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
    """Call draw(staging) on a new staging folder beside outdir, then move the summary files it wrote into
    summary_dir and everything else into outdir: a failure leaves both as they were.  Returns the paths."""
    outdir = os.path.abspath(outdir)
    summary_dir = os.path.abspath(summary_dir or outdir)
    staging = None
    try:
        os.makedirs(os.path.dirname(outdir), exist_ok=True)
        staging = tempfile.mkdtemp(prefix=os.path.basename(outdir) + ".", suffix=".tmp", dir=os.path.dirname(outdir))
        usual_permissions(staging, 0o777)  # mkdtemp makes 0700; the folder may become outdir itself
        draw(staging)
        names = sorted(os.listdir(staging))
        written = []
        summaries = [name for name in SUMMARY_FILES if name in names]
        if summaries:
            os.makedirs(summary_dir, exist_ok=True)
        for name in summaries:
            os.replace(os.path.join(staging, name), os.path.join(summary_dir, name))
            written.append(os.path.join(summary_dir, name))
        _publish(staging, outdir)
        written += [os.path.join(outdir, name) for name in names if name not in summaries]
    except (OSError, RuntimeError) as exc:
        raise write_failure(exc, outdir, "outdir", NEEDED_BYTES) from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return sorted(written)


def _publish(staging: str, outdir: str) -> None:
    """Move the staged files into outdir: a rename of the whole folder when outdir is new."""
    if not os.path.exists(outdir):
        os.rename(staging, outdir)
        return
    for name in os.listdir(staging):
        os.replace(os.path.join(staging, name), os.path.join(outdir, name))


def _registry():
    """The figure registry, imported on use: its discovery imports every module of this folder, this one too."""
    import importlib

    return importlib.import_module("kernel_eft.figures.registry")


def _draw_points(points: list, staging: str) -> None:
    figures_of = _registry().figures_of
    with plt.rc_context(STYLE):
        for _, ds in points:
            for figure in figures_of("point"):
                figure.render(ds, staging)


def _draw_study(points: list, threshold: float, nsigma: float, staging: str):
    combined = collate([ds for _, ds in points])
    study = StudyData(combined, tuple(ds for _, ds in points), threshold, nsigma)
    figures_of = _registry().figures_of
    with plt.rc_context(STYLE):
        for figure in figures_of("study"):
            figure.render(study, staging)
    return write_summary(points, combined, staging, threshold, nsigma)


def render_points(points: list, outdir) -> list[str]:
    """The point figures of every point.  points: [(path, Dataset)]."""
    _registry().check_diagnostics(points)
    return stage_and_publish(outdir, lambda staging: _draw_points(points, staging))


def render_study(points: list, outdir, summary_dir=None):
    """The study figures and the summary table of all points.  Returns (paths, summary table)."""
    threshold, nsigma = _registry().check_diagnostics(points)
    tables = []
    paths = stage_and_publish(outdir, lambda staging: tables.append(_draw_study(points, threshold, nsigma,
                                                                                 staging)), summary_dir)
    return paths, tables[0]


def render(points: list, outdir, summary_dir=None):
    """Every figure of every point, the study figures and the summary table, published together.
    Returns (paths written, summary table)."""
    threshold, nsigma = _registry().check_diagnostics(points)
    tables = []

    def draw(staging):
        _draw_points(points, staging)
        tables.append(_draw_study(points, threshold, nsigma, staging))

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
