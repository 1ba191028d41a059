"""The batch round (`write_round`, the checkpoint `provider_batch`): one per stage and run.

A round submits the requests of its documents that no batch holds yet, reattaches to the live
batches that hold the others, and then, with `batch.wait`, sleeps between polls until every one
has ended; without it, it looks once and leaves the rest in flight. Each result is saved in the
paid-reply ledger the moment it is read, at `pricing.batch_prices`, and its cost counted by the
Run (`Run.batch_paid`).

Every batch passes the budget before it is submitted (`Run.spend_batch`): its high estimate
(every request at batch prices, its reply at max_tokens) is reserved, and recorded with each
request, so that a live batch counts against the budgets until it is collected. A batch that
could pass a budget is not submitted: its documents end the round `refused`, and their jobs
fail with the guard's message (`BudgetReached`), as a direct call's would.

Never paid twice: the durable batch ledger (`daydream.batch.ledger`) has each batch's id and
requests on disk before anyone waits on it; a request a live batch holds is never submitted
again. Failed (429, 5xx), expired and cancelled requests are submitted again in a new batch (or
called directly, with `batch.resubmit: direct`), up to `batch.max_submissions` times per run;
the ones that succeeded never are.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from daydream import calls, documents, ledger, pricing, progress, store
from daydream.batch import ledger as batch_ledger
from daydream.batch.gate import round_members
from daydream.batch.policy import COLLECTED, DIRECT, FAILED, IN_FLIGHT, REFUSED, BatchError, batch_settings
from daydream.experiment import ModelRow
from daydream.membership import Member, UnknownGenerationError
from daydream.paths import Paths
from daydream.prompts import Prompt
from daydream.providers import (
    BatchProvider,
    BatchResult,
    BatchState,
    BatchTarget,
    CallRequest,
    batch_provider_for,
    http_errors,
)
from daydream.run import BudgetReached
from daydream.runtime import Runtime
from daydream.settings import BatchSettings

log = logging.getLogger(__name__)

MAX_POLL_FAILURES = 10  # consecutive failed looks at the provider before a waiting round gives up


@dataclass
class _Wanted:
    member: Member
    prompt: Prompt
    submissions: int = 0
    error: BatchResult | None = None
    refused: str | None = None  # not submitted: the budget guard's reason


def write_round(rt: Runtime, stage: str, run_id: str, round_id: str, out_path: str,
                log_path: str | None = None) -> None:
    """The checkpoint `provider_batch`: make sure every document of the round has its reply saved,
    through batches (submitting only what no live batch holds), then record each one's state."""
    config = batch_settings(rt)
    members = round_members(rt, stage, run_id, round_id)
    states: dict[str, str] = {}
    wanted: dict[str, _Wanted] = {}
    for member in members:
        prompt = documents.document_prompt(rt, member)
        paid = ledger.saved_reply(rt.paths, member, prompt.sha256) or ledger.earlier_replies(
            rt.paths, member, prompt.sha256)
        if paid:
            states[member.gen_id] = COLLECTED
        else:
            wanted[member.gen_id] = _Wanted(member, prompt)
    poll_failures = 0
    while True:
        with batch_ledger.locked(rt.paths):
            poll_failures = 0 if collect_live(rt, wanted, states, {m.gen_id for m in members}) else poll_failures + 1
            _decide_and_submit(rt, stage, config, wanted, states)
        waiting = [g for g in wanted if g not in states]
        if not waiting or not config.wait:
            break
        if poll_failures >= MAX_POLL_FAILURES:
            raise BatchError(f"{stage} batch round {round_id}: the provider did not answer {poll_failures} looks "
                             f"in a row (see the log above); the batches are kept: run again later to reattach")
        _log_progress(rt, stage, waiting, config.poll_interval_s)
        if not _sleep(config.poll_interval_s):
            raise BatchError(f"{stage} batch round {round_id}: Snakemake is stopping; {len(waiting)} requests stay "
                             "in flight and the next run reattaches to their batches")
    _finish_round(rt, stage, round_id, out_path, log_path, members, wanted, states)


_STOPPING = threading.Event()


