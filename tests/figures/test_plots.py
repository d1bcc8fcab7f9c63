"""CLI `diagnose` and `figures` on synthetic files: exit codes, outputs, collation, captions."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kernel_eft.cli import main
from tests.helpers import record_figures, write_point


def test_diagnose_writes_file_and_rejects_mismatch(tmp_path, capsys):
    mc, th = write_point(tmp_path, "a")
    out = tmp_path / "diag.nc"
    assert main(["diagnose", "--mc", *mc, "--theory", *th, "--out", str(out)]) == 0
    with xr.open_dataset(out) as ds:
        assert set(ds["theory"].values) == {"gonly_discrete", "gonly_continuum"}
        assert ds.attrs["Conventions"].startswith("CF")
        assert "kernel-eft" in ds.attrs["source"]
        # the 30% t^2 distortion crosses 10% at t = 0.625 = 5/8 (0.3 t^2 > 0.1 first at layer 5 of 8)
        np.testing.assert_array_equal(ds["tstar_V4"].sel(theory="gonly_discrete").values, 0.625)
    _, th_other = write_point(tmp_path, "b", sw2=1.5)
    bad = tmp_path / "bad.nc"
    with pytest.raises(SystemExit) as exc:
        main(["diagnose", "--mc", *mc, "--theory", th_other[0], "--out", str(bad)])
    assert exc.value.code == 2
    assert "sw2" in capsys.readouterr().err
    assert not bad.exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith("bad.nc")]


def test_diagnose_missing_file_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["diagnose", "--mc", str(tmp_path / "nope.nc"), "--theory", str(tmp_path / "th.nc"),
              "--out", str(tmp_path / "o.nc")])
    assert exc.value.code == 2
    assert "--mc" in capsys.readouterr().err


def test_figures_render_everything_and_collate_grid(tmp_path, monkeypatch):
    diags = []
    for tag, sw2 in (("p1", 1.0), ("p2", 1.5)):
        mc, th = write_point(tmp_path, tag, sw2=sw2)
        out = tmp_path / f"{tag}_diag.nc"
        assert main(["diagnose", "--mc", *mc, "--theory", *th, "--out", str(out)]) == 0
        diags.append(str(out))
    outdir = tmp_path / "figs"
    from kernel_eft.figures import common

    rendered = record_figures(monkeypatch)
    assert main(["figures", "--diagnostics", *diags, "--outdir", str(outdir)]) == 0
    assert rendered
    for stem, labels, _ in rendered:  # a shared legend, colour = width, line style = closure
        assert len(labels) <= common.MAX_LEGEND_ENTRIES, (stem, labels)
    files = os.listdir(outdir)
    for stem in ("fig1_mean_kernel", "fig2_kernel_covariance", "fig3_residual", "fig4_k1_source"):
        for ext in ("pdf", "png"):
            assert len([f for f in files if f.endswith(f"{stem}.{ext}")]) == 2, (stem, ext)
    for stem in ("fig5_validity_map", "fig6_collapse"):
        assert f"{stem}.png" in files and f"{stem}.pdf" in files
    table = pd.read_csv(outdir / "summary.csv")
    assert len(table) == 6  # 2 grid points x 3 widths
    assert sorted(table["sw2"].unique()) == [1.0, 1.5]
    # t* against the extrapolated MC, with its interval, for every quantity and closure
    for q in ("V4", "K1", "K1_source"):
        for suffix in ("", "_lo", "_hi", "_width", "_width_lo", "_width_hi"):
            assert f"tstar_{q}_gonly{suffix}" in table.columns
    np.testing.assert_array_equal(table["tstar_V4_gonly"], 0.625)
    with xr.open_dataset(outdir / "summary.nc") as summary:
        assert summary.sizes["sw2"] == 2 and summary.sizes["width"] == 3
        assert summary["tstar_V4"].attrs["threshold"] == 0.1 and "closure" in summary["tstar_V4"].dims
    caption = next(open(outdir / f) for f in files if f.endswith("fig3_residual.caption.txt")).read()
    for needle in ("widths n = 64,128,256", "depth L = 8", "T = 1", "sw2 = ", "sb2 = 0.1", "K_in = [", "seed",
                   "jackknife"):
        assert needle in caption, needle


def test_sparse_grid_collates_by_outer_merge(tmp_path):
    """Two points that differ in sw2 and in their widths do not form a hypercube; every row still appears."""
    from kernel_eft.figures.summary import collate, summary_table

    diags = []
    for tag, sw2, widths in (("q1", 1.0, (64, 256)), ("q2", 1.5, (128, 512))):
        mc, th = write_point(tmp_path, tag, sw2=sw2, widths=widths, continuum=False)
        out = tmp_path / f"{tag}_diag.nc"
        assert main(["diagnose", "--mc", *mc, "--theory", *th, "--out", str(out)]) == 0
        diags.append(xr.load_dataset(out))
    table = summary_table(collate(diags))
    assert sorted(zip(table["sw2"], table["width"])) == [(1.0, 64), (1.0, 256), (1.5, 128), (1.5, 512)]
    np.testing.assert_array_equal(table["tstar_V4_gonly_width"], 0.625)
    assert table["tstar_V4_gonly"].isna().all()  # two widths: no extrapolation


def test_figures_reject_mixed_validity_criteria(tmp_path, capsys):
    mc, th = write_point(tmp_path, "r", continuum=False)
    outs = []
    for thr in ("0.1", "0.2"):
        out = tmp_path / f"d{thr}.nc"
        assert main(["diagnose", "--mc", *mc, "--theory", *th, "--threshold", thr, "--out", str(out)]) == 0
        outs.append(str(out))
    with pytest.raises(SystemExit) as exc:
        main(["figures", "--diagnostics", *outs, "--outdir", str(tmp_path / "figs")])
    assert exc.value.code == 2
    assert "threshold" in capsys.readouterr().err
    assert not (tmp_path / "figs").exists()


@pytest.mark.parametrize("widths", [(64,), (64, 256)])
def test_no_fit_is_drawn_without_a_degree_of_freedom(tmp_path, widths, monkeypatch):
    """With one or two widths a 1/n fit would go through every point (zero degrees of freedom): no extrapolation
    is stored or drawn, the pull panels say why, and every figure is still drawn."""
    from kernel_eft.figures.registry import FIGURES, check_diagnostics

    mc, th = write_point(tmp_path, "few", widths=widths, continuum=False)
    out = tmp_path / "diag.nc"
    assert main(["diagnose", "--mc", *mc, "--theory", *th, "--out", str(out)]) == 0
    with xr.open_dataset(out) as ds:
        assert int(ds.attrs["fit_dof"]) == 0
        assert not any(name.endswith(("_inf", "_pull")) for name in ds.data_vars)
        check_diagnostics([(str(out), ds)])
        rendered = record_figures(monkeypatch)
        for name in ("fig2_kernel_covariance", "fig4_k1_source"):  # the two that draw the fits when present
            FIGURES[name].render(ds, str(tmp_path / "figs"))
    assert len([f for f in os.listdir(tmp_path / "figs") if f.endswith(".png")]) == 2
    assert len(rendered) == 2
    for stem, labels, caption in rendered:
        assert not any("extrapolated" in label for label in labels), (stem, labels)
        assert "no 1/n extrapolation" in caption


def test_three_widths_draw_the_extrapolation_with_its_degree_of_freedom(tmp_path, monkeypatch):
    from kernel_eft.figures.registry import FIGURES

    mc, th = write_point(tmp_path, "three", continuum=False)
    out = tmp_path / "diag.nc"
    assert main(["diagnose", "--mc", *mc, "--theory", *th, "--out", str(out)]) == 0
    rendered = record_figures(monkeypatch)
    with xr.open_dataset(out) as ds:
        assert int(ds.attrs["fit_dof"]) == 1
        FIGURES["fig2_kernel_covariance"].render(ds, str(tmp_path / "figs"))
    (stem, labels, caption), = rendered
    assert any("extrapolated to n → ∞ (1 dof)" in label for label in labels)


def test_the_saved_region_holds_everything_drawn(tmp_path, monkeypatch):
    """A point figure is saved without laying every panel out (common.saved_box): the region it saves must
    hold the tight bounding box of everything drawn, or a label is clipped; a figure without fixed margins
    must not be saved that way."""
    from kernel_eft.figures import common

    mc, th = write_point(tmp_path, "p", sw2=1.0)
    diag = tmp_path / "diag.nc"
    assert main(["diagnose", "--mc", *mc, "--theory", *th, "--out", str(diag)]) == 0
    checked = []
    saved_box = common.saved_box

    def check(fig, pad=0.08):
        box = saved_box(fig, pad)
        drawn = fig.get_tightbbox(fig.canvas.get_renderer())
        assert (box.x0 <= drawn.x0 and box.y0 <= drawn.y0 and box.x1 >= drawn.x1 and box.y1 >= drawn.y1), (
            fig.get_label(), box, drawn)
        checked.append((fig.get_label(), getattr(fig, "kernel_eft_fixed_margins", False)))
        return box

    monkeypatch.setattr(common, "saved_box", check)
    assert main(["figures", "--diagnostics", str(diag), "--outdir", str(tmp_path / "figs")]) == 0
    fast = sorted(label.split("_fig", 1)[1] for label, fixed in checked if fixed)
    assert fast == ["1_mean_kernel", "2_kernel_covariance", "3_residual", "4_k1_source"], checked
    assert len(checked) == 6  # and the two study figures, laid out in full

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()  # no panel_layout: a long tick label may stick out, so the full layout is used
    ax.set_ylabel("a label " * 20)
    outside = saved_box(fig)
    assert outside.height > fig.get_size_inches()[1]
    plt.close(fig)


@pytest.fixture(scope="module")
def next_order_diagnostics(tmp_path_factory):
    """A P = 1 point with two widths whose exact theory carries V4_1: linear phi, L = 8, n = 16 and 32, samples
    sized so that the 1/n shift V4_1(T)/n is 10 standard errors (tests/diagnose/test_validity.py)."""
    import kernel_eft as ke
    from tests.helpers import next_order_point

    mc, theories, _ = next_order_point(widths=(16, 32), pulls=10.0, pilot=20000)
    out = tmp_path_factory.mktemp("next_order") / "diag.nc"
    ke.diagnose([ds for _, ds in mc], [ds for _, ds in theories], out=out)
    return out


def test_fig2_and_the_summary_judge_each_width_against_v4_plus_v4_1_over_n(next_order_diagnostics, tmp_path,
                                                                         monkeypatch):
    """Figure 2 draws V4 + V4_1/n at each width (the curves are those numbers, in the width's colour), takes each
    width's pulls against it, and with two widths (no extrapolation) still states a verdict: the pulls against
    V4 + V4_1/n stay within 4.5 while those against V4 alone exceed 5 (linear phi: V4(n) = V4 + V4_1/n exactly).
    The summary gains the per-width columns; everything drawn stays inside the saved region."""
    import re

    from kernel_eft.figures import common, kernel_covariance
    from kernel_eft.figures.summary import format_summary_table, read_summary
    from kernel_eft.theory.registry import get_closure

    drawn, finish, saved_box = [], kernel_covariance.finish, common.saved_box

    def capture(fig, caption, outdir, stem):
        drawn.append((fig, caption))
        return finish(fig, caption, outdir, stem)

    def check(fig, pad=0.08):
        box, tight = saved_box(fig, pad), fig.get_tightbbox(fig.canvas.get_renderer())
        assert box.x0 <= tight.x0 and box.y0 <= tight.y0 and box.x1 >= tight.x1 and box.y1 >= tight.y1, (
            fig.get_label(), box, tight)
        return box

    monkeypatch.setattr(kernel_covariance, "finish", capture)
    monkeypatch.setattr(common, "saved_box", check)
    rendered = record_figures(monkeypatch)
    outdir = tmp_path / "figs"
    assert main(["figures", "--diagnostics", str(next_order_diagnostics), "--outdir", str(outdir)]) == 0
    (fig, caption), = drawn
    with xr.open_dataset(next_order_diagnostics) as ds:
        exact = ds.sel(theory="exact_discrete")
        widths = ds["width"].values
        expected = exact["V4_theory"].values[None] + exact["V4_1_theory"].values[None] / widths[:, None, None, None]
        colors = common.width_colors(widths)
        t = ds["t"].values
    value_ax, _, pull_ax = fig.axes[:3]
    for i, w in enumerate(widths):
        assert any(line.get_color() == colors[int(w)] and np.allclose(line.get_xdata(), t)
                   and np.allclose(line.get_ydata(), expected[i, :, 0, 0], rtol=1e-12) for line in value_ax.lines), w
    per_width = [line for line in pull_ax.lines if line.get_color() in [colors[int(w)] for w in widths]]
    assert len(per_width) == 2 and max(np.nanmax(np.abs(line.get_ydata())) for line in per_width) < 4.5
    label = get_closure("exact").label
    (_, labels, _), = [r for r in rendered if r[0].endswith("fig2_kernel_covariance")]
    assert len(labels) <= common.MAX_LEGEND_ENTRIES and any(label in x and "+ V4_1/n" in x for x in labels), labels
    found = re.findall(r"n=(\d+): ([\d.]+) \(([\d.]+) against V4 alone\)", caption)
    assert [int(n) for n, _, _ in found] == [16, 32], caption
    assert all(float(a) < 4.5 and float(b) > 5.0 for _, a, b in found), found
    assert "no 1/n extrapolation" in caption and "no extrapolated pulls" in caption
    rows = read_summary(outdir / "summary.csv")
    assert [int(r["width"]) for r in rows] == [16, 32]
    assert all(float(r["worst_pull_V4_exact_next_width"]) < 4.5 < 5.0 < float(r["worst_pull_V4_exact_width"])
               for r in rows), rows
    assert all(r["tstar_V4_exact_next_width"] == "inf" for r in rows)
    assert "pull V4(n) vs V4+V4_1/n" in format_summary_table(rows)


def test_no_next_order_columns_without_v4_1(tmp_path):
    """Two inputs (no V4_1): the summary table and its terminal form are as before, without per-width columns."""
    from kernel_eft.figures.summary import collate, format_summary_table, summary_table

    mc, th = write_point(tmp_path, "s", continuum=False)
    out = tmp_path / "diag.nc"
    assert main(["diagnose", "--mc", *mc, "--theory", *th, "--out", str(out)]) == 0
    table = summary_table(collate([xr.load_dataset(out)]))
    assert not [c for c in table.columns if c.endswith("_next_width") or c.startswith("worst_pull_V4_gonly_width")]
    assert "V4_1" not in format_summary_table(table)


def test_the_validity_map_wraps_many_panels_onto_rows(tmp_path, monkeypatch):
    """A grid with more panels than MAX_PANEL_COLUMNS (here 9 depths, each a panel of sb2 x sw2 cells) is drawn
    on rows of at most that many panels, every panel once per quantity and closure (the paper grid's 32 panels
    in one row made a figure 146 inches wide)."""
    from kernel_eft import api
    from kernel_eft.figures import validity_map

    mc, th = write_point(tmp_path, "w")
    diag = tmp_path / "w_diag.nc"
    assert main(["diagnose", "--mc", *mc, "--theory", *th, "--out", str(diag)]) == 0
    base = xr.load_dataset(diag)
    points = []
    for depth in range(8, 17):  # relabelled copies: the map reads the grid from the attributes
        for sw2 in (1.0, 1.5):
            for sb2 in (0.1, 0.2):
                ds = base.copy()
                ds.attrs.update(depth=depth, sw2=sw2, sb2=sb2, point=f"p_L{depth}_sw{sw2:g}_sb{sb2:g}")
                points.append(ds)
    drawn = []
    monkeypatch.setattr(validity_map, "finish", lambda fig, caption, outdir, stem: drawn.append(fig) or [])
    api.figures(points, str(tmp_path / "figs"), only="study")
    fig, = drawn
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_title().startswith("t*")]
    assert len(visible) == 9 * 2  # 9 panels x (V4, K1) of the one closure
    columns = {round(ax.get_position().x0, 3) for ax in visible}
    assert len(columns) == validity_map.MAX_PANEL_COLUMNS
    titles = [ax.get_title() for ax in visible]
    assert len(set(titles)) == len(titles) and all(any(f"depth={d}" in t for t in titles) for d in range(8, 17))
    assert fig.get_size_inches()[0] < 3 * validity_map.MAX_PANEL_COLUMNS * 1.6


def test_the_collapse_draws_v4_plus_v4_1_over_n_at_the_theorys_r(next_order_diagnostics, tmp_path, monkeypatch):
    """Where a theory gives V4_1 the collapse figure adds V4 + V4_1/n's error at each width as crosses, at the
    theory's own r = V4/(n K0^2) (P = 1: |V4| / (n K0^2)), relative to the theory's V4.  Linear phi: V4(n) = V4 +
    V4_1/n exactly, so the crosses are noise (within 5 standard errors), while V4 alone misses by the 1/n shift
    (sized to 10 standard errors at T); a study without V4_1 has no crosses."""
    from kernel_eft import api
    from kernel_eft.figures import collapse

    drawn = []
    monkeypatch.setattr(collapse, "finish", lambda fig, caption, outdir, stem: drawn.append((fig, caption)) or [])
    ds = xr.load_dataset(next_order_diagnostics)
    api.figures([ds], str(tmp_path / "figs"), only="study")
    (fig, caption), = drawn
    crosses = [c for c in fig.axes[0].collections if c.get_gid() == collapse.NEXT_ORDER_GID]
    points = np.concatenate([c.get_offsets() for c in crosses])
    exact = ds.sel(theory="exact_discrete")
    V4, V4_1 = exact["V4_theory"].values[1:, 0, 0], exact["V4_1_theory"].values[1:, 0, 0]
    K0 = ds["K0_discrete"].values[1:, 0]
    expected_r, bound, shift = [], [], []
    for i, n in enumerate(ds["width"].values):
        mc, se = ds["V4_MC"].values[i, 1:, 0, 0], ds["V4_MC_se"].values[i, 1:, 0, 0]
        expected_r.append(np.abs(V4) / (n * K0 ** 2))
        bound.append(5 * se / np.abs(V4))
        shift.append(np.abs(mc - V4) / se)
    np.testing.assert_allclose(np.sort(points[:, 0]), np.sort(np.concatenate(expected_r)), rtol=1e-12)
    by_r = dict(zip(np.concatenate(expected_r).round(12), np.concatenate(bound)))
    assert all(err <= by_r[round(r, 12)] for r, err in points), points
    assert min(s[-1] for s in shift) > 5.0  # V4 alone: the 1/n shift at T is resolved at both widths
    assert "Crosses: V4 + V4_1/n" in caption

    drawn.clear()
    mc, th = write_point(tmp_path, "s", continuum=False)  # two inputs: no V4_1
    out = tmp_path / "diag.nc"
    assert main(["diagnose", "--mc", *mc, "--theory", *th, "--out", str(out)]) == 0
    api.figures([xr.load_dataset(out)], str(tmp_path / "figs2"), only="study")
    (fig, caption), = drawn
    assert not [c for c in fig.axes[0].collections if c.get_gid() == collapse.NEXT_ORDER_GID]
    assert "Crosses" not in caption


def test_the_hatching_moves_to_v4_plus_v4_1_over_ns_own_limit_where_it_is_compared():
    """An O(1/n) theory's panels hatch from r > R_LIMIT at the smallest width (t_r_limit); a V4 panel that
    compares each width with V4 + V4_1/n hatches from that theory's own end instead (t_r_limit_next_order, the
    measured 0.25 r^2 reaching 0.1), with a thin line where the O(1/n) limit was; the validity map's V4 cells of
    a closure with V4_1 print and hatch that limit, its K1 cells and other closures keep r > R_LIMIT; with fewer
    than 3 widths those V4 cells give the largest width's t* against V4 + V4_1/n."""
    import math

    import matplotlib.pyplot as plt

    from kernel_eft.diagnose.validity import R_LIMIT, R_LIMIT_NEXT_ORDER
    from kernel_eft.figures.comparison import shade_r_limit
    from kernel_eft.figures.validity_map import cell_value, own_limit

    ds = xr.Dataset({"t_r_limit": ("width", [0.25, 0.5]), "t_r_limit_next_order": ("width", [0.75, math.inf])},
                    coords={"t": np.linspace(0.0, 1.0, 9), "width": [16, 32]})

    def start(patch):  # axvspan: a Rectangle (matplotlib >= 3.9) or a Polygon
        return float(patch.get_x()) if hasattr(patch, "get_x") else float(min(patch.get_xy()[:, 0]))

    def hatched_from(next_order, data=ds):
        fig, ax = plt.subplots()
        shade_r_limit(ax, data, next_order)
        (patch,) = ax.patches
        lines = [float(line.get_xdata()[0]) for line in ax.lines]
        plt.close(fig)
        return start(patch), lines

    assert hatched_from(False) == (0.25, [])
    assert hatched_from(True) == (0.75, [0.25])
    assert hatched_from(True, ds.drop_vars("t_r_limit_next_order")) == (0.25, [])  # a file without V4_1

    row = {"t_r_limit": 0.25, "t_r_limit_next_order": 0.75, "worst_pull_V4_exact_next_width": 1.2,
           "worst_pull_V4_gonly_next_width": math.nan}
    assert own_limit(row, "V4", "exact") == (0.75, R_LIMIT_NEXT_ORDER)
    assert own_limit(row, "K1", "exact") == (0.25, R_LIMIT)
    assert own_limit(row, "V4", "gonly") == (0.25, R_LIMIT)
    assert own_limit({"t_r_limit": 0.25}, "V4", "exact") == (0.25, R_LIMIT)
    # fewer than 3 widths: the map's V4 cell of the closure with V4_1 is its verdict against V4 + V4_1/n
    two = {"fit_dof": 0, "width": 32, **{f"tstar_{q}_exact{s}": math.nan for q in ("V4", "K1") for s in
                                          ("", "_lo", "_hi")},
           **{f"tstar_{q}_exact_width{s}": 0.5 for q in ("V4", "K1") for s in ("", "_lo", "_hi")},
           "worst_pull_V4_exact_next_width": 1.2, **{f"tstar_V4_exact_next_width{s}": math.inf
                                                     for s in ("", "_lo", "_hi")}}
    assert cell_value(two, "V4", "exact") == (math.inf, math.inf, math.inf, "n = 32 (V4 + V4_1/n)")
    assert cell_value(two, "K1", "exact") == (0.5, 0.5, 0.5, "n = 32")
    assert cell_value({**two, "worst_pull_V4_exact_next_width": math.nan}, "V4", "exact")[0] == 0.5
