"""Diagnostics of the G-only closure against Monte Carlo (issue 5).

Pure numpy functions on pair-coordinate arrays (kernel_eft.pairs convention); xarray appears only in
`diagnose_point` / `summarize_point`, which read and write the netCDF schemas of docs/data_format.md.

Normalisation used throughout.  A "relative error" of a symmetric-matrix quantity X_ab is
(X_MC - X_th) / sqrt(|X_th,aa X_th,bb|), and of a covariance V[m, m'] it is
(V_MC - V_th) / sqrt(V_th[m,m] V_th[m',m']).  For diagonal entries this is the plain relative error;
off-diagonal entries are measured against the Cauchy-Schwarz scale, so an entry whose theory value
crosses zero (e.g. the off-diagonal of an odd activation at K_in,ab = 0) is not divided by zero.

V4 equation residual.  Over one residual block the exact identity (the block increments are Gaussian
given h^l, with covariance Om = sw2 S + sb2 11^T) is

    n Cov(G^{l+1}) - n Cov(G^l) = dt { n[Cov(G,Om) + Cov(Om,G)] + dt n Cov(Om,Om) }
                                  + dt { E[S4(G,Om)] + dt E[S2(Om)] },

and the discrete G-only EFT step replaces the first brace by J V4 + V4 J^T + dt J V4 J^T and the
second by S4(K0) + dt S2(K0).  So R = dV4_MC/dt - RHS_EFT(V4_MC) splits exactly into
  transport = exact transport brace - EFT transport on V4_MC,
  source    = E[S4(G,Om)] + dt E[S2(Om)] - S4(K0) - dt S2(K0)   (mean-field part + 1/n fluctuation part),
  remainder = R - transport - source, zero in expectation when every layer is recorded (a self-check).
With Om = sw2 S + sb2 11^T: n Cov(G, Om) = sw2 cov_GS, and the bilinear source is
E[G_ac Om_bd] = E[G_ac] E[Om_bd] + (sw2/n) cov_GS[ac, bd].
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from kernel_eft.activations import f_matrix, kernel_jacobian
from kernel_eft.theory.gonly import source_s2, source_s4
from kernel_eft.pairs import n_pairs, pair_indices, pair_lookup

ENTRY_CLASSES = ("diag-diag", "diag-off", "off-off")


# ----------------------------------------------------------------------------------------------
# Small tensor helpers in pair coordinates
# ----------------------------------------------------------------------------------------------


def contract_s4_cov(C: np.ndarray, P: int) -> np.ndarray:
    """sum of C[ac,bd] + C[ad,bc] + C[bc,ad] + C[bd,ac] for C[m, m'] = n Cov(X_m, Y_m'), (..., p, p).

    This is n * (the covariance part of E[S4(X, Y)]) by bilinearity."""
    lut = pair_lookup(P)
    a, b = pair_indices(P)
    i, j = a[:, None], b[:, None]
    k, m = a[None, :], b[None, :]
    return C[..., lut[i, k], lut[j, m]] + C[..., lut[i, m], lut[j, k]] + C[..., lut[j, m], lut[i, k]] \
        + C[..., lut[j, k], lut[i, m]]


def contract_s2_cov(C: np.ndarray, P: int) -> np.ndarray:
    """C[ac,bd] + C[ad,bc]: n * the covariance part of E[S2(Y)] for C = n Cov(Y, Y)."""
    lut = pair_lookup(P)
    a, b = pair_indices(P)
    i, j = a[:, None], b[:, None]
    k, m = a[None, :], b[None, :]
    return C[..., lut[i, k], lut[j, m]] + C[..., lut[i, m], lut[j, k]]


def entry_classes(P: int) -> dict[str, list[tuple[int, int]]]:
    """Pair-pair entries (m, m'), m <= m', of a covariance grouped as diag-diag, diag-off, off-off."""
    a, b = pair_indices(P)
    diag = a == b
    out = {name: [] for name in ENTRY_CLASSES}
    for m in range(a.size):
        for mp in range(m, a.size):
            if diag[m] and diag[mp]:
                out["diag-diag"].append((m, mp))
            elif diag[m] or diag[mp]:
                out["diag-off"].append((m, mp) if diag[m] else (mp, m))
            else:
                out["off-off"].append((m, mp))
    return out


def pair_label(m: int, P: int) -> str:
    a, b = pair_indices(P)
    return f"{a[m]}{b[m]}"


def kernel_scale(K: np.ndarray) -> np.ndarray:
    """sqrt(|K_aa K_bb|) in pair coordinates, (..., P, P) -> (..., p)."""
    a, b = pair_indices(K.shape[-1])
    return np.sqrt(np.abs(K[..., a, a] * K[..., b, b]))


def covariance_scale(V: np.ndarray) -> np.ndarray:
    """sqrt(|V[m,m] V[m',m']|), (..., p, p) -> (..., p, p)."""
    d = np.abs(np.diagonal(V, axis1=-2, axis2=-1))
    return np.sqrt(d[..., :, None] * d[..., None, :])


def normalised_error(value, se, reference, scale):
    """((value - reference)/scale, se/scale); NaN where the scale vanishes."""
    with np.errstate(invalid="ignore", divide="ignore"):
        good = scale > 0
        safe = np.where(good, scale, 1.0)
        return np.where(good, (value - reference) / safe, np.nan), np.where(good, se / safe, np.nan)


def mean_field_jacobian(activation, K: np.ndarray, sw2: float, sb2: float) -> np.ndarray:
    """J[m, m'] = d f(K)_m / d K_m' for a stack (..., P, P) of kernels -> (..., p, p).

    The analytic Price-theorem Jacobian of kernel_eft.activations (sb2 does not enter J)."""
    K = np.asarray(K, dtype=np.float64)
    flat = K.reshape((-1,) + K.shape[-2:])
    J = np.stack([kernel_jacobian(activation, k, sw2) for k in flat])
    return J.reshape(K.shape[:-2] + J.shape[-2:])


# ----------------------------------------------------------------------------------------------
# V4 equation residual (estimator on pooled moments; the jackknife gives its errors)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResidualSetup:
    """Everything the residual needs besides the Monte Carlo moments, at the recorded times (R rows)."""

    times: np.ndarray  # (R,) recorded depth times, starting at 0
    width: int
    sw2: float
    sb2: float
    dt: float  # layer step T / L (not the recording step)
    K0: np.ndarray  # (R, P, P) discrete-layer mean kernel at the recorded layers
    W: np.ndarray  # (R, P, P) f(K0)
    J: np.ndarray  # (R, p, p) Df(K0)

    @property
    def P(self) -> int:
        return self.K0.shape[-1]


RESIDUAL_PARTS = ("total", "transport", "source", "source_meanfield", "source_fluctuation", "remainder")


def make_residual_setup(activation, times, width, sw2, sb2, dt, K0) -> ResidualSetup:
    K0 = np.asarray(K0, dtype=np.float64)
    return ResidualSetup(np.asarray(times, float), int(width), float(sw2), float(sb2), float(dt), K0,
                         f_matrix(activation, K0, sw2, sb2), mean_field_jacobian(activation, K0, sw2, sb2))


def residual_rates(setup: ResidualSetup, count, mean_G, mean_S, m2_GG, m2_GS, m2_SS) -> dict[str, np.ndarray]:
    """Instantaneous parts of R(t) = dV4_MC/dt - RHS_EFT(V4_MC), at the R-1 left interval ends, (R-1, p, p).

    Moments are pooled over `count` seeds in pair coordinates (see montecarlo.Moments)."""
    n, sw2, sb2, dt, P = setup.width, setup.sw2, setup.sb2, setup.dt, setup.P
    lut = pair_lookup(P)
    d = count - 1
    V4 = n * m2_GG / d
    C_GS = n * m2_GS / d
    C_SS = n * m2_SS / d
    G = mean_G[..., lut]
    Om = sw2 * mean_S[..., lut] + sb2
    J = setup.J
    JV = J @ V4
    transport_eft = JV + np.swapaxes(JV, -1, -2) + dt * JV @ np.swapaxes(J, -1, -2)
    transport_exact = sw2 * (C_GS + np.swapaxes(C_GS, -1, -2)) + dt * sw2**2 * C_SS
    source_eft = source_s4(setup.K0, setup.W) + dt * source_s2(setup.W)
    source_meanfield = source_s4(G, Om) + dt * source_s2(Om) - source_eft
    source_fluct = (sw2 * contract_s4_cov(C_GS, P) + dt * sw2**2 * contract_s2_cov(C_SS, P)) / n
    step = np.diff(setup.times)[:, None, None]
    dV4dt = np.diff(V4, axis=0) / step
    total = dV4dt - (transport_eft + source_eft)[:-1]
    transport = (transport_exact - transport_eft)[:-1]
    source = (source_meanfield + source_fluct)[:-1]
    return {
        "total": total,
        "transport": transport,
        "source": source,
        "source_meanfield": source_meanfield[:-1],
        "source_fluctuation": source_fluct[:-1],
        "remainder": total - transport - source,
    }


def accumulate(times: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Left-rule integral int_0^t rate dt' at every recorded time (R, ...), zero at t = 0.

    The left rule matches the Euler-type layer recursion exactly when every layer is recorded."""
    step = np.diff(times).reshape((-1,) + (1,) * (rates.ndim - 1))
    out = np.zeros((rates.shape[0] + 1,) + rates.shape[1:])
    out[1:] = np.cumsum(rates * step, axis=0)
    return out


def residual_estimator(setup: ResidualSetup):
    """Estimator for montecarlo.jackknife: Moments -> flat array of every rate and accumulated part,
    plus the Frobenius norms of the accumulated parts at t = T (so the summary norms get errors too)."""

    def estimate(m) -> np.ndarray:
        rates = residual_rates(setup, m.count, m.mean_G, m.mean_S, m.m2_GG, m.m2_GS, m.m2_SS)
        chunks = []
        for name in RESIDUAL_PARTS:
            acc = accumulate(setup.times, rates[name])
            chunks += [rates[name].ravel(), acc.ravel(), [np.sqrt(np.sum(acc[-1] ** 2))]]
        return np.concatenate([np.ravel(c) for c in chunks])

    return estimate


def unpack_residual(flat: np.ndarray, R: int, p: int) -> dict[str, np.ndarray]:
    """Inverse of the packing in residual_estimator: {part: (rate (R-1,p,p), accumulated (R,p,p), norm_T)}."""
    out = {}
    pos = 0
    for name in RESIDUAL_PARTS:
        nr, na = (R - 1) * p * p, R * p * p
        rate = flat[pos:pos + nr].reshape(R - 1, p, p)
        acc = flat[pos + nr:pos + nr + na].reshape(R, p, p)
        norm = flat[pos + nr + na]
        pos += nr + na + 1
        out[name] = (rate, acc, norm)
    return out


# ----------------------------------------------------------------------------------------------
# 1/n fits, validity window, interpolation
# ----------------------------------------------------------------------------------------------


def fit_inverse_width(widths, values, errors, order: int | None = None):
    """Weighted least squares of values(n) = c_0 + c_1/n + ... + c_{order-1}/n^{order-1} at every entry.

    widths (W,), values/errors (W, ...).  order defaults to min(3, W) (K0, K1, K2 with three or more
    widths).  Returns (coef (order, ...), coef_se (order, ...), chi2 (...), dof).  The standard errors
    are the WLS (X^T Sigma^-1 X)^-1 errors; with dof > 0 the caller can inflate them by sqrt(chi2/dof)."""
    widths = np.asarray(widths, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    nw = widths.size
    if order is None:
        order = min(3, nw)
    if order > nw:
        raise ValueError(f"a {order}-term 1/n fit needs at least {order} widths, got {nw}")
    if np.unique(widths).size != nw:
        raise ValueError("fit_inverse_width needs distinct widths")
    X = (1.0 / widths)[:, None] ** np.arange(order)[None, :]  # (W, order)
    shape = values.shape[1:]
    y = values.reshape(nw, -1)
    s = errors.reshape(nw, -1)
    coef = np.full((order, y.shape[1]), np.nan)
    cov_diag = np.full((order, y.shape[1]), np.nan)
    chi2 = np.full(y.shape[1], np.nan)
    for j in range(y.shape[1]):
        if not np.all(np.isfinite(y[:, j])) or not np.all(s[:, j] > 0):
            continue
        w = 1.0 / s[:, j] ** 2
        A = X.T @ (w[:, None] * X)
        cov = np.linalg.inv(A)
        c = cov @ (X.T @ (w * y[:, j]))
        coef[:, j] = c
        cov_diag[:, j] = np.diag(cov)
        chi2[j] = np.sum(w * (y[:, j] - X @ c) ** 2)
    return (coef.reshape((order,) + shape), np.sqrt(cov_diag).reshape((order,) + shape),
            chi2.reshape(shape), nw - order)


def first_exceedance(times, deviation, se, scale, threshold: float, nsigma: float = 3.0) -> float:
    """t* = first time at which |deviation| > threshold * scale + nsigma * se for any entry; inf if never.

    deviation, se, scale: (R, ...) with time first.  In normalised units this is
    |relative error| - threshold > nsigma * sigma, i.e. the threshold is exceeded by more than nsigma."""
    dev = np.abs(np.asarray(deviation, dtype=np.float64))
    bound = threshold * np.abs(np.asarray(scale, dtype=np.float64)) + nsigma * np.asarray(se, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        hit = dev > bound
    hit = hit.reshape(hit.shape[0], -1).any(axis=1)
    idx = np.flatnonzero(hit)
    return float(times[idx[0]]) if idx.size else math.inf


def interpolate_in_time(t_src, values, t_dst) -> np.ndarray:
    """Cubic-spline interpolation of a continuous-depth solution onto the Monte Carlo times."""
    from scipy.interpolate import CubicSpline

    t_src = np.asarray(t_src, dtype=np.float64)
    t_dst = np.asarray(t_dst, dtype=np.float64)
    span = t_src[-1] - t_src[0]
    if t_dst.min() < t_src[0] - 1e-9 * span or t_dst.max() > t_src[-1] + 1e-9 * span:
        raise ValueError(f"theory covers t in [{t_src[0]}, {t_src[-1]}], Monte Carlo needs "
                         f"[{t_dst.min()}, {t_dst.max()}]")
    if t_src.size < 4:
        flat = np.asarray(values).reshape(t_src.size, -1)
        out = np.stack([np.interp(t_dst, t_src, flat[:, j]) for j in range(flat.shape[1])], axis=1)
        return out.reshape((t_dst.size,) + np.asarray(values).shape[1:])
    return CubicSpline(t_src, values, axis=0)(np.clip(t_dst, t_src[0], t_src[-1]))


def pair_count(P: int) -> int:
    return n_pairs(P)


# ----------------------------------------------------------------------------------------------
# xarray edge: one grid point (several widths, several theory files) -> diagnostics dataset
# ----------------------------------------------------------------------------------------------

GRID_ATTRS = ("activation", "time", "sw2", "sb2", "kin")


def _attr(ds, name, path):
    from kernel_eft.validation import InputError

    if name not in ds.attrs:
        raise InputError(name, f"{path} has no global attribute {name!r}; is it a kernel-eft file?")
    return ds.attrs[name]


def _same(name, value, ref):
    from kernel_eft.validation import parse_kin

    if name == "kin":
        A, B = parse_kin(str(value), name), parse_kin(str(ref), name)
        return A.shape == B.shape and np.allclose(A, B, rtol=1e-12, atol=1e-14)
    if isinstance(ref, str) or isinstance(value, str):
        return str(value) == str(ref)
    return math.isclose(float(value), float(ref), rel_tol=1e-12, abs_tol=1e-15)


def theory_kind(ds, path="theory file") -> tuple[str, int | None]:
    """(closure, depth) of a theory file from its attributes: depth None means continuous depth."""
    from kernel_eft.validation import InputError

    closure = str(_attr(ds, "closure", path))
    if closure not in ("gonly", "exact"):
        raise InputError("closure", f"{path}: unknown closure {closure!r} (expected gonly or exact)")
    depth = ds.attrs.get("depth", None)
    discrete = str(ds.attrs.get("discretisation", ds.attrs.get("discretization", ""))).lower()
    if depth is None or str(depth).strip().lower() in ("none", "", "continuous", "0") or discrete == "continuous":
        return closure, None
    return closure, int(depth)


def check_point_files(mc: list, theories: list) -> dict:
    """Check that (path, dataset) pairs describe one grid point; InputError names the attribute.

    Returns the grid parameters (from the first Monte Carlo file)."""
    from kernel_eft.validation import InputError

    if not mc:
        raise InputError("--mc", "at least one Monte Carlo file is needed")
    ref_path, ref = mc[0]
    params = {name: _attr(ref, name, ref_path) for name in GRID_ATTRS + ("depth", "width")}
    for path, ds in mc[1:]:
        for name in GRID_ATTRS + ("depth",):
            value = _attr(ds, name, path)
            if not _same(name, value, params[name]):
                raise InputError(name, f"{path} has {name}={value!r} but {ref_path} has {name}={params[name]!r}; "
                                       "all files of one grid point must agree")
        if not np.allclose(ds["t"].values, ref["t"].values, rtol=0, atol=1e-12):
            raise InputError("record_every", f"{path} records different times than {ref_path}")
    widths = [int(_attr(ds, "width", path)) for path, ds in mc]
    if len(set(widths)) != len(widths):
        raise InputError("width", f"two Monte Carlo files have the same width: {sorted(widths)}")
    for path, ds in theories:
        for name in GRID_ATTRS:
            value = _attr(ds, name, path)
            if not _same(name, value, params[name]):
                raise InputError(name, f"{path} has {name}={value!r} but {ref_path} has {name}={params[name]!r}; "
                                       "the theory must be solved at the Monte Carlo grid point")
        closure, depth = theory_kind(ds, path)
        if depth is not None and depth != int(params["depth"]):
            raise InputError("depth", f"{path} is a discrete theory with depth={depth} but the Monte Carlo "
                                      f"({ref_path}) has depth={params['depth']}")
    return params


def _theory_label(closure: str, depth) -> str:
    return f"{closure}_{'continuum' if depth is None else 'discrete'}"


def _theory_on_mc_times(ds, depth, t_mc, layers_mc, name, P):
    """A theory variable at the Monte Carlo times: layer lookup (discrete) or spline (continuum)."""
    from kernel_eft.pairs import four_index_to_pairs, to_pairs

    if name not in ds:
        return None
    values = ds[name].values
    values = four_index_to_pairs(values) if values.ndim == 5 else to_pairs(values)
    if depth is not None:
        if "layer" in ds.coords:
            layer_of = {int(l): i for i, l in enumerate(ds["layer"].values)}
            idx = [layer_of[int(l)] for l in layers_mc]
        else:
            idx = [int(np.argmin(np.abs(ds["t"].values - t))) for t in t_mc]
        return values[idx]
    return interpolate_in_time(ds["t"].values, values, t_mc)


def _se_or_nan(ds, name):
    return ds[name + "_se"].values if name + "_se" in ds else np.full(ds[name].shape, np.nan)


def diagnose_point(mc: list, theories: list, threshold: float = 0.1, nsigma: float = 3.0,
                   jackknife=None, batch_moments=None):
    """All per-point diagnostics (issue 5, items 1-4 and the per-point parts of 5-6) as an xarray Dataset.

    mc, theories: lists of (path, xarray.Dataset).  jackknife / batch_moments default to
    kernel_eft.montecarlo's (injectable for tests)."""
    import xarray as xr

    from kernel_eft.pairs import four_index_to_pairs, to_pairs
    from kernel_eft.validation import InputError, parse_kin

    if jackknife is None or batch_moments is None:
        from kernel_eft.montecarlo import BatchMoments, jackknife as _jk

        jackknife = jackknife or _jk
        batch_moments = batch_moments or BatchMoments.from_dataset
    params = check_point_files(mc, theories)
    mc = sorted(mc, key=lambda item: int(item[1].attrs["width"]))
    widths = np.array([int(ds.attrs["width"]) for _, ds in mc])
    ref = mc[0][1]
    activation = str(params["activation"])
    sw2, sb2, T = float(params["sw2"]), float(params["sb2"]), float(params["time"])
    depth = int(params["depth"])
    kin = parse_kin(str(params["kin"]), "kin")
    P = kin.shape[0]
    p = n_pairs(P)
    t = ref["t"].values.astype(float)
    layers = ref["layer"].values if "layer" in ref.coords else np.rint(t / T * depth).astype(int)
    R = t.size
    dt = T / depth
    if R < 2:
        raise InputError("record_every", "the Monte Carlo files record fewer than two times")

    K0_disc = ref["K0_discrete"].values  # identical in every file of the point (same grid parameters)
    setup = make_residual_setup(activation, t, 1, sw2, sb2, dt, K0_disc)

    # ---- theory curves on the MC time grid
    labels, th = [], {}
    for path, ds in theories:
        closure, tdepth = theory_kind(ds, path)
        label = _theory_label(closure, tdepth)
        if label in labels:
            raise InputError("--theory", f"two theory files are both {label}: give one of each kind")
        labels.append(label)
        try:
            th[label] = {name: _theory_on_mc_times(ds, tdepth, t, layers, name, P)
                         for name in ("K0", "V4", "K1", "tadpole", "K1_source")}
        except (ValueError, KeyError) as exc:
            raise InputError("--theory", f"{path}: {exc}") from None
    order = ["gonly_discrete", "gonly_continuum", "exact_discrete", "exact_continuum"]
    labels = [lab for lab in order if lab in labels]

    def theory_stack(name, shape):
        out = np.full((len(labels), R) + shape, np.nan)
        for i, lab in enumerate(labels):
            if th[lab][name] is not None:
                out[i] = th[lab][name]
        return out

    K0_th = theory_stack("K0", (p,))
    V4_th = theory_stack("V4", (p, p))
    K1_th = theory_stack("K1", (p,))
    tad_th = theory_stack("tadpole", (p,))
    # What each closure predicts for the exact K1 source n sw2 (E[S] - F(E[G])): the G-only tadpole, or
    # sw2 B for the exact closure (its K1_source; E[S] - F(E[G]) = B/n + O(1/n^2) there).
    exact_src_th = theory_stack("K1_source", (p,))
    src_th = np.where(np.isfinite(exact_src_th), exact_src_th, tad_th)

    # K0 references: the discrete recursion (exact n -> inf limit at this L) and the continuum solution.
    k0_refs = {"discrete": to_pairs(K0_disc)}
    for lab in labels:
        if lab.endswith("continuum") and np.all(np.isfinite(K0_th[labels.index(lab)])):
            k0_refs["continuum"] = K0_th[labels.index(lab)]
            break
    k0_names = list(k0_refs)

    nw = widths.size
    G = np.empty((nw, R, p)); G_se = np.empty_like(G)
    V4 = np.empty((nw, R, p, p)); V4_se = np.empty_like(V4)
    K1 = np.empty((nw, R, p)); K1_se = np.empty_like(K1)
    src = np.empty((nw, R, p)); src_se = np.empty_like(src)
    resid = {name: {k: np.empty((nw,) + s) for k, s in (("rate", (R - 1, p, p)), ("acc", (R, p, p)), ("norm", ()))}
             for name in RESIDUAL_PARTS}
    resid_se = {name: {k: np.empty_like(v) for k, v in parts.items()} for name, parts in resid.items()}
    seeds, samples, batches = [], [], []
    for i, (path, ds) in enumerate(mc):
        n = int(widths[i])
        G[i], G_se[i] = to_pairs(ds["G_mean"].values), to_pairs(_se_or_nan(ds, "G_mean"))
        V4[i], V4_se[i] = four_index_to_pairs(ds["V4"].values), four_index_to_pairs(_se_or_nan(ds, "V4"))
        K1[i], K1_se[i] = to_pairs(ds["K1"].values), to_pairs(_se_or_nan(ds, "K1"))
        src[i], src_se[i] = to_pairs(ds["K1_source"].values), to_pairs(_se_or_nan(ds, "K1_source"))
        seeds.append(str(ds.attrs.get("seed", "?")))
        samples.append(int(ds.attrs.get("samples", int(np.sum(ds["batch_count"].values)))))
        batches.append(int(ds["batch_count"].size))
        point_setup = ResidualSetup(setup.times, n, sw2, sb2, dt, setup.K0, setup.W, setup.J)
        value, se = jackknife(batch_moments(ds), residual_estimator(point_setup))
        for store, flat in ((resid, value), (resid_se, se)):
            for name, (rate, acc, norm) in unpack_residual(np.asarray(flat), R, p).items():
                store[name]["rate"][i], store[name]["acc"][i], store[name]["norm"][i] = rate, acc, norm
    for arr in (G, V4, K1, src):
        if not np.all(np.isfinite(arr)):
            raise InputError("--mc", "Monte Carlo estimates contain NaN or inf")

    # ---- (1) mean kernel relative error
    K0_err = np.empty((len(k0_names), nw, R, p)); K0_err_se = np.empty_like(K0_err)
    for j, name in enumerate(k0_names):
        K0_err[j], K0_err_se[j] = normalised_error(G, G_se, k0_refs[name][None], kernel_scale_pairs(k0_refs[name], P)[None])

    # ---- (2) V4 normalised error and its validity window
    V4_err = np.full((len(labels), nw, R, p, p), np.nan); V4_err_se = np.full_like(V4_err, np.nan)
    tstar_V4 = np.full((len(labels), nw), np.nan)
    for j in range(len(labels)):
        if not np.all(np.isfinite(V4_th[j])):
            continue
        scale = covariance_scale(V4_th[j])
        V4_err[j], V4_err_se[j] = normalised_error(V4, V4_se, V4_th[j][None], scale[None])
        for i in range(nw):
            tstar_V4[j, i] = first_exceedance(t, V4[i] - V4_th[j], V4_se[i], scale, threshold, nsigma)

    # ---- V4 extrapolated to n -> infinity (V4 = V4_inf + V4_1/n, two terms), to separate the closure error of
    # the leading-order V4 equation from genuine O(1/n) corrections of n Cov(G) at finite width
    V4_inf = V4_inf_se = None
    tstar_V4_inf = np.full(len(labels), np.nan)
    if nw >= 2:
        coef, coef_se, _, _ = fit_inverse_width(widths, V4, V4_se, 2)
        V4_inf, V4_inf_se = coef[0], coef_se[0]
        for j in range(len(labels)):
            if np.all(np.isfinite(V4_th[j])):
                tstar_V4_inf[j] = first_exceedance(t, V4_inf - V4_th[j], V4_inf_se, covariance_scale(V4_th[j]),
                                                   threshold, nsigma)

    # ---- (4) K1 two ways, and the source closure
    order_fit = min(3, nw)
    if nw >= 2:
        coef, coef_se, chi2, dof = fit_inverse_width(widths, G, G_se, order_fit)
        # K1 from the fit is relative to the fitted K0; report n-independent K0, K1, K2 as fitted.
        fit = {"K0_fit": coef[0], "K1_fit": coef[1]}
        fit_se = {"K0_fit": coef_se[0], "K1_fit": coef_se[1]}
        if order_fit == 3:
            fit["K2_fit"], fit_se["K2_fit"] = coef[2], coef_se[2]
    else:
        fit, fit_se, chi2, dof = {}, {}, np.full((R, p), np.nan), 0
    tstar_K1 = np.full((len(labels), nw), np.nan)
    tstar_K1_fit = np.full(len(labels), np.nan)
    for j in range(len(labels)):
        if not np.all(np.isfinite(K1_th[j])):
            continue
        scale = kernel_scale_pairs(K1_th[j], P)
        for i in range(nw):
            tstar_K1[j, i] = first_exceedance(t, K1[i] - K1_th[j], K1_se[i], scale, threshold, nsigma)
        if "K1_fit" in fit:
            tstar_K1_fit[j] = first_exceedance(t, fit["K1_fit"] - K1_th[j], fit_se["K1_fit"], scale, threshold, nsigma)
    gonly = labels.index("gonly_discrete") if "gonly_discrete" in labels else (
        labels.index("gonly_continuum") if "gonly_continuum" in labels else None)
    with np.errstate(invalid="ignore", divide="ignore"):
        src_t0_sigma = src[:, 0] / np.where(src_se[:, 0] > 0, src_se[:, 0], np.nan)
        mismatch_t0 = (src[:, 0] - (tad_th[gonly, 0][None] if gonly is not None else np.nan)) / np.where(
            src_se[:, 0] > 0, src_se[:, 0], np.nan)

    # ---- assemble
    pa, pb = pair_indices(P)
    coords = {
        "width": ("width", widths, {"long_name": "network width n", "units": "1"}),
        "t": ("t", t, {"long_name": "depth time t = layer * T / L", "units": "1"}),
        "layer": ("t", np.asarray(layers, np.int64), {"long_name": "residual block index l", "units": "1"}),
        "t_left": ("t_left", t[:-1], {"long_name": "left end of the recording interval", "units": "1"}),
        "pair": ("pair", np.arange(p), {"long_name": "pair index m of (a <= b), row-major", "units": "1"}),
        "pair2": ("pair2", np.arange(p), {"long_name": "second pair index", "units": "1"}),
        "pair_a": ("pair", pa, {"long_name": "first input index of pair", "units": "1"}),
        "pair_b": ("pair", pb, {"long_name": "second input index of pair", "units": "1"}),
        "theory": ("theory", np.array(labels, dtype=object), {"long_name": "closure and depth treatment"}),
        "k0_reference": ("k0_reference", np.array(k0_names, dtype=object),
                         {"long_name": "mean-kernel reference (discrete layers or continuum)"}),
        "residual_part": ("residual_part", np.array(RESIDUAL_PARTS, dtype=object),
                          {"long_name": "part of the V4 equation residual"}),
    }
    one = {"units": "1"}
    W_T_P = ("width", "t", "pair")
    W_T_PP = ("width", "t", "pair", "pair2")
    data = {
        "G_mean": (W_T_P, G, {**one, "long_name": "Monte Carlo mean kernel"}),
        "G_mean_se": (W_T_P, G_se, {**one, "long_name": "standard error of G_mean (jackknife)"}),
        "K0_discrete": (("t", "pair"), to_pairs(K0_disc), {**one, "long_name": "discrete-layer K0"}),
        "K0_relerr": (("k0_reference",) + W_T_P, K0_err,
                      {**one, "long_name": "(G_mean - K0) / sqrt(K0_aa K0_bb)"}),
        "K0_relerr_se": (("k0_reference",) + W_T_P, K0_err_se, {**one, "long_name": "standard error of K0_relerr"}),
        "V4_MC": (W_T_PP, V4, {**one, "long_name": "Monte Carlo V4 = n Cov(G_m, G_m')"}),
        "V4_MC_se": (W_T_PP, V4_se, {**one, "long_name": "standard error of V4_MC (jackknife)"}),
        "K0_theory": (("theory", "t", "pair"), K0_th, {**one, "long_name": "theory K0 at the Monte Carlo times"}),
        "V4_theory": (("theory", "t", "pair", "pair2"), V4_th, {**one, "long_name": "theory V4 at the MC times"}),
        "K1_theory": (("theory", "t", "pair"), K1_th, {**one, "long_name": "theory K1 at the Monte Carlo times"}),
        "tadpole_theory": (("theory", "t", "pair"), tad_th, {**one, "long_name": "theory tadpole (1/2) H:V4"}),
        "K1_source_theory": (("theory", "t", "pair"), src_th, {
            **one, "long_name": "theory prediction of the exact K1 source: G-only tadpole (1/2) H:V4, exact closure sw2 B"}),
        "V4_relerr": (("theory",) + W_T_PP, V4_err,
                      {**one, "long_name": "(V4_MC - V4_theory) / sqrt(V4_theory[m,m] V4_theory[m',m'])"}),
        "V4_relerr_se": (("theory",) + W_T_PP, V4_err_se, {**one, "long_name": "standard error of V4_relerr"}),
        "K1_MC": (W_T_P, K1, {**one, "long_name": "n (G_mean - K0_discrete)"}),
        "K1_MC_se": (W_T_P, K1_se, {**one, "long_name": "standard error of K1_MC (jackknife)"}),
        "K1_source_MC": (W_T_P, src, {**one, "long_name": "exact K1 source n sw2 (mean S - F(mean G))"}),
        "K1_source_MC_se": (W_T_P, src_se, {**one, "long_name": "standard error of K1_source_MC"}),
        "K1_source_t0_sigma": (("width", "pair"), src_t0_sigma,
                               {**one, "long_name": "K1_source_MC(t=0) / its standard error (exactly 0 expected)"}),
        "K1_source_mismatch_t0_sigma": (("width", "pair"), mismatch_t0, {
            **one, "long_name": "(K1_source_MC - G-only tadpole) at t=0 in units of the MC standard error"}),
        "fit_chi2": (("t", "pair"), chi2, {**one, "long_name": f"chi^2 of the 1/n fit ({dof} degrees of freedom)"}),
        "tstar_V4": (("theory", "width"), tstar_V4, {
            **one, "long_name": f"first t where the V4 relative error exceeds {threshold:g} by more than "
                                f"{nsigma:g} sigma (inf: never)"}),
        "tstar_K1": (("theory", "width"), tstar_K1, {
            **one, "long_name": f"first t where the K1 relative error exceeds {threshold:g} by more than "
                                f"{nsigma:g} sigma (inf: never)"}),
        "tstar_K1_fit": (("theory",), tstar_K1_fit, {**one, "long_name": "tstar_K1 for the 1/n-fit K1"}),
        "tstar_V4_inf": (("theory",), tstar_V4_inf, {**one, "long_name": "tstar_V4 for V4_inf (1/n-extrapolated)"}),
        "max_K0_relerr": (("k0_reference", "width"), np.nanmax(np.abs(K0_err), axis=(2, 3)),
                          {**one, "long_name": "max over t and entries of |K0_relerr|"}),
    }
    if V4_inf is not None:
        data["V4_inf"] = (("t", "pair", "pair2"), V4_inf, {**one, "long_name": "V4_MC extrapolated to n -> infinity "
                                                          "(weighted fit V4_inf + c/n over widths)"})
        data["V4_inf_se"] = (("t", "pair", "pair2"), V4_inf_se, {**one, "long_name": "standard error of V4_inf"})
    for name in fit:
        data[name] = (("t", "pair"), fit[name], {**one, "long_name": f"{name[:2]} from the weighted 1/n fit "
                                                 f"of G_mean over widths ({order_fit} terms)"})
        data[name + "_se"] = (("t", "pair"), fit_se[name], {**one, "long_name": f"standard error of {name}"})
    stack = lambda kind, st: np.stack([st[name][kind] for name in RESIDUAL_PARTS])  # noqa: E731
    data["residual_rate"] = (("residual_part", "width", "t_left", "pair", "pair2"), stack("rate", resid), {
        **one, "long_name": "V4 equation residual rate dV4_MC/dt - RHS_EFT(V4_MC) and its parts"})
    data["residual_rate_se"] = (("residual_part", "width", "t_left", "pair", "pair2"), stack("rate", resid_se),
                                {**one, "long_name": "jackknife standard error of residual_rate"})
    data["residual_acc"] = (("residual_part",) + W_T_PP, stack("acc", resid), {
        **one, "long_name": "accumulated residual int_0^t R dt' and its parts (left rule)"})
    data["residual_acc_se"] = (("residual_part",) + W_T_PP, stack("acc", resid_se),
                               {**one, "long_name": "jackknife standard error of residual_acc"})
    data["residual_norm_T"] = (("residual_part", "width"), stack("norm", resid), {
        **one, "long_name": "Frobenius norm over pair entries of residual_acc at t = T"})
    data["residual_norm_T_se"] = (("residual_part", "width"), stack("norm", resid_se),
                                  {**one, "long_name": "jackknife standard error of residual_norm_T"})
    data["V4_MC_norm_T"] = (("width",), np.sqrt(np.sum(V4[:, -1] ** 2, axis=(1, 2))),
                            {**one, "long_name": "Frobenius norm of V4_MC at t = T (scale of the residual)"})
    for key, value in data.items():
        if not key.startswith("tstar") and np.any(np.isinf(value[1])):
            raise InputError("--mc", f"diagnostic {key} overflowed (inf)")
    # rho names a pair of inputs only: NaN for one input or three and more (never a label for K_in[0,1] alone)
    rho = float(kin[0, 1] / np.sqrt(kin[0, 0] * kin[1, 1])) if P == 2 else math.nan
    attrs = {
        "activation": activation, "time": T, "depth": depth, "sw2": sw2, "sb2": sb2, "kin": str(params["kin"]),
        "rho": rho, "P": P, "threshold": threshold, "nsigma": nsigma,
        "point": default_point_tag(activation, depth, T, sw2, sb2, kin),
        "widths": ",".join(str(w) for w in widths), "seeds": ",".join(seeds),
        "samples": ",".join(str(s) for s in samples), "batches": ",".join(str(b) for b in batches),
        "record_every": int(ref.attrs.get("record_every", 1)),
        "fit_dof": dof, "fit_terms": order_fit if nw >= 2 else 0,
        "error_method": "delete-one-batch jackknife over seed batches (theory curves carry no statistical error)",
        "theories": ",".join(labels),
        "mc_files": ",".join(str(path) for path, _ in mc),
        "theory_files": ",".join(str(path) for path, _ in theories),
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


def number_tag(value) -> str:
    """A number in a file name: the shortest spelling that reads back as the same float (4.0 -> 4,
    0.6 -> 0.6, 1e-05), so distinct values never share a name.  The workflow spells its paths the same way."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def geometry_tag(kin) -> str:
    """Input-geometry part of a point tag, from the whole K_in: rho0.6 for two unit-norm inputs, else
    P<inputs>-<crc32 of K_in> (the workflow names its geometries rho0.6_q1-2 or by their label instead)."""
    kin = np.asarray(kin, dtype=np.float64)
    if kin.shape == (2, 2) and kin[0, 0] == 1.0 and kin[1, 1] == 1.0:
        return f"rho{number_tag(kin[0, 1])}"
    from kernel_eft.validation import format_kin

    return f"P{kin.shape[0]}-{zlib.crc32(format_kin(kin).encode()):08x}"


def default_point_tag(activation, depth, time, sw2, sb2, kin) -> str:
    """The tag of a grid point when diagnose is not given one: every parameter of the point, in the
    order of the workflow's file names (activation_L_T_sw_sb_geometry)."""
    return (f"{activation}_L{int(depth)}_T{number_tag(time)}_sw{number_tag(sw2)}_sb{number_tag(sb2)}_"
            f"{geometry_tag(kin)}")


def kernel_scale_pairs(K_pairs: np.ndarray, P: int) -> np.ndarray:
    """kernel_scale for kernels already in pair coordinates, (..., p) -> (..., p)."""
    lut = pair_lookup(P)
    return kernel_scale(K_pairs[..., lut])
