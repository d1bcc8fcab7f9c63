"""The names of grid points: every parameter spelled in the tag that names a point's files and figures.
This is the one implementation; the study (kernel_eft.study) names its files with it."""

from __future__ import annotations

import zlib

import numpy as np

from kernel_eft.validation import format_kin


def number_tag(value) -> str:
    """A number in a file name: the shortest spelling that reads back as the same float (4.0 -> 4,
    0.6 -> 0.6, 1e-05), so distinct values never share a name."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def kin_hash(kin) -> str:
    """Eight hex digits of the whole K_in (crc32 of its canonical --kin spelling, every entry by repr)."""
    return f"{zlib.crc32(format_kin(np.asarray(kin, dtype=np.float64)).encode()):08x}"


def hashed_geometry_tag(kin, label: str | None = None) -> str:
    """<label>-<hash of K_in>, or P<inputs>-<hash of K_in> without a label: a label names a geometry but never
    hides its values, so editing K_in under the same label makes new files."""
    kin = np.asarray(kin, dtype=np.float64)
    return f"{label if label else f'P{kin.shape[0]}'}-{kin_hash(kin)}"


def correlation_tag(rho, norms=(1.0, 1.0)) -> str:
    """Two inputs given by their correlation and squared norms: rho0.6, or rho0.6_q1-2 when the norms are not 1."""
    tag = f"rho{number_tag(rho)}"
    if [float(q) for q in norms] != [1.0, 1.0]:
        tag += f"_q{number_tag(norms[0])}-{number_tag(norms[1])}"
    return tag


def geometry_tag(kin) -> str:
    """Input-geometry part of a point tag from K_in alone: rho0.6 for two unit-norm inputs, else
    P<inputs>-<hash of K_in> (a study names its geometries from their config entries instead:
    kernel_eft.study.grid)."""
    kin = np.asarray(kin, dtype=np.float64)
    if kin.shape == (2, 2) and kin[0, 0] == 1.0 and kin[1, 1] == 1.0:
        return correlation_tag(kin[0, 1])
    return hashed_geometry_tag(kin)


def point_tag(activation: str, depth, time, sw2, sb2, geometry: str) -> str:
    """A grid point's tag: activation_L<depth>_T<time>_sw<sw2>_sb<sb2>_<geometry> (the study's file names)."""
    return (f"{activation}_L{int(depth)}_T{number_tag(time)}_sw{number_tag(sw2)}_sb{number_tag(sb2)}_"
            f"{geometry}")


def default_point_tag(activation, depth, time, sw2, sb2, kin) -> str:
    """The tag of a grid point when diagnose is not given one: every parameter of the point."""
    return point_tag(activation, depth, time, sw2, sb2, geometry_tag(kin))
