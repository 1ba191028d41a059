"""The paid-reply ledger: every reply paid for is kept, and no document is paid for twice.

Each document folder has `.replies/<prompt-sha16>.json`, one file per prompt ever answered:
the reply, the prompt it answers and the hashes of that prompt's sources, written atomically
with fsync before any gens file is written from it. It is never a Snakemake output, so
Snakemake never deletes it. `answer` is the only function of the package that makes a direct
call (the run's call engine, `daydream.engine`, takes its steps `found`, `before_call`,
`call_failed`, `keep_paid`, `called` around its own; a provider batch is submitted by
`daydream.batch.rounds`). For a document's prompt it returns, in this order:
- `saved`: the reply saved for this exact prompt (a deleted raw.txt, a killed run);
- `restored`: the paid record of an earlier prompt of the document (its template, concepts or
  parent changed since). Nothing is paid: the document keeps what was sent and what came back,
  and the stale report lists it. Paying for the new prompt is a deliberate regeneration
  (`scripts/regenerate.py`, which moves the ledger into `.history/`);
- `called`: a new call, its reply saved at once.
The per-document job and the cluster batches both go through it. A call starts only when the
run's budget guard admits it (`Run.spend`, the Run of the Runtime: no call that could pass a
budget), never for a request a provider batch holds (`batch.policy.refuse_direct_call`), and
only when the data root has room to keep its reply (`check_room`, `min_free_mb`).

Every reply a provider answered becomes a record here, and only here (`keep_reply`,
`record_attempt`): its cost is counted by the run's guard first (in memory, `Run.paid`), then
the reply is saved (`save_reply`: its document's ledger, else a spill file, `Paths.spill_paths`,
which `saved_reply` finds and moves back on the next run), then its line is appended to
`llm_calls.jsonl` (`record_call`), each step tried whatever the one before did. The saved reply
carries its call's `call_id` and what its line needs besides the reply (`call_record`: a
provider batch's ids), and the line carries the same `call_id`: a run stopped between the two
writes (a kill) leaves a reply without its line, which the next run that reads the reply
(`answer`, a batch round collecting it) appends once, marked `recovered` (`recover_record`;
`recorded_call_ids` reads the call record incrementally). That includes
the failed attempts a provider may have billed (`calls.Attempt`: a reply without text, a
refusal, a malformed 200 body, a timeout), recorded the moment they come back with `outcome:
failed` and their usage (`cost_usd_max` when the cost is unknown: the call's high estimate),
counted by `Run.billed`. A call that ends on an answered reply without usable text (a
content-filter refusal, an empty reply) keeps that reply as the paid one, so a rerun does not
pay for it again: the document fails with the reason and `scripts/regenerate.py` pays again on
purpose. Every failed call is also appended to `llm_errors.jsonl` (`record_failure`): with
`llm_calls.jsonl`, the audit of what was paid.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from daydream import calls, rehearsal, store
from daydream.batch import policy as batch_policy
from daydream.errors import UserError
from daydream.membership import Member
from daydream.paths import Paths
from daydream.prompts import Prompt
from daydream.providers import OFFLINE_ROUTE, http_errors
from daydream.run import Ticket
from daydream.runtime import Runtime

log = logging.getLogger(__name__)


class ReplyRecordError(ValueError):
    """A saved reply file that cannot be read (cut short, not JSON): the message names the file
    and the fix."""


class ReplyNotKept(RuntimeError):
    """A paid reply that could not be written to its ledger nor to a spill file; the message
    names the document and every file tried (the record itself is logged as an error)."""


class NoRoomForReply(RuntimeError):
    """Not called: the data root's filesystem has less free space than `min_free_mb`."""


class RepaymentRefused(RuntimeError, UserError):
    """A document already has a reply paid for an earlier prompt: paying again must be a
    deliberate regeneration. The message names the command."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# Keys of a saved reply besides the Completion's fields: what was sent.
PROMPT_KEYS = ("prompt", "prompt_sha256", "prompt_sources", "saved_at")
# ... and what its line of llm_calls.jsonl needs besides the reply (`recover_record`).
RECORD_KEYS = ("call_id", "call_record")


@dataclass(frozen=True)
class Answer:
    """A document's reply, the prompt it answers, and where it came from: `saved`, `restored`,
    `called` (or `copy`, for a copy document)."""

    prompt: Prompt
    completion: calls.Completion
    source: str
    record: dict | None = None  # the saved reply record it came from (`saved`, `restored`)


def read_record(path: Path) -> dict:
    """One saved reply record; ReplyRecordError naming the file and the fix when it is not one."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        record, problem = None, f"not UTF-8 text ({error.reason})"
    except json.JSONDecodeError as error:
        record, problem = None, f"not complete JSON (line {error.lineno} column {error.colno}: {error.msg})"
    except IsADirectoryError:
        record, problem = None, "a folder, not a file"
    else:
        problem = "" if isinstance(record, dict) and isinstance(record.get("text"), str) else \
            "not a saved reply (a JSON object with a `text`)"
    if problem:
        raise ReplyRecordError(
            f"{path}: the saved reply of this document is {problem}, so it cannot be used and its prompt is not "
            f"paid for again by accident; restore the file from a backup (or a spill file under "
            f"{path.parents[4] / '.spill' if len(path.parents) > 4 else '.spill'}), or move it into the folder's "
            f".history/ to pay for the prompt again")
    return record


