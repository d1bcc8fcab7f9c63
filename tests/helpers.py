"""Plain helpers shared by several test modules: four-index definitions of the sources, and synthetic Monte Carlo
and theory files of one grid point (docs/data_format.md) for the diagnostics and figures tests."""

from __future__ import annotations

import numpy as np
import xarray as xr

from kernel_eft.core.expectations import f_matrix
from kernel_eft.core.meanfield import mean_field_jacobian
from kernel_eft.core.pairs import (four_index_to_pairs, from_pairs, n_pairs, pair_indices, pairs_to_four_index,
                                   to_pairs, wishart_v4)
from kernel_eft.validation import format_kin


def s4_four(A, B):
    """S4(A,B)_abcd = A_ac B_bd + A_ad B_bc + A_bc B_ad + A_bd B_ac."""
    return (np.einsum("ac,bd->abcd", A, B) + np.einsum("ad,bc->abcd", A, B)
            + np.einsum("bc,ad->abcd", A, B) + np.einsum("bd,ac->abcd", A, B))


def s2_four(W):
    return np.einsum("ac,bd->abcd", W, W) + np.einsum("ad,bc->abcd", W, W)


KIN = np.array([[1.0, 0.5], [0.5, 1.2]])


def gonly_discrete_theory(activation, kin, sw2, sb2, T, L):
    """Discrete-layer G-only EFT, four-index form; J by the module's Jacobian."""
    P = kin.shape[0]
    dt = T / L
    K = kin.copy()
    V = four_index_to_pairs(wishart_v4(kin))
    K0s, V4s = [], []
    for _ in range(L + 1):
        K0s.append(K)
        V4s.append(V)
        J = mean_field_jacobian(activation, K, sw2, sb2)
        W = f_matrix(activation, K, sw2, sb2)
        step = np.eye(n_pairs(P)) + dt * J
        V = step @ V @ step.T + four_index_to_pairs(dt * s4_four(K, W) + dt**2 * s2_four(W))
        K = K + dt * W
    return np.array(K0s), np.array(V4s)


def theory_dataset(activation, kin, sw2, sb2, T, L, closure="gonly", depth=True, K1=None, tadpole=None,
                   V4_scale=1.0):
    K0, V4 = gonly_discrete_theory(activation, kin, sw2, sb2, T, L)
    P = kin.shape[0]
    t = np.arange(L + 1) * T / L
    coords = {"t": t, "layer": ("t", np.arange(L + 1))}
    zeros = np.zeros_like(K0)
    ds = xr.Dataset({
        "K0": (("t", "a", "b"), K0),
        "V4": (("t", "a", "b", "c", "d"), pairs_to_four_index(V4_scale * V4, P)),
        "K1": (("t", "a", "b"), zeros if K1 is None else K1),
        "K1_source": (("t", "a", "b"), zeros if tadpole is None else tadpole),  # G-only: its tadpole
        "tadpole": (("t", "a", "b"), zeros if tadpole is None else tadpole),
    }, coords=coords, attrs=dict(closure=closure, depth=L if depth else "none", activation=activation, time=T,
                                 sw2=sw2, sb2=sb2, kin=format_kin(kin), P=P))
    return ds


def mc_dataset_from_moments(activation, kin, sw2, sb2, T, L, width, mean_G, V4, batches=4, count=100, seed=0):
    """Deterministic Monte Carlo file: identical batches whose pooled moments are exactly (mean_G, V4).

    With S = G (linear phi) the cross moments follow; jackknife errors are zero by construction."""
    P = kin.shape[0]
    p = n_pairs(P)
    N = batches * count
    m2 = V4 * (N - 1) / width / batches
    G4 = from_pairs(mean_G, P)
    K0d, _ = gonly_discrete_theory(activation, kin, sw2, sb2, T, L)
    pa, pb = pair_indices(P)
    zero = np.zeros_like(G4)
    data = {
        "G_mean": (("t", "a", "b"), G4), "G_mean_se": (("t", "a", "b"), zero),
        "S_mean": (("t", "a", "b"), G4), "S_mean_se": (("t", "a", "b"), zero),
        "K0_discrete": (("t", "a", "b"), K0d),
        "K1": (("t", "a", "b"), width * (G4 - K0d)), "K1_se": (("t", "a", "b"), zero),
        "K1_source": (("t", "a", "b"), zero), "K1_source_se": (("t", "a", "b"), zero),
        "V4": (("t", "a", "b", "c", "d"), pairs_to_four_index(V4, P)),
        "V4_se": (("t", "a", "b", "c", "d"), 0 * pairs_to_four_index(V4, P)),
        "batch_count": (("batch",), np.full(batches, count)),
        "batch_mean_G": (("batch", "t", "pair"), np.repeat(mean_G[None], batches, 0)),
        "batch_mean_S": (("batch", "t", "pair"), np.repeat(mean_G[None], batches, 0)),
    }
    for xy in ("GG", "GS", "SS"):
        data[f"batch_m2_{xy}"] = (("batch", "t", "pair", "pair2"), np.repeat(m2[None], batches, 0))
    coords = {"t": np.arange(L + 1) * T / L, "layer": ("t", np.arange(L + 1)), "pair": np.arange(p),
              "pair2": np.arange(p), "pair_a": ("pair", pa), "pair_b": ("pair", pb), "batch": np.arange(batches)}
    return xr.Dataset(data, coords=coords, attrs=dict(
        activation=activation, width=width, depth=L, time=T, sw2=sw2, sb2=sb2, kin=format_kin(kin), P=P,
        samples=N, seed=seed, batches=batches, record_every=1))


