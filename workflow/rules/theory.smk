# EFT theory: once per grid point and closure, without the width (the theory is width-free).
# One thread each; priority starts the theory jobs first, so that they
# run beside the Monte Carlo jobs instead of alone at the end.


rule theory_discrete:
    output:
        "results/{study}/theory/{activation}/{closure}_L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}.nc",
    log:
        "logs/{study}/theory/{activation}/{closure}_L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}.log",
    benchmark:
        "results/{study}/benchmarks/theory/{activation}/{closure}_L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}.tsv"
    wildcard_constraints:
        closure="|".join(DISCRETE_CLOSURES),
    priority: 1
    conda:
        CONDA_ENV
    threads: 1
    params:
        network=network_args,
    shell:
        "export OMP_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; "
        "rm -f {output}.*.tmp; "
        "python -m kernel_eft theory {params.network} --closure {wildcards.closure}"
        " --depth {wildcards.depth} --out {output} > {log} 2>&1"


rule theory_continuous:
    output:
        "results/{study}/theory/{activation}/{closure}_continuous_T{time}_sw{sw2}_sb{sb2}_{geom}.nc",
    log:
        "logs/{study}/theory/{activation}/{closure}_continuous_T{time}_sw{sw2}_sb{sb2}_{geom}.log",
    benchmark:
        "results/{study}/benchmarks/theory/{activation}/{closure}_continuous_T{time}_sw{sw2}_sb{sb2}_{geom}.tsv"
    priority: 2
    conda:
        CONDA_ENV
    threads: 1
    params:
        network=network_args,
        points=lambda wildcards: THEORY[
            "exact_points" if wildcards.closure == "exact" else "points"
        ],
    shell:
        "export OMP_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; "
        "rm -f {output}.*.tmp; "
        "python -m kernel_eft theory {params.network} --closure {wildcards.closure}"
        " --points {params.points} --out {output} > {log} 2>&1"
