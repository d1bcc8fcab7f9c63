# kernel-eft study: Monte Carlo -> EFT theory -> diagnostics -> figures.
#
#   snakemake --cores all                                    # workstation (profiles/default)
#   snakemake --workflow-profile profiles/slurm              # SLURM cluster
#   snakemake --workflow-profile profiles/slurm --configfile config/paper.yaml
#   snakemake --report results/default/report.html           # browsable report
#
# A study is one config file: config/config.yaml (the study "default") unless --configfile names
# another, which then stands alone (keys it omits take their defaults, not config.yaml's). Its
# results go to results/<study>/ (config, grid, tags, seeds and paths: kernel_eft.study; studies
# and their cost: config/README.md; kernel-eft study plan|status CONFIG).


if not workflow.overwrite_configfiles:

    configfile: f"{workflow.basedir}/config/config.yaml"


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
        STUDY_FIGURES_DIR,
        SUMMARY_FILES,


onstart:
    refuse_workstation_rank_cap()


onsuccess:
    print_summary()
