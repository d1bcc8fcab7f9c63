"""Every variable and coordinate kernel-eft writes, with its dimensions, units, long_name and CF attributes.

One table per file kind (`mc`, `theory`, `diagnostics`, `summary`); every writer builds its Dataset with
`dataset(kind, ...)`, which attaches the attributes from here (and links each `X` to its standard error
through `ancillary_variables = "X_se"`), and the variable tables of docs/data_format.md are generated from
here (`update_document`, checked by tests/test_schema.py).  CF-1.10: every variable has `long_name` and
`units` ("1": kernels are dimensionless); coordinates never carry `_FillValue` (kernel_eft.io).

A long_name may hold {placeholders} filled from the writer's context (a threshold, a closure's label).
A closure may write parts beyond the standard fields; the closure declares them (`Closure.parts`) and passes
them as `extra`, so this module names no closure.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

KINDS = ("mc", "theory", "diagnostics", "summary")
JACKKNIFE = "delete-one-batch jackknife"
FIT = "weighted least-squares fit"


@dataclass(frozen=True)
class Variable:
    """dims: netCDF dimensions; long_name (may hold {placeholders}); note: when it is written, if not always
    (documentation); se: an `X_se` standard error is written with it, by the method `se_method`; column: its
    name in summary.csv."""

    dims: tuple[str, ...]
    long_name: str
    units: str | None = "1"
    note: str = ""
    se: bool = False
    column: str | None = None
    se_method: str = JACKKNIFE


@dataclass(frozen=True)
class Coordinate:
    dims: tuple[str, ...]
    long_name: str
    units: str | None = "1"


KERNEL = ("t", "a", "b")
COV = ("t", "a", "b", "c", "d")
W_T_P = ("width", "t", "pair")
W_T_PP = ("width", "t", "pair", "pair2")

COORDINATES: dict[str, Coordinate] = {
    "t": Coordinate(("t",), "depth time t = layer * T / L"),
    "layer": Coordinate(("t",), "residual block index l"),
    "a": Coordinate(("a",), "input index a"),
    "b": Coordinate(("b",), "input index b"),
    "c": Coordinate(("c",), "input index c"),
    "d": Coordinate(("d",), "input index d"),
    "pair": Coordinate(("pair",), "pair index m of (a <= b), row-major"),
    "pair2": Coordinate(("pair2",), "second pair index"),
    "pair_a": Coordinate(("pair",), "first input index of pair"),
    "pair_b": Coordinate(("pair",), "second input index of pair"),
    "batch": Coordinate(("batch",), "seed batch index"),
    "sample": Coordinate(("sample",), "seed index (batch order)"),
    "cv_quantity": Coordinate(("cv_quantity",), "controlled quantity: G pairs, S pairs, upper triangle of "
                                                "(G - K0)(G - K0)^T in pairs"),
    "control": Coordinate(("control",), "zero-mean control: Y, W, Z pairs, upper triangle of C (attribute "
                                        "controls)"),
    "control2": Coordinate(("control2",), "second control index"),
    "width": Coordinate(("width",), "network width n"),
    "t_left": Coordinate(("t_left",), "left end of the recording interval"),
    "theory": Coordinate(("theory",), "closure and depth treatment", None),
    "closure": Coordinate(("closure",), "closure (its solution at the Monte Carlo depth)", None),
    "k0_reference": Coordinate(("k0_reference",), "mean-kernel reference (discrete layers or continuum)", None),
    "residual_part": Coordinate(("residual_part",), "part of the V4 equation residual", None),
    "identity_part": Coordinate(("identity_part",), "part of n (V4(n) - V4) in the exact one-block identity: "
                                "mean (K1, Sigma1 shifts), contraction (c4, c2), transport (X_1, Y_1)", None),
    # summary grid
    "activation": Coordinate(("activation",), "activation phi", None),
    "sw2": Coordinate(("sw2",), "weight variance sigma_w^2"),
    "sb2": Coordinate(("sb2",), "bias variance sigma_b^2"),
    "kin": Coordinate(("kin",), "input kernel K_in (rows by ';', entries by ',')", None),
    "depth": Coordinate(("depth",), "number of residual blocks L"),
    # summary.nc names the depth axis L: CF reserves a coordinate named depth for a vertical (ocean) axis
    "L": Coordinate(("L",), "number of residual blocks L (the depth column of summary.csv)"),
    "T": Coordinate(("T",), "depth time T"),
    "rho": Coordinate(("kin",), "input correlation K_ab / sqrt(K_aa K_bb) for two inputs, NaN otherwise"),
}

_QUANTITY_DIMS = {"V4": ("t", "pair", "pair2"), "K1": ("t", "pair"), "K1_source": ("t", "pair")}
_TSTAR_PARTS = (("", "estimated"), ("_lo", "lower end (16th percentile over bootstrap replicates) of the"),
                ("_hi", "upper end (84th percentile over bootstrap replicates) of the"))

# the per-width comparison with V4 + V4_1/n (docs/diagnostics.md section 2)
_NEXT_ORDER = "only where a theory file has V4_1 (exact closure at a depth, P <= 2)"
_IDENTITY = ("only where a theory file has V4_1 and the identity's order 0 (exact closure at a depth, P <= 2) and "
             "every layer is recorded")

_RAW = "batch-resolved raw moment (pair coordinates) for merging and re-analysis: "

VARIABLES: dict[str, dict[str, Variable]] = {
    "mc": {
        "G_mean": Variable(KERNEL, "Monte Carlo mean of the empirical kernel G = h h^T / n", se=True),
        "S_mean": Variable(KERNEL, "Monte Carlo mean of the sigma-kernel S = phi(h) phi(h)^T / n", se=True),
        "V4": Variable(COV, "kernel covariance n Cov(G_ab, G_cd)", se=True),
        "cov_GS": Variable(COV, "cross covariance n Cov(G_ab, S_cd)", se=True),
        "cov_SS": Variable(COV, "sigma-kernel covariance n Cov(S_ab, S_cd)", se=True),
        "K0_discrete": Variable(KERNEL, "infinite-width discrete-layer mean kernel K0 <- K0 + dt f(K0)"),
        "K1": Variable(KERNEL, "1/n mean correction n (mean G - K0_discrete)", se=True),
        "K1_source": Variable(KERNEL, "exact K1 source n sw2 (mean S - F(mean G))", se=True),
        "batch_count": Variable(("batch",), "seeds in batch"),
        "batch_mean_G": Variable(("batch", "t", "pair"), _RAW + "mean of G"),
        "batch_mean_S": Variable(("batch", "t", "pair"), _RAW + "mean of S"),
        "batch_m2_GG": Variable(("batch", "t", "pair", "pair2"), _RAW + "centred co-moment sum of G and G"),
        "batch_m2_GS": Variable(("batch", "t", "pair", "pair2"), _RAW + "centred co-moment sum of G and S"),
        "batch_m2_SS": Variable(("batch", "t", "pair", "pair2"), _RAW + "centred co-moment sum of S and S"),
        "batch_cv_mean_q": Variable(("batch", "t", "cv_quantity"), _RAW + "mean of the controlled quantities q",
                                    note="only with --control-variates martingale (docs/control_variates.md)"),
        "batch_cv_mean_x": Variable(("batch", "t", "control"), _RAW + "mean of the zero-mean controls x",
                                    note="only with --control-variates martingale"),
        "batch_cv_m2_qx": Variable(("batch", "t", "cv_quantity", "control"), _RAW + "centred co-moment sum of q "
                                   "and x", note="only with --control-variates martingale"),
        "batch_cv_m2_xx": Variable(("batch", "t", "control", "control2"), _RAW + "centred co-moment sum of x and "
                                   "x", note="only with --control-variates martingale"),
        "sample_G": Variable(("sample",) + KERNEL, "per-seed empirical kernel G", note="only with --keep-samples"),
        "sample_S": Variable(("sample",) + KERNEL, "per-seed sigma-kernel S", note="only with --keep-samples"),
    },
    "theory": {
        # the standard fields every closure writes (kernel_eft.theory.closure.STANDARD_FIELDS)
        "K0": Variable(KERNEL, "mean kernel K0 (infinite width)"),
        "V4": Variable(COV, "kernel covariance V4 = n Cov(G_ab, G_cd), {closure}"),
        "K1": Variable(KERNEL, "1/n mean correction K1, E[G] = K0 + K1/n, {closure}"),
        "K1_source": Variable(KERNEL, "the closure's K1 source, dK1/dt = J K1 + K1_source: its prediction of the "
                                      "exact source n sw2 (E[S] - F(E[G])) at O(1/n) (G-only: the tadpole "
                                      "(1/2) H : V4; exact: sw2 B)"),
    },
    "diagnostics": {
        "G_mean": Variable(W_T_P, "Monte Carlo mean kernel", se=True),
        "K0_discrete": Variable(("t", "pair"), "discrete-layer K0"),
        "K0_relerr": Variable(("k0_reference",) + W_T_P, "(G_mean - K0) / sqrt(K0_aa K0_bb)", se=True),
        "V4_MC": Variable(W_T_PP, "Monte Carlo V4 = n Cov(G_m, G_m')", se=True),
        "K0_theory": Variable(("theory", "t", "pair"), "theory K0 at the Monte Carlo times"),
        "V4_theory": Variable(("theory", "t", "pair", "pair2"), "theory V4 at the Monte Carlo times"),
        "K1_theory": Variable(("theory", "t", "pair"), "theory K1 at the Monte Carlo times"),
        "K1_source_theory": Variable(("theory", "t", "pair"), "theory prediction of the exact K1 source (the "
                                     "theory file's K1_source: G-only tadpole (1/2) H:V4, exact closure sw2 B)"),
        "V4_relerr": Variable(("theory",) + W_T_PP, "(V4_MC - V4_theory) / sqrt(V4_theory[m,m] V4_theory[m',m'])",
                              se=True),
        "residual_rate": Variable(("residual_part", "width", "t_left", "pair", "pair2"),
                                  "V4 equation residual rate dV4_MC/dt - RHS_EFT(V4_MC) and its parts", se=True),
        "residual_acc": Variable(("residual_part",) + W_T_PP,
                                 "accumulated residual int_0^t R dt' and its parts (left rule)", se=True),
        "residual_norm_T": Variable(("residual_part", "width"),
                                    "Frobenius norm over pair entries of residual_acc at t = T", se=True),
        "V4_MC_norm_T": Variable(("width",), "Frobenius norm of V4_MC at t = T (scale of the residual)"),
        "K1_MC": Variable(W_T_P, "n (G_mean - K0_discrete), with the control variate n (G_mean(t=0) - K_in) (mean "
                                 "exactly 0) subtracted in its fitted multiple", se=True),
        "K1_source_MC": Variable(W_T_P, "exact K1 source n sw2 (mean S - F(mean G))", se=True),
        "K1_source_t0_sigma": Variable(("width", "pair"), "K1_source_MC(t=0) / its standard error (exactly 0 "
                                                          "expected)"),
        "K1_source_mismatch_t0_sigma": Variable(("width", "pair"), "(K1_source_MC - the {reference} closure's "
                                                "K1_source) at t=0 in units of the MC standard error"),
        **{f"{q}_inf": Variable(dims, f"{q} of Monte Carlo extrapolated to n -> infinity (weighted fit "
                                       f"{q}_inf + c/n over the widths, {{fit_dof}} degrees of freedom)",
                                  note="only with >= 3 widths", se=True, se_method=FIT)
           for q, dims in _QUANTITY_DIMS.items()},
        **{f"{q}_inf_chi2": Variable(dims, f"chi^2 of the 1/n fit of {q} ({{fit_dof}} degrees of freedom)",
                                     note="only with >= 3 widths") for q, dims in _QUANTITY_DIMS.items()},
        **{f"{q}_pull": Variable(("theory",) + dims, f"pull ({q}_inf - {q}_theory) / se({q}_inf)",
                                 note="only with >= 3 widths") for q, dims in _QUANTITY_DIMS.items()},
        **{f"worst_pull_{q}": Variable(("theory",), f"max over depth and entries of |{q}_pull|",
                                       note="only with >= 3 widths") for q in _QUANTITY_DIMS},
        **{f"tstar_{q}{suffix}": Variable(("theory",), f"{what} validity window t* of {q}: first t where "
                                          f"|{q}_inf - {q}_theory| > {{threshold:g}} x the entry scale and > "
                                          "{nsigma:g} se (inf: never; NaN: not resolved, or fewer than 3 widths)")
           for q in _QUANTITY_DIMS for suffix, what in _TSTAR_PARTS},
        **{f"tstar_{q}_width{suffix}": Variable(("theory", "width"), f"{what} validity window t* of {q} per "
                                                f"width: first t where |{q}_MC - {q}_theory| > {{threshold:g}} x "
                                                "the entry scale and > {nsigma:g} se (inf: never; NaN: not "
                                                "resolved)")
           for q in _QUANTITY_DIMS for suffix, what in _TSTAR_PARTS},
        # each width against a theory's V4 + V4_1/n at that width (kernel_eft.diagnose.validity.next_order_comparison)
        "V4_1_theory": Variable(("theory", "t", "pair", "pair2"), "theory V4_1 at the Monte Carlo times: n Cov(G) = "
                                "V4 + V4_1/n + O(1/n^2) (NaN: the theory gives none)", note=_NEXT_ORDER),
        "V4_width_pull": Variable(("theory",) + W_T_PP, "pull (V4_MC - V4_theory) / se(V4_MC) at each width",
                                  note=_NEXT_ORDER),
        "V4_next_width_pull": Variable(("theory",) + W_T_PP, "pull (V4_MC - V4_theory - V4_1_theory/n) / se(V4_MC) "
                                       "at each width n, no extrapolation", note=_NEXT_ORDER),
        "worst_pull_V4_width": Variable(("theory", "width"), "max over depth and entries of |V4_width_pull|",
                                        note=_NEXT_ORDER),
        "worst_pull_V4_next_width": Variable(("theory", "width"), "max over depth and entries of "
                                             "|V4_next_width_pull|", note=_NEXT_ORDER),
        **{f"tstar_V4_next_width{suffix}": Variable(("theory", "width"), f"{what} validity window t* of V4 + V4_1/n "
                                                    "per width: first t where |V4_MC - V4_theory - V4_1_theory/n| > "
                                                    "{threshold:g} x the entry scale and > {nsigma:g} se (inf: "
                                                    "never; NaN: not resolved, or no V4_1)", note=_NEXT_ORDER)
           for suffix, what in _TSTAR_PARTS},
        # n (V4(n) - V4) split by the exact one-block identity (kernel_eft.diagnose.point.identity_variables)
        "V4_1_MC": Variable(W_T_PP, "n (V4_MC - V4_theory) from the raw moments: the Monte Carlo's V4_1 at its width "
                            "(the {identity} theory's V4)", se=True, note=_IDENTITY),
        "V4_1_part_MC": Variable(("width", "t", "identity_part", "pair", "pair2"), "part of n (V4_MC - V4_theory) "
                                 "in the exact one-block identity, measured at this width (cumulated from layer 0)",
                                 se=True, note=_IDENTITY),
        "V4_1_part_theory": Variable(("t", "identity_part", "pair", "pair2"), "the same part of V4_1, predicted by "
                                     "the {identity} theory", note=_IDENTITY),
        "identity_pull": Variable(W_T_PP, "(V4_MC - V4_MC rebuilt from layer 0 by the identity with the measured "
                                  "n Cov(G, S), n Cov(S, S), E G, E S) / se: the identity checked on the Monte "
                                  "Carlo (0 at layer 0 by construction)", note=_IDENTITY),
        "r_max": Variable(("width", "t"), "fluctuation ratio r = max over entries |V4_MC[ab,cd]| / (n sqrt(K0_aa "
                                          "K0_bb K0_cc K0_dd))"),
        "t_r_limit": Variable(("width",), "first t where r_max > {r_limit:g}, the end of the O(1/n) theory's own "
                                          "validity (inf: never)"),
        "t_r_limit_next_order": Variable(("width",), "first t where the theory's r = max |V4_theory| / (n K0 K0) "
                                         "exceeds {r_limit_next_order:g}, the end of V4 + V4_1/n's own validity "
                                         "(inf: never)", note=_NEXT_ORDER),
        "max_K0_relerr": Variable(("k0_reference", "width"), "max over t and entries of |K0_relerr|"),
    },
    "summary": {
        "point": Variable(("activation", "sw2", "sb2", "kin", "depth", "T"), "the grid point's tag", None),
        "fit_dof": Variable(("activation", "sw2", "sb2", "kin", "depth", "T"), "degrees of freedom of the 1/n "
                            "extrapolation (0: fewer than 3 widths, no extrapolation)"),
        **{f"tstar_{q}{w}{suffix}": Variable(("closure",) + (("width",) if w else ()),
                                             f"{what} validity window t* of {q} against Monte Carlo "
                                             + ("at each width" if w else "extrapolated to n -> infinity")
                                             + ": first t where the relative error exceeds {threshold:g} (inf: "
                                             "never)", column=f"tstar_{q}_<closure>{w}{suffix}")
           for q in _QUANTITY_DIMS for w in ("", "_width") for suffix, what in _TSTAR_PARTS},
        **{f"worst_pull_{q}": Variable(("closure",), f"max over depth and entries of |{q}_inf - {q}_theory| / "
                                       f"se({q}_inf)", column=f"worst_pull_{q}_<closure>") for q in _QUANTITY_DIMS},
        **{f"tstar_V4_next_width{suffix}": Variable(("closure", "width"), f"{what} validity window t* of V4 + "
                                                    "V4_1/n against Monte Carlo at each width: first t where the "
                                                    "relative error exceeds {threshold:g} (inf: never)",
                                                    note=_NEXT_ORDER, column=f"tstar_V4_<closure>_next_width{suffix}")
           for suffix, what in _TSTAR_PARTS},
        "worst_pull_V4_width": Variable(("closure", "width"), "max over depth and entries of |V4_MC - V4_theory| / "
                                        "se(V4_MC) at each width", note=_NEXT_ORDER,
                                        column="worst_pull_V4_<closure>_width"),
        "worst_pull_V4_next_width": Variable(("closure", "width"), "max over depth and entries of |V4_MC - "
                                             "V4_theory - V4_1_theory/n| / se(V4_MC) at each width n",
                                             note=_NEXT_ORDER, column="worst_pull_V4_<closure>_next_width"),
        "r_max_T": Variable(("width",), "fluctuation ratio r = max |V4_MC| / (n K0 K0) at t = T"),
        "t_r_limit": Variable(("width",), "first t where r > {r_limit:g}, the O(1/n) theory's own limit "
                                          "(inf: never)"),
        "t_r_limit_next_order": Variable(("width",), "first t where the theory's r = V4/(n K0^2) exceeds "
                                         "{r_limit_next_order:g}, the limit of V4 + V4_1/n (inf: never)",
                                         note=_NEXT_ORDER),
        "max_K0_relerr_discrete": Variable(("width",), "max |K0 relative error|, discrete K0"),
        "max_K0_relerr_continuum": Variable(("width",), "max |K0 relative error|, continuum K0"),
        "V4_MC_norm_T": Variable(("width",), "Frobenius norm of V4_MC at t = T"),
        "K1_source_mismatch_t0_sigma": Variable(("width",), "max over entries |K1_source of the {reference} closure "
                                                            "- MC source| at t=0 in MC standard errors"),
        **{f"residual_{part}_T": Variable(("width",), f"Frobenius norm of the accumulated {part} residual at t = T",
                                          se=True) for part in ("total", "transport", "source", "remainder")},
        "samples": Variable(("width",), "Monte Carlo seeds"),
        "seed": Variable(("width",), "Monte Carlo run seed", None),
        "transport_fraction_T": Variable(("width",), "residual_transport_T / (residual_transport_T + "
                                                     "residual_source_T)", note="only in summary.csv"),
    },
}


class _Context(dict):
    """str.format_map context that leaves unknown placeholders as they are."""

    def __missing__(self, key):
        return "{" + key + "}"


def long_name(kind: str, name: str, context: dict | None = None, extra: dict | None = None) -> str:
    var = variable(kind, name, extra)
    return var.long_name.format_map(_Context(context or {})) if "{" in var.long_name else var.long_name


def variable(kind: str, name: str, extra: dict | None = None) -> Variable:
    """The table entry of `name` in a file of `kind` (X_se: derived from X)."""
    table = {**VARIABLES[kind], **(extra or {})}
    if name in table:
        return table[name]
    if name.endswith("_se") and name[:-3] in table and table[name[:-3]].se:
        base = table[name[:-3]]
        return Variable(base.dims, f"standard error ({base.se_method}) of: {base.long_name}", base.units, base.note)
    raise KeyError(f"{name!r} is not a variable of a {kind} file (kernel_eft.schema.VARIABLES)")


def attributes(kind: str, name: str, context: dict | None = None, extra: dict | None = None) -> dict:
    var = variable(kind, name, extra)
    attrs = {"long_name": long_name(kind, name, context, extra)}
    if var.units is not None:
        attrs["units"] = var.units
    return attrs


def coordinate(name: str, values) -> tuple:
    coord = COORDINATES[name]
    attrs = {"long_name": coord.long_name}
    if coord.units is not None:
        attrs["units"] = coord.units
    return coord.dims, values, attrs


def dataset(kind: str, data: dict, coords: dict, attrs: dict | None = None, context: dict | None = None,
            extra: dict | None = None):
    """An xarray Dataset of `kind` with every attribute from the table.

    data: {name: values} (dims from the table); coords: {name: values} (dims from COORDINATES); extra:
    {name: Variable} for variables a writer adds beyond the table (a new closure's parts)."""
    import xarray as xr

    variables = {}
    for name, values in data.items():
        var = variable(kind, name, extra)
        variables[name] = (var.dims, values, attributes(kind, name, context, extra))
    for name in variables:
        if name + "_se" in variables:
            variables[name][2]["ancillary_variables"] = name + "_se"
    return xr.Dataset(variables, coords={name: coordinate(name, values) for name, values in coords.items()},
                      attrs=attrs or {})


def set_attributes(ds, kind: str, context: dict | None = None):
    """Attach the table's attributes to every variable and coordinate of an existing Dataset (in place; after
    xarray operations that drop attributes, such as combine_by_coords)."""
    for name in ds.data_vars:
        ds[name].attrs = attributes(kind, name, context)
        if name + "_se" in ds.data_vars:
            ds[name].attrs["ancillary_variables"] = name + "_se"
    for name in ds.coords:
        coord = COORDINATES[name]
        ds[name].attrs = {"long_name": coord.long_name, **({"units": coord.units} if coord.units else {})}
    return ds


# ----------------------------------------------------------------------------------------------
# docs/data_format.md: the variable tables are generated from here
# ----------------------------------------------------------------------------------------------

_DOC_KINDS = {"mc": "Monte Carlo file", "theory": "Theory file", "diagnostics": "Diagnostics file",
              "summary": "Summary table"}


SUMMARY_COORDINATES = ("activation", "sw2", "sb2", "kin", "depth", "T", "width", "rho")


def markdown_table(kind: str, extra: dict | None = None) -> str:
    """The variable table of a file kind, one row per variable (with its _se on the same row), then the rows of
    `extra` {name: Variable} (what the writers declare beyond this table, such as a closure's parts);
    placeholders filled by the writer appear as <name>.  The summary table starts with its grid coordinates."""
    name_header = "column" if kind == "summary" else "variable"
    lines = [f"| {name_header} | dims | meaning |", "|---|---|---|"]
    if kind == "summary":
        for name in SUMMARY_COORDINATES:
            coord = COORDINATES[name]
            lines.append(f"| `{name}` | {','.join(coord.dims)} | grid coordinate: {coord.long_name} |")
    for name, var in {**VARIABLES[kind], **(extra or {})}.items():
        shown = var.column or name
        names = f"`{shown}`, `{shown}_se`" if var.se else f"`{shown}`"
        meaning = re.sub(r"\{(\w+)(:[^}]*)?\}", r"<\1>", var.long_name).replace("|", "\\|")
        if var.column:
            meaning += f" (`{name}` in summary.nc)"
        if var.note:
            meaning += f"; {var.note}"
        dims = ",".join(var.dims) or "-"
        lines.append(f"| {names} | {dims} | {meaning} |")
    return "\n".join(lines)


def _block(kind: str) -> str:
    return f"<!-- schema:{kind} (generated from src/kernel_eft/schema.py; do not edit) -->"


def render_document(text: str, extra: dict | None = None) -> str:
    """The document with every generated table replaced by the current one; extra: {kind: {name: Variable}}
    declared outside this module (kernel_eft.theory.registry.document_tables passes the closures' parts)."""
    for kind in KINDS:
        begin, end = _block(kind), f"<!-- /schema:{kind} -->"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        if not pattern.search(text):
            raise ValueError(f"the document has no generated table for {kind} ({begin} ... {end})")
        table = markdown_table(kind, (extra or {}).get(kind))
        text = pattern.sub(lambda _: f"{begin}\n{table}\n{end}", text)
    return text


def update_document(path: str, extra: dict | None = None) -> bool:
    """Regenerate the tables of docs/data_format.md in place; True if anything changed."""
    with open(path) as fh:
        old = fh.read()
    new = render_document(old, extra)
    if new != old:
        with open(path, "w") as fh:
            fh.write(new)
    return new != old


__all__ = ["COORDINATES", "Coordinate", "KINDS", "VARIABLES", "Variable", "attributes", "coordinate", "dataset",
           "long_name", "markdown_table", "render_document", "set_attributes", "update_document", "variable"]
