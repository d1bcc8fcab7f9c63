"""How to split a CPU budget over the widths of one grid point so that the extrapolated n -> infinity value
has the smallest standard error.

With N_w samples at width n_w, a per-sample variance sigma_w^2 of the estimate (K1 = n (mean G - K0): sigma^2 =
n V4, growing with n; V4 = n Cov(G): sigma^2 ~ 2 V4^2 roughly independent of n) and a cost c_w per sample
(block sampler: c = L (a n + b), kernel_eft.core.allocation.sample_cost), the extrapolation is the linear
combination value = sum_w a_w y_w of the weighted 1/n fit, so

    Var(value) = sum_w a_w^2 sigma_w^2 / N_w,      CPU = sum_w c_w N_w.

For fixed weights a the Lagrange optimum is N_w proportional to |a_w| sigma_w / sqrt(c_w), giving
Var x CPU = (sum_w |a_w| sigma_w sqrt(c_w))^2.  The weights of the weighted fit depend on the N_w in turn, so
`allocate_samples` iterates the two to a fixed point.  The unconstrained optimum puts (almost) nothing on the
widths the fit needs only to test its model; `min_fraction` keeps a share of the budget on every width so that
the 1/n fit keeps its chi^2 test.  Pure functions: the study planner turns a budget into samples with them.
"""

from __future__ import annotations

import numpy as np

def block_seconds(activation, width, P: int = 2):
    """CPU seconds per (sample, layer) of the block sampler on one core: a n P/2 + b (P/2)^2 with the activation's
    measured (a, b) (Activation.block_cost, config/README.md "Size and cost"; the dearest measured one where an
    activation has none).  The one cost model of the Monte Carlo: the allocation, the planner
    (kernel_eft.study.jobs) and the start-line estimate (kernel_eft.resources) all use it."""
    from kernel_eft.core.activations import activation_names, get_activation

    cost = get_activation(activation).block_cost
    if cost is None:
        measured = [c for c in (get_activation(name).block_cost for name in activation_names()) if c is not None]
        cost = max(measured)  # the dearest measured (largest a; tanh's)
    a, b = cost
    return a * width * P / 2 + b * (P / 2) ** 2


MC_STARTUP_SECONDS = 1.2  # a Monte Carlo process's start-up: interpreter, imports, provenance
WEIGHTS_COST = 14e-9  # weights sampler: further seconds per n^2 per (sample, layer) at P = 2 (relu, n = 256, one core)
CONTROL_COST_FACTOR = 1.4  # CPU of a controlled run over a plain one, measured 1.1-1.6 (docs/control_variates.md)


def sample_seconds(activation, width, depth: int, P: int = 2, sampler: str = "block",
                   control_variates: str = "none"):
    """CPU seconds of one network through `depth` layers on one core: the block sampler's cost (block_seconds),
    the weights sampler's n^2 term, and the control variates' measured factor."""
    per_layer = block_seconds(activation, width, P)
    if sampler == "weights":
        per_layer = per_layer + WEIGHTS_COST * np.asarray(width, dtype=np.float64) ** 2 * P / 2
    factor = CONTROL_COST_FACTOR if control_variates != "none" else 1.0
    return factor * depth * per_layer


def run_seconds(activation, width, depth: int, samples: int, P: int = 2, sampler: str = "block",
                control_variates: str = "none") -> float:
    """CPU seconds of one Monte Carlo run (one process, one core): start-up plus samples x sample_seconds."""
    return MC_STARTUP_SECONDS + samples * float(sample_seconds(activation, width, depth, P, sampler, control_variates))


def sample_cost(widths, depth: int, activation, P: int = 2, control_variates: str = "none") -> np.ndarray:
    """CPU seconds per sample at each width (block sampler), the allocation's cost."""
    return sample_seconds(activation, np.asarray(widths, dtype=np.float64), depth, P,
                          control_variates=control_variates)


def extrapolation_weights(widths, variances, degree: int = 1) -> np.ndarray:
    """a_w of the weighted least-squares fit y(n) = c_0 + c_1/n + ... + c_degree/n^degree: c_0 = sum a_w y_w,
    for estimate variances `variances` (W,)."""
    x = 1.0 / np.asarray(widths, dtype=np.float64)
    X = x[:, None] ** np.arange(degree + 1)[None, :]
    w = 1.0 / np.asarray(variances, dtype=np.float64)
    return np.linalg.solve(X.T @ (w[:, None] * X), X.T * w[None, :])[0]


def extrapolated_variance(widths, samples, sample_variance, degree: int = 1) -> float:
    """Var of the extrapolated value for `samples` (W,) at the widths, per-sample variances sample_variance (W,)."""
    var = np.asarray(sample_variance, dtype=np.float64) / np.asarray(samples, dtype=np.float64)
    a = extrapolation_weights(widths, var, degree)
    return float(np.sum(a ** 2 * var))


def allocate_samples(widths, budget_seconds: float, sample_variance, cost_per_sample, degree: int = 1,
                     min_fraction: float = 0.1, min_samples: int = 64, iterations: int = 2000) -> np.ndarray:
    """Samples per width (W,) that spend `budget_seconds` of CPU so that the extrapolated value of a degree-
    `degree` 1/n fit has the smallest variance.

    sample_variance (W,): per-sample variance of the estimate at each width (se_w^2 N_w of a pilot run, or the
    theory's scaling, n V4 for K1); cost_per_sample (W,): CPU seconds (sample_cost).  Every
    width gets at least min_fraction / W of the budget and min_samples samples (its chi^2 test and its
    jackknife need them)."""
    widths = np.asarray(widths, dtype=np.float64)
    sigma2 = np.asarray(sample_variance, dtype=np.float64)
    cost = np.asarray(cost_per_sample, dtype=np.float64)
    W = widths.size
    if not (sigma2.shape == cost.shape == (W,)):
        raise ValueError("widths, sample_variance and cost_per_sample must have one entry per width")
    if W < degree + 1:
        raise ValueError(f"a degree-{degree} fit needs at least {degree + 1} widths, got {W}")
    if budget_seconds <= 0 or np.any(cost <= 0) or np.any(sigma2 <= 0):
        raise ValueError("budget, costs and variances must be positive")
    if not 0 <= min_fraction < 1:
        raise ValueError("min_fraction must be in [0, 1)")
    floor = min_fraction * budget_seconds / W  # seconds every width gets at least
    spend = np.full(W, budget_seconds / W)  # seconds per width, start: equal CPU
    for _ in range(iterations):
        a = extrapolation_weights(widths, sigma2 * cost / spend, degree)  # variance_w = sigma2 c / seconds
        share = np.abs(a) * np.sqrt(sigma2 * cost)  # optimal seconds per width, up to normalisation
        free = budget_seconds - floor * W
        new = floor + free * share / share.sum()
        if np.allclose(new, spend, rtol=1e-10, atol=0):
            break
        spend = new
    samples = np.maximum(np.floor(spend / cost), min_samples).astype(np.int64)
    return samples


__all__ = ["CONTROL_COST_FACTOR", "MC_STARTUP_SECONDS", "WEIGHTS_COST", "allocate_samples", "block_seconds",
           "run_seconds", "sample_seconds", "extrapolated_variance", "extrapolation_weights",
           "sample_cost"]
