"""The figure stage of a study against its longest Monte Carlo job, both measured in one run (issue 19).

The workflow renders each grid point's four figures in its own one-core job (`kernel-eft figures --only
point`) and the study's map, collapse figure and summary in one more (`--only study`), which depends only on
the diagnostics and so runs beside the point jobs.  On c cores the figure stage therefore ends after about
max(study job, (points x point job + study job) / c); the longest Monte Carlo job, run on min(tasks, c) ranks,
after its CPU time / min(tasks, c) (perfect rank scaling: the most favourable case for the Monte Carlo, so
the comparison is conservative).

Measured here, all in one process tree and one run (the machine is shared; ratios measured together hold
where absolute times do not):
- the longest Monte Carlo job of CONFIG (by the cost model of kernel_eft.study.jobs), run on one rank with
  two and with three of its own seed batches (the job's networks per batch: the per-network cost grows with
  the batch's memory) and extrapolated linearly in the samples (start-up + samples x per-network cost, the
  form of the cost model) to the job's own samples;
- the point figures job of --points diagnostics files of DIAGNOSTICS_DIR (spread over the sorted list);
- the study figures job over every point of the grid.  Where DIAGNOSTICS_DIR holds only some of the study's
  points (each point's diagnostics cost a minute or so of theory and Monte Carlo to make), the study job runs
  over one diagnostics file per grid point made from them: a file of the same depth, relabelled to the point
  (activation, T, sb2, sw2, K_in, tag) with its depth times rescaled to the point's T.  Its numbers are then
  not the point's, but the study job's work (one row of the summary, one cell of the map per closure and
  quantity, one point of the collapse figure per point) is the same.  (Extrapolating the job's time linearly
  from 8 and 16 points said 67 CPU-s for the paper's 192; the relabelled grid measures 44.)

    PYTHONPATH=src python benchmarks/figure_stage.py config/paper.yaml \\
        results/paper_reduced/diagnostics [--points 8] [--mc-batches 2 3]

DIAGNOSTICS_DIR: the diagnostics of the same grid at any sample count (figure cost does not depend on it):
`snakemake --cores N --configfile config/paper_reduced.yaml` writes results/paper_reduced/diagnostics.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "src"))

from kernel_eft.study.grid import Study  # noqa: E402
from kernel_eft.study.jobs import jobs  # noqa: E402


def cpu_seconds(cmd: list[str]) -> float:
    """User + system CPU seconds of one child process run to completion (BLAS pinned to one thread)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.path.join(ROOT, "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f"{' '.join(cmd[:6])} ... failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def longest_mc_job(study: Study):
    return max((job for job in jobs(study) if job.stage == "simulate"), key=lambda job: job.seconds)


def mc_cpu(study: Study, job, batch_counts, workdir: str) -> dict:
    point = job.point
    mc = study.monte_carlo
    per_batch = job.samples // mc["batches"]
    sample_counts = [per_batch * batches for batches in batch_counts]
    measured = []
    for samples, batches in zip(sample_counts, batch_counts):
        out = os.path.join(workdir, f"mc_{samples}.nc")
        cmd = [sys.executable, "-m", "kernel_eft", "simulate", "--activation", point.activation,
               "--time", str(point.time), "--sw2", str(point.sw2), "--sb2", str(point.sb2),
               "--kin", point.geometry.kin, "--width", str(job.width), "--depth", str(point.depth),
               "--samples", str(samples), "--seed", str(study.seed(point, job.width)),
               "--batches", str(batches), "--sampler", mc["sampler"],
               "--record-every", str(mc["record_every"]), "--control-variates", mc["control_variates"],
               "--out", out]
        measured.append(cpu_seconds(cmd))
        os.remove(out)
    (n1, n2), (c1, c2) = sample_counts, measured
    per_network = (c2 - c1) / (n2 - n1)
    return {"tag": point.tag, "width": job.width, "samples": job.samples, "tasks": mc["tasks"],
            "networks_per_batch": per_batch,
            "measured": dict(zip(map(str, sample_counts), measured)), "per_network_s": per_network,
            "cpu_s": c1 + per_network * (job.samples - n1), "model_cpu_s": job.seconds}


def relabelled_grid(study: Study, files: list[str], workdir: str) -> list[str]:
    """One diagnostics file per grid point, from those of `files` with the point's depth (module docstring)."""
    import xarray as xr

    real = [xr.load_dataset(path) for path in files]
    out = []
    for k, point in enumerate(study.points):
        same_depth = [ds for ds in real if int(ds.attrs["depth"]) == point.depth]
        if not same_depth:
            sys.exit(f"no diagnostics of depth {point.depth} among {len(files)} files: give at least one per depth")
        ds = same_depth[k % len(same_depth)].copy()
        scale = point.time / float(ds.attrs["time"])
        ds = ds.assign_coords({name: ds[name].values * scale for name in ("t", "t_left") if name in ds.coords})
        kin = point.geometry.kin
        ds.attrs.update(activation=point.activation, time=float(point.time), sw2=float(point.sw2),
                        sb2=float(point.sb2), kin=kin, point=point.tag)
        if "rho" in ds.attrs and len(kin.split(";")) == 2:
            ds.attrs["rho"] = float(kin.split(";")[0].split(",")[1])
        path = os.path.join(workdir, "grid", f"{point.tag}.nc")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        ds.to_netcdf(path)
        out.append(path)
    return out


def figures_cpu(files: list[str], only: str, workdir: str) -> float:
    outdir = os.path.join(workdir, f"figures_{only}_{len(os.listdir(workdir))}")
    cmd = [sys.executable, "-m", "kernel_eft", "figures", "--only", only, "--diagnostics", *files,
           "--outdir", outdir]
    if only == "study":
        cmd += ["--summary-dir", outdir]
    return cpu_seconds(cmd)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("diagnostics_dir")
    parser.add_argument("--points", type=int, default=8, help="point figures jobs to time (default 8)")
    parser.add_argument("--mc-batches", type=int, nargs=2, default=(2, 3),
                        help="the Monte Carlo job is timed with this many of its seed batches (default 2 3; at least 2, for the jackknife)")
    parser.add_argument("--json", help="also write the measurements here")
    args = parser.parse_args(argv)

    study = Study.from_file(args.config, os.path.join(ROOT, "config", "config.yaml"))
    files = sorted(glob.glob(os.path.join(args.diagnostics_dir, "**", "*.nc"), recursive=True))
    if not files or len(files) > len(study.points):
        sys.exit(f"{args.diagnostics_dir}: {len(files)} diagnostics files, the study has {len(study.points)} points")
    step = max(1, len(files) // args.points)
    timed = files[::step][:args.points]
    with tempfile.TemporaryDirectory() as workdir:
        job = longest_mc_job(study)
        print(f"longest Monte Carlo job: {job.point.tag} n = {job.width}, {job.samples} networks ...", flush=True)
        mc = mc_cpu(study, job, args.mc_batches, workdir)
        print(f"  {mc['cpu_s']:.0f} CPU-s extrapolated from {mc['measured']} "
              f"(cost model {mc['model_cpu_s']:.0f})", flush=True)
        point_s = []
        for path in timed:
            point_s.append(figures_cpu([path], "point", workdir))
            print(f"  point figures {os.path.relpath(path, args.diagnostics_dir)}: {point_s[-1]:.2f} CPU-s", flush=True)
        points = len(study.points)
        grid_files = files if len(files) == points else relabelled_grid(study, files, workdir)
        study_s = figures_cpu(grid_files, "study", workdir)
        how = "" if len(files) == points else f", {len(files)} diagnostics relabelled to the grid's points"
        print(f"  study figures ({points} points{how}): {study_s:.1f} CPU-s", flush=True)
    mean_point = sum(point_s) / len(point_s)
    stage_cpu = points * mean_point + study_s
    print(f"\nfigure stage: {points} x {mean_point:.2f} (range {min(point_s):.2f}-{max(point_s):.2f}) + "
          f"{study_s:.1f} = {stage_cpu:.0f} CPU-s; longest Monte Carlo job {mc['cpu_s']:.0f} CPU-s "
          f"on min({mc['tasks']}, cores) ranks")
    print(f"{'cores':>6} {'figure stage':>13} {'Monte Carlo job':>16} {'ratio':>6}")
    rows = []
    for cores in (1, 2, 4, 8, 16, 24, 32, 64):
        stage = max(study_s, stage_cpu / cores)
        longest = mc["cpu_s"] / min(mc["tasks"], cores)
        rows.append({"cores": cores, "figure_stage_s": stage, "mc_job_s": longest})
        print(f"{cores:>6} {stage:>12.0f}s {longest:>15.0f}s {stage / longest:>6.2f}")
    fits = [cores for cores in range(1, 1025)
            if max(study_s, stage_cpu / cores) <= mc["cpu_s"] / min(mc["tasks"], cores)]
    print(f"the figure stage is no longer than the Monte Carlo job from {fits[0]} cores on" if fits else
          "the figure stage is longer than the Monte Carlo job on any number of cores (the study job alone is)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"mc": mc, "point_figures_s": point_s, "study_figures_s": study_s,
                       "study_figures_relabelled": len(files) < points, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
