"""The paid-reply ledger: every reply paid for is kept, and no document is paid for twice.

Each document folder has `.replies/<prompt-sha16>.json`, one file per prompt ever answered:
the reply, the prompt it answers and the hashes of that prompt's sources, written atomically
with fsync before any gens file is written from it. It is never a Snakemake output, so
Snakemake never deletes it. `answer` is the only function of the package that makes a direct
call (a provider batch is submitted by `daydream.batch.rounds`). For a document's prompt it returns, in this order:
- `saved`: the reply saved for this exact prompt (a deleted raw.txt, a killed run);
- `restored`: the paid record of an earlier prompt of the document (its template, concepts or
  parent changed since). Nothing is paid: the document keeps what was sent and what came back,
  and the stale report lists it. Paying for the new prompt is a deliberate regeneration
  (`scripts/regenerate.py`, which moves the ledger into `.history/`);
- `called`: a new call, its reply saved at once.
The per-document job and the cluster batches both go through it. A call starts only when the
run's budget guard admits it (`Run.spend`, the Run of the Runtime: no call that could pass a
budget), and never for a request a provider batch holds (`batch.policy.refuse_direct_call`).
Every call made is appended to `llm_calls.jsonl` (`record_call`), every failed one to
`llm_errors.jsonl` (`record_failure`): the audit of what was paid.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from daydream import calls, store
from daydream.batch import policy as batch_policy
from daydream.membership import Member
from daydream.paths import Paths
from daydream.prompts import Prompt
from daydream.providers import OFFLINE_ROUTE
from daydream.runtime import Runtime

log = logging.getLogger(__name__)


class RepaymentRefused(RuntimeError):
    """A document already has a reply paid for an earlier prompt: paying again must be a
    deliberate regeneration. The message names the command."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# Keys of a saved reply besides the Completion's fields: what was sent.
PROMPT_KEYS = ("prompt", "prompt_sha256", "prompt_sources", "saved_at")


@dataclass(frozen=True)
class Answer:
    """A document's reply, the prompt it answers, and where it came from: `saved`, `restored`,
    `called` (or `copy`, for a copy document)."""

    prompt: Prompt
    completion: calls.Completion
    source: str


def saved_reply(paths: Paths, member: Member, prompt_sha256: str) -> calls.Completion | None:
    """The reply saved for exactly this prompt of the document, or None."""
    path = paths.reply_path(member.stage, member.gen_id, prompt_sha256)
    if not path.exists():
        return None
    return _completion(json.loads(path.read_text(encoding="utf-8")))


def _completion(record: dict) -> calls.Completion:
    return calls.Completion(**{k: v for k, v in record.items() if k not in PROMPT_KEYS})


def save_reply(paths: Paths, member: Member, prompt: Prompt, done: calls.Completion) -> Path:
    """Save a paid reply with the prompt it answers (atomic, fsync): the record of what was
    sent and what came back. Every path that pays for a reply (a direct call, a cluster batch,
    a provider batch) saves it here before anything else is written."""
    path = paths.reply_path(member.stage, member.gen_id, prompt.sha256)
    record = {**done.__dict__, "prompt": prompt.text, "prompt_sha256": prompt.sha256,
              "prompt_sources": prompt.sources, "saved_at": now_iso()}
    # On disk before the gens files, even across a power cut; the offline model's replies cost
    # nothing and come again the same, so they skip the fsync (a cost of every offline document).
    store.write_json_atomic(path, record, fsync=not done.model.startswith(f"{OFFLINE_ROUTE}/"))
    return path


def saved_texts(paths: Paths, stage: str, gen_id: str) -> dict[str, str]:
    """The text of every reply saved for a document, by its file's name (the first 16 hex of
    the prompt's SHA-256, as `Paths.reply_path`); a record that cannot be read is left out."""
    texts = {}
    for path in sorted(paths.replies_dir(stage, gen_id).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("text"), str):
            texts[path.stem] = record["text"]
    return texts


