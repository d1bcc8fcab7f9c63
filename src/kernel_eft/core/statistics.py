"""Statistics of the Monte Carlo: mergeable moments, the delete-one-batch jackknife, the bootstrap over batches,
control variates, the weighted 1/n fit and extrapolation, and t* as an estimate with its interval
(definitions: docs/diagnostics.md).

Moments are kept per seed batch as means and centred co-moment sums (pair coordinates) that merge exactly
(Chan et al.), so files of one grid point pool without re-running, and any estimator, however nonlinear,
gets a jackknife standard error from the batch-resolved moments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------------------------------------
# Mergeable moments and the jackknife
# ----------------------------------------------------------------------------------------------


@dataclass
class Moments:
    """Means and centred co-moment sums of G and S (pair coordinates) at the recorded layers.

    Shapes: mean_G, mean_S (R, p); m2_GG, m2_GS, m2_SS (R, p, p) with
    m2_XY = sum_s (X_s - mean X)(Y_s - mean Y)^T over the `count` seeds.
    """

    count: int
    mean_G: np.ndarray
    mean_S: np.ndarray
    m2_GG: np.ndarray
    m2_GS: np.ndarray
    m2_SS: np.ndarray
    controls: "ControlMoments | None" = None  # only with control variates (kernel_eft.simulate.controls)

    @classmethod
    def from_samples(cls, G: np.ndarray, S: np.ndarray) -> "Moments":
        """G, S: (seeds, R, p) per-seed kernels in pair coordinates."""
        mean_G = G.mean(axis=0)
        mean_S = S.mean(axis=0)
        dG = G - mean_G
        dS = S - mean_S
        return cls(
            count=G.shape[0],
            mean_G=mean_G,
            mean_S=mean_S,
            m2_GG=np.einsum("sri,srj->rij", dG, dG),
            m2_GS=np.einsum("sri,srj->rij", dG, dS),
            m2_SS=np.einsum("sri,srj->rij", dS, dS),
        )

    def merge(self, other: "Moments") -> "Moments":
        """Exact pooled moments of the union of two disjoint sets of seeds (Chan et al. 1979)."""
        na, nb = self.count, other.count
        n = na + nb
        dG = other.mean_G - self.mean_G
        dS = other.mean_S - self.mean_S
        w = na * nb / n
        return Moments(
            count=n,
            mean_G=self.mean_G + dG * (nb / n),
            mean_S=self.mean_S + dS * (nb / n),
            m2_GG=self.m2_GG + other.m2_GG + w * np.einsum("ri,rj->rij", dG, dG),
            m2_GS=self.m2_GS + other.m2_GS + w * np.einsum("ri,rj->rij", dG, dS),
            m2_SS=self.m2_SS + other.m2_SS + w * np.einsum("ri,rj->rij", dS, dS),
            controls=None if self.controls is None else self.controls.merge(other.controls),
        )

    def covariances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unbiased sample covariances Cov(G,G), Cov(G,S), Cov(S,S), each (R, p, p)."""
        d = self.count - 1
        return self.m2_GG / d, self.m2_GS / d, self.m2_SS / d