def linear_point(widths=(64, 256), T=1.0, L=8, sw2=1.0, sb2=0.1, V4_factor=None):
    """MC files equal to the (leading-order exact) linear G-only theory; V4_factor(t) distorts V4_MC."""
    K0, V4 = gonly_discrete_theory("linear", KIN, sw2, sb2, T, L)
    t = np.arange(L + 1) * T / L
    factor = np.ones_like(t) if V4_factor is None else V4_factor(t)
    mc = [(f"mc_{n}.nc", mc_dataset_from_moments("linear", KIN, sw2, sb2, T, L, n, to_pairs(K0),
                                                  V4 * factor[:, None, None], seed=n)) for n in widths]
    th = [("th.nc", theory_dataset("linear", KIN, sw2, sb2, T, L))]
    return mc, th


def write_point(tmp_path, tag, sw2=1.0, widths=(64, 128, 256), continuum=True):
    """One synthetic point (linear_point with a 30% t^2 distortion of V4) written as netCDF files under tmp_path:
    (Monte Carlo paths, theory paths)."""
    mc, th = linear_point(widths=widths, sw2=sw2, V4_factor=lambda t: 1 + 0.3 * t**2)
    paths = []
    for name, ds in mc:
        path = tmp_path / f"{tag}_{name}"
        ds.to_netcdf(path)
        paths.append(str(path))
    th_paths = []
    for name, ds in th:
        path = tmp_path / f"{tag}_{name}"
        ds.to_netcdf(path)
        th_paths.append(str(path))
    if continuum:
        path = tmp_path / f"{tag}_cont.nc"
        theory_dataset("linear", KIN, sw2, 0.1, 1.0, 32, depth=False).to_netcdf(path)
        th_paths.append(str(path))
    return paths, th_paths


def record_figures(monkeypatch) -> list:
    """[(stem, legend labels, caption)] of every figure that kernel_eft.figures.common.finish saves while the
    test runs: read from the Figure itself as it is closed (its label is the stem) and from its caption file."""
    import matplotlib.pyplot as plt

    from kernel_eft.figures.common import legend_labels

    recorded, close = [], plt.close

    def recording_close(fig=None):
        if fig is not None and not isinstance(fig, str) and getattr(fig, "get_label", lambda: "")():
            caption = fig.texts[-1].get_text().replace("\n", " ") if fig.texts else ""
            recorded.append((fig.get_label(), legend_labels(fig), caption))
        return close(fig)

    monkeypatch.setattr(plt, "close", recording_close)
    return recorded


NEXT_ORDER_POINT = dict(activation="linear", kin=[[1.0]], time=1.0, sw2=1.0, sb2=0.1, depth=8)


def next_order_point(widths=(16, 32), pulls=None, pilot=4000, batches=32, seed=41, **network):
    """One grid point with one input (P = 1) whose exact theory at the Monte Carlo depth carries V4_1 (the 1/n
    coefficient of n Cov(G) = V4 + V4_1/n + O(1/n^2)): real Monte Carlo of each width and the theory files of both
    closures as [(name, Dataset)], and {width: samples}.  Default network: linear phi, where V4(n) = V4 + V4_1/n
    holds exactly at every n (docs/exact_theory.md section 7), L = 8, T = 1.

    pulls=None: `pilot` samples per width.  pulls=z: each width's samples sized from its standard error, so that
    the 1/n shift V4_1(T)/n is z standard errors of V4_MC(n) at t = T: a pilot run of `pilot` samples measures
    se(V4_MC(T)), which falls like 1/sqrt(samples), and the run itself takes
    samples = pilot (se_pilot n z / V4_1(T))^2 (seed + 1: independent of the pilot)."""
    import math

    import kernel_eft as ke

    network = {**NEXT_ORDER_POINT, **network}
    depth = network.pop("depth")
    theories = [(f"th_{closure}.nc", ke.theory(**network, closure=closure, depth=depth))
                for closure in ("gonly", "exact")]
    V4_1_T = float(np.max(np.abs(theories[1][1]["V4_1"].values[-1])))
    mc, samples = [], {}
    for n in widths:
        N = pilot
        if pulls is not None:
            trial = ke.simulate(**network, width=n, depth=depth, samples=pilot, batches=batches, seed=seed)
            se = float(np.max(trial["V4_se"].values[-1]))
            N = batches * math.ceil(pilot * (se * n * pulls / V4_1_T) ** 2 / batches)
        mc.append((f"mc_{n}.nc", ke.simulate(**network, width=n, depth=depth, samples=N, batches=batches,
                                             seed=seed + 1)))
        samples[n] = N
    return mc, theories, samples


def without_next_order(theories):
    """The theory files as the exact closure writes them where it skips V4_1 (a grid too big): no V4_1, and its
    V4_1_method attribute saying why."""
    out = []
    for name, ds in theories:
        if "V4_1" in ds:
            ds = ds.drop_vars("V4_1")
            ds.attrs["V4_1_method"] = "not computed: skipped for the test"
        out.append((name, ds))
    return out
