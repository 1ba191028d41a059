"""The paid-reply ledger: every reply paid for is kept, and no prompt is paid for twice.

Each document folder has `.replies/<prompt-sha16>.json`, one file per prompt ever answered,
written atomically with fsync before any gens file is written from it. It is never a
Snakemake output, so Snakemake never deletes it. `paid_completion` is the only function of
the package that can spend money: it returns the saved reply for a prompt when there is one,
and otherwise makes the call and saves its reply at once. Both the per-document response job
and the cluster batches go through it. Every call made is appended to `llm_calls.jsonl`,
every failed one to `llm_errors.jsonl` (the audit of what was paid).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from daydream import calls, store
from daydream.membership import Member
from daydream.paths import Paths
from daydream.prompts import Prompt
from daydream.runtime import Runtime

log = logging.getLogger(__name__)


class RepaymentRefused(RuntimeError):
    """A document already has a reply paid for an earlier prompt: paying again must be a
    deliberate regeneration. The message names the command."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# Keys of a saved reply besides the Completion's fields: what was sent.
PROMPT_KEYS = ("prompt", "prompt_sha256", "saved_at")


def saved_reply(paths: Paths, member: Member, prompt_sha256: str) -> calls.Completion | None:
    """The reply saved for exactly this prompt of the document, or None."""
    path = paths.reply_path(member.stage, member.gen_id, prompt_sha256)
    if not path.exists():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    return calls.Completion(**{k: v for k, v in record.items() if k not in PROMPT_KEYS})


def save_reply(paths: Paths, member: Member, prompt: Prompt, done: calls.Completion) -> Path:
    """Save a paid reply with the prompt it answers (atomic, fsync): the record of what was
    sent and what came back. Every path that pays for a reply (a direct call, a cluster batch,
    a provider batch) saves it here before anything else is written."""
    path = paths.reply_path(member.stage, member.gen_id, prompt.sha256)
    record = {**done.__dict__, "prompt": prompt.text, "prompt_sha256": prompt.sha256, "saved_at": now_iso()}
    store.write_json_atomic(path, record, fsync=True)
    return path


def earlier_replies(paths: Paths, member: Member, prompt_sha256: str) -> list[Path]:
    """Replies saved for other prompts of the document, oldest name first."""
    folder = paths.replies_dir(member.stage, member.gen_id)
    if not folder.exists():
        return []
    return sorted(p for p in folder.glob("*.json") if p.stem != prompt_sha256[:16])


def refuse_silent_repayment(paths: Paths, member: Member, prompt_sha256: str) -> None:
    """Raise RepaymentRefused when a reply was paid for an earlier prompt and none for this one."""
    earlier = earlier_replies(paths, member, prompt_sha256)
    if earlier and not paths.reply_path(member.stage, member.gen_id, prompt_sha256).exists():
        raise RepaymentRefused(
            f"{member.gen_id}: a reply was already paid for an earlier prompt ({earlier[-1]}) and the "
            f"prompt has changed since (see {paths.stale_generations_csv}); to pay for a new reply "
            f"run: python scripts/regenerate.py --data-root {paths.data_root} {member.gen_id}")


def _record_failure(rt: Runtime, member: Member, error: calls.LLMCallError) -> None:
    row = rt.experiment.models[member.llm_model_id]
    store.append_jsonl(rt.paths.llm_errors_jsonl, {
        "time": now_iso(), "gen_id": member.gen_id, "stage": member.stage, "model_id": row.id,
        "model": calls.model_string(row, rt.settings), "error_class": error.error_class,
        "status": error.status, "message": str(error), "attempts": error.attempts})


def _record_call(rt: Runtime, member: Member, done: calls.Completion) -> None:
    store.append_jsonl(rt.paths.llm_calls_jsonl, {
        "time": now_iso(), "gen_id": member.gen_id, "stage": member.stage, "model_id": member.llm_model_id,
        "model": done.model, "attempts": done.attempts, "wait_s": done.wait_s, "usage": done.usage,
        "cost_usd": done.cost_usd, "duration_s": done.duration_s, "finish_reason": done.finish_reason})


def paid_completion(rt: Runtime, member: Member, prompt: Prompt) -> calls.Completion:
    """A saved reply for this exact prompt if one exists, else a new (paid) call, saved at once."""
    saved = saved_reply(rt.paths, member, prompt.sha256)
    if saved is not None:
        log.info("reusing saved reply gen_id=%s, no call made", member.gen_id)
        return saved
    refuse_silent_repayment(rt.paths, member, prompt.sha256)
    row = rt.experiment.models[member.llm_model_id]
    try:
        done = calls.call_model(row, prompt.text, stage=member.stage, settings=rt.settings, gen_id=member.gen_id)
    except calls.LLMCallError as error:
        _record_failure(rt, member, error)
        raise
    save_reply(rt.paths, member, prompt, done)
    _record_call(rt, member, done)
    return done
