# kernel-eft study: Monte Carlo -> EFT theory -> diagnostics -> figures.
#
#   snakemake --profile profiles/default                     # workstation (all cores)
#   snakemake --profile profiles/slurm                       # SLURM cluster
#   snakemake --profile profiles/slurm --configfile config/paper.yaml
#   snakemake --report report.html                           # browsable report
#
# The study is config/config.yaml (schema: workflow/schemas/config.schema.yaml).


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/theory.smk"
include: "workflow/rules/diagnose.smk"
include: "workflow/rules/figures.smk"


report: "workflow/report/workflow.rst"


# Cheap rules run on the submitting host, not as cluster jobs.
localrules:
    all,
    diagnose,
    figures,


rule all:
    default_target: True
    input:
        all_results(),
        "results/figures",
