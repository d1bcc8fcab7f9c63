"""kernel_eft.study.config: every shipped study validates, defaults fill a fixed point, and a bad key or value
fails with one line naming its field (the same check the workflow runs at start-up)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from kernel_eft.study.config import ConfigError, load, study_name, validate

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))


def tiny(**grid):
    base = dict(activation=["relu"], width=[16], depth=[4], time=[1], sw2=[1.0], sb2=[0.0], inputs=[{"rho": 0.5}])
    base.update(grid)
    return {"grid": base}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_study_validates_and_keeps_its_values(path):
    raw = yaml.safe_load(path.read_text())
    config = load(path)
    for section, values in raw.items():
        if isinstance(values, dict):
            for key, value in values.items():
                assert config[section][key] == value, (section, key)


def test_defaults_are_filled_once_and_validating_again_changes_nothing():
    config = validate(tiny())
    assert set(config) == {"grid", "monte_carlo", "theory", "diagnostics"}
    assert validate(copy.deepcopy(config)) == config


def test_the_default_closure_is_the_reference_closure():
    from kernel_eft.theory.registry import reference_closure

    assert validate(tiny())["theory"]["closures"] == [reference_closure().name]


@pytest.mark.parametrize("config, field", [
    ({**tiny(), "monte_carlo": {"samplez": 10}}, "monte_carlo.samplez"),
    ({**tiny(), "typo_section": {}}, "typo_section"),
    (tiny(width=[0]), "grid.width[0]"),
    (tiny(width=[16, 16]), "grid.width[1]"),
    (tiny(width=[]), "grid.width"),
    (tiny(depth=[2.5]), "grid.depth[0]"),
    (tiny(activation=["sigmoidish"]), "grid.activation[0]"),
    (tiny(time=[-1]), "grid.time[0]"),
    (tiny(time=["1e-5"]), "grid.time[0]"),  # YAML 1.1 reads 1e-5 as a string
    (tiny(sw2=[True]), "grid.sw2[0]"),
    (tiny(inputs=[{"rho": 1.5}]), "grid.inputs[0].rho"),
    (tiny(inputs=[{"rho": 0.5, "norms": [1, 0]}]), "grid.inputs[0].norms[1]"),
    (tiny(inputs=[{"rho": 0.5, "kim": "1"}]), "grid.inputs[0].kim"),
    (tiny(inputs=[{"kin": "1,2;2,1", "label": "bad"}]), "grid.inputs[0]"),
    (tiny(inputs=[{"kin": "1,0.5;0.5,1", "label": "a b"}]), "grid.inputs[0].label"),
    ({**tiny(), "monte_carlo": {"tasks": "two"}}, "monte_carlo.tasks"),
    ({**tiny(), "monte_carlo": {"sampler": "magic"}}, "monte_carlo.sampler"),
    ({**tiny(), "monte_carlo": {"seed": 2**31}}, "monte_carlo.seed"),
    ({**tiny(), "monte_carlo": {"samples": 10, "batches": 32}}, "monte_carlo.samples"),
    ({**tiny(depth=[4, 8]), "monte_carlo": {"record_every": 5}}, "monte_carlo.record_every"),
    ({**tiny(), "theory": {"closures": ["gonly", "magic"]}}, "theory.closures[1]"),
    ({**tiny(), "theory": {"continuous": "yes"}}, "theory.continuous"),
    ({**tiny(), "study": "a/b"}, "study"),
    ({"monte_carlo": {}}, "grid"),
])
def test_a_bad_config_names_its_field(config, field):
    from kernel_eft.study.grid import Study  # the input kernels themselves are checked with the grid

    with pytest.raises(ConfigError) as info:
        Study.from_config(config)
    assert info.value.field == field
    assert str(info.value).startswith(f"invalid config: {field}: ")
    assert "\n" not in str(info.value)


def test_a_closure_with_its_own_points_rule_is_checked_by_that_closure():
    """The exact continuum needs 4k + 1 points (Richardson extrapolation): the closure's own check, reached from
    its config key; a config that does not solve the continuum does not need it."""
    from kernel_eft.theory.registry import CLOSURES

    own = [c for c in CLOSURES.values() if c.config_points]
    assert own, "a closure declares its own points rule"
    for closure in own:
        key = f"{closure.name}_points"
        good = {**tiny(), "theory": {"closures": [closure.name], key: closure.default_points}}
        assert validate(good)["theory"][key] == closure.default_points
        bad = {**tiny(), "theory": {"closures": [closure.name], key: closure.default_points + 1}}
        with pytest.raises(ConfigError) as info:
            validate(bad)
        assert info.value.field == f"theory.{key}"
        bad["theory"]["continuous"] = False
        validate(bad)


def test_the_study_is_named_by_its_key_else_its_file(tmp_path):
    default = ROOT / "config" / "config.yaml"
    assert study_name({"study": "mine"}, tmp_path / "other.yaml", default) == "mine"
    assert study_name({}, tmp_path / "other.yaml", default) == "other"
    assert study_name({}, default, default) == "default"
    assert study_name({}, None, default) == "default"
    with pytest.raises(ConfigError, match="study"):
        study_name({}, tmp_path / "bad name.yaml", default)
