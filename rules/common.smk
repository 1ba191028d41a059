# Config validation, the one Paths object, the shared Runtime and the input functions.
# No rules here. Logic that is worth a test lives in the daydream package.
from pathlib import Path

from snakemake.utils import validate

from daydream import reports, steps
from daydream.paths import Paths


validate(config, schema=str(Path(workflow.basedir) / "config" / "schema" / "config.schema.yaml"))

RT = steps.Runtime(config)
PATHS = RT.paths
COHORTS_DIR = Path(config.get("cohorts_dir") or Path(workflow.basedir) / "config" / "cohorts")


wildcard_constraints:
    gen_id=r"[dev]_[0-9a-z]+",
    cohort_id=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def final_targets(wildcards):
    """The default target: every gens-store file and the reports of every active cohort.
    Gens files are targets themselves: Snakemake never remakes a missing intermediate
    file whose consumers are up to date."""
    targets = []
    for cohort_id in RT.cohort_ids:
        checkpoints.cohort_membership.get(cohort_id=cohort_id)
        targets += steps.cohort_targets(RT, cohort_id)
        targets += [PATHS.cohort_report(cohort_id, name) for name in reports.COHORT_REPORTS]
    return targets


def get_cohort_inputs(wildcards):
    return steps.cohort_inputs(RT, COHORTS_DIR, wildcards.cohort_id)


def get_prompt_inputs(stage):
    def inputs(wildcards):
        return steps.prompt_inputs(RT, stage, wildcards.gen_id)

    return inputs


def get_response_inputs(stage):
    """The prompt, marked ancient: a re-rendered prompt never re-requests a paid reply."""

    def inputs(wildcards):
        return {"prompt": ancient(PATHS.prompt_path(stage, wildcards.gen_id))}

    return inputs


def get_cohort_report_inputs(wildcards):
    checkpoints.cohort_membership.get(cohort_id=wildcards.cohort_id)
    return reports.cohort_report_inputs(PATHS, RT.membership, wildcards.cohort_id)
