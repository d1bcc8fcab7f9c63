"""Monte Carlo of finite-width pre-activation ResNets at initialisation.

Two samplers, both batched over seeds:

- ``block`` (default) uses the exact conditional law of a residual block: given h^l the increments
  u_i = W^l_i . phi(h^l) + b^l_i are i.i.d. over neurons with law N(0, Om^l), Om = sw2 S + sb2 11^T.
  A block costs O(n P^2): u = R Z with R R^T = Om and Z standard normal.
- ``weights`` draws the n x n weight matrix and the bias explicitly, O(n^2 P): the reference.

Seeds are grouped into batches.  Batch b draws from the RNG stream SeedSequence(seed, spawn_key=(b,)),
processes its seeds in chunks of a size fixed by (n, P, batch size), and reduces them to centred moments
that merge exactly (Chan et al.).  Nothing depends on which MPI rank runs a batch, so any rank count
gives bitwise identical results.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kernel_eft.activations import F_matrix, get_activation
from kernel_eft.pairs import from_pairs, n_pairs, pair_indices
from kernel_eft.validation import InputError, check_float, check_int, check_kin

SAMPLERS = ("block", "weights")

# Working-set target per chunk: a few arrays of this many float64 stay in cache-friendly sizes
# while keeping per-layer Python overhead small compared with the arithmetic.
_CHUNK_ELEMENTS = 1 << 18  # (seeds x P x n) elements in the block sampler
_CHUNK_ELEMENTS_WEIGHTS = 1 << 22  # (seeds x n x n) elements in the weights sampler


class SimulationOverflow(ArithmeticError):
    """The network state left the float64 range: reported instead of writing inf or NaN."""

    def __init__(self, batch: int, layer: int, time: float, what: str):
        super().__init__(
            f"non-finite {what} in seed batch {batch} at layer {layer} (t = {time:.6g}); "
            "the kernel overflowed float64: reduce sw2*T or the input norm"
        )
        self.batch = batch
        self.layer = layer
        self.time = time
        self.what = what


@dataclass(frozen=True)
class SimulationParams:
    activation: str
    width: int
    depth: int
    time: float
    sw2: float
    sb2: float
    kin: np.ndarray = field(repr=False)
    samples: int
    seed: int = 0
    sampler: str = "block"
    record_every: int = 1
    batches: int = 32

    def __post_init__(self):
        # Validation lives here so that the Python API, the CLI and the workflow share it.
        try:
            get_activation(self.activation)
        except KeyError as exc:
            raise InputError("activation", str(exc.args[0])) from None
        object.__setattr__(self, "width", check_int(self.width, "width", 1))
        object.__setattr__(self, "depth", check_int(self.depth, "depth", 1))
        object.__setattr__(self, "time", check_float(self.time, "time", positive=True))
        object.__setattr__(self, "sw2", check_float(self.sw2, "sw2", nonnegative=True))
        object.__setattr__(self, "sb2", check_float(self.sb2, "sb2", nonnegative=True))
        object.__setattr__(self, "kin", check_kin(self.kin, "kin"))
        object.__setattr__(self, "samples", check_int(self.samples, "samples", 2))
        object.__setattr__(self, "seed", check_int(self.seed, "seed", 0))
        object.__setattr__(self, "record_every", check_int(self.record_every, "record_every", 1))
        object.__setattr__(self, "batches", check_int(self.batches, "batches", 2))
        if self.sampler not in SAMPLERS:
            raise InputError("sampler", f"unknown sampler {self.sampler!r}; choose block or weights")
        if self.record_every > self.depth:
            raise InputError("record_every", f"must be <= the depth {self.depth} (layers 0 and L are always "
                                             f"recorded), got {self.record_every}")
        if self.batches > self.samples:
            raise InputError("batches", f"{self.batches} batches need at least as many samples, got {self.samples}")

    @property
    def P(self) -> int:
        return self.kin.shape[0]

    @property
    def dt(self) -> float:
        return self.time / self.depth

    @property
    def layers(self) -> np.ndarray:
        return recorded_layers(self.depth, self.record_every)

    @property
    def times(self) -> np.ndarray:
        return self.layers * self.dt

    def batch_sizes(self) -> np.ndarray:
        return batch_sizes(self.samples, self.batches)

    def chunk_size(self, batch_size: int) -> int:
        if self.sampler == "block":
            per_seed = self.P * self.width
            budget = _CHUNK_ELEMENTS
        else:
            per_seed = self.width * self.width
            budget = _CHUNK_ELEMENTS_WEIGHTS
        return int(max(1, min(batch_size, budget // max(per_seed, 1))))


def recorded_layers(depth: int, record_every: int) -> np.ndarray:
    """Layers 0, k, 2k, ... and always the last layer L."""
    layers = np.arange(0, depth + 1, record_every)
    if layers[-1] != depth:
        layers = np.append(layers, depth)
    return layers


def batch_sizes(samples: int, batches: int) -> np.ndarray:
    """Split samples as evenly as possible; the first (samples % batches) batches get one more."""
    base, extra = divmod(samples, batches)
    return np.array([base + (1 if b < extra else 0) for b in range(batches)], dtype=np.int64)


def batch_rng(seed: int, batch_index: int) -> np.random.Generator:
    """The RNG stream of one seed batch, keyed by (run seed, batch index) and nothing else."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy=seed, spawn_key=(batch_index,))))


