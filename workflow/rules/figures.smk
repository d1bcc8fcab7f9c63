# Figures and the summary table of the study: the whole grid at once (collated on parameter
# coordinates). figures renders into a staging folder (figures.XXXX.tmp) and moves everything in
# at the end; a job first removes the staging folder of an attempt that was killed.


rule figures:
    input:
        all_diagnostics,
    output:
        figures=report(
            directory(FIGURES_DIR_TEMPLATE),
            patterns=["{name}.png"],
            labels={"figure": "{name}"},
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
        "python -m kernel_eft figures --diagnostics {input} --outdir {output.figures}"
        " --summary-dir {params.summary_dir} > {log} 2>&1"
