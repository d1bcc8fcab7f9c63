"""The names of grid points: every parameter spelled in the tag that names a point's files and figures.
The workflow (workflow/rules/common.smk) spells its paths with the same `number_tag`."""

from __future__ import annotations

import zlib

import numpy as np

from kernel_eft.validation import format_kin


def number_tag(value) -> str:
    """A number in a file name: the shortest spelling that reads back as the same float (4.0 -> 4,
    0.6 -> 0.6, 1e-05), so distinct values never share a name.  The workflow spells its paths the same way."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def geometry_tag(kin) -> str:
    """Input-geometry part of a point tag, from the whole K_in: rho0.6 for two unit-norm inputs, else
    P<inputs>-<crc32 of K_in> (the workflow names its geometries rho0.6_q1-2 or by their label instead)."""
    kin = np.asarray(kin, dtype=np.float64)
    if kin.shape == (2, 2) and kin[0, 0] == 1.0 and kin[1, 1] == 1.0:
        return f"rho{number_tag(kin[0, 1])}"
    return f"P{kin.shape[0]}-{zlib.crc32(format_kin(kin).encode()):08x}"


def default_point_tag(activation, depth, time, sw2, sb2, kin) -> str:
    """The tag of a grid point when diagnose is not given one: every parameter of the point, in the
    order of the workflow's file names (activation_L_T_sw_sb_geometry)."""
    return (f"{activation}_L{int(depth)}_T{number_tag(time)}_sw{number_tag(sw2)}_sb{number_tag(sb2)}_"
            f"{geometry_tag(kin)}")
