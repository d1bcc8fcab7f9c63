"""The schema (src/kernel_eft/schema.py) against the files the code writes and against docs/data_format.md:
every variable a file holds is in the schema's table for its kind, with the schema's attributes, and every
variable of a table is written (unless its note says when it is: "only ..."); the document's tables are the
ones generated from the schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kernel_eft import schema
from kernel_eft.core.activations import get_activation
from kernel_eft.cli import main
from kernel_eft.simulate.dataset import mc_dataset
from kernel_eft.simulate.estimates import summarize
from kernel_eft.simulate.params import SimulationParams
from kernel_eft.simulate.samplers import simulate
from kernel_eft.theory.registry import CLOSURES, closure_parts

DOC = Path(__file__).resolve().parents[1] / "docs" / "data_format.md"
KIN = np.array([[1.0, 0.6], [0.6, 1.0]])


def table_names(kind: str) -> tuple[set[str], set[str]]:
    """(every name of the kind's table, with the _se of those that have one; the conditional ones)."""
    names, conditional = set(), set()
    declared = {**schema.VARIABLES[kind], **(closure_parts() if kind == "theory" else {})}
    for name, var in declared.items():
        row = {name, name + "_se"} if var.se else {name}
        names |= row
        if var.note.startswith("only"):
            conditional |= row
    return names, conditional


def assert_schema(kind: str, written: set[str], unchecked: set[str] = frozenset()) -> None:
    names, conditional = table_names(kind)
    assert written - names == set(), f"written but not in the {kind} schema"
    assert names - written - conditional == set(), f"in the {kind} schema but not written"
    assert conditional - written - unchecked == set(), f"conditional {kind} variables never written here"


def assert_attributes(ds: xr.Dataset, kind: str) -> None:
    """long_name and units from the schema, X linked to X_se, coordinates described."""
    for name, var in ds.data_vars.items():
        entry = schema.variable(kind, name, closure_parts() if kind == "theory" else None)
        assert var.attrs["long_name"], name
        assert var.attrs.get("units") == entry.units, name
        if name + "_se" in ds:
            assert var.attrs["ancillary_variables"] == name + "_se", name
    for name, coord in ds.coords.items():
        assert coord.attrs["long_name"] == schema.COORDINATES[name].long_name, name


def test_document_tables_are_generated_from_the_schema():
    text = DOC.read_text()
    assert schema.render_document(text, {"theory": closure_parts()}) == text, \
        "regenerate: python -m kernel_eft.theory.registry docs/data_format.md"


def test_monte_carlo_file():
    params = SimulationParams("relu", 8, 4, 1.0, 1.0, 0.0, KIN, 40, batches=4)
    batches, samples = simulate(params, keep_samples=True)
    ds = mc_dataset(params, summarize(params, batches), batches, samples)
    controlled = SimulationParams("relu", 8, 4, 1.0, 1.0, 0.0, KIN, 40, batches=4, control_variates="martingale")
    cv_batches, _ = simulate(controlled)
    cv = mc_dataset(controlled, summarize(controlled, cv_batches), cv_batches)
    assert_schema("mc", set(ds.data_vars) | set(cv.data_vars))
    assert_attributes(ds, "mc")
    assert_attributes(cv, "mc")


def test_theory_files_of_every_closure():
    """Each closure, at a depth and in continuous depth: the standard fields plus its parts, all in the schema."""
    written = set()
    for name, closure in CLOSURES.items():
        # V4_1 at two inputs (20 s here) is written by the one-input solve below and tests/theory/
        # test_next_order_lattice.py; its schema is the same variable
        quick = {o.name: 0 for o in closure.options if o.name == "next_order_seconds"}
        for depth, points in ((4, None), (None, 9)):
            ds = closure.solve(get_activation("relu"), KIN, sw2=1.0, sb2=0.0, time=1.0, depth=depth, points=points,
                               **quick)
            assert {"K0", "V4", "K1", "K1_source"} <= set(ds.data_vars), name
            assert_attributes(ds, "theory")
            written |= set(ds.data_vars)
    # one input at a depth: the exact closure adds the next order V4_1 (docs/exact_theory.md section 7.1)
    ds = CLOSURES["exact"].solve(get_activation("relu"), KIN[:1, :1], sw2=1.0, sb2=0.0, time=1.0, depth=4)
    assert "V4_1" in ds.data_vars
    assert_attributes(ds, "theory")
    written |= set(ds.data_vars)
    assert_schema("theory", written)


@pytest.fixture(scope="module")
def diagnosed(tmp_path_factory):
    from tests.helpers import write_point

    directory = tmp_path_factory.mktemp("format")
    mc_files, theory_files = write_point(directory, "p", widths=(64, 128, 256))
    out = directory / "diag.nc"
    assert main(["diagnose", "--mc", *mc_files, "--theory", *theory_files, "--out", str(out)]) == 0
    # a point with one input whose exact theory carries V4_1: the per-width next-order variables are written
    from tests.helpers import next_order_point

    mc, theories, _ = next_order_point(widths=(16, 32, 64), pilot=800, batches=8)
    paths = {}
    for name, ds in mc + theories:
        paths[name] = directory / f"p1_{name}"
        ds.to_netcdf(paths[name])
    next_order = directory / "diag_p1.nc"
    assert main(["diagnose", "--mc", *(str(paths[name]) for name, _ in mc), "--theory",
                 *(str(paths[name]) for name, _ in theories), "--out", str(next_order)]) == 0
    # the summary files exactly as `kernel-eft figures` writes them, without drawing (tests/figures/test_plots.py draws)
    from kernel_eft.figures.study import write_summary
    from kernel_eft.figures.summary import collate

    d, d1 = xr.load_dataset(out), xr.load_dataset(next_order)
    (directory / "figs").mkdir()
    write_summary([(str(out), d), (str(next_order), d1)], collate([d, d1]), str(directory / "figs"),
                  float(d.attrs["threshold"]), float(d.attrs["nsigma"]))
    return (out, next_order), directory / "figs"


def test_diagnostics_file(diagnosed):
    written = set()
    for path in diagnosed[0]:
        with xr.open_dataset(path) as ds:
            assert_schema("diagnostics", set(ds.data_vars), unchecked=table_names("diagnostics")[1])
            assert_attributes(ds, "diagnostics")
            written |= set(ds.data_vars)
    assert_schema("diagnostics", written)


def test_summary_table(diagnosed):
    _, figures = diagnosed
    columns = set(pd.read_csv(figures / "summary.csv").columns)
    with xr.open_dataset(figures / "summary.nc") as summary:
        closures = [str(c) for c in summary["closure"].values]
    documented = set()
    for name, var in schema.VARIABLES["summary"].items():  # per-closure columns: one per closure of the study
        column = var.column or name
        documented |= {column.replace("<closure>", c) for c in closures} if "<closure>" in column else {column}
    documented |= {name + "_se" for name, var in schema.VARIABLES["summary"].items() if var.se}
    assert columns == documented | set(schema.SUMMARY_COORDINATES)
    with xr.open_dataset(figures / "summary.nc") as summary:
        assert_schema("summary", set(summary.data_vars), unchecked={"transport_fraction_T"})
        assert_attributes(summary, "summary")
    assert (figures / "summary.html").is_file()
