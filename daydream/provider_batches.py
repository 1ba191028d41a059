"""Batch mode: a stage's calls to a model go through the provider's batch API (half price).

Which calls: a document of an `llm` template whose model row has `batch=true` in
llm_models.csv, unless `batch.stages.<stage>` in the config says otherwise for the whole stage
(never the offline model, nor under `offline=true`: a rehearsal calls it directly).

How they flow through the DAG (README "Batch mode"). The default target holds back every
document that waits on a batch, and whatever is made from it (children, reports, the stale
report). In its place it targets a **batch round**: the checkpoint `provider_batch`, one job per
stage and run (`write_round`). A round submits the requests of its documents that no batch
holds yet, reattaches to the live batches that hold the others, and then, with `batch.wait`,
sleeps between polls until every one has ended; without it, it looks once and leaves the rest
in flight. Each result is saved in the paid-reply ledger the moment it is read. When the round
ends, Snakemake evaluates the default target again: a document whose reply is saved is now
targeted, and its `gen_document` job writes its files from the saved reply without a call
(`ledger.answer` returns `saved`); one still in flight stays held back, so a run that submits
and exits ends without an error and says what it left for the next run. A round is named by
its run (`run_id`), so every run looks at its batches again.

Never paid twice: the durable batch ledger (`daydream.batch_ledger`) has each batch's id and
requests on disk before anyone waits on it; a request a live batch holds is never submitted
again, nor called directly (`refuse_direct_call`, asked by `ledger.answer`). Failed (429, 5xx),
expired and cancelled requests are submitted again in a new batch (or called directly, with
`batch.resubmit: direct`), up to `batch.max_submissions` times per run; the ones that succeeded
never are.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from daydream import batch_ledger, calls, documents, ledger, pricing, progress, settings, stages, store
from daydream.experiment import ModelRow
from daydream.membership import Member, UnknownGenerationError
from daydream.paths import Paths
from daydream.prompts import Prompt, sha256_text
from daydream.providers import (
    BATCH_ROUTES,
    OFFLINE_ROUTE,
    BatchProvider,
    BatchResult,
    BatchState,
    BatchTarget,
    CallRequest,
    batch_provider_for,
    has_batch_api,
    http_errors,
)
from daydream.runtime import Runtime

log = logging.getLogger(__name__)

RUN_ID_PATTERN = r"[0-9]{8}T[0-9]{6}_[0-9]+"
ROUND_ID_PATTERN = r"[0-9a-f]{12}"
# What a round says of each of its documents.
COLLECTED, IN_FLIGHT, FAILED, DIRECT = "collected", "in_flight", "failed", "direct"
MAX_POLL_FAILURES = 10  # consecutive failed looks at the provider before a waiting round gives up


class BatchError(RuntimeError):
    """A batch round that cannot go on; the message says what to do."""


class BatchPendingError(RuntimeError):
    """A document whose call belongs to a provider batch: no direct call is made for it."""


@dataclass(frozen=True)
class BatchSettings:
    """`batch:` of the config (defaults in config/schema/config.schema.yaml)."""

    wait: bool
    poll_interval_s: float
    max_requests: int
    max_bytes: int
    max_submissions: int
    resubmit: str
    stages: dict[str, bool]

    @classmethod
    def from_config(cls, config: dict) -> BatchSettings:
        section = dict(config["batch"])
        return cls(wait=settings.as_bool(section.pop("wait")), stages=dict(section.pop("stages")), **section)


def batch_settings(rt: Runtime) -> BatchSettings:
    run = _run(rt)
    if run.settings is None:
        run.settings = BatchSettings.from_config(rt.config)
    return run.settings


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


# -- the run's rounds (in this process) ---------------------------------------------------------
@dataclass
class _Run:
    run_id: str
    rounds: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # (stage, round) -> gen_ids
    round_of: dict[str, tuple[str, str]] = field(default_factory=dict)  # gen_id -> (stage, round)
    outcomes: dict[str, tuple[str, str]] = field(default_factory=dict)  # gen_id -> (state, reason)
    records: dict[str, dict] = field(default_factory=dict)  # round path -> its finished record
    settings: BatchSettings | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)


_RUNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_RUNS_LOCK = threading.Lock()


def _run(rt: Runtime) -> _Run:
    with _RUNS_LOCK:
        if rt not in _RUNS:
            _RUNS[rt] = _Run(f"{time.strftime('%Y%m%dT%H%M%S')}_{os.getpid()}")
        return _RUNS[rt]


def _register(rt: Runtime, stage: str, gen_ids: list[str]) -> tuple[str, str]:
    run = _run(rt)
    with run.lock:
        key = (stage, sha256_text("|".join(gen_ids))[:12])
        run.rounds.setdefault(key, tuple(gen_ids))
        for gen_id in gen_ids:
            run.round_of.setdefault(gen_id, key)
        return key


def round_path(rt: Runtime, key: tuple[str, str]) -> Path:
    return rt.paths.batch_round_path(_run(rt).run_id, *key)


def _round_record(rt: Runtime, key: tuple[str, str]) -> dict | None:
    run, path = _run(rt), round_path(rt, key)
    with run.lock:
        if str(path) not in run.records and path.exists():
            run.records[str(path)] = json.loads(path.read_text(encoding="utf-8"))
        return run.records.get(str(path))


@dataclass(frozen=True)
class Gate:
    """What the default target holds back (`blocked` gen_ids) and the rounds it targets instead."""

    blocked: frozenset[str]
    rounds: tuple[str, ...]


def gate(rt: Runtime) -> Gate:
    """Stage by stage, root first: a document waits on a batch while its reply is not collected in
    this run (its round has not ended, or left it in flight); its descendants wait with it. The
    documents of a stage that wait on no round yet, but whose parents are not held back, get new
    rounds: one for those whose parents exist, one for those whose parents this run makes."""
    if not any_batched(rt):
        return Gate(frozenset(), ())
    run, blocked, targets, seen = _run(rt), set(), set(), set()
    for stage in stages.STAGES:
        fresh: dict[bool, list[str]] = {True: [], False: []}  # parents on disk now, or made in this run
        for cohort_id in rt.cohort_ids:
            for member in rt.membership.members(cohort_id, stage.name):
                if member.gen_id in seen:
                    continue
                seen.add(member.gen_id)
                if member.parent_gen_id and member.parent_gen_id in blocked:
                    blocked.add(member.gen_id)
                elif batched(rt, member) and not rt.paths.raw_path(stage.name, member.gen_id).exists():
                    key = run.round_of.get(member.gen_id)
                    record = _round_record(rt, key) if key else None
                    if key is None:
                        ready = stage.is_root or rt.paths.parsed_path(stage.parent, member.parent_gen_id).exists()
                        fresh[ready].append(member.gen_id)
                    elif record is None:
                        targets.add(str(round_path(rt, key)))
                    if record is None or record["documents"].get(member.gen_id) == IN_FLIGHT:
                        blocked.add(member.gen_id)
        for gen_ids in fresh.values():  # apart, so a parent that fails holds back only its own round
            if gen_ids:
                targets.add(str(round_path(rt, _register(rt, stage.name, gen_ids))))
    return Gate(frozenset(blocked), tuple(sorted(targets)))


def round_input(rt: Runtime, stage: str, gen_id: str) -> str | None:
    """A document job's wait: the round of its run that collects its reply, while raw.txt is
    missing (a document targeted by hand gets a round of its own)."""
    if not any_batched(rt) or rt.paths.raw_path(stage, gen_id).exists():
        return None
    member = rt.membership.member(gen_id)
    if not batched(rt, member):
        return None
    key = _run(rt).round_of.get(gen_id) or _register(rt, stage, [gen_id])
    return str(round_path(rt, key))


def round_members(rt: Runtime, stage: str, run_id: str, round_id: str) -> list[Member]:
    run = _run(rt)
    gen_ids = run.rounds.get((stage, round_id))
    if run_id != run.run_id or gen_ids is None:
        raise BatchError(f"{stage} batch round {round_id} of run {run_id} is not a round of this run "
                         f"({run.run_id}); run the default target (plain `snakemake`) instead of naming it")
    return [rt.membership.member(g) for g in gen_ids]


# -- one round ------------------------------------------------------------------------------------
@dataclass
class _Wanted:
    member: Member
    prompt: Prompt
    submissions: int = 0
    error: BatchResult | None = None


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
            poll_failures = 0 if _collect_live(rt, wanted, states) else poll_failures + 1
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
    run = _run(rt)
    with run.lock:
        for gen_id, state in states.items():
            run.outcomes[gen_id] = (state, reasons.get(gen_id, ""))
    counts = {s: sum(v == s for v in states.values()) for s in (COLLECTED, IN_FLIGHT, FAILED, DIRECT)}
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


def _record_failure(rt: Runtime, item: _Wanted) -> None:
    error = item.error
    message = f"{item.member.gen_id}: batch request failed for good: {_reason(item)}"
    log.warning(message)
    ledger._record_failure(rt, item.member, calls.LLMCallError(
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
    requests = {item.member.gen_id: {
        "stage": stage, "gen_id": item.member.gen_id, "prompt": item.prompt.text,
        "prompt_sha256": item.prompt.sha256, "prompt_sources": item.prompt.sources,
        "submission": item.submissions + 1, "temperature": stage_settings.temperature,
        "max_tokens": stage_settings.max_tokens} for item, _ in chunk}
    state = {"local_id": local_id, "state": batch_ledger.PREPARING, "provider": provider.name,
             "route": target.route, "api_base": row.api_base, "key_env": calls.key_env_var(row, rt.settings),
             "model_id": row.id, "model": calls.model_string(row, rt.settings), "stage": stage, "batch_id": None,
             "requests": len(requests), "created_at": ledger.now_iso(), "created_epoch": time.time(),
             "status": None, "done": 0, "failed": 0}
    batch_ledger.write_requests(rt.paths, local_id, requests)
    batch_ledger.write_state(rt.paths, state)
    for item, _ in chunk:
        item.submissions += 1
    try:
        state["batch_id"] = provider.submit(target, [line for _, line in chunk], local_id)
    except provider.errors() as error:
        _submit_failed(rt, provider, target, state, chunk, error)
        return
    state.update(state=batch_ledger.SUBMITTED, submitted_at=ledger.now_iso(), submitted_epoch=time.time())
    batch_ledger.write_state(rt.paths, state)
    log.info("submitted provider batch %s (%s %s): %d %s requests to %s", local_id, provider.name,
             state["batch_id"], len(chunk), stage, state["model"])


def _submit_failed(rt: Runtime, provider: BatchProvider, target: BatchTarget, state: dict,
                   chunk: list[tuple[_Wanted, dict]], error: BaseException) -> None:
    """A create that failed may still have made the batch (the answer was lost): look for it
    before the requests are free again."""
    if _resolve_preparing(rt.paths, provider, target, state):
        return
    status = http_errors.status_of(error)
    message = calls._one_line(f"{type(error).__name__}: {error}", target.api_key)
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
def _collect_live(rt: Runtime, wanted: dict[str, _Wanted] | None, states: dict[str, str] | None) -> bool:
    """Under the ledger lock: look at each live batch (of the wanted documents, or all of them),
    collect the ended ones. False when the provider could not be reached for some batch."""
    reached = True
    for state in batch_ledger.live_states(rt.paths):
        requests = batch_ledger.read_requests(rt.paths, state["local_id"])
        if wanted is not None and not any(r["gen_id"] in wanted for r in requests.values()):
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


def _target_from_state(state: dict) -> BatchTarget:
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
    provider, target = batch_provider_for(state["route"]), _target_from_state(state)
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
                         f"{calls._one_line(f'{type(error).__name__}: {error}', target.api_key)}") from error
    _save_results(rt, state, requests, results)
    return results


def _note(paths: Paths, state: dict, seen: BatchState) -> None:
    state.update(status=seen.status, done=seen.done, failed=seen.failed, total=seen.total,
                 polled_at=ledger.now_iso())
    batch_ledger.write_state(paths, state)


def _save_results(rt: Runtime, state: dict, requests: dict[str, dict], results: list[BatchResult]) -> None:
    """Each succeeded request saved in the paid-reply ledger at the batch price and appended to
    llm_calls.jsonl with the batch's id, then the batch is `collected` with every outcome."""
    row = _row(rt, state["model_id"])
    prices = pricing.batch_prices(row, state["route"]) if row is not None else None
    duration = round(max(0.0, time.time() - state.get("submitted_epoch", state["created_epoch"])), 3)
    outcomes = {}
    for result in results:
        request = requests[result.custom_id]
        member = _member(rt, request, state["model_id"])
        prompt = Prompt(request["prompt"], request["prompt_sha256"], request.get("prompt_sources") or {})
        outcomes[result.custom_id] = result.kind if result.kind != "errored" else f"errored: {result.error}"
        if result.reply is None or ledger.saved_reply(rt.paths, member, prompt.sha256) is not None:
            continue
        usage = result.reply.usage
        cost = prices.cost(usage.get("prompt_tokens"), usage.get("completion_tokens")) if prices else None
        done = calls.Completion(result.reply.text, state["model"], result.reply.finish_reason, usage, cost, duration,
                                request["submission"], request["temperature"], request["max_tokens"])
        ledger.save_reply(rt.paths, member, prompt, done)
        ledger._record_call(rt, member, done, batch_id=state["batch_id"], provider_batch=state["local_id"])
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


