"""Figure 1: the mean kernel against K0 (discrete layers and continuum)."""

from __future__ import annotations


from kernel_eft.figures.common import (DIMLESS, Figure, band, entry_grid, finish, legend_above, panel_layout,
                                       point_caption, point_tag, width_colors)


def render(ds, outdir: str) -> list[str]:
    p = ds.sizes["pair"]
    t = ds["t"].values
    colors = width_colors(ds["width"].values)
    refs = list(ds["k0_reference"].values)
    fig, axes, where = entry_grid(p, 1, (3.6, 3.2))
    for m in range(p):
        ax = where(0, m)
        for r, ref in enumerate(refs):
            for w in ds["width"].values:
                err = ds["K0_relerr"].sel(k0_reference=ref, width=w).values[:, m]
                se = ds["K0_relerr_se"].sel(k0_reference=ref, width=w).values[:, m]
                band(ax, t, err, se, colors[int(w)], ls="-" if ref == "discrete" else "--",
                      label=f"n = {int(w)}, K0 {'discrete layers' if ref == 'discrete' else 'continuum'}",
                      alpha=0.25 if ref == "discrete" else 0.12)
        ax.axhline(0, color="0.3", lw=0.7)
        a, b = ds["pair_a"].values[m], ds["pair_b"].values[m]
        ax.set_title(f"entry ({a},{b})")
        ax.set_xlabel("depth time t " + DIMLESS)
        if ax.get_subplotspec().colspan.start == 0:
            ax.set_ylabel("(mean G − K0)_ab / √(K0_aa K0_bb)\n" + DIMLESS)
        ax.grid(alpha=0.3)
    panel_layout(fig)
    legend_above(fig, axes, ncol=min(4, 2 * ds.sizes["width"]))
    maxerr = ds["max_K0_relerr"]
    summary = "; ".join(f"{ref}: " + ", ".join(f"n={int(w)}: {float(maxerr.sel(k0_reference=ref, width=w)):.2g}"
                                               for w in ds["width"].values) for ref in refs)
    caption = point_caption(ds, (
        "Figure 1. Relative error of the infinite-width mean kernel K0 against the Monte Carlo mean of G, "
        "per entry (a,b), normalised by √(K0_aa K0_bb). Solid: K0 from the discrete-layer recursion at the "
        "simulated depth" + ("; dashed: continuum K0 (interpolated to the recorded layers)" if "continuum" in refs
                             else "") + ". The offset is the "
        f"expected finite-width correction K1/n. Max |error| over t and entries: {summary}."))
    return finish(fig, caption, outdir, f"{point_tag(ds)}_{FIGURE.name}")


# the variables it reads (optional ones, V4_inf and the 1/n fits, are drawn when present)
NEEDS = ("K0_relerr", "K0_relerr_se", "max_K0_relerr",)
FIGURE = Figure("fig1_mean_kernel", "point", NEEDS, render, 1)
