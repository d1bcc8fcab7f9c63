"""The Monte Carlo file (schema kind `mc`): estimates with standard errors plus batch-resolved raw moments."""

from __future__ import annotations

import numpy as np

from kernel_eft import schema
from kernel_eft.core.pairs import n_pairs, pair_indices, pairs_to_four_index
from kernel_eft.core.statistics import BatchMoments
from kernel_eft.io import provenance_attrs
from kernel_eft.simulate.controls import control_names
from kernel_eft.simulate.params import SimulationParams
from kernel_eft.validation import parse_kin

# What must agree for Monte Carlo files to describe one grid point (merge).
MATCHING_ATTRS = ("activation", "width", "depth", "time", "sw2", "sb2", "kin", "sampler", "record_every",
                  "control_variates")
ESTIMATES = ("G_mean", "S_mean", "K0_discrete", "K1", "K1_source", "V4", "cov_GS", "cov_SS")


def mc_dataset(params: SimulationParams, summary: dict, batches: BatchMoments, samples=None,
               extra_attrs: dict | None = None):
    """The Monte Carlo file: summary estimates (kernel_eft.simulate.estimates.summarize) with standard errors,
    the batch-resolved raw moments and, with samples, the per-seed kernels."""
    P = params.P
    p = n_pairs(P)
    pa, pb = pair_indices(P)
    coords = {"t": params.times, "layer": params.layers, **{name: np.arange(P) for name in "abcd"},
              "pair": np.arange(p), "pair2": np.arange(p), "pair_a": pa, "pair_b": pb,
              "batch": np.arange(len(batches))}
    data = {}
    for name in ESTIMATES:
        for key in (name, name + "_se"):
            if key in summary:
                values = summary[key]
                data[key] = pairs_to_four_index(values, P) if len(schema.variable("mc", key).dims) == 5 else values
    data["batch_count"] = batches.counts
    data["batch_mean_G"] = batches.mean_G
    data["batch_mean_S"] = batches.mean_S
    for xy in ("GG", "GS", "SS"):
        data[f"batch_m2_{xy}"] = getattr(batches, f"m2_{xy}")
    control_attrs = {}
    if batches.controls is not None:  # only with control variates: a run without them writes today's file
        c = batches.controls
        coords["cv_quantity"] = np.arange(c.mean_q.shape[-1])
        coords["control"] = np.arange(c.mean_x.shape[-1])
        coords["control2"] = np.arange(c.mean_x.shape[-1])
        for f in ("mean_q", "mean_x", "m2_qx", "m2_xx"):
            data[f"batch_cv_{f}"] = getattr(c, f)
        control_attrs = {"control_variates": params.control_variates,
                         "controlled_quantities": "G pairs, S pairs, upper triangle of (G - K0)(G - K0)^T",
                         "controls": " ".join(control_names(P))}
    if samples is not None:
        G, S = samples
        coords["sample"] = np.arange(G.shape[0])
        data["sample_G"], data["sample_S"] = G, S
    attrs = provenance_attrs(
        f"Monte Carlo kernels of a finite-width pre-activation ResNet ({params.activation}, n={params.width}, "
        f"L={params.depth}, T={params.time:g})",
        {
            "activation": params.activation, "width": params.width, "depth": params.depth, "time": params.time,
            "sw2": params.sw2, "sb2": params.sb2, "kin": params.kin, "P": P, "samples": params.samples,
            "seed": params.seed, "seed_entropy": str(np.random.SeedSequence(params.seed).entropy),
            "rng": "numpy PCG64; stream of batch b = SeedSequence(seed, spawn_key=(b,))",
            "sampler": params.sampler, "record_every": params.record_every, "batches": params.batches,
            "error_method": "delete-one-batch jackknife over seed batches",
            **control_attrs,
            **(extra_attrs or {}),
        },
    )
    return schema.dataset("mc", data, coords, attrs)


def params_from_dataset(ds, **overrides) -> SimulationParams:
    """SimulationParams of a Monte Carlo file (for re-analysis and merging)."""
    a = ds.attrs
    kw = dict(activation=str(a["activation"]), width=int(a["width"]), depth=int(a["depth"]), time=float(a["time"]),
              sw2=float(a["sw2"]), sb2=float(a["sb2"]), kin=parse_kin(str(a["kin"]), "kin"),
              samples=int(a["samples"]), seed=int(str(a["seed"]).split(",")[0]), sampler=str(a["sampler"]),
              record_every=int(a["record_every"]), batches=int(a["batches"]),
              control_variates=str(a.get("control_variates", "none")))
    kw.update(overrides)
    return SimulationParams(**kw)

