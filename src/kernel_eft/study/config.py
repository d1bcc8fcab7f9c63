"""A study's config: loading, defaults and validation that names the offending field in one line.

The declaration below is the one description of every key (type, default, bounds, help); `validate` fills the
defaults and checks values and the relations between them.  Activation and closure names are checked against
the registries (kernel_eft.core.activations, kernel_eft.theory.registry).  A closure whose continuous form has
its own rule (Closure.config_points) gets its own key theory.<name>_points, checked by the closure itself; a closure's own options (Closure.options) are
set in theory.<name>: {option: value}, checked by their declaration and passed to its jobs as CLI flags.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from kernel_eft.validation import CONTROL_VARIATES, InputError

STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
LABEL = re.compile(r"[A-Za-z0-9.+-]+")
KIN_TEXT = re.compile(r"[0-9eE.,;+ -]+")
SEED_MAX = 2**31 - 1


class ConfigError(InputError):
    """A bad study config: `field` is its dotted path (grid.inputs[0].rho)."""

    def __str__(self) -> str:
        return f"invalid config: {self.field}: {self.message}"


@dataclass(frozen=True)
class Key:
    """One scalar key of a config section."""

    kind: str  # "int", "number", "bool", "str", "choice", "int list", "number list", "name list"
    default: object = None  # None: required (grid axes) or optional without default
    minimum: float | None = None
    maximum: float | None = None
    exclusive: bool = False  # the minimum is exclusive (> rather than >=)
    choices: tuple = ()
    help: str = ""


GRID = {
    "activation": Key("name list", help="nonlinearities phi: names in the activation registry"),
    "width": Key("int list", minimum=1, help="widths n; all widths of a point share one diagnostics file"),
    "depth": Key("int list", minimum=1, help="residual blocks L (dt = T/L)"),
    "time": Key("number list", minimum=0, exclusive=True, help="depth time T"),
    "sw2": Key("number list", minimum=0, help="weight variance sigma_w^2"),
    "sb2": Key("number list", minimum=0, help="bias variance sigma_b^2"),
}
MONTE_CARLO = {
    "samples": Key("int", 20000, minimum=2, help="independent networks per width and grid point; >= batches"),
    "budget_cpu_seconds": Key("number", 0, minimum=0,
                              help="Monte Carlo CPU seconds per grid point, all its widths together (0: `samples` "
                                   "networks at every width); when given, split over the widths so that the "
                                   "1/n-extrapolated K1 has the smallest error (kernel_eft.core.allocation)"),
    "seed": Key("int", 1, minimum=0, maximum=SEED_MAX, help="base seed; each job's seed is derived from it and "
                                                             "the job's study-independent file name"),
    "batches": Key("int", 32, minimum=2, help="seed batches (units of MPI work and of the jackknife error)"),
    "sampler": Key("choice", "block", choices=("block", "weights"), help="Monte Carlo sampler"),
    "control_variates": Key("choice", "none", choices=CONTROL_VARIATES,
                            help="martingale: K1, its source and V4 adjusted by exactly zero-mean controls "
                                 "(docs/control_variates.md); none: the plain estimators"),
    "record_every": Key("int", 1, minimum=1, help="record every k-th layer; at most the smallest depth"),
    "tasks": Key("int", 1, minimum=1, help="MPI ranks per Monte Carlo job"),
}
DIAGNOSTICS = {
    "threshold": Key("number", 0.1, minimum=0, exclusive=True, help="relative residual that ends the validity "
                                                                   "window"),
}


def theory_keys() -> dict:
    """The theory section's keys: the closure list and the continuous-depth options, with one points key per
    closure that declares its own rule (from the registry, so a new closure needs no change here)."""
    from kernel_eft.theory.registry import CLOSURES, reference_closure

    keys = {
        "closures": Key("name list", [reference_closure().name], help="EFT closures to solve, each at every "
                                                                      "Monte Carlo depth L"),
        "continuous": Key("bool", True, help="also solve every closure in continuous depth"),
        "points": Key("int", 201, minimum=2, help="time points of the continuous solutions"),
    }
    for closure in CLOSURES.values():
        if any(option.type is not None for option in closure.options):
            keys[closure.name] = Key("options", {}, help=f"options of the {closure.long_label}: "
                                     + ", ".join(o.name for o in closure.options if o.type is not None))
        if closure.config_points:
            keys[f"{closure.name}_points"] = Key("int", closure.default_points, minimum=2,
                                                 help=f"time points of the continuous {closure.long_label}")
    return keys


def continuous_points(theory: dict, closure) -> int:
    """The continuous-depth output times of a closure: its own key where it declares one, else theory.points."""
    return theory[f"{closure.name}_points"] if closure.config_points else theory["points"]


def _check_scalar(value, key: Key, field: str):
    kind = key.kind.replace(" list", "")
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(field, f"expected true or false, got {value!r}")
        return value
    if kind == "choice":
        if value not in key.choices:
            raise ConfigError(field, f"{value!r} is not one of {', '.join(key.choices)}")
        return value
    if kind in ("str", "name"):
        if not isinstance(value, str):
            raise ConfigError(field, f"expected a name, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, f"expected {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
    if kind == "int" and not isinstance(value, int):
        raise ConfigError(field, f"expected an integer, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(field, f"must be finite, got {value!r}")
    if key.minimum is not None and (value <= key.minimum if key.exclusive else value < key.minimum):
        raise ConfigError(field, f"must be {'>' if key.exclusive else '>='} {key.minimum:g}, got {value!r}")
    if key.maximum is not None and value > key.maximum:
        raise ConfigError(field, f"must be <= {key.maximum:g}, got {value!r}")
    return value


def _check_options(value, closure_name: str, field: str) -> dict:
    from kernel_eft.theory.registry import get_closure

    if not isinstance(value, dict):
        raise ConfigError(field, f"expected a mapping of the closure's options, got {value!r}")
    closure = get_closure(closure_name)
    checked = {}
    for name, given in value.items():
        try:
            option = closure.option(name)
            if option.type is None:
                raise InputError(name, "is set from Python only")
            checked[name] = option.check(given, name)
        except InputError as exc:
            raise ConfigError(f"{field}.{name}", exc.message) from None
    return checked


def _check_value(value, key: Key, field: str):
    if key.kind == "options":
        return _check_options(value, field.rpartition(".")[2], field)
    if not key.kind.endswith(" list"):
        return _check_scalar(value, key, field)
    if not isinstance(value, list) or not value:
        raise ConfigError(field, f"expected a non-empty list, got {value!r}")
    checked = [_check_scalar(item, key, f"{field}[{i}]") for i, item in enumerate(value)]
    for i, item in enumerate(checked):
        if item in checked[:i]:
            raise ConfigError(f"{field}[{i}]", f"{item!r} is listed twice")
    return checked


def _section(config: dict, name: str, keys: dict, required: bool = False) -> dict:
    """A section with its keys checked and its defaults filled; unknown keys are errors (typos fail early)."""
    if name not in config:
        if required:
            raise ConfigError("(top level)", f"the section {name!r} is required")
        section = {}
    else:
        section = config[name]
    if not isinstance(section, dict):
        raise ConfigError(name, f"expected a mapping of keys, got {section!r}")
    unknown = [key for key in section if key not in keys]
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}", f"unknown key (keys: {', '.join(keys)})")
    filled = {}
    for key, spec in keys.items():
        if key in section:
            filled[key] = _check_value(section[key], spec, f"{name}.{key}")
        elif spec.default is None:
            raise ConfigError(f"{name}.{key}", "required")
        else:
            filled[key] = spec.default
    return filled


def _check_inputs(entries) -> list:
    """grid.inputs: {rho, norms?, label?} or {kin, label?}; the input kernels themselves are checked by the grid."""
    field = "grid.inputs"
    if not isinstance(entries, list) or not entries:
        raise ConfigError(field, f"expected a non-empty list of input geometries, got {entries!r}")
    checked = []
    for i, entry in enumerate(entries):
        here = f"{field}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(here, f"expected {{rho: ...}} or {{kin: ...}}, got {entry!r}")
        allowed = ("kin", "label") if "kin" in entry else ("rho", "norms", "label")
        unknown = [key for key in entry if key not in allowed]
        if unknown:
            raise ConfigError(f"{here}.{unknown[0]}", f"unknown key of this form (keys: {', '.join(allowed)})")
        if "kin" in entry:
            if not isinstance(entry["kin"], str) or not KIN_TEXT.fullmatch(entry["kin"]):
                raise ConfigError(f"{here}.kin", f"expected rows of numbers like \"1,0.6;0.6,1\", got "
                                                 f"{entry['kin']!r}")
        else:
            if "rho" not in entry:
                raise ConfigError(here, "needs rho (two inputs) or kin (a matrix)")
            rho = _check_scalar(entry["rho"], Key("number"), f"{here}.rho")
            if not -1 < rho < 1:
                raise ConfigError(f"{here}.rho", f"must lie strictly between -1 and 1, got {rho!r}")
            norms = entry.get("norms", [1.0, 1.0])
            if not isinstance(norms, list) or len(norms) != 2:
                raise ConfigError(f"{here}.norms", f"expected two squared norms [K_11, K_22], got {norms!r}")
            for j, q in enumerate(norms):
                _check_scalar(q, Key("number", minimum=0, exclusive=True), f"{here}.norms[{j}]")
        if "label" in entry and (not isinstance(entry["label"], str) or not LABEL.fullmatch(entry["label"])):
            raise ConfigError(f"{here}.label", f"{entry['label']!r}: a label is letters, digits and . + -")
        checked.append(dict(entry))
    return checked


def validate(raw: dict) -> dict:
    """The config with every default filled, or ConfigError naming the first bad field."""
    from kernel_eft.core.activations import activation_names
    from kernel_eft.theory.registry import closure_names

    if not isinstance(raw, dict):
        raise ConfigError("(top level)", f"expected a mapping of sections, got {raw!r}")
    sections = ("study", "grid", "monte_carlo", "theory", "diagnostics")
    unknown = [key for key in raw if key not in sections]
    if unknown:
        raise ConfigError(unknown[0], f"unknown section (sections: {', '.join(sections)})")
    grid_raw = raw.get("grid")
    if not isinstance(grid_raw, dict):
        raise ConfigError("grid", "required: a mapping of the grid axes")
    grid = _section({"grid": {k: v for k, v in grid_raw.items() if k != "inputs"}}, "grid", GRID, required=True)
    if "inputs" not in grid_raw:
        raise ConfigError("grid.inputs", "required")
    grid["inputs"] = _check_inputs(grid_raw["inputs"])
    config = {"grid": grid,
              "monte_carlo": _section(raw, "monte_carlo", MONTE_CARLO),
              "theory": _section(raw, "theory", theory_keys()),
              "diagnostics": _section(raw, "diagnostics", DIAGNOSTICS)}
    if "study" in raw:
        if not isinstance(raw["study"], str) or not STUDY_NAME.fullmatch(raw["study"]):
            raise ConfigError("study", f"{raw['study']!r}: a study name is letters, digits and . _ + - (it names "
                                       "the study's folders)")
        config["study"] = raw["study"]
    _check_names(grid["activation"], activation_names(), "grid.activation", "activation")
    _check_names(config["theory"]["closures"], closure_names(), "theory.closures", "closure")
    _check_relations(config)
    return config


def _check_names(names, known, field, what):
    for i, name in enumerate(names):
        if name not in known:
            raise ConfigError(f"{field}[{i}]", f"unknown {what} {name!r}; choose from {', '.join(known)}")


def _check_relations(config: dict) -> None:
    """What one key alone cannot say."""
    from kernel_eft.theory.registry import get_closure

    mc, grid, theory = config["monte_carlo"], config["grid"], config["theory"]
    if mc["samples"] < mc["batches"]:
        raise ConfigError("monte_carlo.samples", f"{mc['samples']} is less than monte_carlo.batches "
                                                 f"({mc['batches']}); every seed batch needs at least one sample")
    if mc["budget_cpu_seconds"] and len(grid["width"]) < 2:
        raise ConfigError("monte_carlo.budget_cpu_seconds", "a budget is split over the widths of a point: "
                                                            "give at least two widths in grid.width")
    shallowest = min(grid["depth"])
    if mc["record_every"] > shallowest:
        raise ConfigError("monte_carlo.record_every", f"{mc['record_every']} exceeds the depth {shallowest} in "
                                                      "grid.depth (layers 0 and L are always recorded)")
    if theory["continuous"]:
        for name in theory["closures"]:
            closure = get_closure(name)
            if closure.config_points:
                try:
                    closure.check_points(theory[f"{name}_points"])
                except InputError as exc:
                    raise ConfigError(f"theory.{name}_points", exc.message) from None


def study_name(config: dict, config_file: str | Path | None, default_file: str | Path | None = None) -> str:
    """The `study` key; else `default` when the config is the default one (`default_file`, or none named);
    else the config file's name without .yaml."""
    if "study" in config:
        return config["study"]
    if config_file is None or (default_file is not None
                               and Path(config_file).resolve() == Path(default_file).resolve()):
        return "default"
    name = Path(config_file).stem
    if not STUDY_NAME.fullmatch(name):
        raise ConfigError("study", f"the config file name {name!r} cannot name the study's folder; set study: NAME "
                                   "(letters, digits, . _ + -)")
    return name


def load(path: str | Path) -> dict:
    """Read and validate a study's YAML file (the raw mapping; validate fills the defaults)."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError("CONFIG", f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InputError("CONFIG", f"{path} is not YAML: {exc}") from None
    return validate(raw if raw is not None else {})