def watch_interrupts() -> None:
    """Once, when a real run starts (`onstart:`, main thread): a Ctrl-C also tells a waiting round to stop, then
    goes on to the handler it replaced. Without it, Snakemake's answer to Ctrl-C (shutting its
    thread pool down, waiting for the jobs that run) would wait for the batches to end."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or getattr(previous, "daydream", False):
        return

    def interrupted(signum, frame):
        _STOPPING.set()
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    interrupted.daydream = True
    signal.signal(signal.SIGINT, interrupted)


def _sleep(seconds: float) -> bool:
    """Sleep between polls: False as soon as Snakemake is stopping (a Ctrl-C, or its main thread
    has ended), so a round never keeps a stopping process alive for hours."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if not threading.main_thread().is_alive() or _STOPPING.wait(min(1.0, left)):
            return False
    return threading.main_thread().is_alive() and not _STOPPING.is_set()


def _finish_round(rt: Runtime, stage: str, round_id: str, out_path: str, log_path: str | None,
                  members: list[Member], wanted: dict[str, _Wanted], states: dict[str, str]) -> None:
    reasons, held = {}, batch_ledger.held(rt.paths)
    for gen_id in wanted:
        states.setdefault(gen_id, IN_FLIGHT if (stage, gen_id) in held else FAILED)
        if states[gen_id] in (FAILED, DIRECT):
            reasons[gen_id] = _reason(wanted[gen_id])
        elif states[gen_id] == REFUSED:
            reasons[gen_id] = wanted[gen_id].refused
    run = rt.run.batches
    with run.lock:
        for gen_id, state in states.items():
            run.outcomes[gen_id] = (state, reasons.get(gen_id, ""))
    counts = {s: sum(v == s for v in states.values()) for s in (COLLECTED, IN_FLIGHT, FAILED, DIRECT)}
    if REFUSED in states.values():
        counts[REFUSED] = sum(v == REFUSED for v in states.values())
    store.write_json_atomic(Path(out_path), {"stage": stage, "round_id": round_id, "run_id": run.run_id,
                                             "documents": {m.gen_id: states[m.gen_id] for m in members},
                                             "reasons": reasons, "counts": counts, "created_at": ledger.now_iso()})
    line = f"{stage} batch round {round_id}: {counts}"
    if counts[IN_FLIGHT]:
        line += "; the documents in flight are left for a later run (python scripts/batches.py list)"
    log.info(line)
    store.write_job_log(log_path, line)


def _reason(item: _Wanted) -> str:
    error = item.error
    if error is None:
        return "no result"
    status = f" (HTTP {error.status})" if error.status else ""
    return f"{error.kind}{status}: {error.error or 'no detail'} after {item.submissions} submission(s)"


def _retryable(result: BatchResult) -> bool:
    """Expired, cancelled, a 429, a 5xx, or no status (no text, a failed batch): ask again."""
    if result.kind in ("expired", "canceled") or result.status is None:
        return True
    return result.status in http_errors.TRANSIENT_STATUS or (500 <= result.status < 600
                                                              and result.status not in (501, 505))


def _decide_and_submit(rt: Runtime, stage: str, config: BatchSettings, wanted: dict[str, _Wanted],
                       states: dict[str, str]) -> None:
    """Under the ledger lock: each wanted document not yet decided is saved (collected), held by a
    live batch (wait), failed for good, to be called directly, or submitted in a new batch."""
    held = batch_ledger.held(rt.paths)
    to_submit: dict[str, list[_Wanted]] = defaultdict(list)
    for gen_id, item in wanted.items():
        if gen_id in states or (stage, gen_id) in held:
            continue
        if ledger.saved_reply(rt.paths, item.member, item.prompt.sha256) is not None:
            states[gen_id] = COLLECTED
        elif item.error is not None and (not _retryable(item.error) or item.submissions >= config.max_submissions):
            states[gen_id] = FAILED
            _record_failure(rt, item)
        elif item.error is not None and config.resubmit == "direct":
            states[gen_id] = DIRECT
        else:
            to_submit[item.member.llm_model_id].append(item)
    for model_id, items in to_submit.items():
        row = rt.experiment.models[model_id]
        provider = batch_provider_for(calls.route_of(row, rt.settings))
        for chunk in _chunks(rt, provider, config, stage, row, items):
            _submit(rt, provider, stage, row, chunk)
    for gen_id, item in wanted.items():
        if item.refused is not None:
            states[gen_id] = REFUSED


def _record_failure(rt: Runtime, item: _Wanted) -> None:
    error = item.error
    message = f"{item.member.gen_id}: batch request failed for good: {_reason(item)}"
    log.warning(message)
    ledger.record_failure(rt, item.member, calls.LLMCallError(
        message, error_class=f"Batch{error.kind.capitalize()}", attempts=item.submissions, status=error.status))


