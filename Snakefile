# daydream: concepts -> drafts -> essays -> LLM-judged evaluations -> reports.
# The table of contents: every rule lives in one of the files included below.
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


configfile: str(Path(workflow.basedir) / "config" / "config.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/cohort.smk"
include: "rules/gens.smk"
include: "rules/reports.smk"
include: "rules/cross_experiment.smk"


# Under a cluster executor (profiles/slurm) only the batches of model calls (gen_replies) are
# submitted; everything else is cheap and runs in the main Snakemake process.
localrules:
    cohort_membership,
    gen_document,
    provider_batch,
    cohort_reports,
    cohort_report_figures,
    stale_generations,
    cross_experiment_tables,


onsuccess:
    provider_batches.log_waiting(RT)


onerror:
    provider_batches.log_waiting(RT)
    stale.write_stale_report(RT)
    reports.write_reports_despite_failures(PATHS, RT.cohort_ids, RT.experiment)


rule all:
    default_target: True
    input:
        final_targets,