# ----------------------------------------------------------------------------------------------
# Moments
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
        )

    def covariances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unbiased sample covariances Cov(G,G), Cov(G,S), Cov(S,S), each (R, p, p)."""
        d = self.count - 1
        return self.m2_GG / d, self.m2_GS / d, self.m2_SS / d


_FIELDS = ("mean_G", "mean_S", "m2_GG", "m2_GS", "m2_SS")


@dataclass
class BatchMoments:
    """Per-batch moments stacked along a leading batch axis, in batch order."""

    counts: np.ndarray  # (B,)
    mean_G: np.ndarray  # (B, R, p)
    mean_S: np.ndarray
    m2_GG: np.ndarray  # (B, R, p, p)
    m2_GS: np.ndarray
    m2_SS: np.ndarray

    @classmethod
    def stack(cls, batches: list[Moments]) -> "BatchMoments":
        return cls(
            counts=np.array([m.count for m in batches], dtype=np.int64),
            **{f: np.stack([getattr(m, f) for m in batches]) for f in _FIELDS},
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
        )

    def __len__(self) -> int:
        return self.counts.size

    def batch(self, b: int) -> Moments:
        return Moments(int(self.counts[b]), *(getattr(self, f)[b] for f in _FIELDS))

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
        return BatchMoments(
            counts=np.concatenate([self.counts, other.counts]),
            **{f: np.concatenate([getattr(self, f), getattr(other, f)]) for f in _FIELDS},
        )


def jackknife(batches: BatchMoments, estimator) -> tuple[np.ndarray, np.ndarray]:
    """Delete-one-batch jackknife: estimator(Moments) -> array; returns (estimate on all seeds, standard error)."""
    full = np.asarray(estimator(batches.pooled()))
    reps = np.stack([np.asarray(estimator(m)) for m in batches.leave_one_out()])
    B = reps.shape[0]
    se = np.sqrt((B - 1) / B * np.sum((reps - reps.mean(axis=0)) ** 2, axis=0))
    return full, se


# ----------------------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------------------


def psd_factor(M: np.ndarray) -> np.ndarray:
    """R with R R^T = M for a stack (..., P, P) of PSD matrices; Cholesky, eigen fallback if singular."""
    try:
        return np.linalg.cholesky(M)
    except np.linalg.LinAlgError:
        w, U = np.linalg.eigh(M)
        return U * np.sqrt(np.clip(w, 0.0, None))[..., None, :]


def _kernel(x: np.ndarray, n: int) -> np.ndarray:
    """(c, P, n) -> (c, P, P): x x^T / n."""
    return np.matmul(x, x.transpose(0, 2, 1)) / n


def _run_chunk(params: SimulationParams, rng: np.random.Generator, seeds: int, record_index: np.ndarray,
               batch_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Propagate `seeds` networks through all layers; return G, S at the recorded layers, (seeds, R, P, P)."""
    n, P, L = params.width, params.P, params.depth
    phi = get_activation(params.activation).phi
    eps = np.sqrt(params.dt)
    G_rec = np.empty((seeds, record_index.size, P, P))
    S_rec = np.empty_like(G_rec)

    z = np.empty((seeds, P, n))
    rng.standard_normal(out=z)
    h = np.matmul(psd_factor(params.kin), z)  # rows of h^0 ~ N(0, K_in); layout (seed, input, neuron)
    increment = np.empty_like(h)
    r = 0
    for layer in range(L + 1):
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected and reported below
            act = phi(h)
            S = _kernel(act, n)
            if layer == record_index[r]:
                G = _kernel(h, n)
                if not (np.all(np.isfinite(G)) and np.all(np.isfinite(S))):
                    raise SimulationOverflow(batch_index, layer, layer * params.dt, "kernel G or S")
                G_rec[:, r] = G
                S_rec[:, r] = S
                r += 1
            if layer == L:
                break
            if params.sampler == "block":
                omega = params.sw2 * S + params.sb2
                if not np.all(np.isfinite(omega)):
                    raise SimulationOverflow(batch_index, layer, layer * params.dt, "increment kernel Om")
                rng.standard_normal(out=z)
                np.matmul(psd_factor(omega), z, out=increment)
            else:
                weights = rng.standard_normal((seeds, n, n))
                weights *= np.sqrt(params.sw2 / n)
                bias = rng.standard_normal((seeds, 1, n)) * np.sqrt(params.sb2)
                np.matmul(act, weights.transpose(0, 2, 1), out=increment)  # u_i = sum_j W_ij phi(h_j) + b_i
                increment += bias
            increment *= eps
            h += increment
    return G_rec, S_rec