@dataclass
class ControlMoments:
    """Mergeable sums for control variates with exactly known mean zero, per recorded layer: the means of the
    controlled quantities q (R, a) and of the controls x (R, k), and the centred co-moment sums
    m2_qx = sum_s (q_s - mean q)(x_s - mean x)^T (R, a, k) and m2_xx (R, k, k) over the `count` seeds.

    The least-squares coefficient beta = m2_qx m2_xx^-1 is fitted per seed (not per batch), so it can have many
    controls; because it is fitted from these sums, pooled files and any MPI rank count give the same beta
    bitwise, and the jackknife refits it on every leave-one-batch-out pool."""

    count: int
    mean_q: np.ndarray
    mean_x: np.ndarray
    m2_qx: np.ndarray
    m2_xx: np.ndarray

    @classmethod
    def from_samples(cls, q: np.ndarray, x: np.ndarray) -> "ControlMoments":
        """q (seeds, R, a), x (seeds, R, k)."""
        mean_q, mean_x = q.mean(axis=0), x.mean(axis=0)
        dq = (q - mean_q).transpose(1, 2, 0)  # (R, a, seeds): the sums over seeds as BLAS products
        dx = (x - mean_x).transpose(1, 0, 2)  # (R, seeds, k)
        return cls(q.shape[0], mean_q, mean_x, np.matmul(dq, dx), np.matmul(dx.transpose(0, 2, 1), dx))

    def merge(self, other: "ControlMoments") -> "ControlMoments":
        """Exact pooled sums of two disjoint sets of seeds (Chan et al.), as Moments.merge."""
        na, nb = self.count, other.count
        n = na + nb
        dq = other.mean_q - self.mean_q
        dx = other.mean_x - self.mean_x
        w = na * nb / n
        return ControlMoments(n, self.mean_q + dq * (nb / n), self.mean_x + dx * (nb / n),
                              self.m2_qx + other.m2_qx + w * np.einsum("ri,rj->rij", dq, dx),
                              self.m2_xx + other.m2_xx + w * np.einsum("ri,rj->rij", dx, dx))

    def beta(self) -> np.ndarray:
        """Least-squares coefficients (R, a, k) of q on x.  The controls are standardised first and directions
        of m2_xx below 1e-10 of its largest eigenvalue are dropped (controls that are identically zero at a
        layer, e.g. the S-noise controls at layer 0, or exactly collinear ones)."""
        scale = np.sqrt(np.einsum("rii->ri", self.m2_xx))
        inv = np.where(scale > 0, 1.0 / np.where(scale > 0, scale, 1.0), 0.0)
        corr = self.m2_xx * inv[:, :, None] * inv[:, None, :]
        beta_std = np.einsum("raj,rji->rai", self.m2_qx * inv[:, None, :],
                             np.linalg.pinv(corr, rcond=1e-10, hermitian=True))
        return beta_std * inv[:, None, :]

    def adjusted_means(self) -> np.ndarray:
        """mean q - beta mean x, (R, a): an estimate of E[q] with the part of its error that the controls
        predict removed (E[x] = 0 exactly; fitting beta on the same seeds biases it by O(k / count) of its
        standard error only)."""
        return self.mean_q - np.einsum("rai,ri->ra", self.beta(), self.mean_x)


_FIELDS = ("mean_G", "mean_S", "m2_GG", "m2_GS", "m2_SS")
_CONTROL_FIELDS = ("mean_q", "mean_x", "m2_qx", "m2_xx")


@dataclass
class BatchControlMoments:
    """ControlMoments per batch, stacked along a leading batch axis (counts are those of BatchMoments)."""

    mean_q: np.ndarray  # (B, R, a)
    mean_x: np.ndarray  # (B, R, k)
    m2_qx: np.ndarray  # (B, R, a, k)
    m2_xx: np.ndarray  # (B, R, k, k)

    @classmethod
    def stack(cls, batches: list[ControlMoments]) -> "BatchControlMoments":
        return cls(**{f: np.stack([getattr(m, f) for m in batches]) for f in _CONTROL_FIELDS})

    def batch(self, b: int, count: int) -> ControlMoments:
        return ControlMoments(count, *(getattr(self, f)[b] for f in _CONTROL_FIELDS))

    def concat(self, other: "BatchControlMoments") -> "BatchControlMoments":
        return BatchControlMoments(**{f: np.concatenate([getattr(self, f), getattr(other, f)])
                                      for f in _CONTROL_FIELDS})