def saved_reply(paths: Paths, member: Member, prompt_sha256: str) -> calls.Completion | None:
    """The reply saved for exactly this prompt of the document, or None. A reply that was
    spilled (its ledger could not be written when it came back) is found too, and moved back
    into the ledger when it can be."""
    record = saved_record(paths, member, prompt_sha256)
    return None if record is None else _completion(record)


def saved_record(paths: Paths, member: Member, prompt_sha256: str) -> dict | None:
    """The saved reply record of exactly this prompt (as `saved_reply`), or None."""
    path = paths.reply_path(member.stage, member.gen_id, prompt_sha256)
    if path.exists():
        return read_record(path)
    for spill in paths.spill_paths(member.stage, member.gen_id, prompt_sha256):
        if spill.is_file():
            record = read_record(spill)
            try:
                store.write_json_atomic(path, record, fsync=True)
            except OSError as error:
                log.warning("%s: its paid reply stays in %s (%s could not be written: %s)", member.gen_id, spill,
                            path, error.strerror or error)
            else:
                spill.unlink(missing_ok=True)
                log.warning("%s: its paid reply was moved from %s back into %s", member.gen_id, spill, path)
            return record
    return None


def saved_completion(record: dict) -> calls.Completion:
    """The reply of a saved reply record (`read_record`)."""
    return _completion(record)


def _completion(record: dict) -> calls.Completion:
    return calls.Completion(**{k: v for k, v in record.items() if k not in PROMPT_KEYS + RECORD_KEYS})


def new_call_id(prompt: Prompt) -> str:
    """The id that ties a saved reply to its line of llm_calls.jsonl."""
    return f"{prompt.sha256[:16]}-{secrets.token_hex(6)}"


def save_reply(paths: Paths, member: Member, prompt: Prompt, done: calls.Completion, call_id: str | None = None,
               call_record: dict | None = None) -> Path:
    """Save a paid reply with the prompt it answers (atomic, fsync): the record of what was
    sent and what came back. Every path that pays for a reply (a direct call, a cluster batch,
    a provider batch) saves it here before anything else is written. When its ledger cannot be
    written (a full disk, a read-only folder) it goes to the first spill file that can be
    (`Paths.spill_paths`; returned, and named in a warning); ReplyNotKept when none can.
    `call_id` (with `call_record`, the extra keys of its line) is the id of its line in
    llm_calls.jsonl, written next; None for a reply whose line was written before it."""
    path = paths.reply_path(member.stage, member.gen_id, prompt.sha256)
    record = {**done.__dict__, "prompt": prompt.text, "prompt_sha256": prompt.sha256,
              "prompt_sources": prompt.sources, "saved_at": now_iso()}
    if call_id is not None:
        record.update(call_id=call_id, call_record=call_record or {})
    # On disk before the gens files, even across a power cut; the offline model's replies cost
    # nothing and come again the same, so they skip the fsync (a cost of every offline document).
    fsync = not done.model.startswith(f"{OFFLINE_ROUTE}/")
    try:
        store.write_json_atomic(path, record, fsync=fsync)
        rehearsal.note_paid(paths, done.model)
        return path
    except BaseException as error:  # a full disk, or the run stopping: the paid reply goes elsewhere first
        first = error
        problems = [f"{path}: {getattr(error, 'strerror', None) or error}"]
    for spill in paths.spill_paths(member.stage, member.gen_id, prompt.sha256):
        try:
            store.write_json_atomic(spill, record, fsync=True)
        except OSError as error:
            problems.append(f"{spill}: {error.strerror or error}")
            continue
        if not isinstance(first, Exception):
            raise first  # the run is stopping; the next one finds the reply in the spill file
        log.warning("%s: its paid reply could not be saved in %s, so it was kept in %s; the next run finds it "
                    "there (no call is made); free space in %s and run again", member.gen_id, problems[0],
                    spill, paths.data_root)
        return spill
    log.error("%s: paid reply that could not be written anywhere (copy it into %s): %s", member.gen_id, path,
              json.dumps(record, sort_keys=True))
    raise ReplyNotKept(f"{member.gen_id}: its reply was paid for but could not be written ({'; '.join(problems)}); "
                       f"the record is in the log above: free space (or fix the permissions) in "
                       f"{paths.data_root}, copy it into {path}, then run again")


