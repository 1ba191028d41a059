"""Stale documents (SPEC §8): responses whose prompt would be different today, and responses
whose raw.txt is no longer the reply that was paid for.

A paid response is never re-requested because a template, a concept text or a parent changed;
instead it is listed in `data/7_reporting/stale_generations.csv`, rebuilt at the end of every
run, with the reason and both prompt hashes. `scripts/regenerate.py` re-makes chosen ones.
"""

from __future__ import annotations

import logging

from daydream import calls, documents, integrity, store
from daydream.columns import STALE_COLUMNS
from daydream.membership import Member
from daydream.prompts import Prompt, PromptError
from daydream.runtime import Runtime

log = logging.getLogger(__name__)

# A source of a prompt (see daydream.prompts.build_prompt) and the reason its change gives.
REASONS = {"template": "template changed", "concepts": "concepts changed", "parent": "parent changed"}


def stale_reason(stored: dict, current: dict) -> str:
    """Which prompt source changed, from the source hashes in metadata and now."""
    changed = [REASONS[key] for key in REASONS if key in stored and stored.get(key) != current.get(key)]
    return "; ".join(changed) or "prompt changed"


def current_model(rt: Runtime, member: Member) -> str | None:
    """The model string a new call would use (None for copies): a document made by the
    offline rehearsal model is stale for a real run."""
    if rt.template(member).generator != "llm" or member.llm_model_id not in rt.experiment.models:
        return None
    return calls.model_string(rt.experiment.models[member.llm_model_id], rt.settings)


def check_member(rt: Runtime, member: Member) -> dict | None:
    """A stale-report row for one document, or None when it is current or not made yet: its
    prompt would differ today, its model changed, or its raw.txt is no longer the reply that
    was paid for (`daydream.integrity`)."""
    try:
        meta = store.read_document_metadata(rt.paths, member.stage, member.gen_id)
    except FileNotFoundError:
        return None  # not made yet: nothing paid to be stale
    reasons = []
    try:
        current: Prompt | None = documents.document_prompt(rt, member)
    except FileNotFoundError:
        current = None  # its parent is missing: the prompt cannot be compared today
    except PromptError as error:
        current = None
        reasons.append(f"prompt cannot be rendered today: {error}")
    if current is not None and meta.get("prompt_sha256") != current.sha256:
        reasons.append(stale_reason(meta.get("prompt_sources") or {}, current.sources))
    model_now = current_model(rt, member)
    # The model of the reply that was paid for (an edited metadata.json is reported below instead).
    paid = integrity.paid_record(rt.paths, member.stage, member.gen_id, meta)
    made_by = (paid or {}).get("model") or meta.get("model")
    if made_by and model_now and made_by != model_now:
        reasons.append(f"model changed (made by {made_by}, now {model_now})")
    change = integrity.document_change(rt.paths, member.stage, member.gen_id, meta)
    if meta.get("model_id") not in (None, member.llm_model_id) and meta.get("mode") != "copy":
        change = "; ".join(filter(None, [change, (
            f"{integrity.METADATA_DIFFERS} from its membership row (model_id {meta.get('model_id')!r}, the row says "
            f"{member.llm_model_id!r}): delete {rt.paths.metadata_path(member.stage, member.gen_id)} and rerun "
            "snakemake to write it again from the saved reply, no call is made")]))
    if change:
        reasons.append(change)  # last: a reason made only of these is mended by a rerun, for free
    if not reasons:
        return None
    return {"stage": member.stage, "gen_id": member.gen_id, "cohort_id": member.cohort_id,
            "template_id": member.template_id, "reason": "; ".join(reasons),
            "stored_prompt_sha256": meta.get("prompt_sha256", ""),
            "current_prompt_sha256": current.sha256 if current is not None else ""}


def stale_rows(rt: Runtime) -> list[dict]:
    seen: set[str] = set()
    rows = []
    for cohort_id in rt.cohort_ids:
        for member in rt.membership.members(cohort_id):
            if member.gen_id not in seen:
                seen.add(member.gen_id)
                row = check_member(rt, member)
                if row:
                    rows.append(row)
    return rows


def write_stale_report(rt: Runtime, log_path: str | None = None) -> int:
    """Rebuild stale_generations.csv for the active cohorts; return the number of stale rows."""
    rows = stale_rows(rt)
    store.write_csv_atomic(rt.paths.stale_generations_csv, STALE_COLUMNS, rows)
    store.write_job_log(log_path, f"{len(rows)} stale document(s) in {rt.paths.stale_generations_csv}")
    if rows:
        log.warning("%d stale document(s): see %s; regenerate chosen ones with scripts/regenerate.py",
                    len(rows), rt.paths.stale_generations_csv)
    return len(rows)


def write_reports_after_failure(rt: Runtime) -> None:
    """The `onerror` hook: the stale report and the cohort reports, with `error` filled for
    what failed. When the definitions themselves cannot be read (the checkpoint said why,
    above), nothing can be compared or reported: say so in one line instead of a traceback."""
    from daydream import reports
    from daydream.experiment import ExperimentError

    try:
        write_stale_report(rt)
        reports.write_reports_despite_failures(rt.paths, rt.cohort_ids, rt.experiment)
    except ExperimentError:
        log.warning("stale and cohort reports not rebuilt: the definition files have problems (listed above)")
    except OSError as error:  # a full disk or a read-only data root: the summary still follows
        log.warning("stale and cohort reports not rebuilt: %s could not be written (%s); free space (or make %s "
                    "writable) and run again", getattr(error, "filename", None) or rt.paths.reporting_dir,
                    error.strerror or error, rt.paths.data_root)