@dataclass
class BatchMoments:
    """Per-batch moments stacked along a leading batch axis, in batch order."""

    counts: np.ndarray  # (B,)
    mean_G: np.ndarray  # (B, R, p)
    mean_S: np.ndarray
    m2_GG: np.ndarray  # (B, R, p, p)
    m2_GS: np.ndarray
    m2_SS: np.ndarray
    controls: BatchControlMoments | None = None

    @classmethod
    def stack(cls, batches: list[Moments]) -> "BatchMoments":
        with_controls = [m.controls is not None for m in batches]
        if any(with_controls) and not all(with_controls):
            raise ValueError("some batches carry control-variate sums and others not")
        return cls(
            counts=np.array([m.count for m in batches], dtype=np.int64),
            **{f: np.stack([getattr(m, f) for m in batches]) for f in _FIELDS},
            controls=BatchControlMoments.stack([m.controls for m in batches]) if all(with_controls) else None,
        )

    @classmethod
    def from_dataset(cls, ds) -> "BatchMoments":
        """Rebuild from the batch-resolved raw moments of a Monte Carlo netCDF file."""
        return cls(
            counts=ds["batch_count"].values.astype(np.int64),
            mean_G=ds["batch_mean_G"].values,
            mean_S=ds["batch_mean_S"].values,
            m2_GG=ds["batch_m2_GG"].values,
            m2_GS=ds["batch_m2_GS"].values,
            m2_SS=ds["batch_m2_SS"].values,
            controls=BatchControlMoments(**{f: ds[f"batch_cv_{f}"].values for f in _CONTROL_FIELDS})
            if "batch_cv_mean_q" in ds else None,
        )

    def __len__(self) -> int:
        return self.counts.size

    def batch(self, b: int) -> Moments:
        count = int(self.counts[b])
        controls = None if self.controls is None else self.controls.batch(b, count)
        return Moments(count, *(getattr(self, f)[b] for f in _FIELDS), controls=controls)

    def pooled(self) -> Moments:
        """Merge all batches in batch order (a fixed order, so the result is reproducible bitwise)."""
        total = self.batch(0)
        for b in range(1, len(self)):
            total = total.merge(self.batch(b))
        return total

    def leave_one_out(self) -> list[Moments]:
        """Pooled moments without batch b, for every b (jackknife replicates), from prefix and suffix merges."""
        B = len(self)
        prefix = [self.batch(0)]
        for b in range(1, B - 1):
            prefix.append(prefix[-1].merge(self.batch(b)))  # prefix[k] pools batches 0..k
        suffix = [self.batch(B - 1)]
        for b in range(B - 2, 0, -1):
            suffix.append(self.batch(b).merge(suffix[-1]))  # suffix[k] pools batches B-1-k..B-1
        out = []
        for b in range(B):
            if b == 0:
                out.append(suffix[B - 2])
            elif b == B - 1:
                out.append(prefix[B - 2])
            else:
                out.append(prefix[b - 1].merge(suffix[B - 2 - b]))
        return out

    def concat(self, other: "BatchMoments") -> "BatchMoments":
        """Batches of two runs with the same parameters and different seeds, for merging files."""
        if (self.controls is None) != (other.controls is None):
            raise ValueError("only runs that both have, or both lack, control-variate sums merge")
        return BatchMoments(
            counts=np.concatenate([self.counts, other.counts]),
            **{f: np.concatenate([getattr(self, f), getattr(other, f)]) for f in _FIELDS},
            controls=None if self.controls is None else self.controls.concat(other.controls),
        )


def jackknife(batches: BatchMoments, estimator) -> tuple[np.ndarray, np.ndarray]:
    """Delete-one-batch jackknife: estimator(Moments) -> array; returns (estimate on all seeds, standard error)."""
    full = np.asarray(estimator(batches.pooled()))
    reps = np.stack([np.asarray(estimator(m)) for m in batches.leave_one_out()])
    return full, jackknife_se(reps)


def jackknife_se(replicates: np.ndarray) -> np.ndarray:
    """The delete-one jackknife standard error from the B leave-one-out replicates (replicate axis first)."""
    B = replicates.shape[0]
    return np.sqrt((B - 1) / B * np.sum((replicates - replicates.mean(axis=0)) ** 2, axis=0))


