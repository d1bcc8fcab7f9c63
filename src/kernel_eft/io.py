"""netCDF schema, provenance and atomic writing.  Files are written by rank 0 only."""

from __future__ import annotations

import datetime as _dt
import errno
import os
import sys
import tempfile

import numpy as np
import xarray as xr

from kernel_eft import __version__, git_commit
from kernel_eft.pairs import n_pairs, pair_indices, pairs_to_four_index
from kernel_eft.validation import InputError, format_kin

CONVENTIONS = "CF-1.10"
REFERENCES = (
    "H. Kawase and T. Ota, Collective Kernel EFT for Pre-activation ResNets, arXiv:2604.15742 (2026); "
    "kernel-eft docs/exact_theory.md (exact O(1/n) theory)"
)


def provenance_attrs(title: str, params: dict) -> dict:
    """CF global attributes plus every parameter (numpy arrays and bools rendered as netCDF-safe values)."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    attrs = {
        "Conventions": CONVENTIONS,
        "title": title,
        "institution": "kernel-eft",
        "source": f"kernel-eft {__version__} (git {git_commit()})",
        "history": f"{now}: {' '.join(sys.argv) or 'python API'}",
        "references": REFERENCES,
        "kernel_eft_version": __version__,
        "git_commit": git_commit(),
    }
    for key, value in params.items():
        if isinstance(value, np.ndarray) and value.ndim == 2:
            attrs[key] = format_kin(value)
        elif isinstance(value, bool):
            attrs[key] = int(value)
        elif value is None:
            attrs[key] = "none"
        else:
            attrs[key] = value
    return attrs


def check_writable(path: str | os.PathLike, field: str, *, directory: bool = False) -> None:
    """Before any compute: the output can be created where it is asked for.  Creates and removes a probe
    file in the target directory (or, when that does not exist yet, in its nearest existing ancestor,
    where the missing directories will be made), so a read-only or missing location fails in a second,
    not after the run."""
    path = os.path.abspath(os.fspath(path))
    if directory:
        if os.path.exists(path) and not os.path.isdir(path):
            raise InputError(field, f"{path} exists and is not a directory")
        target = path
    else:
        if os.path.isdir(path):
            raise InputError(field, f"{path} is a directory; give a file name such as out.nc")
        target = os.path.dirname(path)
    while not os.path.exists(target):
        target = os.path.dirname(target)
    if not os.path.isdir(target):
        raise InputError(field, f"cannot create {path}: {target} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".kernel-eft-probe-", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(field, f"cannot write to {target}: {exc.strerror or exc}") from None


def write_failure(exc: BaseException, path: str, field: str, needed_bytes: int) -> InputError:
    """The one-line error for a failed write.  HDF5 reports a full disk only as 'NetCDF: HDF error', so
    a full disk is recognised by errno where there is one and otherwise by the free space left at the
    moment of failure (less than the uncompressed size of what was being written)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        stat = os.statvfs(directory)
        free = stat.f_bavail * stat.f_frsize
    except OSError:
        free = None
    full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < needed_bytes)
    if full:
        where = f" ({free} bytes free in {directory})" if free is not None else ""
        return InputError(field, f"cannot write {path}: no space left on device{where}; nothing written")
    return InputError(field, f"cannot write {path}: {getattr(exc, 'strerror', None) or exc}; nothing written")


def write_netcdf(ds: xr.Dataset, path: str, compress: bool = True) -> None:
    """The plain write (NETCDF4, zlib level 4 on numeric variables); callers make it atomic."""
    encoding = {}
    if compress:
        for name, var in ds.data_vars.items():
            if var.dtype.kind in "fiu":
                encoding[name] = {"zlib": True, "complevel": 4}
    ds.to_netcdf(path, engine="netcdf4", format="NETCDF4", encoding=encoding)


def write_dataset_atomic(ds: xr.Dataset, path: str | os.PathLike, compress: bool = True,
                         field: str = "--out") -> None:
    """Write to a temporary file in the target directory, then rename: readers never see a partial file.
    A failed write (disk full, I/O error) removes the temporary file and raises InputError naming `path`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
        os.close(fd)
        write_netcdf(ds, tmp, compress)
        usual_permissions(tmp, 0o666)  # mkstemp creates 0600
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # netCDF4 raises RuntimeError('NetCDF: HDF error') for I/O failures
        _remove_quietly(tmp)
        raise write_failure(exc, path, field, int(ds.nbytes)) from None
    except BaseException:
        _remove_quietly(tmp)
        raise


def usual_permissions(path: str, mode: int) -> None:
    """Give a temporary file (0600) or folder (0700) the permissions the umask gives new ones."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def _remove_quietly(path) -> None:
    if path is not None and os.path.exists(path):
        try:
            os.unlink(path)
        except OSError:
            pass


