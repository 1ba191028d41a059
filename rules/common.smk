# Config validation, the one Paths object, the shared Runtime and the input functions.
# No rules here. Logic that is worth a test lives in the daydream package.
from pathlib import Path

from snakemake.utils import validate

from daydream import batches, reports, stale, steps

validate(
    config,
    schema=str(Path(workflow.basedir) / "config" / "schema" / "config.schema.yaml"),
)

steps.configure_logging()
RT = steps.Runtime(config)
PATHS = RT.paths
COHORTS_DIR = Path(
    config.get("cohorts_dir") or Path(workflow.basedir) / "config" / "cohorts"
)


wildcard_constraints:
    gen_id=r"[dev]_[0-9a-z]+",
    cohort_id=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    batch_id=r"[0-9]{4}_[0-9a-f]{10}",


def final_targets(wildcards):
    """The default target: every gens-store file and the reports of every active cohort.
    Gens files are targets themselves: Snakemake never remakes a missing intermediate
    file whose consumers are up to date."""
    targets = []
    for cohort_id in RT.cohort_ids:
        targets += cohort_final_targets(cohort_id)
    if all(steps.cohort_is_current(RT, COHORTS_DIR, c) for c in RT.cohort_ids):
        targets.append(PATHS.stale_generations_csv)
    return targets


def cohort_final_targets(cohort_id):
    """Snakemake 9 treats a checkpoint whose outputs exist as done when it plans, even if
    its inputs changed. So while a cohort's membership is out of date, the target is the
    membership itself (a plain file, remade by mtime); once the checkpoint has run,
    Snakemake re-evaluates this function and gets the documents."""
    if not steps.cohort_is_current(RT, COHORTS_DIR, cohort_id):
        return [PATHS.membership_csv(cohort_id), PATHS.manifest_json(cohort_id)]
    checkpoints.cohort_membership.get(cohort_id=cohort_id)
    reports_files = [
        PATHS.cohort_report(cohort_id, name) for name in reports.COHORT_REPORTS
    ]
    return steps.cohort_targets(RT, cohort_id) + reports_files


def get_cohort_inputs(wildcards):
    return steps.cohort_inputs(RT, COHORTS_DIR, wildcards.cohort_id)


def get_prompt_inputs(stage):
    """What a prompt is rendered from (template, concept texts or the parent's parsed text),
    all marked ancient: only a missing output makes a response job, so a later edit never
    re-renders a prompt or re-requests a paid reply; it shows in the stale report instead.
    """

    def inputs(wildcards):
        files = batches.response_inputs(RT, stage, wildcards.gen_id)
        return {name: ancient(value) for name, value in files.items()}

    return inputs


def get_reply_batch_inputs(stage):
    """Cluster runs: the prompt inputs of a batch's documents, ancient as for one response."""

    def inputs(wildcards):
        files = batches.reply_batch_inputs(RT, stage, wildcards.batch_id)
        return {name: ancient(value) for name, value in files.items()}

    return inputs


def get_stale_report_inputs(wildcards):
    for cohort_id in RT.cohort_ids:
        checkpoints.cohort_membership.get(cohort_id=cohort_id)
    return stale.stale_report_inputs(RT)


def get_cohort_report_inputs(wildcards):
    checkpoints.cohort_membership.get(cohort_id=wildcards.cohort_id)
    return reports.cohort_report_inputs(PATHS, RT.membership, wildcards.cohort_id)