# ----------------------------------------------------------------------------------------------
# Weighted 1/n fit and the validity window
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


# ----------------------------------------------------------------------------------------------
# Extrapolation to infinite width, bootstrap over batches, t* as an estimate with an interval
# ----------------------------------------------------------------------------------------------

EXTRAPOLATION_DEGREE = 1  # value(n) = value_inf + c/n: with W widths, W - 2 degrees of freedom
MIN_EXTRAPOLATION_WIDTHS = EXTRAPOLATION_DEGREE + 2  # at least one degree of freedom left


@dataclass
class Extrapolation:
    """value(n) = value + c_1/n + ... fitted over widths by weighted least squares, per entry.

    weights (W, ...): value = sum_i weights_i y_i, the linear map of the fit (fixed by the full-sample errors),
    so bootstrap replicates of the per-width estimates extrapolate by the same map."""

    value: np.ndarray
    se: np.ndarray
    chi2: np.ndarray
    dof: int
    weights: np.ndarray

    def apply(self, replicates: np.ndarray) -> np.ndarray:
        """Extrapolate replicates (W, K, ...) of the per-width estimates (replicate axis second)."""
        return np.einsum("w...,wk...->k...", self.weights, replicates)


# The fit order in 1/n, decided by the data (degree="auto"): the linear fit X_inf + c/n is kept unless four or
# more widths are given and it is rejected at the level FIT_ORDER_P_VALUE by its chi^2 test at the last recorded
# time (the deepest layer, where the 1/n^2 term is largest), summed over that time's entries with
# (widths - 2) x entries degrees of freedom; then the quadratic X_inf + c/n + d/n^2 is used at every time.
# The entries of one time are correlated, so the p-value is approximate; a quadratic taken when a linear would
# have done costs variance, never bias.
FIT_ORDER_P_VALUE = 0.01
QUADRATIC_MIN_WIDTHS = 4  # a quadratic fit with one degree of freedom left to test it