def _call_request(rt: Runtime, stage: str, row: ModelRow, prompt: str) -> CallRequest:
    stage_settings = rt.settings.stage(stage)
    return CallRequest(row, calls.route_of(row, rt.settings), calls.model_string(row, rt.settings), stage, prompt,
                       stage_settings.temperature, stage_settings.max_tokens, stage_settings.timeout_s, None)


def _chunks(rt: Runtime, provider: BatchProvider, config: BatchSettings, stage: str, row: ModelRow,
            items: list[_Wanted]) -> list[list[tuple[_Wanted, dict]]]:
    """The requests cut into batches of at most max_requests and max_bytes (the lower of the
    config's and the provider's limits); one request larger than that goes alone."""
    most, most_bytes = min(config.max_requests, provider.max_requests), min(config.max_bytes, provider.max_bytes)
    chunks: list[list[tuple[_Wanted, dict]]] = [[]]
    size = 0
    for item in items:
        line = provider.request_line(item.member.gen_id, _call_request(rt, stage, row, item.prompt.text))
        line_bytes = len(json.dumps(line).encode("utf-8")) + 1
        if chunks[-1] and (len(chunks[-1]) >= most or size + line_bytes > most_bytes):
            chunks.append([])
            size = 0
        chunks[-1].append((item, line))
        size += line_bytes
    return [c for c in chunks if c]


def target_of(rt_settings, row: ModelRow) -> BatchTarget:
    return BatchTarget(calls.route_of(row, rt_settings), row.model, row.api_base, calls.api_key(row, rt_settings))


def _submit(rt: Runtime, provider: BatchProvider, stage: str, row: ModelRow,
            chunk: list[tuple[_Wanted, dict]]) -> None:
    """Requests on disk, then the batch created, then its id on disk: a crash at any point leaves a
    record that the next run resolves (`_resolve_preparing`) instead of submitting again."""
    target, local_id = target_of(rt.settings, row), batch_ledger.new_local_id()
    stage_settings = rt.settings.stage(stage)
    highs = _high_estimates(rt, row, stage, chunk)
    requests = {item.member.gen_id: {
        "stage": stage, "gen_id": item.member.gen_id, "prompt": item.prompt.text,
        "prompt_sha256": item.prompt.sha256, "prompt_sources": item.prompt.sources,
        "submission": item.submissions + 1, "temperature": stage_settings.temperature,
        "max_tokens": stage_settings.max_tokens, "high_usd": highs[item.member.gen_id]} for item, _ in chunk}
    state = {"local_id": local_id, "state": batch_ledger.PREPARING, "provider": provider.name,
             "route": target.route, "api_base": row.api_base, "key_env": calls.key_env_var(row, rt.settings),
             "model_id": row.id, "model": calls.model_string(row, rt.settings), "stage": stage, "batch_id": None,
             "requests": len(requests), "created_at": ledger.now_iso(), "created_epoch": time.time(),
             "status": None, "done": 0, "failed": 0}
    try:
        with rt.run.spend_batch(stage, row.id, highs):  # the live batch's requests commit it from here on
            batch_ledger.write_requests(rt.paths, local_id, requests)
            batch_ledger.write_state(rt.paths, state)
    except BudgetReached as error:
        log.warning("%s", error)
        for item, _ in chunk:
            item.refused = str(error).split(": not submitted: ", 1)[-1]
        return
    for item, _ in chunk:
        item.submissions += 1
    try:
        state["batch_id"] = provider.submit(target, [line for _, line in chunk], local_id)
    except provider.errors() as error:
        _submit_failed(rt, provider, target, state, chunk, error)
        return
    state.update(state=batch_ledger.SUBMITTED, submitted_at=ledger.now_iso(), submitted_epoch=time.time())
    batch_ledger.write_state(rt.paths, state)
    rt.run.batch_submitted(stage, len(chunk))
    log.info("submitted provider batch %s (%s %s): %d %s requests to %s", local_id, provider.name,
             state["batch_id"], len(chunk), stage, state["model"])


