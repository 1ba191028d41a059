# The shared Runtime (config validated against config/schema/config.schema.yaml, defaults
# filled in), the one Paths object, wildcard constraints from the stage registry and the input
# functions. No rules here; the logic behind each function lives in daydream.targets.
from daydream import (
    batches,
    budget,
    checkpoint_inputs,
    cohorts,
    documents,
    engine,
    ids,
    plan,
    progress,
    reports,
    settings,
    site,
    stages,
    stale,
    targets,
    writer_lock,
)
from daydream.batch import commands as batch_commands
from daydream.batch import gate as batch_gate
from daydream.batch import rounds as batch_rounds
from daydream.runtime import Runtime, drop_unbinding_rate_limit, leave_heap

# Terminal output (daydream's log lines included) is the logger plugin's, `logger: [daydream]`
# in the profile (daydream.terminal); parsing builds the Runtime, and adds one filter below.
# The data root: --config data_root > $DAYDREAM_DATA_ROOT > config.yaml; <data_root>/daydream.yaml
# sits between config.yaml and --config (daydream.settings.resolved_config).
RT = Runtime(
    settings.resolved_config(config, workflow.config_settings.overwrite_config)
)
PATHS = RT.paths
# Snakemake 9 calls no hook when a run has nothing to do, and a logger plugin never sees the
# Runtime: this filter on its logger says so, and where the results are.
progress.watch_nothing_to_do(RT, lambda: workflow.dryrun)
# What is alive now (Snakemake, daydream's modules, the Runtime) lives until the process ends:
# the garbage collector's full collections stop scanning it (daydream.runtime.settle_heap).
# In this process (not a cluster job's), none runs while Snakemake builds the DAG, which lives
# until the end too: `onstart` or the first document job settles the heap again and ends the hold
# (a dry run or a rerun with nothing to do ends first; daydream.runtime.hold_full_collections).
# The cohort checkpoint holds them again while the DAG of its documents is built (rules/cohort.smk).
RT.settle_heap()
if workflow.is_main_process:
    RT.hold_full_collections()


wildcard_constraints:
    stage=stages.STAGE_PATTERN,
    gen_id=stages.GEN_ID_PATTERN,
    cohort_id=ids.COHORT_ID_PATTERN,
    batch_id=batches.BATCH_ID_PATTERN,
    fingerprint=checkpoint_inputs.FINGERPRINT_PATTERN,
    run_id=batch_gate.RUN_ID_PATTERN,
    round_id=batch_gate.ROUND_ID_PATTERN,
    shard=stale.SHARD_PATTERN,
    key=targets.DUE_KEY_PATTERN,


def final_targets(wildcards):
    """The default target: the reports of every active cohort and its documents, through the
    stale report's shards or `documents_due` files (daydream.targets.document_targets), never
    every gens file: Snakemake's `Job.prepare` of a job over N documents' 4N files is O(N^2).
    While a membership was built from other content than its definitions hold today, the
    membership itself (Snakemake 9 plans a checkpoint whose outputs exist as done); once the
    checkpoint has run, Snakemake re-evaluates this and gets the documents and reports.
    """
    files, current = [], []
    for cohort_id in RT.cohort_ids:
        if not targets.cohort_is_current(RT, cohort_id):
            files += targets.outdated_membership(RT, cohort_id)
            continue
        checkpoints.cohort_membership.get(cohort_id=cohort_id)
        files += targets.cohort_outputs(RT, cohort_id)
        current.append(cohort_id)
    return files + targets.document_targets(RT, current)


def get_documents_due_inputs(wildcards):
    return targets.documents_due_inputs(RT, wildcards.shard, wildcards.key)


def get_cohort_inputs(wildcards):
    """The fingerprint file (a new content is a new, missing file) and the definitions it
    stands for, ancient: a touched file with the same content reruns nothing. Those whose
    content changed since the membership was built are not ancient (daydream.targets).
    """
    inputs = targets.cohort_inputs(RT, wildcards.cohort_id)
    fresh = {name: inputs.pop(name) for name in ("fingerprint", "changed")}
    return {**fresh, **ancient_all(inputs)}


def ancient_all(files):
    """Inputs marked ancient: only a missing output makes the job, so an edited template or
    concept never re-renders a prompt or re-requests a paid reply (the stale report says so).
    """
    return {name: ancient(value) for name, value in files.items()}


def get_document_inputs(wildcards):
    return ancient_all(targets.document_inputs(RT, wildcards.stage, wildcards.gen_id))


def get_reply_batch_inputs(wildcards):
    return ancient_all(
        targets.reply_batch_inputs(RT, wildcards.stage, wildcards.batch_id)
    )