def choose_extrapolation_degree(widths, values, errors, p_value: float = FIT_ORDER_P_VALUE) -> int:
    """1 or 2 by the chi^2 test above.  values, errors: (W, R, ...) with the recorded times second."""
    widths = np.asarray(widths, dtype=np.float64)
    if widths.size < QUADRATIC_MIN_WIDTHS:
        return 1
    from scipy.stats import chi2 as chi2_law

    values = np.asarray(values, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    last = extrapolate_inverse_width(widths, values[:, -1], errors[:, -1], degree=1)
    finite = np.isfinite(last.chi2)
    if not np.any(finite):
        return 1
    total, dof = float(np.sum(last.chi2[finite])), int(np.sum(finite)) * last.dof
    return 2 if chi2_law.sf(total, dof) < p_value else 1


def extrapolate_inverse_width(widths, values, errors, degree: int | str = EXTRAPOLATION_DEGREE) -> Extrapolation:
    """Weighted least-squares fit of values(n) = c_0 + c_1/n + ... + c_degree/n^degree at every entry; c_0 is
    the n -> infinity value.  Refuses a fit without a degree of freedom left (degree <= widths - 2): a fit
    through every point has no test of its own model and an error bar that only reflects the extrapolation.
    degree="auto": 1 or 2 by choose_extrapolation_degree (values (W, R, ...), times second)."""
    if degree == "auto":
        degree = choose_extrapolation_degree(widths, values, errors)
    widths = np.asarray(widths, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    nw = widths.size
    if degree > nw - 2:
        raise ValueError(f"a degree-{degree} fit in 1/n needs at least {degree + 2} widths (one degree of freedom "
                         f"left), got {nw}")
    if np.unique(widths).size != nw:
        raise ValueError("the 1/n extrapolation needs distinct widths")
    X = (1.0 / widths)[:, None] ** np.arange(degree + 1)[None, :]  # (W, k)
    shape = values.shape[1:]
    y = values.reshape(nw, -1)
    s = errors.reshape(nw, -1)
    noise_free = np.all(s == 0, axis=0)  # noise-free values (synthetic files): an unweighted fit, zero error
    good = np.all(np.isfinite(y), axis=0) & (np.all(s > 0, axis=0) | noise_free) & np.all(np.isfinite(s), axis=0)
    w = np.where(good[None] & ~noise_free[None], 1.0 / np.where(good[None] & ~noise_free[None], s, 1.0) ** 2, 1.0)
    A = np.einsum("wi,we,wj->eij", X, w, X)  # (E, k, k)
    A[~good] = np.eye(degree + 1)
    cov = np.linalg.inv(A)
    lin = np.einsum("eij,wj,we->eiw", cov, X, w)  # coefficients = lin @ y
    coef = np.einsum("eiw,we->ie", lin, y)
    chi2 = np.sum(w * (y - X @ coef) ** 2, axis=0)
    value = np.where(good, coef[0], np.nan)
    se = np.where(good, np.where(noise_free, 0.0, np.sqrt(cov[:, 0, 0])), np.nan)
    chi2 = np.where(good & ~noise_free, chi2, np.nan)
    weights = np.where(good[None], lin[:, 0, :].T, np.nan)  # (W, E)
    return Extrapolation(value.reshape(shape), se.reshape(shape), chi2.reshape(shape), nw - degree - 1,
                         weights.reshape((nw,) + shape))


def bootstrap_weights(batches: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicities (replicates, batches) of a bootstrap over batches: each row draws `batches` batches with
    replacement."""
    return rng.multinomial(batches, np.full(batches, 1.0 / batches), size=replicates).astype(np.float64)


def bootstrap_pooled(batches: BatchMoments, weights: np.ndarray) -> Moments:
    """Pooled moments of bootstrap resamplings of the seed batches (multiplicities `weights`, (K, B)), as one
    Moments whose arrays carry a leading replicate axis.  Pooling with multiplicities w_b is exact:
    count = sum w_b c_b, mean = sum w_b c_b mu_b / count, m2 = sum w_b [m2_b + c_b (mu_b - mean)(mu_b - mean)^T]."""
    w = np.asarray(weights, dtype=np.float64)
    c = batches.counts.astype(np.float64)
    wc = w * c[None]
    count = wc.sum(axis=1)  # (K,)

    def mean(mu):
        return np.einsum("kb,b...->k...", wc, mu) / count.reshape((-1,) + (1,) * (mu.ndim - 1))

    mean_G, mean_S = mean(batches.mean_G), mean(batches.mean_S)
    dG = batches.mean_G[None] - mean_G[:, None]  # (K, B, R, p)
    dS = batches.mean_S[None] - mean_S[:, None]

    def m2(m2_b, dx, dy):
        return np.einsum("kb,b...->k...", w, m2_b) + np.einsum("kb,kbri,kbrj->krij", wc, dx, dy)

    return Moments(count, mean_G, mean_S, m2(batches.m2_GG, dG, dG), m2(batches.m2_GS, dG, dS),
                   m2(batches.m2_SS, dS, dS))


@dataclass
class ControlVariate:
    """Batch means q_b (B, R, ...) of a quantity whose pooled mean is the estimate, adjusted by a control x_b
    (B, k) of exactly known mean zero: q - beta x, with beta = Cov(q, x) Cov(x, x)^-1 fitted over the batches
    (weights: the batch counts).  The adjustment removes the part of q's statistical error that is correlated
    with x; E[q - beta x] = E[q] up to O(1/batches) from fitting beta (the jackknife corrects that order)."""

    counts: np.ndarray  # (B,)
    q: np.ndarray  # (B, R, ...)
    x: np.ndarray  # (B, k)

    def _beta(self, w: np.ndarray) -> np.ndarray:
        wc = w * self.counts
        total = wc.sum()
        qm = np.einsum("b,b...->...", wc, self.q) / total
        xm = wc @ self.x / total
        dq, dx = self.q - qm[None], self.x - xm[None]
        cxx = np.einsum("b,bi,bj->ij", wc, dx, dx)
        cqx = np.einsum("b,b...,bj->...j", wc, dq, dx)
        return np.einsum("...j,ji->...i", cqx, np.linalg.pinv(cxx))

    def _estimate(self, wc: np.ndarray, beta: np.ndarray) -> np.ndarray:
        """Estimates for multiplicity-weighted counts wc (K, B) and a fixed beta."""
        total = wc.sum(axis=1)
        qm = np.einsum("kb,b...->k...", wc, self.q) / total.reshape((-1,) + (1,) * (self.q.ndim - 1))
        xm = wc @ self.x / total[:, None]
        return qm - np.einsum("...i,ki->k...", beta, xm)

    def estimate(self) -> tuple[np.ndarray, np.ndarray]:
        """(adjusted estimate, its delete-one-batch jackknife standard error); beta is refitted in every
        jackknife replicate, so the error includes its fit."""
        B = self.counts.size
        ones = np.ones(B)
        full = self._estimate((ones * self.counts)[None], self._beta(ones))[0]
        reps = []
        for b in range(B):
            w = ones.copy()
            w[b] = 0.0
            reps.append(self._estimate((w * self.counts)[None], self._beta(w))[0])
        return full, jackknife_se(np.stack(reps))

    def bootstrap(self, weights: np.ndarray) -> np.ndarray:
        """Replicates (K, R, ...) for bootstrap multiplicities (K, B), with beta fixed at its full-sample fit."""
        return self._estimate(np.asarray(weights) * self.counts[None], self._beta(np.ones(self.counts.size)))


def first_crossing(times, deviation, scale, threshold: float, se=None, nsigma: float = 4.0) -> float:
    """t* as an estimate: the first time at which |deviation| > threshold * scale in any entry, counting only
    deviations that are significant (|deviation| > nsigma * se, when se is given: early depths where a quantity
    starts from zero are otherwise noise); inf if never.  NaN where it never happens but the Monte Carlo could
    not have seen it: at the last time no entry resolves the threshold (nsigma * se > threshold * scale).

    deviation: (R, ...) with time first, or (K, R, ...) for K replicates (returns (K,)); scale, se: (R, ...)."""
    scale = np.abs(np.asarray(scale, dtype=np.float64))
    dev = np.abs(np.asarray(deviation, dtype=np.float64))
    bound = threshold * scale
    with np.errstate(invalid="ignore"):
        hit = (dev > bound) & (bound > 0)
        if se is not None:
            se = np.asarray(se, dtype=np.float64)
            hit &= dev > nsigma * se
            resolved_at_end = bool(np.any((nsigma * se[-1] <= bound[-1]) & (bound[-1] > 0)))
        else:
            resolved_at_end = True
    lead = hit.ndim - scale.ndim  # 0: one estimate, 1: replicates
    hit = hit.reshape(hit.shape[:lead + 1] + (-1,)).any(axis=-1)  # (..., R)
    times = np.asarray(times, dtype=np.float64)
    never = math.inf if resolved_at_end else math.nan
    first = np.where(hit.any(axis=-1), times[np.argmax(hit, axis=-1)], never)
    return float(first) if lead == 0 else first


def percentile_interval(estimate: float, replicates, level: float = 0.68) -> tuple[float, float]:
    """The central `level` interval of bootstrap replicates of t* (sample quantiles: inf, never, is a value),
    widened where needed to contain the estimate."""
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[~np.isnan(reps)]
    if reps.size == 0 or math.isnan(estimate):  # NaN: not resolved
        return math.nan, math.nan
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return float(min(lo, estimate)), float(max(hi, estimate))