def _high_estimates(rt: Runtime, row: ModelRow, stage: str, chunk: list[tuple[_Wanted, dict]]) -> dict[str, float | None]:
    """Each request's high estimate in USD at the batch prices, its reply at max_tokens (None
    when the price is unknown)."""
    prices = pricing.model_prices(row, rt.settings)[1]
    max_tokens = rt.settings.stage(stage).max_tokens
    if prices is None:
        return {item.member.gen_id: None for item, _ in chunk}
    return {item.member.gen_id: prices.cost(pricing.count_tokens(row, rt.settings, item.prompt.text), max_tokens)
            for item, _ in chunk}


def _submit_failed(rt: Runtime, provider: BatchProvider, target: BatchTarget, state: dict,
                   chunk: list[tuple[_Wanted, dict]], error: BaseException) -> None:
    """A create that failed may still have made the batch (the answer was lost): look for it
    before the requests are free again."""
    if _resolve_preparing(rt.paths, provider, target, state):
        return
    status = http_errors.status_of(error)
    message = calls.one_line(f"{type(error).__name__}: {error}", target.api_key)
    log.warning("provider batch %s was not created: %s", state["local_id"], message)
    for item, _ in chunk:
        item.error = BatchResult(item.member.gen_id, "errored", error=f"the batch was not created: {message}",
                                 status=status if http_errors.retry_decision(error) is None else None)


def _resolve_preparing(paths: Paths, provider: BatchProvider, target: BatchTarget, state: dict) -> bool:
    """A `preparing` record: adopt the batch the provider made from it, or mark it abandoned.
    Only called under the ledger lock, so the record is no submission in progress."""
    known = {s["batch_id"] for s in batch_ledger.all_states(paths) if s.get("batch_id")}
    try:
        found = provider.find(target, state["local_id"], state["created_epoch"], state["requests"], known)
    except provider.errors() as error:
        log.warning("could not look for provider batch %s: %s", state["local_id"], type(error).__name__)
        found = None
    if found:
        state.update(batch_id=found, state=batch_ledger.SUBMITTED, submitted_at=ledger.now_iso(),
                     submitted_epoch=state["created_epoch"])
        log.warning("provider batch %s: found %s, created before a crash; attached to it", state["local_id"], found)
    else:
        state["state"] = batch_ledger.ABANDONED
    batch_ledger.write_state(paths, state)
    return bool(found)


# -- polling and collecting ------------------------------------------------------------------------
def collect_live(rt: Runtime, wanted: dict[str, _Wanted] | None, states: dict[str, str] | None,
                 members: set[str] | None = None) -> bool:
    """Under the ledger lock: look at each live batch (of the round's documents `members`, else of
    the wanted ones, or all of them), collect the ended ones. A batch whose replies were all saved
    before a stop kept it from being marked collected is collected too: live, it would commit the
    budget for good. False when the provider could not be reached for some batch."""
    reached = True
    ours = members if members is not None else set(wanted) if wanted is not None else None
    for state in batch_ledger.live_states(rt.paths):
        requests = batch_ledger.read_requests(rt.paths, state["local_id"])
        if ours is not None and not any(r["gen_id"] in ours for r in requests.values()):
            continue
        try:
            results = poll(rt, state, requests)
        except BatchError as error:
            log.warning("%s", error)
            reached = False
            continue
        for result in results or []:
            request = requests[result.custom_id]
            item = (wanted or {}).get(request["gen_id"])
            if item is not None and result.kind != "succeeded":
                item.error = result
            elif item is not None and states is not None:
                states[request["gen_id"]] = COLLECTED
    return reached


def _row(rt: Runtime, model_id: str) -> ModelRow | None:
    try:
        return rt.experiment.models.get(model_id)
    except (OSError, ValueError):
        return None


def target_from_state(state: dict) -> BatchTarget:
    var = state.get("key_env")
    key = os.environ.get(var) if var else None
    if var and not key:
        raise BatchError(f"provider batch {state['local_id']} ({state['model']}): environment variable {var} is "
                         f"not set; export {var}=... to look at it")
    model = state["model"].split("/", 1)[1] if "/" in state["model"] else state["model"]
    return BatchTarget(state["route"], model, state.get("api_base") or "", key)