def check_room(rt: Runtime, member: Member) -> None:
    """NoRoomForReply when the data root's filesystem has less than `min_free_mb` free: no
    call starts whose reply might not be kept."""
    margin_mb = float(rt.config.get("min_free_mb") or 0)
    if margin_mb <= 0:
        return
    root = rt.paths.data_root
    while not root.exists() and root != root.parent:
        root = root.parent
    free_mb = shutil.disk_usage(root).free / 2**20
    if free_mb < margin_mb:
        raise NoRoomForReply(
            f"{member.gen_id}: not called: only {free_mb:.1f} MB are free in {rt.paths.data_root}, less than "
            f"min_free_mb = {margin_mb:g}, so its reply might not be kept; free some space there (or lower "
            f"--config min_free_mb=...) and run again")


def saved_texts(paths: Paths, stage: str, gen_id: str) -> dict[str, str]:
    """The text of every reply saved for a document, by its file's name (the first 16 hex of
    the prompt's SHA-256, as `Paths.reply_path`); a record that cannot be read is left out."""
    texts = {}
    for path in sorted(paths.replies_dir(stage, gen_id).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # the reader that needs it (`read_record`) names the file and the fix
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
    records = [read_record(p) for p in earlier]
    kept = [r for r in records if "prompt" in r]
    if not kept:
        raise RepaymentRefused(
            f"{member.gen_id}: a reply was already paid for an earlier prompt ({earlier[-1]}) and the "
            f"prompt has changed since (see {paths.stale_generations_csv}); to pay for a new reply "
            f"run: python scripts/regenerate.py --data-root {paths.data_root} {member.gen_id}")
    record = max(kept, key=lambda r: r.get("saved_at", ""))
    paid = Prompt(record["prompt"], record["prompt_sha256"], record.get("prompt_sources") or {})
    return Answer(paid, _completion(record), "restored", record)


# -- a saved reply without its line in llm_calls.jsonl ----------------------------------------------
_RECORDED_LOCK = threading.Lock()
# The call ids in each call record file read so far and the offset read up to: derived from the
# file (read on from there when it has grown, again from the start when it has shrunk).
_RECORDED: dict[str, tuple[int, set[str]]] = {}


def recorded_call_ids(path: Path) -> set[str]:
    """Every `call_id` of the call record at `path` (the caller holds `_RECORDED_LOCK`). Only
    what was appended since the last look is read; a last line not ended yet is read later."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        _RECORDED.pop(str(path), None)
        return set()
    offset, ids = _RECORDED.get(str(path), (0, set()))
    if size < offset:
        offset, ids = 0, set()
    if size > offset:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(size - offset)
        ended = data.rfind(b"\n") + 1
        for line in data[:ended].splitlines():
            if b'"call_id"' in line:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a torn line: `run.recorded_spend` names it
                if isinstance(record, dict) and record.get("call_id"):
                    ids.add(str(record["call_id"]))
        offset += ended
    _RECORDED[str(path)] = (offset, ids)
    return ids


def is_recorded(paths: Paths, call_id: str) -> bool:
    """Whether llm_calls.jsonl has the line of the call `call_id`."""
    with _RECORDED_LOCK:
        return call_id in recorded_call_ids(paths.llm_calls_jsonl)


def _record_once(rt: Runtime, member: Member, done: calls.Completion, call_id: str, **extra) -> bool:
    """The call's line in llm_calls.jsonl unless it has one (a provider batch's reply read again
    after a stop: its call id is the batch's and the request's); True when written now."""
    with _RECORDED_LOCK:
        if call_id in recorded_call_ids(rt.paths.llm_calls_jsonl):
            return False
        record_call(rt, member, done, call_id=call_id, **extra)
        return True


def recover_record(rt: Runtime, member: Member, record: dict) -> bool:
    """A saved reply whose line of llm_calls.jsonl is missing (a run stopped between saving it
    and recording it): its line is appended now, once, marked `recovered`, and its cost counted
    by the budget guard (`Run.recovered`). True when it was missing. A reply saved without a
    `call_id` (its line was written first, or it was saved before call ids) is left as it is."""
    call_id = record.get("call_id")
    if not call_id:
        return False
    done = _completion(record)
    if not _record_once(rt, member, done, call_id, recovered=True, **(record.get("call_record") or {})):
        return False
    log.warning("%s: its paid reply (%s) had no line in %s (a run stopped between saving and recording it); "
                "the line is written now", member.gen_id, call_id, rt.paths.llm_calls_jsonl)
    rt.run.recovered(member, done)
    return True


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
        "cost_usd": done.cost_usd, "duration_s": done.duration_s, "finish_reason": done.finish_reason,
        "outcome": "ok", **extra})


def record_attempt(rt: Runtime, member: Member, ticket: Ticket, attempt: calls.Attempt) -> None:
    """A failed attempt the provider may have billed: counted by the budget guard, then one
    `outcome: failed` line of llm_calls.jsonl. BudgetReached (after the line is written) when the
    budget leaves no room for another attempt."""
    counted, no_room = rt.run.billed(ticket, attempt)
    store.append_jsonl(rt.paths.llm_calls_jsonl, {
        "time": now_iso(), "gen_id": member.gen_id, "stage": member.stage, "model_id": member.llm_model_id,
        "model": attempt.model, "attempts": attempt.attempt, "usage": attempt.usage, "cost_usd": attempt.cost_usd,
        "cost_usd_max": counted if attempt.cost_usd is None else None, "duration_s": attempt.duration_s,
        "finish_reason": attempt.finish_reason, "outcome": "failed", "billed": attempt.billed,
        "error_class": attempt.error_class, "status": attempt.status})
    if no_room is not None:
        raise no_room


def _failed_reply(attempt: calls.Attempt) -> calls.Completion:
    """An answered reply without usable text (a refusal, an empty reply), kept as the paid reply."""
    return calls.Completion(attempt.text, attempt.model, attempt.finish_reason, attempt.usage or {},
                            attempt.cost_usd, attempt.duration_s, attempt.attempt, attempt.temperature,
                            attempt.max_tokens)


def keep_reply(rt: Runtime, member: Member, prompt: Prompt, done: calls.Completion, call_id: str | None = None,
               **extra) -> Path:
    """A paid reply: saved (or spilled) with its call id, then its line in llm_calls.jsonl (with
    `extra`: a provider batch's ids); both are tried whatever the other did, and the first
    failure is raised after (naming the document). A stop between the two is mended by the next
    run that reads the reply (`recover_record`). `call_id` (a new one by default) names the line:
    a provider batch's reply has one of its own, so a reply read again after a stop is recorded
    once (`_record_once`)."""
    fresh, call_id = call_id is None, call_id or new_call_id(prompt)
    try:  # first: a paid reply is on disk before anything else
        saved, not_kept = save_reply(rt.paths, member, prompt, done, call_id, extra), None
    except ReplyNotKept as error:
        saved, not_kept = None, error
    except BaseException:  # the run is stopping: its call is still recorded
        _record_kept(rt, member, done, call_id, fresh, extra)
        raise
    return record_kept(rt, member, done, call_id, saved, not_kept, fresh=fresh, **extra)


def save_first(paths: Paths, member: Member, prompt: Prompt, done: calls.Completion) -> tuple[str, Path | None, str]:
    """The first half of `keep_reply`, where the reply came back (the call process,
    `daydream.call_process`): saved (or spilled) under a new call id. (call id, where it was
    saved or None, the ReplyNotKept message or "")."""
    call_id = new_call_id(prompt)
    try:
        return call_id, save_reply(paths, member, prompt, done, call_id), ""
    except ReplyNotKept as error:
        return call_id, None, str(error)


def record_kept(rt: Runtime, member: Member, done: calls.Completion, call_id: str, saved: Path | None,
                not_kept: BaseException | None, fresh: bool = True, **extra) -> Path:
    """The second half of `keep_reply`: the saved reply's line in llm_calls.jsonl, then the
    failure to save it (`not_kept`, ReplyNotKept) raised, or the first failure to record it."""
    failure = not_kept
    try:
        _record_kept(rt, member, done, call_id, fresh, extra)
    except OSError as error:
        log.error("%s: its call (cost_usd=%s, usage=%s) could not be recorded in %s: %s", member.gen_id,
                  done.cost_usd, done.usage, rt.paths.llm_calls_jsonl, error.strerror or error)
        failure = failure or ReplyNotKept(
            f"{member.gen_id}: its call could not be recorded in {rt.paths.llm_calls_jsonl} "
            f"({error.strerror or error}); the reply is saved in {saved}, so the next run makes no call: free "
            f"space in {rt.paths.data_root} and run again")
    if failure is not None:
        raise failure
    return saved


def _record_kept(rt: Runtime, member: Member, done: calls.Completion, call_id: str, fresh: bool, extra: dict) -> None:
    if fresh:  # a new call id has no line yet: no need to look
        record_call(rt, member, done, call_id=call_id, **extra)
    else:
        _record_once(rt, member, done, call_id, **extra)


def answer(rt: Runtime, member: Member, prompt: Prompt) -> Answer:
    """The reply to a document's prompt: saved, restored or called (see the module's docstring).
    A document the run's call engine serves (`Run.engine`, `daydream.engine`) is answered by it:
    the engine goes through the same steps below, its call on its event loop."""
    engine = rt.run.engine
    if engine is not None and engine.serves(member):
        return engine.answer(member, prompt)
    earlier = found(rt, member, prompt)
    if earlier is not None:
        return earlier
    ticket = before_call(rt, member, prompt)
    try:
        try:
            done = calls.call_model(**call_arguments(rt, member, prompt, ticket))
        except calls.LLMCallError as error:
            call_failed(rt, member, prompt, error)
            raise
        keep_paid(rt, member, prompt, ticket, done)
    finally:
        rt.run.end_call(ticket)
    return called(rt, member, prompt, done)


# The steps of `answer`, in order; the call engine takes the same ones around its own call.
def found(rt: Runtime, member: Member, prompt: Prompt) -> Answer | None:
    """The reply saved for this prompt, else the paid record of an earlier prompt, else None."""
    record = saved_record(rt.paths, member, prompt.sha256)
    if record is not None:
        log.info("reusing saved reply gen_id=%s, no call made", member.gen_id)
        recover_record(rt, member, record)
        return Answer(prompt, _completion(record), "saved", record)
    restored = restore_earlier(rt.paths, member, prompt.sha256)
    if restored is not None:
        recover_record(rt, member, restored.record)
        log.warning("%s: its prompt changed since it was paid for; the paid prompt and reply are kept, no call "
                    "made (listed in %s; regenerate it on purpose with scripts/regenerate.py)",
                    member.gen_id, rt.paths.stale_generations_csv)
    return restored


def before_call(rt: Runtime, member: Member, prompt: Prompt) -> Ticket:
    """The checks before a new call, then its admission by the budget guard (`Run.admit_call`:
    BudgetReached when it could pass a budget; it may wait for calls in flight). The caller
    ends the ticket with `Run.end_call` whatever happens."""
    batch_policy.refuse_direct_call(rt, member, prompt)
    check_room(rt, member)
    return rt.run.admit_call(member, prompt)


def call_arguments(rt: Runtime, member: Member, prompt: Prompt, ticket: Ticket) -> dict:
    """The arguments of `calls.call_model` / `calls.acall_model` for this document's call."""
    return {**call_request(rt, member, prompt), "limits": rt.run.limits,
            "on_billed": lambda attempt: record_attempt(rt, member, ticket, attempt)}


