# EFT theory: once per grid point and closure, without the width (the theory is width-free).
# One thread each; priority starts the theory jobs first, so that they
# run beside the Monte Carlo jobs instead of alone at the end.


rule theory_discrete:
    output:
        THEORY_DISCRETE_FILE,
    log:
        log_of(THEORY_DISCRETE_NAME),
    benchmark:
        benchmark_of(THEORY_DISCRETE_NAME)
    wildcard_constraints:
        closure="|".join(DISCRETE_CLOSURES),
    priority: 1
    conda:
        CONDA_ENV
    threads: 1
    params:
        network=theory_args,
    shell:
        "export OMP_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; "
        "rm -f {output}.*.tmp; "
        "python -m kernel_eft theory {params.network} --closure {wildcards.closure}"
        " --depth {wildcards.depth} --out {output} > {log} 2>&1"


rule theory_continuous:
    output:
        THEORY_CONTINUOUS_FILE,
    log:
        log_of(THEORY_CONTINUOUS_NAME),
    benchmark:
        benchmark_of(THEORY_CONTINUOUS_NAME)
    priority: 2
    conda:
        CONDA_ENV
    threads: 1
    params:
        network=theory_args,
        points=continuous_points,
    shell:
        "export OMP_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; "
        "rm -f {output}.*.tmp; "
        "python -m kernel_eft theory {params.network} --closure {wildcards.closure}"
        " --points {params.points} --out {output} > {log} 2>&1"
