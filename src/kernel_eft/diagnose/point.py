"""All diagnostics of one grid point (every width, every theory) as one Dataset (schema kind `diagnostics`).

`diagnose_point` reads the files, then each step below is one question asked of them:
  mean_kernel_errors     does mean G follow K0 (discrete layers, continuum)?
  covariance_errors      V4 of each width against each theory (relative errors).
  source_closure         the exact K1 source at t = 0 against the reference closure's K1_source.
  validity (module)      V4, K1 and the K1 source extrapolated to n -> infinity (1/n fit, >= 3 widths), pulls,
                         t* with a bootstrap interval per quantity, theory and width, and r = V4 / (n K0^2);
                         where a theory gives V4_1, each width's V4 against V4 + V4_1/n at that width.
  residuals (per width)  the V4 equation residual and its transport / source split, with jackknife errors.
  identity (per width)   where a theory gives the identity's order 0 and V4_1's parts (the exact theory with
                         V4_1), n (V4(n) - V4) split into the parts of the exact one-block identity, measured
                         and predicted, and the identity's check on the Monte Carlo.
Theories enter only through their standard fields (K0, V4, K1, K1_source) and, where a file has them, V4_1
(kernel_eft.theory.closure.NEXT_ORDER_FIELDS) and the identity's fields (IDENTITY_FIELDS), whatever the closure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from kernel_eft import schema
from kernel_eft.core.pairs import four_index_to_pairs, from_pairs, n_pairs, pair_indices, to_pairs
from kernel_eft.core.statistics import BatchMoments, jackknife
from kernel_eft.diagnose import identity, validity
from kernel_eft.diagnose.compare import covariance_scale, kernel_scale_pairs, normalised_error
from kernel_eft.diagnose.inputs import check_point_files, se_or_nan, theory_curves
from kernel_eft.diagnose.residual import (RESIDUAL_PARTS, ResidualSetup, make_residual_setup, residual_estimator,
                                          unpack_residual)
from kernel_eft.diagnose.tags import default_point_tag
from kernel_eft.theory.closure import IDENTITY_FIELDS, TheoryLabel
from kernel_eft.theory.registry import reference_closure
from kernel_eft.validation import InputError, parse_kin


@dataclass
class Point:
    """One grid point: its parameters, the Monte Carlo files (sorted by width) and their times."""

    mc: list
    params: dict
    activation: str
    sw2: float
    sb2: float
    T: float
    depth: int
    kin: np.ndarray
    widths: np.ndarray
    t: np.ndarray
    layers: np.ndarray
    K0_discrete: np.ndarray  # (R, P, P)
    batches: list  # BatchMoments of each Monte Carlo file, read once (jackknife, control variates, bootstrap)

    @property
    def P(self) -> int:
        return self.kin.shape[0]

    @property
    def p(self) -> int:
        return n_pairs(self.P)

    @property
    def R(self) -> int:
        return self.t.size

    @property
    def dt(self) -> float:
        return self.T / self.depth


@dataclass
class Theories:
    """The standard fields of every theory on the Monte Carlo times, stacked on the `theory` axis (NaN where a
    file lacks one)."""

    labels: list
    K0: np.ndarray  # (theory, R, p)
    V4: np.ndarray  # (theory, R, p, p)
    K1: np.ndarray
    K1_source: np.ndarray
    V4_1: np.ndarray | None = None  # (theory, R, p, p), NaN for a theory without it; None: no theory has it
    identity: dict | None = None  # the first theory with every IDENTITY_FIELD: {"label", field: (R, p[, p])}


@dataclass
class Estimates:
    """Monte Carlo estimates per width (pair coordinates) and the residual parts with their errors."""

    G: np.ndarray
    G_se: np.ndarray
    V4: np.ndarray
    V4_se: np.ndarray
    K1: np.ndarray
    K1_se: np.ndarray
    src: np.ndarray
    src_se: np.ndarray
    resid: dict
    resid_se: dict
    seeds: list = field(default_factory=list)
    samples: list = field(default_factory=list)
    batches: list = field(default_factory=list)


def read_point(mc: list, theories: list) -> Point:
    params = check_point_files(mc, theories)
    mc = sorted(mc, key=lambda item: int(item[1].attrs["width"]))
    ref = mc[0][1]
    T, depth = float(params["time"]), int(params["depth"])
    t = ref["t"].values.astype(float)
    layers = ref["layer"].values if "layer" in ref.coords else np.rint(t / T * depth).astype(int)
    if t.size < 2:
        raise InputError("record_every", "the Monte Carlo files record fewer than two times")
    return Point(mc, params, str(params["activation"]), float(params["sw2"]), float(params["sb2"]), T, depth,
                 parse_kin(str(params["kin"]), "kin"), np.array([int(ds.attrs["width"]) for _, ds in mc]), t,
                 layers, ref["K0_discrete"].values,  # K0_discrete: identical in every file of the point
                 [BatchMoments.from_dataset(ds) for _, ds in mc])


def stack_theories(point: Point, theories: list) -> Theories:
    labels, curves = theory_curves(theories, point.t, point.layers)
    p = point.p

    def stack(name, shape):
        out = np.full((len(labels), point.R) + shape, np.nan)
        for i, label in enumerate(labels):
            if curves[label][name] is not None:
                out[i] = curves[label][name]
        return out

    V4_1 = stack("V4_1", (p, p)) if any(curves[label]["V4_1"] is not None for label in labels) else None
    identity = next(({"label": label, **curves[label]} for label in labels
                     if all(curves[label][name] is not None for name in IDENTITY_FIELDS)), None)
    return Theories(labels, stack("K0", (p,)), stack("V4", (p, p)), stack("K1", (p,)), stack("K1_source", (p,)),
                    V4_1, identity)


def identity_variables(point: Point, th: Theories) -> tuple[dict, dict]:
    """Each width's n (V4(n) - V4) split by the exact one-block identity into its mean, contraction and transport
    parts, measured (kernel_eft.diagnose.identity, jackknife over the seed batches) beside the theory's
    prediction of each part, and the identity's own check on the Monte Carlo (identity_pull).  Needs every
    layer recorded and a theory with the identity's order 0 (IDENTITY_FIELDS: the exact theory with V4_1).
    Returns (variables, attributes); ({}, {}) where either is missing, with the reason in an attribute when a
    theory has them."""
    if th.identity is None:
        return {}, {}
    if not np.array_equal(np.asarray(point.layers), np.arange(point.depth + 1)):
        return {}, {"identity_method": "not computed: the identity needs every layer recorded (record_every 1)"}
    cur, P = th.identity, point.P
    theory = {"K0": from_pairs(cur["K0"], P), "f0": point.sw2 * from_pairs(cur["S_mean"], P) + point.sb2,
              "V4": cur["V4"], "X0": point.sw2 * cur["cov_GS"], "Y0": point.sw2 ** 2 * cur["cov_SS"]}
    measured, parts, parts_se, residual_pull = [], [], [], []
    for width, batches in zip(point.widths, point.batches):
        d = identity.decomposition_with_errors(batches, theory, width=int(width), sw2=point.sw2, sb2=point.sb2,
                                               dt=point.dt)
        measured.append(d["measured_V4_1"])
        parts.append(np.stack([d[name][0] for name in identity.PARTS], axis=1))
        parts_se.append(np.stack([d[name][1] for name in identity.PARTS], axis=1))
        value, se = d["identity_residual"]
        residual_pull.append(np.where(se > 0, value / np.where(se > 0, se, 1.0), 0.0))  # layer 0: 0 by construction
    predicted = np.stack([cur[f"V4_1_{name}"] for name in identity.PARTS], axis=1)
    values = {"V4_1_MC": np.stack([m for m, _ in measured]), "V4_1_MC_se": np.stack([e for _, e in measured]),
              "V4_1_part_MC": np.stack(parts), "V4_1_part_MC_se": np.stack(parts_se),
              "V4_1_part_theory": predicted, "identity_pull": np.stack(residual_pull)}
    return values, {"identity_theory": cur["label"],
                    "identity_method": "law of total covariance of one block on the batch-resolved raw moments "
                                       "(no control variates), parts cumulated from layer 0 (docs/exact_theory.md "
                                       "section 7.4)"}


def mc_estimates(point: Point) -> Estimates:
    """The Monte Carlo estimates of every width, and the V4 equation residual by the jackknife over its batches."""
    nw, R, p = point.widths.size, point.R, point.p
    setup = make_residual_setup(point.activation, point.t, 1, point.sw2, point.sb2, point.dt, point.K0_discrete)
    G = np.empty((nw, R, p)); G_se = np.empty_like(G)  # noqa: E702
    V4 = np.empty((nw, R, p, p)); V4_se = np.empty_like(V4)  # noqa: E702
    K1 = np.empty((nw, R, p)); K1_se = np.empty_like(K1)  # noqa: E702
    src = np.empty((nw, R, p)); src_se = np.empty_like(src)  # noqa: E702
    resid = {name: {k: np.empty((nw,) + s) for k, s in (("rate", (R - 1, p, p)), ("acc", (R, p, p)), ("norm", ()))}
             for name in RESIDUAL_PARTS}
    resid_se = {name: {k: np.empty_like(v) for k, v in parts.items()} for name, parts in resid.items()}
    est = Estimates(G, G_se, V4, V4_se, K1, K1_se, src, src_se, resid, resid_se)
    for i, (_, ds) in enumerate(point.mc):
        G[i], G_se[i] = to_pairs(ds["G_mean"].values), to_pairs(se_or_nan(ds, "G_mean"))
        V4[i], V4_se[i] = four_index_to_pairs(ds["V4"].values), four_index_to_pairs(se_or_nan(ds, "V4"))
        K1[i], K1_se[i] = to_pairs(ds["K1"].values), to_pairs(se_or_nan(ds, "K1"))
        src[i], src_se[i] = to_pairs(ds["K1_source"].values), to_pairs(se_or_nan(ds, "K1_source"))
        est.seeds.append(str(ds.attrs.get("seed", "?")).replace(",", "+"))  # a merged file has several seeds
        est.samples.append(int(ds.attrs.get("samples", int(np.sum(ds["batch_count"].values)))))
        est.batches.append(int(ds["batch_count"].size))
        width_setup = ResidualSetup(setup.times, int(point.widths[i]), point.sw2, point.sb2, point.dt, setup.K0,
                                    setup.W, setup.J)
        value, se = jackknife(point.batches[i], residual_estimator(width_setup))
        for store, flat in ((resid, value), (resid_se, se)):
            for name, (rate, acc, norm) in unpack_residual(np.asarray(flat), R, p).items():
                store[name]["rate"][i], store[name]["acc"][i], store[name]["norm"][i] = rate, acc, norm
    for arr in (G, V4, K1, src):
        if not np.all(np.isfinite(arr)):
            raise InputError("mc", "Monte Carlo estimates contain NaN or inf")
    return est


def mean_kernel_errors(point: Point, th: Theories, est: Estimates) -> dict:
    """(1) mean G against K0: the discrete recursion (the exact n -> inf limit at this L) and, where a theory
    gives one, the continuum K0."""
    refs = {"discrete": to_pairs(point.K0_discrete)}
    for i, label in enumerate(th.labels):
        if TheoryLabel.parse(label).form == "continuum" and np.all(np.isfinite(th.K0[i])):
            refs["continuum"] = th.K0[i]
            break
    err = np.empty((len(refs), point.widths.size, point.R, point.p)); err_se = np.empty_like(err)  # noqa: E702
    for j, ref in enumerate(refs.values()):
        err[j], err_se[j] = normalised_error(est.G, est.G_se, ref[None], kernel_scale_pairs(ref, point.P)[None])
    return {"k0_reference": list(refs), "K0_relerr": err, "K0_relerr_se": err_se,
            "max_K0_relerr": np.nanmax(np.abs(err), axis=(2, 3))}


def covariance_errors(point: Point, th: Theories, est: Estimates) -> dict:
    """(2) V4 of every width against each theory, relative to the theory's own scale (the figures' per-width
    curves); the validity windows are in kernel_eft.diagnose.validity."""
    nth, nw = len(th.labels), point.widths.size
    err = np.full((nth, nw, point.R, point.p, point.p), np.nan); err_se = np.full_like(err, np.nan)  # noqa: E702
    for j in range(nth):
        if not np.all(np.isfinite(th.V4[j])):
            continue
        scale = covariance_scale(th.V4[j])
        err[j], err_se[j] = normalised_error(est.V4, est.V4_se, th.V4[j][None], scale[None])
    return {"V4_relerr": err, "V4_relerr_se": err_se}


def extrapolated_variables(extr: dict) -> dict:
    """X_inf, its standard error and the chi^2 of its fit, for V4, K1 and the K1 source (>= 3 widths)."""
    out = {}
    for name, e in extr.items():
        out[f"{name}_inf"], out[f"{name}_inf_se"], out[f"{name}_inf_chi2"] = e.value, e.se, e.chi2
    return out


def reference_theory(labels: list) -> int | None:
    """Index of the reference closure's solution (discrete layers where given, else the continuum)."""
    closure = reference_closure()
    for depth in (1, None):
        if closure.theory_label(depth) in labels:
            return labels.index(closure.theory_label(depth))
    return None


