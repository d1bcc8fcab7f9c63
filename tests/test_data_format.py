"""docs/data_format.md against the files the code writes: every variable (or summary column) a file
holds is in the document's table for it, and every name in a table is written, unless its row says
when it is ("only ...").

The document is the reference; when the variables move to a central schema module, the `written`
sets below can come from there and this test keeps the document honest against it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kernel_eft import io
from kernel_eft import montecarlo as mc
from kernel_eft.cli import main
from kernel_eft.theory import gonly

DOC = Path(__file__).resolve().parents[1] / "docs" / "data_format.md"
KIN = np.array([[1.0, 0.6], [0.6, 1.0]])


def documented(heading: str) -> tuple[set[str], set[str]]:
    """(every name, the names written only sometimes) in the first column of the table under the
    `## heading...` section. A cell's `_se` stands for the _se of every name before it in that cell."""
    text = DOC.read_text()
    start = text.index("\n## " + heading)
    end = text.find("\n## ", start + 1)
    names, conditional = set(), set()
    for line in text[start:end if end > 0 else None].splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        row: list[str] = []
        for token in re.findall(r"`([^`]+)`", cells[0]):
            row += [name + token for name in row] if token.startswith("_") else [token]
        names.update(row)
        if re.search(r"\bonly\b", cells[-1]):
            conditional.update(row)
    return names, conditional


def assert_documented(heading: str, written: set[str], unchecked: set[str] = frozenset()) -> None:
    names, conditional = documented(heading)
    assert written - names == set(), f"written but not documented under '{heading}'"
    assert names - written - conditional == set(), f"documented under '{heading}' but not written"
    assert conditional - written - unchecked == set(), f"conditional rows under '{heading}' never written here"


def test_monte_carlo_file():
    params = mc.SimulationParams("relu", 8, 4, 1.0, 1.0, 0.0, KIN, 40, batches=4)
    batches, samples = mc.simulate(params, keep_samples=True)
    ds = io.mc_dataset(params, mc.summarize(params, batches), batches, samples)
    assert_documented("Monte Carlo file", set(ds.data_vars))


def test_theory_file():
    written = set()
    for sol in (gonly.solve_gonly_discrete("relu", KIN, 1.0, 0.0, 1.0, 4),
                gonly.solve_gonly_continuous("relu", KIN, 1.0, 0.0, 1.0, points=5)):
        written |= set(gonly.solution_dataset(sol, "relu", KIN, 1.0, 0.0, 1.0).data_vars)
    names, _ = documented("Theory file")
    # The exact closure's own variables are checked by its own tests (kernel_eft.theory.exact).
    exact_only = {name for name in names if name.startswith("V4_") or name == "K1_source"}
    assert_documented("Theory file", written, unchecked=exact_only)


@pytest.fixture(scope="module")
def diagnosed(tmp_path_factory):
    from test_plots import write_point

    directory = tmp_path_factory.mktemp("format")
    mc_files, theory_files = write_point(directory, "p", widths=(64, 128, 256))
    out = directory / "diag.nc"
    assert main(["diagnose", "--mc", *mc_files, "--theory", *theory_files, "--out", str(out)]) == 0
    assert main(["figures", "--diagnostics", str(out), "--outdir", str(directory / "figs")]) == 0
    return out, directory / "figs"


def test_diagnostics_file(diagnosed):
    path, _ = diagnosed
    with xr.open_dataset(path) as ds:
        assert_documented("Diagnostics file", set(ds.data_vars))


def test_summary_table(diagnosed):
    _, figures = diagnosed
    columns = set(pd.read_csv(figures / "summary.csv").columns)
    assert_documented("Figures", columns)
    assert (figures / "summary.nc").is_file() and (figures / "summary.html").is_file()
