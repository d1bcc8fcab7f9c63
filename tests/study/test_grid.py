"""kernel_eft.study.grid: the points are the product of the axes, every point and geometry has its own tag
(spelled by kernel_eft.diagnose.tags, read back exactly), and every Monte Carlo job its own seed, which moves
neither with the grid nor with the study."""

from __future__ import annotations

import itertools
import math
import zlib

import numpy as np
import pytest

from kernel_eft.diagnose.tags import geometry_tag, number_tag
from kernel_eft.study import paths
from kernel_eft.study.config import ConfigError
from kernel_eft.study.grid import Study
from kernel_eft.validation import parse_kin

KIN3 = "1,0.3,0.3;0.3,1,0.3;0.3,0.3,1"
INPUTS = [{"rho": 0.3}, {"rho": 0.3, "norms": [1, 2]}, {"rho": -0.25, "norms": [1.5, 0.7]}, {"kin": KIN3},
          {"kin": "1,0.3;0.3,1.5", "label": "mine"}, {"kin": "2"}]


def study(name="s", **grid):
    axes = dict(activation=["relu", "erf"], width=[16, 32], depth=[4, 8], time=[1, 0.5, 1e-5], sw2=[1.0, 2],
                sb2=[0.0, 0.1], inputs=INPUTS)
    axes.update(grid)
    return Study.from_config({"grid": axes, "study": name})


def test_the_points_are_the_product_of_the_axes_and_their_tags_are_distinct():
    s = study()
    g = s.grid
    assert len(s.points) == math.prod(len(g[axis]) for axis in ("activation", "depth", "time", "sw2", "sb2",
                                                                 "inputs"))
    assert len({p.tag for p in s.points}) == len(s.points)
    for p in s.points:  # the tag is the workflow's template filled with the point's wildcards
        assert paths.POINT_TAG.format(**p.wildcards) == p.tag


@pytest.mark.parametrize("value", [4.0, 0.6, 1e-5, 0.1 + 0.2, 1 / 3, 2.5e300, 7])
def test_a_number_in_a_tag_reads_back_as_the_same_float(value):
    assert float(number_tag(value)) == float(value)


def test_every_geometry_spells_or_hashes_its_whole_input_kernel():
    """The --kin text reads back as the entry's kernel; rho entries spell rho (and the norms), matrices and labels
    hash the --kin text, so no two kernels share a tag."""
    s = study()
    tags = list(s.geometries)
    assert tags[:3] == ["rho0.3", "rho0.3_q1-2", "rho-0.25_q1.5-0.7"]
    assert tags[3].startswith("P3-") and tags[4].startswith("mine-") and tags[5].startswith("P1-")
    for entry, geometry in zip(INPUTS, s.geometries.values()):
        kin = parse_kin(geometry.kin)
        if "rho" in entry:
            q1, q2 = entry.get("norms", [1, 1])
            expected = np.array([[q1, entry["rho"] * math.sqrt(q1 * q2)], [entry["rho"] * math.sqrt(q1 * q2), q2]])
        else:
            expected = parse_kin(entry["kin"])
            assert geometry.tag.endswith(f"-{zlib.crc32(geometry.kin.encode()):08x}")
        np.testing.assert_array_equal(kin, expected)


def test_a_unit_norm_pair_has_the_tag_diagnose_gives_it_by_default():
    """One implementation: diagnose without --tag names the point as the study does."""
    s = study()
    assert geometry_tag(parse_kin(s.geometries["rho0.3"].kin)) == "rho0.3"


def test_one_input_kernel_twice_is_an_error_naming_the_second_entry():
    with pytest.raises(ConfigError) as info:
        study(inputs=[{"rho": 0.3}, {"kin": "1, 0.3; 0.3 ,1"}])
    assert info.value.field == "grid.inputs[1]"


def test_seeds_are_distinct_and_do_not_move_with_the_grid_or_the_study():
    s = study()
    seeds = {(p.tag, w): s.seed(p, w) for p in s.points for w in s.widths}
    assert len(set(seeds.values())) == len(seeds)
    base = s.monte_carlo["seed"] * 2**32
    assert all(base <= seed < base + 2**32 for seed in seeds.values())
    grown = study(name="other", width=[16, 32, 64], sb2=[0.0, 0.1, 0.2])
    for p in grown.points:
        for w in grown.widths:
            if (p.tag, w) in seeds:
                assert grown.seed(p, w) == seeds[(p.tag, w)]


def test_a_new_base_seed_moves_every_stream():
    a = study()
    b = Study.from_config({**{"grid": a.config["grid"]}, "monte_carlo": {"seed": 2}})
    assert all(a.seed(p, w) != b.seed(p, w) for p, w in itertools.product(a.points, a.widths))