# -- the direct path's guard ------------------------------------------------------------------------
def refuse_direct_call(rt: Runtime, member: Member, prompt: Prompt) -> None:
    """Before any direct call (`ledger.answer`): raise BatchPendingError when a live batch holds the
    document's request, or when the document is in batch mode and this run did not let it go
    direct (its round left it in flight or it failed there)."""
    holder = batch_ledger.held(rt.paths).get((member.stage, member.gen_id))
    if holder is not None:
        raise BatchPendingError(
            f"{member.gen_id}: its request is in provider batch {holder[0]}, still in flight, so no direct call is "
            f"made; collect it with `python scripts/batches.py collect --data-root {rt.paths.data_root}` or run "
            "snakemake again")
    if not any_batched(rt) or not batched(rt, member):
        return
    state, reason = _run(rt).outcomes.get(member.gen_id, (None, ""))
    if state == DIRECT:
        return
    why = f"its batch request failed: {reason}" if state == FAILED else "no batch round of this run collected it"
    raise BatchPendingError(f"{member.gen_id}: batch mode ({member.stage}, model {member.llm_model_id}) and {why}; "
                            f"see {rt.paths.llm_errors_jsonl}; run snakemake again to submit it again")


# -- commands (scripts/batches.py) ------------------------------------------------------------------
def list_batches(paths: Paths) -> list[dict]:
    """One row per batch of the ledger (columns.PROVIDER_BATCH_LIST_COLUMNS)."""
    return [{"local_id": s["local_id"], "provider": s["provider"], "batch_id": s.get("batch_id") or "",
             "stage": s["stage"], "model_id": s["model_id"], "state": s["state"], "status": s.get("status") or "",
             "requests": s["requests"], "done": s.get("done", 0), "failed": s.get("failed", 0),
             "created_at": s["created_at"]} for s in batch_ledger.all_states(paths)]


