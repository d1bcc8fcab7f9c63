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

import numpy as np

from kernel_eft.core.activations import get_activation
from kernel_eft.core.pairs import pair_indices, to_pairs
from kernel_eft.core.statistics import BatchMoments, ControlMoments, Moments
from kernel_eft.simulate.controls import ControlState, control_setup, n_controlled, n_controls
from kernel_eft.simulate.params import SimulationOverflow, SimulationParams

def batch_rng(seed: int, batch_index: int) -> np.random.Generator:
    """The RNG stream of one seed batch, keyed by (run seed, batch index) and nothing else."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy=seed, spawn_key=(batch_index,))))


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
               batch_index: int, controls=None, pulse=None):
    """Propagate `seeds` networks through all layers; return G, S at the recorded layers, (seeds, R, P, P), and
    with controls (a simulate.controls.ControlSetup) also q, x at the recorded layers, (seeds, R, a), (seeds, R,
    k).  The controls draw no random numbers: the RNG stream, hence G and S, are those of a run without them.
    pulse(layer), if given, is called at every layer (a progress heartbeat inside one long batch)."""
    n, P, L = params.width, params.P, params.depth
    activation = get_activation(params.activation)
    phi = activation.phi
    eps = np.sqrt(params.dt)
    G_rec = np.empty((seeds, record_index.size, P, P))
    S_rec = np.empty_like(G_rec)

    z = np.empty((seeds, P, n))
    rng.standard_normal(out=z)
    h = np.matmul(psd_factor(params.kin), z)  # rows of h^0 ~ N(0, K_in); layout (seed, input, neuron)
    increment = np.empty_like(h)
    state = None
    if controls is not None:
        q_rec = np.empty((seeds, record_index.size, n_controlled(P)))
        x_rec = np.empty((seeds, record_index.size, n_controls(P)))
    r = 0
    for layer in range(L + 1):
        if pulse is not None:
            pulse(layer)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected and reported below
            act = phi(h)
            S = _kernel(act, n)
            if controls is not None:
                G = _kernel(h, n)
                if state is None:
                    state = ControlState(controls, to_pairs(G), n, params.dt, params.sw2, P)
                else:
                    state.end_step(layer - 1, G)
            if layer == record_index[r]:
                if controls is None:
                    G = _kernel(h, n)
                if controls is not None:
                    q_rec[:, r], x_rec[:, r] = state.record(layer, G, S)
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
            if controls is not None:
                omega = params.sw2 * S + params.sb2
                state.begin_step(G, omega, h, act, increment, activation.dphi)
            increment *= eps
            h += increment
    if controls is not None:
        return G_rec, S_rec, q_rec, x_rec
    return G_rec, S_rec


def simulate_batch(params: SimulationParams, batch_index: int, keep_samples: bool = False, pulse=None):
    """Moments of one seed batch; with keep_samples also its per-seed G and S, (seeds, R, P, P).
    pulse(seeds_done, batch_size, layer), if given, is called at every layer of every chunk."""
    size = int(params.batch_sizes()[batch_index])
    chunk = params.chunk_size(size)
    rng = batch_rng(params.seed, batch_index)
    record_index = params.layers
    a, b = pair_indices(params.P)
    controls = control_setup(params) if params.control_variates != "none" else None
    total = None
    kept_G, kept_S = [], []
    done = 0
    while done < size:
        c = min(chunk, size - done)
        layer_pulse = None if pulse is None else (lambda layer, done=done: pulse(done, size, layer))
        out = _run_chunk(params, rng, c, record_index, batch_index, controls, layer_pulse)
        G, S = out[:2]
        m = Moments.from_samples(G[..., a, b], S[..., a, b])
        if controls is not None:
            m.controls = ControlMoments.from_samples(*out[2:])
        total = m if total is None else total.merge(m)
        if keep_samples:
            kept_G.append(G)
            kept_S.append(S)
        done += c
    if not (np.all(np.isfinite(total.m2_GG)) and np.all(np.isfinite(total.m2_SS))):
        bad = int(np.argmax(~np.isfinite(total.m2_GG).all(axis=(1, 2)) | ~np.isfinite(total.m2_SS).all(axis=(1, 2))))
        layer = int(record_index[bad])
        raise SimulationOverflow(batch_index, layer, layer * params.dt, "second moment of G or S")
    if controls is not None and not np.all(np.isfinite(total.controls.m2_xx)):
        layer = int(record_index[int(np.argmax(~np.isfinite(total.controls.m2_xx).all(axis=(1, 2))))])
        raise SimulationOverflow(batch_index, layer, layer * params.dt, "control-variate sums")
    samples = (np.concatenate(kept_G), np.concatenate(kept_S)) if keep_samples else None
    return total, samples


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
