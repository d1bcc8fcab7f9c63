# Diagnostics: one file per grid point, from all its widths and theory solutions.


rule diagnose:
    input:
        mc=mc_files_of_point,
        theory=theory_files_of_point,
    output:
        DIAG_FILE,
    log:
        log_of(DIAG_NAME),
    benchmark:
        benchmark_of(DIAG_NAME)
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
