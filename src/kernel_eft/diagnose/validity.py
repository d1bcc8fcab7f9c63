"""Where each theory holds: Monte Carlo extrapolated to n -> infinity, pulls, the validity window t* as an
estimate with a bootstrap interval, and the exact theory's own limit r = V4 / (n K0^2).

Definitions (docs/diagnostics.md):
  extrapolation  X(n) = X_inf + c/n, weighted least squares over the widths (errors: the jackknife), done only
                 with >= 3 widths so that one degree of freedom is left to test the model.
  pull           (X_inf - X_theory) / se(X_inf), per entry and depth; a theory within its error bars has
                 |pull| < 3 everywhere.
  t*             the first recorded depth at which |X_MC - X_theory| > threshold * scale in any entry, where
                 scale = the larger of sqrt(|X_mm X_m'm'|) of the Monte Carlo estimate and of the theory (a
                 theory that predicts zero where Monte Carlo is not is 100% off; a Monte Carlo value that is
                 small by a fluctuation does not inflate the error), counting only deviations larger than nsigma standard errors (early depths,
                 where K1 and its source start from zero, are otherwise noise).  inf: never up to T; NaN: never,
                 but at T no entry resolves the threshold (nsigma se > threshold scale), so the Monte Carlo could
                 not have seen it.  68% interval: 16th and 84th percentile of t* over bootstrap resamplings of
                 the seed batches (each width resampled independently, extrapolated by the same weighted fit),
                 widened to contain the estimate.
  r              max over entries of |V4_MC[ab,cd]| / (n sqrt(K0_aa K0_bb K0_cc K0_dd)): the relative size of
                 the O(1/n) fluctuations.  Beyond r ~ 0.15 the O(1/n) theory's V4 is off by about r (its next
                 order), so the exact theory is not expected to hold there (docs/exact_theory.md).
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from kernel_eft.core.expectations import kernel_derivatives
from kernel_eft.core.pairs import from_pairs, to_pairs
from kernel_eft.core.statistics import (MIN_EXTRAPOLATION_WIDTHS, ControlVariate, bootstrap_pooled,
                                        bootstrap_weights, extrapolate_inverse_width, first_crossing,
                                        percentile_interval)
from kernel_eft.diagnose.compare import covariance_scale, kernel_scale, kernel_scale_pairs

QUANTITIES = ("V4", "K1", "K1_source")
BOOTSTRAP_REPLICATES = 200
R_LIMIT = 0.15  # the exact O(1/n) theory's own validity: r = V4 / (n K0^2) below this
# V4 + V4_1/n's own validity: its error relative to V4, measured as NEXT_ORDER_ERROR r^2 with r = V4/(n K0^2) of
# the theory (relu and gelu, one input, L = 8, n = 16-256; docs/exact_theory.md section 7.2), reaches 0.1 at
# r = 0.63 (the O(1/n) theory's, 0.67 r, at r = 0.149).  With the Monte Carlo's own V4 in r the law is blurred (r
# then holds the error itself), so this limit reads the theory's r.
NEXT_ORDER_ERROR = 0.25
R_LIMIT_NEXT_ORDER = round(math.sqrt(0.1 / NEXT_ORDER_ERROR), 2)  # 0.63


def entry_scale(name: str, values: np.ndarray, P: int) -> np.ndarray:
    """sqrt(|X_mm X_m'm'|) for a covariance (V4), sqrt(|X_aa X_bb|) for a kernel (K1, its source)."""
    return covariance_scale(values) if name == "V4" else kernel_scale_pairs(values, P)


def mean_corrections(point) -> list:
    """Per width, K1 = n (mean G - K0) with the control x = n (mean G^0 - K_in), whose mean is exactly zero
    (h^0 is Gaussian with covariance K_in), and the K1 source n sw2 (mean S - F(mean G)) without a control,
    both as kernel_eft.core.statistics.ControlVariate (batch values, for the jackknife and the bootstrap).
    Every layer inherits the statistical fluctuation of the input layer's mean; subtracting its fitted
    multiple removes it: at t = 0 K1 becomes exactly 0, and a 2-3 sigma fluctuation there no longer runs
    through every depth.  Measured on the default study (relu, n = 128, 32 batches): the K1 error drops to
    0.26-0.28 of the plain one at the first layer and 0.7-0.9 at t = 0.5, and grows by up to 10% at late
    depths, where the input layer no longer matters and fitting beta costs a little.  The source is hardly
    correlated with the input layer (the control gave 1.0-1.2 times its plain error), so it has none.  The
    source's batch values are linearised in mean G about the pooled mean (F(G_b) = F(G) + DF (G_b - G)),
    exact for its pooled value.  Without enough batches to fit the regression (fewer than 2 p + 8) K1 has no
    control either."""
    K0 = to_pairs(point.K0_discrete)  # (R, p); K0[0] = K_in
    out = []
    for batches, n in zip(point.batches, point.widths):
        n = float(n)
        counts = batches.counts.astype(np.float64)
        G_b, S_b = batches.mean_G, batches.mean_S  # (B, R, p)
        controlled = batches.controls is not None
        if controlled:  # --control-variates martingale: the batch means adjusted by the full-sample beta
            G_b, S_b = controlled_batch_means(batches, point.p)[:2]
        G = np.einsum("b,brp->rp", counts, G_b) / counts.sum()
        F = np.empty_like(G)
        DF = np.empty(G.shape + (G.shape[-1],))
        for r in range(G.shape[0]):
            deriv = kernel_derivatives(point.activation, from_pairs(G[r], point.P), order=1)
            F[r], DF[r] = deriv.F, deriv.jacobian()
        q_k1 = n * (G_b - K0[None])
        q_src = n * point.sw2 * (S_b - F[None] - np.einsum("rij,brj->bri", DF, G_b - G[None]))
        use_control = counts.size >= 2 * point.p + 8 and not controlled  # the martingale controls contain it
        x = n * (G_b[:, 0] - K0[0][None]) if use_control else np.zeros((counts.size, 0))
        none = np.zeros((counts.size, 0))  # the source is hardly correlated with the input layer: no control
        out.append({"K1": ControlVariate(counts, q_k1, x), "K1_source": ControlVariate(counts, q_src, none)})
    return out


def controlled_batch_means(batches, p: int):
    """Per batch (B, R, .) the control-adjusted means of G, S and D = (G - K0)(G - K0)^T (upper triangle) of a
    file with control-variate sums (docs/control_variates.md), with beta fitted once on all seeds: their
    count-weighted pool is the file's adjusted mean exactly (linear in the batch means), so they serve the
    jackknife and the bootstrap over batches (beta fixed at its full-sample fit, as for ControlVariate)."""
    c = batches.controls
    beta = batches.pooled().controls.beta()  # (R, a, k)
    q = c.mean_q - np.einsum("rai,bri->bra", beta, c.mean_x)
    return q[..., :p], q[..., p:2 * p], q[..., 2 * p:]


def with_mean_corrections(est, corrections: list):
    """A copy of the estimates whose per-width K1 and K1 source (and errors) are their control-variate forms;
    `est` itself is left as the plain estimates the earlier diagnostics read."""
    import dataclasses

    fields = {name: getattr(est, name).copy() for name in ("K1", "K1_se", "src", "src_se")}
    for i, cv in enumerate(corrections):
        fields["K1"][i], fields["K1_se"][i] = cv["K1"].estimate()
        fields["src"][i], fields["src_se"][i] = cv["K1_source"].estimate()
    return dataclasses.replace(est, **fields)


def bootstrap_estimates(point, corrections: list, replicates: int = BOOTSTRAP_REPLICATES) -> dict:
    """Per width, `replicates` bootstrap replicates of V4, K1 and the K1 source (pair coordinates), drawn from
    the batch-resolved moments (K1 and its source in their control-variate forms).  {name: (W, K, R, ...)}.
    The streams are keyed by the point's parameters and the width, so a diagnostics file is reproducible
    bitwise."""
    out = {name: [] for name in QUANTITIES}
    key = zlib.crc32(f"{point.activation}|{point.sw2!r}|{point.sb2!r}|{point.T!r}|{point.depth}|"
                     f"{point.kin.tolist()!r}".encode())
    for batches, n, cv in zip(point.batches, point.widths, corrections):
        weights = bootstrap_weights(len(batches), replicates, np.random.default_rng([key, int(n)]))
        if batches.controls is not None:
            out["V4"].append(controlled_v4_replicates(batches, weights, float(n), point))
        else:
            m = bootstrap_pooled(batches, weights)
            out["V4"].append(float(n) * m.m2_GG / (m.count - 1)[:, None, None, None])
        out["K1"].append(cv["K1"].bootstrap(weights))
        out["K1_source"].append(cv["K1_source"].bootstrap(weights))
    return {name: np.stack(v) for name, v in out.items()}


def controlled_v4_replicates(batches, weights, n: float, point) -> np.ndarray:
    """Bootstrap replicates (K, R, p, p) of the controlled V4 = n (D~ - (G~ - K0)(G~ - K0)^T) from the adjusted
    batch means (simulate/estimates.py)."""
    p = point.p
    G_b, _, D_b = controlled_batch_means(batches, p)
    wc = np.asarray(weights) * batches.counts[None].astype(np.float64)
    total = wc.sum(axis=1)[:, None, None]
    G = np.einsum("kb,brp->krp", wc, G_b) / total
    D = np.einsum("kb,brd->krd", wc, D_b) / total
    iu, ju = np.triu_indices(p)
    cov = np.empty(D.shape[:2] + (p, p))
    cov[..., iu, ju] = D
    cov[..., ju, iu] = D
    dG = G - to_pairs(point.K0_discrete)[None]
    return n * (cov - dG[..., :, None] * dG[..., None, :])


def mc_values(est) -> dict:
    """{name: (per-width estimate, its standard error)}."""
    return {"V4": (est.V4, est.V4_se), "K1": (est.K1, est.K1_se), "K1_source": (est.src, est.src_se)}


def theory_values(th) -> dict:
    return {"V4": th.V4, "K1": th.K1, "K1_source": th.K1_source}


def extrapolations(point, est) -> dict:
    """{name: Extrapolation} with >= 3 widths, else {} (a fit with no degree of freedom is not drawn).  The
    order in 1/n is linear, or quadratic where four or more widths call for it (core/statistics.py,
    choose_extrapolation_degree)."""
    if point.widths.size < MIN_EXTRAPOLATION_WIDTHS:
        return {}
    return {name: extrapolate_inverse_width(point.widths, value, se, degree="auto")
            for name, (value, se) in mc_values(est).items()}


ROUNDING_SE = 1e-9  # an error bar below this fraction of the quantity's largest |value| is rounding, not noise


def pulls(th, extr: dict) -> dict:
    """(X_inf - X_theory) / se(X_inf) per theory, and its worst |value| over depth and entries.  No pull (NaN)
    where se(X_inf) is zero or at rounding level (below ROUNDING_SE of the largest |X_inf|): with the martingale
    controls, K1 and V4 at t = 0 are exact (K1(0) = 0, V4(0) = S2(K_in)) and their extrapolated se is ~1e-15,
    so that a rounding difference from the theory would otherwise read as a pull of 10 (measured: 8.1 for relu
    V4 with the quadratic fit over widths 16-128)."""
    out = {}
    for name, theory in theory_values(th).items():
        if name not in extr:
            continue
        e = extr[name]
        pull, worst = width_pulls(e.value[None], e.se[None], theory[:, None])  # the extrapolation as one "width"
        out[f"{name}_pull"], out[f"worst_pull_{name}"] = pull[:, 0], worst[:, 0]
    return out


def _tstar(t, value, se, replicates, theory, name, P, threshold, nsigma):
    """(estimate, lo, hi) of t* for one Monte Carlo estimate against one theory."""
    if not np.all(np.isfinite(theory)):
        return math.nan, math.nan, math.nan
    scale = np.maximum(entry_scale(name, value, P), entry_scale(name, theory, P))
    estimate = first_crossing(t, value - theory, scale, threshold, se, nsigma)
    reps = first_crossing(t, replicates - theory[None], scale, threshold, se, nsigma)
    return (estimate, *percentile_interval(estimate, reps))


def validity_windows(point, th, est, extr: dict, replicates: dict, threshold: float, nsigma: float) -> dict:
    """t* with its 68% interval for every quantity and theory: against the extrapolated Monte Carlo
    (`tstar_{q}`, `_lo`, `_hi`: dims theory) and against each width (`tstar_{q}_width`, ...: theory, width)."""
    nth, nw = len(th.labels), point.widths.size
    out = {}
    for name, theory in theory_values(th).items():
        value, se = mc_values(est)[name]
        per_width = np.full((3, nth, nw), np.nan)
        inf = np.full((3, nth), np.nan)
        for j in range(nth):
            for i in range(nw):
                per_width[:, j, i] = _tstar(point.t, value[i], se[i], replicates[name][i], theory[j], name, point.P,
                                            threshold, nsigma)
            if name in extr:
                e = extr[name]
                inf[:, j] = _tstar(point.t, e.value, e.se, e.apply(replicates[name]), theory[j], name, point.P,
                                   threshold, nsigma)
        for k, suffix in enumerate(("", "_lo", "_hi")):
            out[f"tstar_{name}{suffix}"] = inf[k]
            out[f"tstar_{name}_width{suffix}"] = per_width[k]
    return out


def width_pulls(value: np.ndarray, se: np.ndarray, theory: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(X_MC(n) - X_theory(n)) / se(X_MC(n)) per theory and width, (theory, width, R, ...), and its worst |value|
    over depth and entries, (theory, width).  value, se: (width, R, ...); theory: (theory, width, R, ...).  No
    pull (NaN) where se is zero or below ROUNDING_SE of the width's largest |X_MC| (as in `pulls`)."""
    finite = np.where(np.isfinite(value), np.abs(value), 0.0)
    floor = ROUNDING_SE * finite.reshape(finite.shape[0], -1).max(axis=1)
    floor = floor.reshape((-1,) + (1,) * (value.ndim - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        pull = np.where(se > floor, (value[None] - theory) / se[None], np.nan)
    flat = np.abs(pull.reshape(pull.shape[:2] + (-1,)))
    finite_rows = np.any(np.isfinite(flat), axis=-1)
    worst = np.full(pull.shape[:2], np.nan)
    worst[finite_rows] = np.nanmax(flat[finite_rows], axis=-1)
    return pull, worst


def next_order_comparison(point, th, est, replicates: dict, threshold: float, nsigma: float) -> dict:
    """Where a theory gives V4_1 (n Cov(G) = V4 + V4_1/n + O(1/n^2)): each width's V4_MC(n) against that theory's
    V4 + V4_1/n at the same n, with no extrapolation, so that one or two widths get a verdict too.  Per theory and
    width: the pulls (`V4_next_width_pull`, beside `V4_width_pull` against V4 alone), their worst |value| and t*
    with its bootstrap interval (`tstar_V4_next_width`).  NaN for the theories without V4_1; {} where none has it
    (the file is then what it was before V4_1 existed)."""
    if th.V4_1 is None:
        return {}
    n = point.widths.astype(np.float64)
    V4_n = th.V4[:, None] + th.V4_1[:, None] / n[None, :, None, None, None]  # (theory, width, R, p, p)
    # r = V4/(n K0^2) of the (first) theory with V4_1, at every width: the r of R_LIMIT_NEXT_ORDER
    first = next(j for j in range(len(th.labels)) if np.all(np.isfinite(th.V4_1[j])))
    V4_theory_r = np.broadcast_to(th.V4[first][None], (n.size,) + th.V4[first].shape)
    pull_0, worst_0 = width_pulls(est.V4, est.V4_se, np.broadcast_to(th.V4[:, None], V4_n.shape))
    pull_1, worst_1 = width_pulls(est.V4, est.V4_se, V4_n)
    tstar = np.full((3, len(th.labels), n.size), np.nan)
    for j in range(len(th.labels)):
        for i in range(n.size):
            tstar[:, j, i] = _tstar(point.t, est.V4[i], est.V4_se[i], replicates["V4"][i], V4_n[j, i], "V4",
                                    point.P, threshold, nsigma)
    out = {"V4_1_theory": th.V4_1, "V4_width_pull": pull_0, "worst_pull_V4_width": worst_0,
           "V4_next_width_pull": pull_1, "worst_pull_V4_next_width": worst_1,
           "t_r_limit_next_order": first_over(point, ratio(point, V4_theory_r), R_LIMIT_NEXT_ORDER)}
    for k, suffix in enumerate(("", "_lo", "_hi")):
        out[f"tstar_V4_next_width{suffix}"] = tstar[k]
    return out


def fluctuation_ratio(point, est) -> dict:
    """r(t) = max over entries |V4_MC[ab,cd]| / (n sqrt(K0_aa K0_bb K0_cc K0_dd)) per width, and the first t
    where it exceeds R_LIMIT (inf: never)."""
    r_max = ratio(point, est.V4)
    return {"r_max": r_max, "t_r_limit": first_over(point, r_max, R_LIMIT)}


def ratio(point, V4: np.ndarray) -> np.ndarray:
    """max over entries |V4[ab,cd]| / (n sqrt(K0_aa K0_bb K0_cc K0_dd)), (W, R), for V4 (W, R, p, p)."""
    return ratio_of(V4, kernel_scale(point.K0_discrete), point.widths)


def ratio_of(V4: np.ndarray, k0_scale: np.ndarray, widths) -> np.ndarray:
    """max over entries |V4[m,m']| / (n s_m s_m'), (W, R), for V4 (W, R, p, p), the discrete K0's scale
    s_m = sqrt(|K0_aa K0_bb|) (R, p) (kernel_eft.diagnose.compare.kernel_scale) and the widths (W,)."""
    s = k0_scale
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.abs(V4) / (np.asarray(widths)[:, None, None, None] * s[None, :, :, None] * s[None, :, None, :])
    return np.nanmax(r.reshape(r.shape[:2] + (-1,)), axis=-1)


def first_over(point, r_max: np.ndarray, limit: float) -> np.ndarray:
    """Per width, the first t where r_max (W, R) exceeds limit (inf: never)."""
    over = r_max > limit
    return np.where(over.any(axis=1), point.t[np.argmax(over, axis=1)], math.inf)