def poll(rt: Runtime, state: dict, requests: dict[str, dict]) -> list[BatchResult] | None:
    """One look at a live batch (under the ledger lock); when it has ended, every result is read
    and each reply saved in the paid-reply ledger, and the batch is `collected`. Returns its
    results then, None while it runs. BatchError when the provider cannot be reached."""
    provider, target = batch_provider_for(state["route"]), target_from_state(state)
    try:
        if state["state"] == batch_ledger.PREPARING and not _resolve_preparing(rt.paths, provider, target, state):
            return [BatchResult(cid, "canceled", error="the batch was never created") for cid in requests]
        seen = provider.status(target, state["batch_id"])
        _note(rt.paths, state, seen)
        if not seen.ended:
            return None
        results = provider.results(target, state["batch_id"], list(requests))
    except provider.errors() as error:
        raise BatchError(f"provider batch {state['local_id']} ({state['batch_id']}): could not look at it: "
                         f"{calls.one_line(f'{type(error).__name__}: {error}', target.api_key)}") from error
    _save_results(rt, state, requests, results)
    return results


def _note(paths: Paths, state: dict, seen: BatchState) -> None:
    state.update(status=seen.status, done=seen.done, failed=seen.failed, total=seen.total,
                 polled_at=ledger.now_iso())
    batch_ledger.write_state(paths, state)


def _save_results(rt: Runtime, state: dict, requests: dict[str, dict], results: list[BatchResult]) -> None:
    """Each succeeded request counted by the Run (`Run.batch_paid`), saved in the paid-reply
    ledger at the batch price and appended to llm_calls.jsonl with the batch's id
    (`ledger.keep_reply`), then the batch is `collected` with every outcome. A reply saved before
    a stop gets its missing call record line (`ledger.recover_record`), never a second one."""
    row = _row(rt, state["model_id"])
    prices = pricing.batch_prices(row, state["route"]) if row is not None else None
    duration = round(max(0.0, time.time() - state.get("submitted_epoch", state["created_epoch"])), 3)
    outcomes = {}
    for result in results:
        request = requests[result.custom_id]
        member = _member(rt, request, state["model_id"])
        prompt = Prompt(request["prompt"], request["prompt_sha256"], request.get("prompt_sources") or {})
        outcomes[result.custom_id] = result.kind if result.kind != "errored" else f"errored: {result.error}"
        if result.reply is None:
            continue
        saved = ledger.saved_record(rt.paths, member, prompt.sha256)
        if saved is not None:  # saved before a stop: its call record line is written if it is missing
            ledger.recover_record(rt, member, saved)
            continue
        usage = result.reply.usage
        cost = prices.cost(usage.get("prompt_tokens"), usage.get("completion_tokens")) if prices else None
        done = calls.Completion(result.reply.text, state["model"], result.reply.finish_reason, usage, cost, duration,
                                request["submission"], request["temperature"], request["max_tokens"])
        call_id = f"{state['local_id']}/{result.custom_id}"  # one line per batch request, however often read
        if not ledger.is_recorded(rt.paths, call_id):  # else counted by the run that recorded it
            rt.run.batch_paid(member, done)  # counted first: in memory, it cannot fail
        ledger.keep_reply(rt, member, prompt, done, call_id, batch_id=state["batch_id"],
                          provider_batch=state["local_id"])
    state.update(state=batch_ledger.COLLECTED, collected_at=ledger.now_iso(), outcomes=outcomes)
    batch_ledger.write_state(rt.paths, state)
    saved = sum(r.kind == "succeeded" for r in results)
    log.info("collected provider batch %s (%s): %d of %d requests answered, %d failed, expired or cancelled",
             state["local_id"], state["batch_id"], saved, len(results), len(results) - saved)


def _member(rt: Runtime, request: dict, model_id: str) -> Member:
    try:
        return rt.membership.member(request["gen_id"])
    except UnknownGenerationError:  # collected outside the cohorts that asked (scripts/batches.py)
        return Member(request["stage"], request["gen_id"], "", "", "", "", model_id, 0)


def _log_progress(rt: Runtime, stage: str, waiting: list[str], interval: float) -> None:
    """One line per live batch of the stage and one for the round: shown on the terminal."""
    for state in batch_ledger.live_states(rt.paths):
        if state["stage"] == stage:
            progress.status(log, f"provider batch {state['local_id']} ({state['provider']} {state.get('batch_id')}, "
                                 f"{stage} {state['model_id']}): {state.get('status') or 'submitted'}, "
                                 f"{state.get('done', 0)} of {state['requests']} done, {state.get('failed', 0)} "
                                 f"failed; next look in {interval:g}s")
    progress.status(log, f"{stage}: {len(waiting)} requests still in flight")
