# kernel-eft study: Monte Carlo -> EFT theory -> diagnostics -> figures.
#
#   snakemake --cores all                                    # workstation (profiles/default)
#   snakemake --workflow-profile profiles/slurm              # SLURM cluster
#   snakemake --workflow-profile profiles/slurm --configfile config/paper.yaml
#   snakemake --report report.html                           # browsable report
#
# The study is config/config.yaml (schema: workflow/schemas/config.schema.yaml; studies and
# their cost: config/README.md).


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


onstart:
    refuse_workstation_rank_cap()
