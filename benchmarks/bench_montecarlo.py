"""Monte Carlo performance, measured in one run so that ratios are meaningful on a shared machine.

    python benchmarks/bench_montecarlo.py [--quick] [--json out.json]

1. block sampler vs numpy alone drawing the same standard normals (n P per layer per seed): the
   physical limit of the block law.  Target: ratio <= 2.
2. block vs weights sampler per (seed, layer) at the same width.  Expect well over 100x.
3. MPI: throughput of 2 ranks vs 1 rank (`mpiexec -n R python -m mpi4py -m kernel_eft simulate`).
4. peak memory (max RSS) for 1x and 4x the seeds: streaming keeps it flat.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from kernel_eft.simulate.params import SimulationParams  # noqa: E402
from kernel_eft.simulate.samplers import batch_rng, simulate_batch  # noqa: E402

KIN = np.array([[1.0, 0.6], [0.6, 1.0]])


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def normals_only(params: SimulationParams):
    """Draw exactly the normals the block sampler draws, in the same chunk shapes, and nothing else."""

    def run():
        for b, size in enumerate(params.batch_sizes()):
            rng = batch_rng(params.seed, b)
            chunk = params.chunk_size(int(size))
            done = 0
            while done < size:
                c = min(chunk, int(size) - done)
                z = np.empty((c, params.P, params.width))
                for _ in range(params.depth + 1):
                    rng.standard_normal(out=z)
                done += c

    return run


def block_sampler(params: SimulationParams):
    def run():
        for b in range(params.batches):
            simulate_batch(params, b)

    return run


def bench_block_vs_normals(width, depth, samples, repeats, activation="relu"):
    params = SimulationParams(activation, width, depth, 4.0, 1.0, 0.0, KIN, samples, 1, "block", depth, 32)
    t_norm = t_block = None
    # Interleave the two so that load from other processes hits both alike.
    for _ in range(repeats):
        tn = best_of(normals_only(params), 1)
        tb = best_of(block_sampler(params), 1)
        t_norm = tn if t_norm is None else min(t_norm, tn)
        t_block = tb if t_block is None else min(t_block, tb)
    return {"width": width, "depth": depth, "samples": samples, "activation": activation,
            "normals_s": t_norm, "block_s": t_block, "ratio_block_over_normals": t_block / t_norm}


def bench_block_vs_weights(width, depth, samples_block, samples_weights, repeats):
    pb = SimulationParams("relu", width, depth, 4.0, 1.0, 0.0, KIN, samples_block, 1, "block", depth, 2)
    pw = SimulationParams("relu", width, depth, 4.0, 1.0, 0.0, KIN, samples_weights, 1, "weights", depth, 2)
    tb = best_of(block_sampler(pb), repeats) / samples_block
    tw = best_of(block_sampler(pw), repeats) / samples_weights
    return {"width": width, "depth": depth, "block_s_per_seed": tb, "weights_s_per_seed": tw,
            "ratio_weights_over_block": tw / tb}


def run_cli(ranks, args, out):
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", "mpi4py", "-m", "kernel_eft", "simulate", *args,
           "--no-progress", "--out", out]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    subprocess.run(cmd, check=True, env=env)
    import xarray as xr

    with xr.open_dataset(out) as ds:
        return float(ds.attrs["wall_seconds"])


def bench_mpi(width, depth, samples, repeats):
    args = ["--activation", "relu", "--width", str(width), "--depth", str(depth), "--time", "4", "--kin",
            "1,0.6;0.6,1", "--samples", str(samples), "--batches", "32", "--record-every", str(depth)]
    with tempfile.TemporaryDirectory() as tmp:
        t1 = t2 = None
        for _ in range(repeats):
            a = run_cli(1, args, f"{tmp}/r1.nc")
            b = run_cli(2, args, f"{tmp}/r2.nc")
            t1 = a if t1 is None else min(t1, a)
            t2 = b if t2 is None else min(t2, b)
    return {"width": width, "depth": depth, "samples": samples, "one_rank_s": t1, "two_ranks_s": t2,
            "speedup_two_over_one": t1 / t2}


def peak_rss_mb(samples, width, depth):
    code = (
        "import sys, resource; sys.path.insert(0, %r);"
        "import numpy as np; from kernel_eft.simulate.params import SimulationParams; "
        "from kernel_eft.simulate.samplers import simulate;"
        "p = SimulationParams('relu', %d, %d, 4.0, 1.0, 0.0, np.array([[1,.6],[.6,1]]), %d, 1, 'block', %d, 32);"
        "simulate(p); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    ) % (str(ROOT / "src"), width, depth, samples, depth)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, not for quoting)")
    ap.add_argument("--json", help="also write the results as JSON")
    args = ap.parse_args()
    q = args.quick
    results = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "numpy": np.__version__}}

    r = bench_block_vs_normals(1024, 16 if q else 64, 200 if q else 2000, 2 if q else 3)
    results["block_vs_normals"] = r
    print(f"[1] block sampler vs numpy normals (n={r['width']}, P=2, L={r['depth']}, {r['samples']} seeds): "
          f"normals {r['normals_s']:.3f} s, block {r['block_s']:.3f} s, ratio {r['ratio_block_over_normals']:.2f}"
          " (target <= 2)", flush=True)
    r2 = bench_block_vs_normals(1024, 16 if q else 64, 200 if q else 1000, 2, activation="tanh")
    results["block_vs_normals_tanh"] = r2
    print(f"    same with tanh ({r2['samples']} seeds): ratio {r2['ratio_block_over_normals']:.2f}", flush=True)

    r = bench_block_vs_weights(1024, 8, 200 if q else 1000, 2 if q else 4, 1 if q else 2)
    results["block_vs_weights"] = r
    print(f"[2] weights vs block sampler (n={r['width']}, L={r['depth']}): block {r['block_s_per_seed'] * 1e3:.3f} "
          f"ms/seed, weights {r['weights_s_per_seed'] * 1e3:.1f} ms/seed, ratio {r['ratio_weights_over_block']:.0f}x",
          flush=True)

    r = bench_mpi(1024, 16 if q else 64, 400 if q else 2000, 1 if q else 2)
    results["mpi"] = r
    print(f"[3] MPI (n={r['width']}, L={r['depth']}, {r['samples']} seeds): 1 rank {r['one_rank_s']:.2f} s, "
          f"2 ranks {r['two_ranks_s']:.2f} s, speedup {r['speedup_two_over_one']:.2f} (target >= 1.8)", flush=True)

    base = 500 if q else 2000
    m1 = peak_rss_mb(base, 1024, 16)
    m4 = peak_rss_mb(4 * base, 1024, 16)
    results["memory"] = {"seeds": [base, 4 * base], "peak_rss_mb": [m1, m4]}
    print(f"[4] peak RSS: {base} seeds {m1:.0f} MB, {4 * base} seeds {m4:.0f} MB", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
