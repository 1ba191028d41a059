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
include: "rules/plan.smk"


# Under a cluster executor (profiles/slurm) only the batches of model calls (gen_replies) are
# submitted; everything else is cheap and runs in the main Snakemake process.
localrules:
    cohort_inputs_fingerprint,
    cohort_membership,
    gen_document,
    provider_batch,
    cohort_reports,
    cohort_report_figures,
    cohort_site,
    stale_shard,
    stale_generations,
    documents_due,
    cross_experiment_tables,
    plan,


# Real runs only (not -n), before any job; Snakemake keeps one onstart, so this is the one.
# First one writer per data root (daydream/writer_lock.py): Snakemake's own lock is per working
# directory, so a second run on this data_root from another clone or `-d` is refused here.
# Slurm batch jobs are started with --no-hooks and never need it. Then the budget check before
# the first call and the progress line (daydream.budget, daydream.progress).
onstart:
    if workflow.is_main_process:
        writer_lock.check_can_start(
            PATHS.data_root,
            cores=workflow.resource_settings.cores,
            local_exec=workflow.local_exec,
        )
        writer_lock.acquire(PATHS.data_root, mode=RT.config["writer_lock"])
    run_started()


# Snakemake keeps one block of each hook: this is the one onsuccess and the one onerror.
onsuccess:
    batch_commands.log_waiting(RT)
    run_finished(True)


onerror:
    batch_commands.log_waiting(RT)
    stale.write_reports_after_failure(RT)
    run_finished(False)


rule all:
    default_target: True
    input:
        final_targets,