def get_plan_inputs(wildcards):
    return targets.plan_inputs(RT)


def make_cohort(cohort_id, log):
    """The cohort checkpoint's job: the membership, its budget check, then full collections held
    while Snakemake plans its documents, until the next document job (in the main process only:
    daydream.runtime.Runtime.hold_after_checkpoint)."""
    cohorts.write_cohort(RT, cohort_id, log)
    budget.check_cohort(RT, cohort_id)
    RT.hold_after_checkpoint()


def run_started():
    """`onstart:` (real runs, once the DAG is built): a Ctrl-C also stops waiting batch rounds,
    the budget check before the first call, then the progress line, then the call engine
    (daydream.engine), given the documents of this run's DAG; once the DAG holds report jobs,
    their libraries are imported in a thread (daydream.reports.ImportAhead). A run whose only
    target is `plan` is never refused. In a local run, Snakemake's job-rate limiter goes when
    it cannot bind (daydream.runtime.drop_unbinding_rate_limit)."""
    RT.settle_heap()  # the DAG built so far lives until the run ends; ends the hold
    drop_unbinding_rate_limit(workflow.scheduler, workflow.local_exec)
    batch_rounds.watch_interrupts()
    budget.check_before_run(RT, workflow.dag_settings.targets)
    progress.start(RT, workflow.dag_settings.targets)
    engine.start(
        RT,
        run_documents,
        jobs_in_threads=workflow.local_exec and workflow.execution_settings.use_threads,
    )
    ahead = reports.ImportAhead(RT.membership.signature, run_rules)
    ahead.check()
    RT.run.observe(ahead)


def run_rules():
    """The names of the rules of the jobs this run needs (daydream.reports.ImportAhead; the
    set copied at once, as in run_documents)."""
    return {
        job.rule.name for job in list(workflow.dag.needrun_jobs(exclude_finished=False))
    }


def run_documents():
    """(stage, gen_id) of every document job in Snakemake's DAG that this run needs (the set
    copied at once: a job thread may read it while the scheduler updates it)."""
    jobs = list(workflow.dag.needrun_jobs(exclude_finished=False))
    return [
        (job.wildcards.stage, job.wildcards.gen_id)
        for job in jobs
        if job.rule.name == "gen_document"
    ]


def run_finished(ok):
    """`onsuccess:` / `onerror:`: the call engine stops (its calls in flight saved), then the
    run's summary; last, the heap is left to the exit (daydream.runtime.leave_heap)."""
    engine.finish(RT)
    targets.clear_documents_due(PATHS)
    progress.finish(RT, ok)
    leave_heap()


def get_batch_round_inputs(wildcards):
    return ancient_all(
        targets.batch_round_inputs(
            RT, wildcards.stage, wildcards.run_id, wildcards.round_id
        )
    )


def get_stale_report_inputs(wildcards):
    for cohort_id in RT.cohort_ids:
        checkpoints.cohort_membership.get(cohort_id=cohort_id)
    return targets.stale_report_inputs(RT)


def get_stale_shard_inputs(wildcards):
    for cohort_id in RT.cohort_ids:
        checkpoints.cohort_membership.get(cohort_id=cohort_id)
    return targets.stale_shard_inputs(RT, wildcards.shard)


def get_cohort_report_inputs(wildcards):
    checkpoints.cohort_membership.get(cohort_id=wildcards.cohort_id)
    return targets.cohort_report_inputs(RT, wildcards.cohort_id)


def report_outputs(group):
    """A report rule's outputs, from the report registry: each shown in the HTML report where
    the registry says."""
    return {r.key: html_report_entry(r) for r in reports.in_group(group)}


def html_report_entry(entry):
    path = PATHS.cohort_report("{cohort_id}", entry.name)
    if entry.caption is None:
        return path
    return report(
        path,
        caption=f"../report/{entry.caption}",
        category=entry.category,
        subcategory="{cohort_id}",
        labels={"cohort": "{cohort_id}", entry.kind: entry.title},
    )


def report_files(group):
    """A report group's files of the cohort `{cohort_id}` (the figures read the tables)."""
    return [PATHS.cohort_report("{cohort_id}", r.name) for r in reports.in_group(group)]


def cross_table_outputs():
    return {r.key: PATHS.cross_table(r.name) for r in reports.in_group("cross")}


def get_cohort_site_inputs(wildcards):
    checkpoints.cohort_membership.get(cohort_id=wildcards.cohort_id)
    return targets.site_inputs(RT, wildcards.cohort_id)
