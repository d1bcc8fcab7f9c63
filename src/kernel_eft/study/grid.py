"""A study's grid: its input geometries, its points (the Cartesian product of the grid axes), each point's tag
(spelled by kernel_eft.diagnose.tags, the one implementation) and each Monte Carlo job's seed."""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass
from pathlib import Path

from kernel_eft.diagnose.tags import correlation_tag, hashed_geometry_tag, number_tag, point_tag
from kernel_eft.study.config import ConfigError, continuous_points, load, study_name, validate
from kernel_eft.validation import InputError, parse_kin


@dataclass(frozen=True)
class Geometry:
    """One input geometry: its tag and its canonical --kin text (every entry spelled by repr)."""

    tag: str
    kin: str


@dataclass(frozen=True)
class Point:
    """One grid point: Monte Carlo runs once per point and width, each closure once per point (once per
    (activation, T, sw2, sb2, geometry) in continuous depth), diagnostics once per point."""

    activation: str
    depth: int
    time: float
    sw2: float
    sb2: float
    geometry: Geometry

    @property
    def P(self) -> int:
        return len(parse_kin(self.geometry.kin))

    @property
    def tag(self) -> str:
        return point_tag(self.activation, self.depth, self.time, self.sw2, self.sb2, self.geometry.tag)

    @property
    def wildcards(self) -> dict:
        """The point as the strings of its file names (the workflow's wildcards)."""
        return dict(activation=self.activation, depth=str(self.depth), time=number_tag(self.time),
                    sw2=number_tag(self.sw2), sb2=number_tag(self.sb2), geom=self.geometry.tag)


def _raw_kin(entry: dict) -> list:
    """The input kernel of a config entry as rows of floats, unsymmetrised (so its spelling is the entry's)."""
    if "kin" in entry:
        return [[float(x) for x in row.split(",")] for row in entry["kin"].strip().split(";")]
    q1, q2 = entry.get("norms", [1.0, 1.0])
    off = entry["rho"] * (q1 * q2) ** 0.5
    return [[float(q1), off], [off, float(q2)]]


def geometry_of(entry: dict, field: str) -> Geometry:
    """A checked grid.inputs entry: its tag (rho0.6, rho0.6_q1-2, P3-<hash>, <label>-<hash>) and --kin text."""
    try:
        rows = _raw_kin(entry)
    except ValueError as exc:
        raise ConfigError(f"{field}.kin", str(exc)) from None
    text = ";".join(",".join(repr(x) for x in row) for row in rows)
    try:
        parse_kin(text, field)  # the package's own --kin check (square, symmetric, PSD, positive norms)
    except InputError as exc:
        raise ConfigError(exc.field, exc.message) from None
    if "label" in entry or "kin" in entry:
        tag = hashed_geometry_tag(rows, entry.get("label"))  # hashes format_kin(rows), which is `text`
    else:
        tag = correlation_tag(entry["rho"], entry.get("norms", [1.0, 1.0]))
    return Geometry(tag, text)


