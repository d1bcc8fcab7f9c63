# Diagnostics: one file per grid point, from all its widths and theory solutions.


rule diagnose:
    input:
        mc=mc_files_of_point,
        theory=theory_files_of_point,
    output:
        "results/{study}/diagnostics/{activation}/L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}.nc",
    log:
        "logs/{study}/diagnostics/{activation}/L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}.log",
    benchmark:
        "results/{study}/benchmarks/diagnostics/{activation}/L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    params:
        threshold=config["diagnostics"]["threshold"],
        tag=point_tag,
    shell:
        "export OMP_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; "
        "rm -f {output}.*.tmp; "
        "python -m kernel_eft diagnose --mc {input.mc} --theory {input.theory}"
        " --threshold {params.threshold} --tag {params.tag} --out {output} > {log} 2>&1"
