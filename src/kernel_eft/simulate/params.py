"""The parameters of a Monte Carlo run, validated once for every entry point (API, CLI, workflow)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kernel_eft.core.activations import get_activation
from kernel_eft.validation import CONTROL_VARIATES, InputError, check_float, check_int, check_kin

SAMPLERS = ("block", "weights")


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
    control_variates: str = "none"  # "martingale": exact zero-mean controls (simulate/controls.py)

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
        if self.control_variates not in CONTROL_VARIATES:
            raise InputError("control_variates", f"unknown control variates {self.control_variates!r}; choose "
                                                 f"{' or '.join(CONTROL_VARIATES)}")
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
