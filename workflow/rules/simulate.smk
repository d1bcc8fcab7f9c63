# Monte Carlo: one MPI job per grid point and width.
# Every stage writes its netCDF atomically (name.nc.XXXX.tmp, then rename); a job first removes
# the temporary files of an attempt that was killed.


rule simulate:
    output:
        MC_FILE,
    log:
        log_of(MC_NAME),
    benchmark:
        benchmark_of(MC_NAME)
    conda:
        CONDA_ENV
    # Ranks are cores: Snakemake caps threads at --cores, and mpiexec starts that many ranks.
    # BLAS: one thread per rank (oversubscribed OpenBLAS threads inflate the CPU time of jobs
    # that run side by side); the other rules pin BLAS to their declared threads.
    threads: MC["tasks"]
    resources:
        mpi="mpiexec",
        tasks=MC["tasks"],
        cpus_per_task=1,  # SLURM: one core per rank, whatever the default resources say
    params:
        network=network_args,
        seed=point_seed,
        samples=mc_samples,
        batches=MC["batches"],
        sampler=MC["sampler"],
        record_every=MC["record_every"],
        control_variates=MC["control_variates"],
        ranks=mpi_ranks,
    shell:
        "export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1; "
        "rm -f {output}.*.tmp; "
        "{resources.mpi} -n {params.ranks} python -m mpi4py -m kernel_eft simulate"
        " {params.network} --width {wildcards.width} --depth {wildcards.depth}"
        " --samples {params.samples} --seed {params.seed} --batches {params.batches}"
        " --sampler {params.sampler} --record-every {params.record_every}"
        " --control-variates {params.control_variates}"
        " --expect-ranks {params.ranks} --out {output} > {log} 2>&1"