def call_request(rt: Runtime, member: Member, prompt: Prompt) -> dict:
    """The part of `call_arguments` that is data (what the call process is sent)."""
    return {"row": rt.experiment.models[member.llm_model_id], "prompt": prompt.text, "stage": member.stage,
            "settings": rt.settings, "gen_id": member.gen_id, "replicate": member.replicate,
            "cache_prefix": prompt.shared_prefix}


def call_failed(rt: Runtime, member: Member, prompt: Prompt, error: calls.LLMCallError) -> None:
    """A call that failed for good: an answered reply without usable text is kept as the paid
    reply (already counted), and the failure is recorded."""
    keep_failed_reply(rt.paths, member, prompt, error)
    record_failure(rt, member, error)


def keep_failed_reply(paths: Paths, member: Member, prompt: Prompt, error: calls.LLMCallError) -> None:
    """The first half of `call_failed` (the call process takes it where the call failed)."""
    if error.billed is not None and error.billed.billed == http_errors.BILLED:
        save_reply(paths, member, prompt, _failed_reply(error.billed))


def keep_paid(rt: Runtime, member: Member, prompt: Prompt, ticket: Ticket, done: calls.Completion) -> None:
    """A call came back: counted first (in memory, it cannot fail), then saved and recorded."""
    rt.run.paid(ticket, done)
    keep_reply(rt, member, prompt, done)


def called(rt: Runtime, member: Member, prompt: Prompt, done: calls.Completion) -> Answer:
    rehearsal.note_rehearsal(rt, member)
    return Answer(prompt, done, "called")