class Study:
    """A validated study config and everything derived from it: name, geometries, points, seeds."""

    def __init__(self, config: dict, name: str):
        self.config = config
        self.name = name
        self.grid = config["grid"]
        self.monte_carlo = config["monte_carlo"]
        self.theory = config["theory"]
        self.widths = list(self.grid["width"])
        self.geometries = self._geometries()
        self.points = self._points()

    @classmethod
    def from_file(cls, path: str | Path, default_file: str | Path | None = None) -> "Study":
        config = load(path)
        return cls(config, study_name(config, path, default_file))

    @classmethod
    def from_config(cls, raw: dict, config_file=None, default_file=None) -> "Study":
        config = validate(raw)
        return cls(config, study_name(config, config_file, default_file))

    def _geometries(self) -> dict:
        """{tag: Geometry} of grid.inputs; one input kernel twice is an error (one point under two names)."""
        geometries, first_of_kin = {}, {}
        for index, entry in enumerate(self.grid["inputs"]):
            field = f"grid.inputs[{index}]"
            geometry = geometry_of(entry, field)
            if geometry.kin in first_of_kin:
                raise ConfigError(field, f"the same input kernel as grid.inputs[{first_of_kin[geometry.kin]}] "
                                         f"({geometry.kin})")
            first_of_kin[geometry.kin] = index
            if geometry.tag in geometries:
                raise ConfigError(field, f"file-name tag {geometry.tag!r} is used twice")
            geometries[geometry.tag] = geometry
        return geometries

    def _points(self) -> list:
        g = self.grid
        points = [Point(act, int(depth), float(time), float(sw2), float(sb2), geometry)
                  for act, depth, time, sw2, sb2, geometry in itertools.product(
                      g["activation"], g["depth"], g["time"], g["sw2"], g["sb2"], self.geometries.values())]
        # the safety net: number_tag is injective and the axes hold distinct values, so tags never collide
        seen = {}
        for point in points:
            if point.tag in seen:
                raise ConfigError("grid", f"grid points {seen[point.tag]} and {point} share the tag {point.tag}")
            seen[point.tag] = point
        return points

    @property
    def closures(self) -> list:
        """The closures of theory.closures, resolved once."""
        from kernel_eft.theory.registry import get_closure

        return [get_closure(name) for name in self.theory["closures"]]

    @property
    def discrete_closures(self) -> list:
        """The closures solved at each Monte Carlo depth L (those that declare the discrete form)."""
        return [closure for closure in self.closures if "discrete" in closure.depths]

    @property
    def continuous_closures(self) -> list:
        """With theory.continuous, the closures that declare the continuous-depth form."""
        return [c for c in self.closures if "continuum" in c.depths] if self.theory["continuous"] else []

    def closure_flags(self, closure) -> str:
        """The CLI flags of the closure's options set in the config (theory.<closure>), in declaration order."""
        given = self.theory.get(closure.name, {})
        return "".join(f" {o.flag} {given[o.name]}" for o in closure.options if o.name in given)

    def continuous_points(self, closure) -> int:
        return continuous_points(self.theory, closure)

    def samples(self, point: Point, width: int) -> int:
        """Networks of one Monte Carlo job: monte_carlo.samples, or the job's share of the point's
        monte_carlo.budget_cpu_seconds (allocated_samples)."""
        if not self.monte_carlo["budget_cpu_seconds"]:
            return self.monte_carlo["samples"]
        return int(self.allocated_samples(point)[self.widths.index(int(width))])

    def allocated_samples(self, point: Point):
        """Samples per width (in grid.width order) spending the point's budget so that the extrapolated K1 has the
        smallest standard error: its per-sample variance is n V4, so proportional to n at fixed V4 (only ratios
        between widths matter), and a sample costs the block sampler's cost model (times the measured 1.4 of the
        control variates when they are on).  Every width keeps 10% / W of the budget and at least
        max(64, batches) samples, so the fit's chi^2 test and the jackknife have data."""
        from kernel_eft.core.allocation import MC_STARTUP_SECONDS, allocate_samples, sample_cost

        mc = self.monte_carlo
        startup = MC_STARTUP_SECONDS * len(self.widths)
        cost = sample_cost(self.widths, point.depth, point.activation, P=point.P,
                           control_variates=mc["control_variates"])
        return allocate_samples(self.widths, max(mc["budget_cpu_seconds"] - startup, 1e-9), self.widths, cost,
                                min_samples=max(64, mc["batches"]))

    def seed(self, point: Point, width: int) -> int:
        """Seed of one Monte Carlo job: the base seed and a crc32 of the job's study-independent name, so
        distinct points and widths get independent streams (1/n fits across widths assume independent
        errors) and a point's seed moves neither when the grid changes nor between studies."""
        name = f"results/mc/{point.activation}/w{int(width)}_{point.tag[len(point.activation) + 1:]}.nc"
        return self.monte_carlo["seed"] * 2**32 + zlib.crc32(name.encode())
