"""CF-1.10 compliance of every kind of file, by the IOOS compliance checker (`compliance-checker --test cf:1.10`,
from PyPI, in the test extras): a Monte Carlo file, a theory file of each closure (gonly at a depth, exact in
continuous depth; the exact one at a depth with one input, where it writes V4_1), a diagnostics file (with two inputs,
and with one input and V4_1) and summary.nc report no errors (high-priority failures; warnings are
allowed)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kernel_eft as ke
from kernel_eft.figures.study import write_summary
from kernel_eft.figures.summary import collate
from kernel_eft.theory.registry import closure_names

pytest.importorskip("compliance_checker", reason="compliance-checker is not installed (pip install -e '.[test]')")

KIN = [[1, 0.6], [0.6, 1]]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cf")
    network = dict(activation="relu", kin=KIN, time=1.0, sw2=1.0, sb2=0.1)
    paths = {}
    mc = []
    for width in (8, 16):
        path = directory / f"mc_w{width}.nc"
        mc.append(ke.simulate(**network, width=width, depth=4, samples=64, batches=4, seed=width, out=path))
        paths[f"mc_w{width}"] = path
    theories = []
    for i, closure in enumerate(closure_names()):  # each closure, the depth forms alternating
        depth, points = ((4, None), (None, 9))[i % 2]
        path = directory / f"{closure}_{'L4' if depth else 'continuous'}.nc"
        theories.append(ke.theory(**network, closure=closure, depth=depth, points=points, out=path))
        paths[path.stem] = path
    diagnostics = directory / "diagnostics.nc"
    d = ke.diagnose(mc, theories, out=diagnostics)
    paths["diagnostics"] = diagnostics
    # summary.nc as `kernel-eft figures` writes it (without drawing the figures)
    write_summary([(str(diagnostics), d)], collate([d]), str(directory), 0.1, 3.0)
    paths["summary"] = directory / "summary.nc"
    # one input with the exact theory at a depth: V4_1, and the per-width comparison with V4 + V4_1/n
    from tests.helpers import next_order_point

    mc1, theories1, _ = next_order_point(widths=(8, 16), pilot=64, batches=4, depth=4)
    diagnostics1 = directory / "diagnostics_p1.nc"
    d1 = ke.diagnose([ds for _, ds in mc1], [ds for _, ds in theories1], out=diagnostics1)
    assert "V4_next_width_pull" in d1
    paths["diagnostics_p1"] = diagnostics1
    exact1 = directory / "exact_L4_p1.nc"
    from tests.helpers import NEXT_ORDER_POINT

    assert "V4_1" in ke.theory(**{**NEXT_ORDER_POINT, "depth": 4}, closure="exact", out=exact1)
    paths["exact_L4_p1"] = exact1
    (directory / "p1").mkdir()
    write_summary([(str(diagnostics1), d1)], collate([d1]), str(directory / "p1"), 0.1, 3.0)
    paths["summary_p1"] = directory / "p1" / "summary.nc"
    return paths


def test_every_file_kind_is_cf_compliant(files, tmp_path):
    checker = shutil.which("compliance-checker", path=str(Path(sys.executable).parent)) or shutil.which(
        "compliance-checker")
    assert checker is not None, "the compliance-checker command is missing"
    report = tmp_path / "report.json"
    names = [str(path) for path in files.values()]
    proc = subprocess.run([checker, "--test", "cf:1.10", "--criteria", "normal", "-f", "json_new", "-o", str(report),
                           *names], capture_output=True, text=True, timeout=600)
    results = json.loads(report.read_text())
    failures = {}
    for name in names:
        result = results[name]["cf:1.10"]
        errors = [f"{check['name']}: {check['msgs']}" for check in result["high_priorities"]
                  if check["value"][0] < check["value"][1]]
        if errors:
            failures[Path(name).name] = errors
    assert failures == {}, proc.stdout[-3000:]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