def read_dataset(path: str | os.PathLike, field: str = "input") -> xr.Dataset:
    """Load a kernel-eft netCDF file fully into memory (and close it).  A missing, truncated or corrupt
    file (netCDF4 reports corrupt data only when it is read, as 'NetCDF: HDF error') is an InputError
    naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(field, f"no such file: {path}")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            return ds.load()
    except Exception as exc:  # netCDF4/HDF5 raise RuntimeError, OSError, ValueError, KeyError, ...
        reason = " ".join(str(getattr(exc, "strerror", None) or exc).split()) or type(exc).__name__
        raise InputError(field, f"cannot read {path}: {reason} (corrupt, truncated or not netCDF)") from None


def index_coords(P: int) -> dict:
    coords = {name: (name, np.arange(P), {"long_name": f"input index {name}", "units": "1"}) for name in "abcd"}
    return coords


def time_coords(times: np.ndarray, layers: np.ndarray | None) -> dict:
    coords = {"t": ("t", np.asarray(times, float), {"long_name": "depth time t = layer * T / L",
                                                      "units": "1", "standard_name": "depth_time"})}
    if layers is not None:
        coords["layer"] = ("t", np.asarray(layers, np.int64), {"long_name": "residual block index l",
                                                                 "units": "1"})
    return coords


_KERNEL = ("t", "a", "b")
_COV = ("t", "a", "b", "c", "d")

MC_VARIABLES = {
    # name: (dims, long_name)
    "G_mean": (_KERNEL, "Monte Carlo mean of the empirical kernel G = h h^T / n"),
    "S_mean": (_KERNEL, "Monte Carlo mean of the sigma-kernel S = phi(h) phi(h)^T / n"),
    "K0_discrete": (_KERNEL, "infinite-width discrete-layer mean kernel K0 <- K0 + dt f(K0)"),
    "K1": (_KERNEL, "1/n mean correction n (mean G - K0_discrete)"),
    "K1_source": (_KERNEL, "exact K1 source n sw2 (mean S - F(mean G))"),
    "V4": (_COV, "kernel covariance n Cov(G_ab, G_cd)"),
    "cov_GS": (_COV, "cross covariance n Cov(G_ab, S_cd)"),
    "cov_SS": (_COV, "sigma-kernel covariance n Cov(S_ab, S_cd)"),
}


def mc_dataset(params, summary: dict, batches, samples=None, extra_attrs: dict | None = None) -> xr.Dataset:
    """The Monte Carlo file: summary estimates with standard errors plus batch-resolved raw moments."""
    P = params.P
    p = n_pairs(P)
    pa, pb = pair_indices(P)
    coords = {**time_coords(params.times, params.layers), **index_coords(P)}
    coords["pair"] = ("pair", np.arange(p), {"long_name": "pair index m of (a <= b), row-major", "units": "1"})
    coords["pair2"] = ("pair2", np.arange(p), {"long_name": "second pair index", "units": "1"})
    coords["pair_a"] = ("pair", pa, {"long_name": "first input index of pair", "units": "1"})
    coords["pair_b"] = ("pair", pb, {"long_name": "second input index of pair", "units": "1"})
    coords["batch"] = ("batch", np.arange(len(batches)), {"long_name": "seed batch index", "units": "1"})
    data = {}
    for name, (dims, long_name) in MC_VARIABLES.items():
        for suffix in ("", "_se"):
            key = name + suffix
            if key not in summary:
                continue
            values = summary[key]
            if dims == _COV:
                values = pairs_to_four_index(values, P)
            desc = long_name if not suffix else f"standard error (delete-one-batch jackknife) of: {long_name}"
            data[key] = (dims, values, {"long_name": desc, "units": "1"})
    raw = "batch-resolved raw moment (pair coordinates) for merging and re-analysis: "
    data["batch_count"] = ("batch", batches.counts, {"long_name": "seeds in batch", "units": "1"})
    data["batch_mean_G"] = (("batch", "t", "pair"), batches.mean_G, {"long_name": raw + "mean of G", "units": "1"})
    data["batch_mean_S"] = (("batch", "t", "pair"), batches.mean_S, {"long_name": raw + "mean of S", "units": "1"})
    for xy in ("GG", "GS", "SS"):
        data[f"batch_m2_{xy}"] = (
            ("batch", "t", "pair", "pair2"),
            getattr(batches, f"m2_{xy}"),
            {"long_name": raw + f"centred co-moment sum of {xy[0]} and {xy[1]}", "units": "1"},
        )
    if samples is not None:
        G, S = samples
        coords["sample"] = ("sample", np.arange(G.shape[0]), {"long_name": "seed index (batch order)", "units": "1"})
        data["sample_G"] = (("sample",) + _KERNEL, G, {"long_name": "per-seed empirical kernel G", "units": "1"})
        data["sample_S"] = (("sample",) + _KERNEL, S, {"long_name": "per-seed sigma-kernel S", "units": "1"})
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
            **(extra_attrs or {}),
        },
    )
    return xr.Dataset(data, coords=coords, attrs=attrs)


MC_MATCHING_ATTRS = ("activation", "width", "depth", "time", "sw2", "sb2", "kin", "sampler", "record_every")


def mc_params_from_dataset(ds: xr.Dataset, **overrides):
    """SimulationParams of a Monte Carlo file (for re-analysis and merging)."""
    from kernel_eft.montecarlo import SimulationParams
    from kernel_eft.validation import parse_kin

    a = ds.attrs
    kw = dict(activation=str(a["activation"]), width=int(a["width"]), depth=int(a["depth"]), time=float(a["time"]),
              sw2=float(a["sw2"]), sb2=float(a["sb2"]), kin=parse_kin(str(a["kin"]), "kin"),
              samples=int(a["samples"]), seed=int(str(a["seed"]).split(",")[0]), sampler=str(a["sampler"]),
              record_every=int(a["record_every"]), batches=int(a["batches"]))
    kw.update(overrides)
    return SimulationParams(**kw)
