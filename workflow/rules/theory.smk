# EFT theory: once per grid point and closure, without the width (the theory is width-free).


rule theory_discrete:
    output:
        "results/theory/{activation}/{closure}_L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}.nc",
    log:
        "logs/theory/{activation}/{closure}_L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}.log",
    benchmark:
        "results/benchmarks/theory/{activation}/{closure}_L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}.tsv"
    wildcard_constraints:
        closure="|".join(DISCRETE_CLOSURES),
    conda:
        CONDA_ENV
    params:
        network=network_args,
    shell:
        "rm -f {output}.*.tmp; "
        "python -m kernel_eft theory {params.network} --closure {wildcards.closure}"
        " --depth {wildcards.depth} --out {output} > {log} 2>&1"


rule theory_continuous:
    output:
        "results/theory/{activation}/{closure}_continuous_T{time}_sw{sw2}_sb{sb2}_{geom}.nc",
    log:
        "logs/theory/{activation}/{closure}_continuous_T{time}_sw{sw2}_sb{sb2}_{geom}.log",
    benchmark:
        "results/benchmarks/theory/{activation}/{closure}_continuous_T{time}_sw{sw2}_sb{sb2}_{geom}.tsv"
    conda:
        CONDA_ENV
    params:
        network=network_args,
        points=THEORY["points"],
    shell:
        "rm -f {output}.*.tmp; "
        "python -m kernel_eft theory {params.network} --closure {wildcards.closure}"
        " --points {params.points} --out {output} > {log} 2>&1"
