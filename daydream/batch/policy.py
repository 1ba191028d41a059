"""Batch mode's policy: which calls go through a provider's batch API, and the direct path's guard.

Which calls: a document of an `llm` template whose model row has `batch=true` in
llm_models.csv, unless `batch.stages.<stage>` in the config says otherwise for the whole stage
(never the offline model, nor under `offline=true`: a rehearsal calls it directly).

Never paid twice: no request a live batch holds is called directly, nor a document in batch
mode that this run's rounds did not let go direct (`refuse_direct_call`, asked by
`ledger.answer` before any call). The outcomes a round gives each document are named here.
"""

from __future__ import annotations

from daydream import calls, stages
from daydream.batch import ledger as batch_ledger
from daydream.experiment import ModelRow
from daydream.membership import Member
from daydream.prompts import Prompt
from daydream.providers import BATCH_ROUTES, OFFLINE_ROUTE, has_batch_api
from daydream.run import BudgetReached
from daydream.runtime import Runtime
from daydream.settings import BatchSettings

# What a round says of each of its documents (`refused`: not submitted, a budget could pass).
COLLECTED, IN_FLIGHT, FAILED, DIRECT, REFUSED = "collected", "in_flight", "failed", "direct", "refused"


class BatchError(RuntimeError):
    """A batch round that cannot go on; the message says what to do."""


class BatchPendingError(RuntimeError):
    """A document whose call belongs to a provider batch: no direct call is made for it."""


def batch_settings(rt: Runtime) -> BatchSettings:
    """`batch:` of the config, read once per run."""
    rounds = rt.run.batches
    if rounds.settings is None:
        rounds.settings = BatchSettings.from_config(rt.config)
    return rounds.settings


# -- which calls are batched -------------------------------------------------------------------
def batch_mode(rt: Runtime, stage: str, row: ModelRow) -> bool:
    """Whether `row`'s calls of `stage` go through a batch API: the stage's override, else the row."""
    if calls.route_of(row, rt.settings) == OFFLINE_ROUTE:  # free and instant: nothing to batch
        return False
    override = batch_settings(rt).stages.get(stages.get(stage).config_section)
    return row.batch if override is None else bool(override)


def batched(rt: Runtime, member: Member) -> bool:
    template = rt.template(member)
    return template.generator == "llm" and batch_mode(rt, member.stage, rt.experiment.models[member.llm_model_id])


def any_batched(rt: Runtime) -> bool:
    """Cheap: could any call of this run be batched at all (else nothing here costs anything)."""
    if rt.settings.offline:
        return False
    overrides = batch_settings(rt).stages
    if any(overrides.values()):
        return True
    every_stage_off = len(overrides) == len(stages.NAMES)
    return not every_stage_off and any(row.batch for row in rt.experiment.models.values())


def models_by_stage(rt: Runtime, rows: list[dict]) -> dict[str, list[ModelRow]]:
    """The model rows a cohort's membership uses per stage, in first-seen order; unknown ids are
    left to the cohort's own checks."""
    known, found = rt.experiment.models, {}
    for row in rows:
        found.setdefault(row["stage"], {})[row["llm_model_id"]] = None
    return {stage: [known[i] for i in ids if i in known] for stage, ids in found.items()}


def route_problems(rt: Runtime, models_by_stage: dict[str, list[ModelRow]], where: str) -> list[str]:
    """One problem per model row in batch mode for a stage whose route has no batch API."""
    problems = []
    for stage, rows in models_by_stage.items():
        for row in rows:
            route = calls.route_of(row, rt.settings)
            if batch_mode(rt, stage, row) and not has_batch_api(route):
                source = (f"batch.stages.{stage} in the config" if batch_settings(rt).stages.get(stage) is not None
                          else f"batch=true in {rt.paths.models_csv}")
                problems.append(f"{where}: {stage} model {row.id!r} (route {route}) is in batch mode ({source}), "
                                f"but route {route} has no batch API; batch mode works with routes "
                                f"{', '.join(BATCH_ROUTES)}: set batch to false for {row.id!r} or change its route")
    return problems


# -- the direct path's guard ------------------------------------------------------------------------
def refuse_direct_call(rt: Runtime, member: Member, prompt: Prompt) -> None:
    """Before any direct call (`ledger.answer`): raise BatchPendingError when a live batch holds the
    document's request, or when the document is in batch mode and this run did not let it go
    direct (its round left it in flight or it failed there); BudgetReached, with the guard's
    reason, when its batch was not submitted because it could pass a budget."""
    holder = batch_ledger.held(rt.paths).get((member.stage, member.gen_id))
    if holder is not None:
        raise BatchPendingError(
            f"{member.gen_id}: its request is in provider batch {holder[0]}, still in flight, so no direct call is "
            f"made; collect it with `python scripts/batches.py collect --data-root {rt.paths.data_root}` or run "
            "snakemake again")
    if not any_batched(rt) or not batched(rt, member):
        return
    state, reason = rt.run.batches.outcomes.get(member.gen_id, (None, ""))
    if state == DIRECT:
        return
    if state == REFUSED:
        raise BudgetReached(f"{member.gen_id}: not submitted: {reason}")
    why = f"its batch request failed: {reason}" if state == FAILED else "no batch round of this run collected it"
    raise BatchPendingError(f"{member.gen_id}: batch mode ({member.stage}, model {member.llm_model_id}) and {why}; "
                            f"see {rt.paths.llm_errors_jsonl}; run snakemake again to submit it again")
