# Figures: one job per grid point (its four figures, in parallel across cores and cluster jobs), then
# one job for the study (the validity map, the collapse figure and the summary table, collated on
# parameter coordinates). Each renders into a staging folder (NAME.XXXX.tmp) and moves everything in
# at the end; a job first removes the staging folder of an attempt that was killed.


rule figures_point:
    input:
        DIAG_FILE,
    output:
        figures=report(
            directory(POINT_FIGURES_DIR),
            patterns=["{name}.png"],
            labels={"point": POINT_TAG, "figure": "{name}"},
            caption="../report/figures.rst",
            category="Figures",
        ),
    log:
        POINT_FIGURES_LOG,
    benchmark:
        POINT_FIGURES_BENCHMARK
    conda:
        CONDA_ENV
    threads: 1
    shell:
        "export OMP_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; "
        "rm -rf {output.figures}.*.tmp; "
        "python -m kernel_eft figures --only point --diagnostics {input} --outdir {output.figures}"
        " > {log} 2>&1"


rule figures:
    input:
        all_diagnostics,
    output:
        figures=report(
            directory(STUDY_FIGURES_DIR_TEMPLATE),
            patterns=["{name}.png"],
            labels={"point": "study", "figure": "{name}"},
            caption="../report/figures.rst",
            category="Figures",
        ),
        table=report(
            SUMMARY_TEMPLATE.replace("{ext}", "html"),
            labels={"table": "summary"},
            caption="../report/summary.rst",
            category="Summary",
        ),
        csv=SUMMARY_TEMPLATE.replace("{ext}", "csv"),
        netcdf=SUMMARY_TEMPLATE.replace("{ext}", "nc"),
    log:
        FIGURES_LOG,
    benchmark:
        FIGURES_BENCHMARK
    conda:
        CONDA_ENV
    threads: 1
    params:
        summary_dir=lambda wildcards, output: os.path.dirname(output.csv),
    shell:
        "export OMP_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; "
        "rm -rf {output.figures}.*.tmp; "
        "python -m kernel_eft figures --only study --diagnostics {input} --outdir {output.figures}"
        " --summary-dir {params.summary_dir} > {log} 2>&1"