def earlier_replies(paths: Paths, member: Member, prompt_sha256: str) -> list[Path]:
    """Replies saved for other prompts of the document, oldest name first."""
    folder = paths.replies_dir(member.stage, member.gen_id)
    if not folder.exists():
        return []
    return sorted(p for p in folder.glob("*.json") if p.stem != prompt_sha256[:16])


def restore_earlier(paths: Paths, member: Member, prompt_sha256: str) -> Answer | None:
    """The paid record of an earlier prompt of the document (the newest), or None when there is
    none. A record saved before prompts were kept in the ledger cannot be restored: paying for
    the new prompt must then be a deliberate regeneration, so RepaymentRefused says how."""
    earlier = earlier_replies(paths, member, prompt_sha256)
    if not earlier:
        return None
    records = [json.loads(p.read_text(encoding="utf-8")) for p in earlier]
    kept = [r for r in records if "prompt" in r]
    if not kept:
        raise RepaymentRefused(
            f"{member.gen_id}: a reply was already paid for an earlier prompt ({earlier[-1]}) and the "
            f"prompt has changed since (see {paths.stale_generations_csv}); to pay for a new reply "
            f"run: python scripts/regenerate.py --data-root {paths.data_root} {member.gen_id}")
    record = max(kept, key=lambda r: r.get("saved_at", ""))
    paid = Prompt(record["prompt"], record["prompt_sha256"], record.get("prompt_sources") or {})
    return Answer(paid, _completion(record), "restored")


def record_failure(rt: Runtime, member: Member, error: calls.LLMCallError) -> None:
    row = rt.experiment.models[member.llm_model_id]
    store.append_jsonl(rt.paths.llm_errors_jsonl, {
        "time": now_iso(), "gen_id": member.gen_id, "stage": member.stage, "model_id": row.id,
        "model": calls.model_string(row, rt.settings), "error_class": error.error_class,
        "status": error.status, "message": str(error), "attempts": error.attempts})


def record_call(rt: Runtime, member: Member, done: calls.Completion, **extra) -> None:
    """One line of llm_calls.jsonl; a provider batch's request adds its `batch_id`."""
    store.append_jsonl(rt.paths.llm_calls_jsonl, {
        "time": now_iso(), "gen_id": member.gen_id, "stage": member.stage, "model_id": member.llm_model_id,
        "model": done.model, "attempts": done.attempts, "wait_s": done.wait_s, "usage": done.usage,
        "cost_usd": done.cost_usd, "duration_s": done.duration_s, "finish_reason": done.finish_reason, **extra})


def answer(rt: Runtime, member: Member, prompt: Prompt) -> Answer:
    """The reply to a document's prompt: saved, restored or called (see the module's docstring)."""
    saved = saved_reply(rt.paths, member, prompt.sha256)
    if saved is not None:
        log.info("reusing saved reply gen_id=%s, no call made", member.gen_id)
        return Answer(prompt, saved, "saved")
    restored = restore_earlier(rt.paths, member, prompt.sha256)
    if restored is not None:
        log.warning("%s: its prompt changed since it was paid for; the paid prompt and reply are kept, no call "
                    "made (listed in %s; regenerate it on purpose with scripts/regenerate.py)",
                    member.gen_id, rt.paths.stale_generations_csv)
        return restored
    batch_policy.refuse_direct_call(rt, member, prompt)
    row = rt.experiment.models[member.llm_model_id]
    with rt.run.spend(member, prompt) as ticket:  # BudgetReached: this call could pass a budget
        try:
            done = calls.call_model(row, prompt.text, stage=member.stage, settings=rt.settings, gen_id=member.gen_id,
                                    limits=rt.run.limits)
        except calls.LLMCallError as error:
            record_failure(rt, member, error)
            raise
        save_reply(rt.paths, member, prompt, done)  # first: a paid reply is on disk before anything else
        record_call(rt, member, done)
        rt.run.paid(ticket, done)
    return Answer(prompt, done, "called")