def simulate_batch(params: SimulationParams, batch_index: int, keep_samples: bool = False):
    """Moments of one seed batch; with keep_samples also its per-seed G and S, (seeds, R, P, P)."""
    size = int(params.batch_sizes()[batch_index])
    chunk = params.chunk_size(size)
    rng = batch_rng(params.seed, batch_index)
    record_index = params.layers
    a, b = pair_indices(params.P)
    total = None
    kept_G, kept_S = [], []
    done = 0
    while done < size:
        c = min(chunk, size - done)
        G, S = _run_chunk(params, rng, c, record_index, batch_index)
        m = Moments.from_samples(G[..., a, b], S[..., a, b])
        total = m if total is None else total.merge(m)
        if keep_samples:
            kept_G.append(G)
            kept_S.append(S)
        done += c
    if not (np.all(np.isfinite(total.m2_GG)) and np.all(np.isfinite(total.m2_SS))):
        bad = int(np.argmax(~np.isfinite(total.m2_GG).all(axis=(1, 2)) | ~np.isfinite(total.m2_SS).all(axis=(1, 2))))
        layer = int(record_index[bad])
        raise SimulationOverflow(batch_index, layer, layer * params.dt, "second moment of G or S")
    samples = (np.concatenate(kept_G), np.concatenate(kept_S)) if keep_samples else None
    return total, samples


# ----------------------------------------------------------------------------------------------
# Estimators
# ----------------------------------------------------------------------------------------------


def mean_kernel_reference(params: SimulationParams) -> np.ndarray:
    """Infinite-width discrete-layer K0 at the recorded layers, (R, P, P)."""
    from kernel_eft.theory.gonly import mean_kernel_discrete

    k0 = mean_kernel_discrete(params.activation, params.kin, params.sw2, params.sb2, params.time, params.depth)
    return k0[params.layers]


def summarize(params: SimulationParams, batches: BatchMoments) -> dict[str, np.ndarray]:
    """Every estimate with its jackknife standard error.  Matrices (R, P, P), covariances (R, p, p) in pairs.

    V4 = n Cov(G), cov_GS = n Cov(G, S), cov_SS = n Cov(S, S), K1 = n (mean G - K0_discrete),
    K1_source = n sw2 (mean S - F(mean G)) (the exact source of K1: as n -> infinity, dK1/dt = J K1 + K1_source).
    """
    n, P = params.width, params.P
    k0 = mean_kernel_reference(params)

    def estimates(m: Moments) -> np.ndarray:
        cov_GG, cov_GS, cov_SS = m.covariances()
        G = from_pairs(m.mean_G, P)
        S = from_pairs(m.mean_S, P)
        k1 = n * (G - k0)
        source = n * params.sw2 * (S - F_matrix(params.activation, G))
        # Pack into one flat vector per layer so one jackknife pass serves every estimator.
        parts = [G, S, k1, source, n * cov_GG, n * cov_GS, n * cov_SS]
        return np.concatenate([x.reshape(x.shape[0], -1) for x in parts], axis=1)

    value, se = jackknife(batches, estimates)
    R, p = batches.mean_G.shape[1], n_pairs(P)
    names = ["G_mean", "S_mean", "K1", "K1_source", "V4", "cov_GS", "cov_SS"]
    shapes = [(P, P)] * 4 + [(p, p)] * 3
    out: dict[str, np.ndarray] = {"K0_discrete": k0}
    start = 0
    for name, shape in zip(names, shapes):
        size = int(np.prod(shape))
        out[name] = value[:, start:start + size].reshape((R,) + shape)
        out[name + "_se"] = se[:, start:start + size].reshape((R,) + shape)
        start += size
    return out


def simulate(params: SimulationParams, keep_samples: bool = False, progress=None):
    """Serial convenience driver: all batches in order.  Returns (BatchMoments, samples or None)."""
    results = []
    kept = []
    for b in range(params.batches):
        m, s = simulate_batch(params, b, keep_samples)
        results.append(m)
        kept.append(s)
        if progress is not None:
            progress(b + 1, params.batches)
    samples = None
    if keep_samples:
        samples = tuple(np.concatenate([s[i] for s in kept]) for i in range(2))
    return BatchMoments.stack(results), samples
