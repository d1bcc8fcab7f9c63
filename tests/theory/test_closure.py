"""kernel_eft.theory.closure: the structured theory label and its file spelling."""

from __future__ import annotations

import pytest

from kernel_eft.theory.closure import TheoryLabel
from kernel_eft.theory.registry import CLOSURES


def test_theory_labels_round_trip_through_their_file_spelling():
    """parse(str(label)) is the label; the spelling is <closure>_<form> (the diagnostics' coordinate values),
    also for a closure whose name holds an underscore."""
    for closure in CLOSURES.values():
        for depth, form in ((8, "discrete"), (None, "continuum")):
            label = TheoryLabel.of(closure.name, depth)
            assert str(label) == closure.theory_label(depth) == closure.name + "_" + form
            assert TheoryLabel.parse(str(label)) == label
    assert TheoryLabel.parse("my_toy_continuum") == TheoryLabel("my_toy", "continuum")
    for bad in ("gonly", "gonly_layers", "_discrete"):
        with pytest.raises(ValueError, match="not a theory label"):
            TheoryLabel.parse(bad)
