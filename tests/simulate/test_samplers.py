"""Monte Carlo engine: samplers against exact identities and against each other."""

import numpy as np
import pytest

from kernel_eft.core.expectations import F_matrix
from kernel_eft.core.statistics import Moments
from kernel_eft.simulate.estimates import summarize
from kernel_eft.simulate.params import SimulationParams, batch_sizes, recorded_layers
from kernel_eft.simulate.samplers import simulate
from kernel_eft.core.pairs import pair_indices, pairs_to_four_index, wishart_v4
from kernel_eft.validation import InputError

KIN = np.array([[1.0, 0.6], [0.6, 1.3]])
NSIGMA = 5.0  # jackknife errors from 32 batches are themselves ~13% uncertain


def run(activation="relu", **kw):
    base = dict(activation=activation, width=32, depth=16, time=2.0, sw2=1.0, sb2=0.2, kin=KIN, samples=4000,
                seed=11, sampler="block", record_every=4, batches=32)
    base.update(kw)
    params = SimulationParams(**base)
    batches, _ = simulate(params)
    return params, batches, summarize(params, batches)


def assert_within(x, y, se, nsigma=NSIGMA):
    z = np.abs(x - y) / se
    assert np.all(z < nsigma), f"max deviation {z.max():.2f} sigma at {np.unravel_index(np.argmax(z), z.shape)}"


def test_recorded_layers_and_batches():
    assert recorded_layers(10, 4).tolist() == [0, 4, 8, 10]
    assert recorded_layers(8, 1).tolist() == list(range(9))
    sizes = batch_sizes(103, 10)
    assert sizes.sum() == 103 and sizes.max() - sizes.min() == 1


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_block_and_weights_samplers_agree_in_law(activation):
    """The block law is exact: mean G and V4 agree with explicit weights at every recorded depth."""
    _, _, block = run(activation, sampler="block", seed=1)
    _, _, weights = run(activation, sampler="weights", seed=2)
    for key in ("G_mean", "V4"):
        se = np.hypot(block[key + "_se"], weights[key + "_se"])
        assert_within(block[key][1:], weights[key][1:], se[1:])
    # The comparison has power: depth moves G by many standard errors.
    assert np.all(np.abs(block["G_mean"][-1] - block["G_mean"][0]) > 20 * block["G_mean_se"][-1])


@pytest.mark.parametrize("activation", ["relu", "tanh", "erf"])
def test_initial_layer_is_wishart_and_sigma_kernel_is_gaussian_expectation(activation):
    params, _, s = run(activation, depth=4, record_every=4)
    P = params.P
    v4_wishart = wishart_v4(KIN)
    a, b = pair_indices(P)
    v4_mc = pairs_to_four_index(s["V4"][0], P)
    v4_se = pairs_to_four_index(s["V4_se"][0], P)
    assert_within(v4_mc, v4_wishart, v4_se)
    assert_within(s["S_mean"][0], F_matrix(activation, KIN), s["S_mean_se"][0])
    assert_within(s["G_mean"][0], KIN, s["G_mean_se"][0])


def test_first_layer_mean_is_exact_recursion():
    """E[G^1] = K_in + dt (sw2 F(K_in) + sb2) exactly (h^0 is Gaussian), so K1 vanishes at layer 1."""
    params, _, s = run("relu", depth=8, record_every=1, samples=6000)
    assert_within(s["K1"][1], np.zeros((2, 2)), s["K1_se"][1])
    assert_within(s["K1_source"][0], np.zeros((2, 2)), s["K1_source_se"][0])


def test_linear_activation_sigma_kernel_equals_kernel_and_k1_vanishes():
    params = SimulationParams("linear", 24, 12, 2.0, 1.0, 0.3, KIN, 3000, 5, "block", 3, 16)
    batches, (G, S) = simulate(params, keep_samples=True)
    np.testing.assert_array_equal(G, S)  # S = G sample by sample
    s = summarize(params, batches)
    # Linear phi: the mean recursion closes exactly, so E[G] = K0_discrete at any width.
    assert_within(s["K1"], np.zeros_like(s["K1"]), s["K1_se"])


def test_batches_merge_exactly():
    params = SimulationParams("tanh", 16, 6, 1.5, 1.2, 0.1, KIN, 257, 3, "block", 2, 7)
    batches, (G, S) = simulate(params, keep_samples=True)
    a, b = pair_indices(params.P)
    direct = Moments.from_samples(G[..., a, b], S[..., a, b])
    pooled = batches.pooled()
    assert pooled.count == 257
    for f in ("mean_G", "mean_S", "m2_GG", "m2_GS", "m2_SS"):
        np.testing.assert_allclose(getattr(pooled, f), getattr(direct, f), rtol=1e-12, atol=1e-12)
    # Leave-one-out replicates equal direct moments of the remaining seeds.
    sizes = batches.counts
    loo = batches.leave_one_out()[2]
    keep = np.ones(G.shape[0], bool)
    keep[sizes[:2].sum():sizes[:3].sum()] = False
    direct_loo = Moments.from_samples(G[keep][..., a, b], S[keep][..., a, b])
    np.testing.assert_allclose(loo.m2_GS, direct_loo.m2_GS, rtol=1e-12, atol=1e-12)
    # V4 is n times the unbiased sample covariance of the per-seed kernels.
    s = summarize(params, batches)
    np.testing.assert_allclose(s["V4"][-1], params.width * np.cov(G[:, -1, a, b].T), rtol=1e-11)


def test_streaming_memory_is_bounded_by_chunks():
    params = SimulationParams("relu", 1024, 4, 1.0, 1.0, 0.0, KIN, 100000, 0, "block", 1, 32)
    assert params.chunk_size(int(params.batch_sizes()[0])) * params.P * params.width <= 1 << 18


@pytest.mark.parametrize(
    "field, kw",
    [
        ("activation", dict(activation="softplus")),
        ("width", dict(width=0)),
        ("depth", dict(depth=0)),
        ("time", dict(time=0.0)),
        ("samples", dict(samples=1)),
        ("kin", dict(kin=np.array([[1.0, 2.0], [2.0, 1.0]]))),
        ("kin", dict(kin=np.array([[1.0, 0.2], [0.3, 1.0]]))),
        ("sampler", dict(sampler="exact")),
    ],
)
def test_bad_parameters_name_the_field(field, kw):
    base = dict(activation="relu", width=8, depth=4, time=1.0, sw2=1.0, sb2=0.0, kin=KIN, samples=10)
    base.update(kw)
    with pytest.raises(InputError) as err:
        SimulationParams(**base)
    assert err.value.field == field