def collect(rt: Runtime) -> list[dict]:
    """Look at every live batch once and collect the ended ones (no submission)."""
    with batch_ledger.locked(rt.paths):
        _collect_live(rt, None, None)
    return list_batches(rt.paths)


def cancel(rt: Runtime, local_ids: list[str]) -> list[str]:
    """Ask the provider to cancel these live batches (all live ones when none is named). What they
    finished is collected as usual; the rest counts as cancelled and a later run submits it again."""
    with batch_ledger.locked(rt.paths):
        live = {s["local_id"]: s for s in batch_ledger.live_states(rt.paths)}
        chosen = local_ids or sorted(live)
        unknown = [i for i in chosen if i not in live]
        if unknown:
            raise BatchError(f"not live batches: {', '.join(unknown)} (python scripts/batches.py list)")
        for local_id in chosen:
            state = live[local_id]
            if state.get("batch_id"):
                batch_provider_for(state["route"]).cancel(_target_from_state(state), state["batch_id"])
                log.info("asked %s to cancel provider batch %s (%s)", state["provider"], local_id, state["batch_id"])
    return chosen


def log_waiting(rt: Runtime) -> None:
    """At the end of a run: say what is still in flight and how to collect it."""
    live = batch_ledger.live_states(rt.paths) if rt.paths.provider_batches_dir.exists() else []
    if live:
        requests = sum(s["requests"] for s in live)
        log.warning("%d requests are in %d provider batches still in flight; the documents that need them and the "
                    "reports built from them are left for a later run: run snakemake again to collect them "
                    "(`python scripts/batches.py list --data-root %s` shows them)", requests, len(live),
                    rt.paths.data_root)


def command_runtime(data_root: str | None) -> Runtime:
    """The Runtime of scripts/batches.py: config/config.yaml, the data root resolved as the
    workflow does (`--data-root` > $DAYDREAM_DATA_ROOT > config.yaml) and its daydream.yaml."""
    from daydream import settings

    return Runtime(settings.command_config(data_root))


def format_batches(rows: list[dict]) -> str:
    """The batch list as aligned text columns (columns.PROVIDER_BATCH_LIST_COLUMNS)."""
    from daydream.columns import PROVIDER_BATCH_LIST_COLUMNS as columns

    table = [list(columns)] + [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in table)
