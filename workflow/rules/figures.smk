# Figures and the summary table: the whole grid at once (collated on parameter coordinates).


rule figures:
    input:
        all_diagnostics(),
    output:
        report(
            directory("results/figures"),
            patterns=["{name}.png"],
            labels={"figure": "{name}"},
            caption="../report/figures.rst",
            category="Figures",
        ),
    log:
        "logs/figures.log",
    benchmark:
        "results/benchmarks/figures.tsv"
    conda:
        CONDA_ENV
    shell:
        "python -m kernel_eft figures --diagnostics {input} --outdir {output} > {log} 2>&1"
