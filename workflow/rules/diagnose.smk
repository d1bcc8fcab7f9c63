# Diagnostics: one file per grid point, from all its widths and theory solutions.


rule diagnose:
    input:
        mc=mc_files_of_point,
        theory=theory_files_of_point,
    output:
        "results/diagnostics/{activation}/L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}.nc",
    log:
        "logs/diagnostics/{activation}/L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}.log",
    benchmark:
        "results/benchmarks/diagnostics/{activation}/L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}.tsv"
    conda:
        CONDA_ENV
    params:
        threshold=config["diagnostics"]["threshold"],
    shell:
        "rm -f {output}.*.tmp; "
        "python -m kernel_eft diagnose --mc {input.mc} --theory {input.theory}"
        " --threshold {params.threshold} --out {output} > {log} 2>&1"