def source_closure(th: Theories, est: Estimates) -> dict:
    """The exact K1 source at t = 0 (it vanishes: h^0 is Gaussian) in standard errors, and its mismatch with
    the reference closure's K1_source there."""
    ref = reference_theory(th.labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        se0 = np.where(est.src_se[:, 0] > 0, est.src_se[:, 0], np.nan)
        t0_sigma = est.src[:, 0] / se0
        mismatch = (est.src[:, 0] - (th.K1_source[ref, 0][None] if ref is not None else np.nan)) / se0
    return {"K1_source_t0_sigma": t0_sigma, "K1_source_mismatch_t0_sigma": mismatch}


def residual_variables(est: Estimates) -> dict:
    def stack(kind, store):
        return np.stack([store[name][kind] for name in RESIDUAL_PARTS])

    out = {}
    for kind, name in (("rate", "residual_rate"), ("acc", "residual_acc"), ("norm", "residual_norm_T")):
        out[name], out[name + "_se"] = stack(kind, est.resid), stack(kind, est.resid_se)
    return out


def diagnose_point(mc: list, theories: list, threshold: float = 0.1, nsigma: float = 4.0,
                   bootstrap_replicates: int = validity.BOOTSTRAP_REPLICATES):
    """All per-point diagnostics as an xarray Dataset.  mc, theories: lists of (path, xarray.Dataset).
    threshold: the relative error that ends a validity window; nsigma: the size, in standard errors, a
    deviation needs to count (kernel_eft.diagnose.validity)."""
    point = read_point(mc, theories)
    th = stack_theories(point, theories)
    plain = mc_estimates(point)
    k0 = mean_kernel_errors(point, th, plain)
    v4 = covariance_errors(point, th, plain)
    src = source_closure(th, plain)  # the t = 0 mismatch of the plain K1 source estimate
    corrections = validity.mean_corrections(point)
    est = validity.with_mean_corrections(plain, corrections)  # K1 and its source in control-variate form
    extr = validity.extrapolations(point, est)
    replicates = validity.bootstrap_estimates(point, corrections, bootstrap_replicates)
    windows = validity.validity_windows(point, th, est, extr, replicates, threshold, nsigma)
    fit_attrs = {"fit_dof": next(iter(extr.values())).dof if extr else 0}
    identity_values, identity_attrs = identity_variables(point, th)
    values = {
        "G_mean": est.G, "G_mean_se": est.G_se, "K0_discrete": to_pairs(point.K0_discrete),
        "K0_relerr": k0["K0_relerr"], "K0_relerr_se": k0["K0_relerr_se"],
        "V4_MC": est.V4, "V4_MC_se": est.V4_se,
        "K0_theory": th.K0, "V4_theory": th.V4, "K1_theory": th.K1, "K1_source_theory": th.K1_source,
        "V4_relerr": v4["V4_relerr"], "V4_relerr_se": v4["V4_relerr_se"],
        "K1_MC": est.K1, "K1_MC_se": est.K1_se, "K1_source_MC": est.src, "K1_source_MC_se": est.src_se,
        **src, "max_K0_relerr": k0["max_K0_relerr"],
        **extrapolated_variables(extr), **validity.pulls(th, extr), **windows,
        **validity.next_order_comparison(point, th, est, replicates, threshold, nsigma),
        **validity.fluctuation_ratio(point, est),
        **residual_variables(est), **identity_values,
        "V4_MC_norm_T": np.sqrt(np.sum(est.V4[:, -1] ** 2, axis=(1, 2))),
    }
    for name, value in values.items():
        if not name.startswith(("tstar", "t_r_limit")) and np.any(np.isinf(value)):
            raise InputError("mc", f"diagnostic {name} overflowed (inf)")
    pa, pb = pair_indices(point.P)
    coords = {"width": point.widths, "t": point.t, "layer": np.asarray(point.layers, np.int64),
              "t_left": point.t[:-1], "pair": np.arange(point.p), "pair2": np.arange(point.p), "pair_a": pa,
              "pair_b": pb, "theory": np.array(th.labels, dtype=object),
              "k0_reference": np.array(k0["k0_reference"], dtype=object),
              "residual_part": np.array(RESIDUAL_PARTS, dtype=object)}
    if identity_values:
        coords["identity_part"] = np.array(identity.PARTS, dtype=object)
    kin = point.kin
    # rho names a pair of inputs only: NaN for one input or three and more (never a label for K_in[0,1] alone)
    rho = float(kin[0, 1] / np.sqrt(kin[0, 0] * kin[1, 1])) if point.P == 2 else math.nan
    attrs = {
        "activation": point.activation, "time": point.T, "depth": point.depth, "sw2": point.sw2, "sb2": point.sb2,
        "kin": str(point.params["kin"]), "rho": rho, "P": point.P, "threshold": threshold, "nsigma": nsigma,
        "point": default_point_tag(point.activation, point.depth, point.T, point.sw2, point.sb2, kin),
        "widths": ",".join(str(w) for w in point.widths), "seeds": ",".join(est.seeds),
        "samples": ",".join(str(s) for s in est.samples), "batches": ",".join(str(b) for b in est.batches),
        "record_every": int(point.mc[0][1].attrs.get("record_every", 1)),
        **fit_attrs, "extrapolation": "X(n) = X_inf + c/n (+ d/n^2 where >= 4 widths call for it by a chi^2 test), "
                                      "weighted least squares over the widths (>= 3 widths)",
        "bootstrap_replicates": int(bootstrap_replicates), "r_limit": validity.R_LIMIT,
        "reference_closure": reference_closure().name,
        "error_method": "delete-one-batch jackknife over seed batches (theory curves carry no statistical error)",
        "theories": ",".join(th.labels),
        "mc_files": ",".join(str(path) for path, _ in point.mc),
        "theory_files": ",".join(str(path) for path, _ in theories),
    }
    if "t_r_limit_next_order" in values:  # only where a theory gave V4_1: a file without it stays as it was
        attrs["r_limit_next_order"] = validity.R_LIMIT_NEXT_ORDER
    attrs.update(identity_attrs)
    context = {"threshold": threshold, "nsigma": nsigma, "reference": reference_closure().name, "r_limit": validity.R_LIMIT,
               "r_limit_next_order": validity.R_LIMIT_NEXT_ORDER, "identity": identity_attrs.get("identity_theory", ""),
               **fit_attrs}
    return schema.dataset("diagnostics", values, coords, attrs, context=context)
