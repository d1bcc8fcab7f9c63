# Monte Carlo: one MPI job per grid point and width.
# Every stage writes its netCDF atomically (name.nc.XXXX.tmp, then rename); a job first removes
# the temporary files of an attempt that was killed.


rule simulate:
    output:
        "results/mc/{activation}/w{width}_L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}.nc",
    log:
        "logs/mc/{activation}/w{width}_L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}.log",
    benchmark:
        "results/benchmarks/mc/{activation}/w{width}_L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}.tsv"
    conda:
        CONDA_ENV
    # Ranks are cores: --cores N never runs more than N ranks at once.
    threads: MC["tasks"]
    resources:
        mpi="mpiexec",
        tasks=MC["tasks"],
        cpus_per_task=1,  # SLURM: one core per rank, whatever the default resources say
    params:
        network=network_args,
        seed=point_seed,
        samples=MC["samples"],
        batches=MC["batches"],
        sampler=MC["sampler"],
        record_every=MC["record_every"],
    shell:
        "rm -f {output}.*.tmp; "
        "{resources.mpi} -n {resources.tasks} python -m mpi4py -m kernel_eft simulate"
        " {params.network} --width {wildcards.width} --depth {wildcards.depth}"
        " --samples {params.samples} --seed {params.seed} --batches {params.batches}"
        " --sampler {params.sampler} --record-every {params.record_every}"
        " --expect-ranks {resources.tasks} --no-progress --out {output} > {log} 2>&1"
