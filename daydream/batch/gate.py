"""Batch mode in the DAG: what the default target holds back, and the rounds it targets instead.

The default target holds back every document that waits on a batch, and whatever is made from
it (children, reports, the stale report). In its place it targets a **batch round**: the
checkpoint `provider_batch`, one job per stage and run (`daydream.batch.rounds.write_round`).
When the round ends, Snakemake evaluates the default target again: a document whose reply is
saved is now targeted, and its `gen_document` job writes its files from the saved reply without
a call; one still in flight stays held back, so a run that submits and exits ends without an
error. A round is named by its run (`run_id`), so every run looks at its batches again. The
rounds of a run are `Run.batches` (`daydream.run.BatchRounds`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from daydream import documents, ledger, stages
from daydream.batch.policy import FAILED, IN_FLIGHT, REFUSED, BatchError, any_batched, batched
from daydream.membership import Member
from daydream.prompts import sha256_text
from daydream.runtime import Runtime

RUN_ID_PATTERN = r"[0-9]{8}T[0-9]{6}_[0-9]+"


ROUND_ID_PATTERN = r"[0-9a-f]{12}"


def register(rt: Runtime, stage: str, gen_ids: list[str]) -> tuple[str, str]:
    run = rt.run.batches
    with run.lock:
        key = (stage, sha256_text("|".join(gen_ids))[:12])
        run.rounds.setdefault(key, tuple(gen_ids))
        for gen_id in gen_ids:
            run.round_of.setdefault(gen_id, key)
        return key


def round_path(rt: Runtime, key: tuple[str, str]) -> Path:
    return rt.paths.batch_round_path(rt.run.batches.run_id, *key)


def round_record(rt: Runtime, key: tuple[str, str]) -> dict | None:
    run, path = rt.run.batches, round_path(rt, key)
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
    rounds: one for those whose parents exist, one for those whose parents this run makes. A
    document whose parent this run cannot make (`parent_fails`) joins no round: a round waits on
    every parent of its documents, so one failed parent would hold back the whole stage's batch;
    it is held back with its descendants (its parent's own job still runs and fails with the
    reason), and the next run asks again."""
    if not any_batched(rt):
        return Gate(frozenset(), ())
    run, blocked, targets, seen = rt.run.batches, set(), set(), set()
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
                    record = round_record(rt, key) if key else None
                    if key is None:
                        ready = stage.is_root or rt.paths.parsed_path(stage.parent, member.parent_gen_id).exists()
                        if not ready and parent_fails(rt, member):
                            blocked.add(member.gen_id)
                            continue
                        fresh[ready].append(member.gen_id)
                    elif record is None:
                        targets.add(str(round_path(rt, key)))
                    if record is None or record["documents"].get(member.gen_id) == IN_FLIGHT:
                        blocked.add(member.gen_id)
        for gen_ids in fresh.values():  # apart, so a parent that fails holds back only its own round
            if gen_ids:
                targets.add(str(round_path(rt, register(rt, stage.name, gen_ids))))
    return Gate(frozenset(blocked), tuple(sorted(targets)))


def parent_fails(rt: Runtime, member: Member) -> str | None:
    """Why this run cannot make the parent of `member` (its parsed text is missing), or None when
    it may: its batch request ended this run failed, or not submitted (a budget), or its saved
    reply does not parse (a refusal, a truncated or empty reply: `documents.reply_fails`). A
    parent that is still to be called directly may fail too; that is not known in advance.
    Remembered for the run once known (`BatchRounds.parent_failures`)."""
    run, parent = rt.run.batches, member.parent_gen_id
    with run.lock:
        if parent in run.parent_failures:
            return run.parent_failures[parent]
    why = None
    key = run.round_of.get(parent)
    record = round_record(rt, key) if key else None
    if record is not None and record["documents"].get(parent) in (FAILED, REFUSED):
        why = f"its batch request {record['documents'][parent]}: {record['reasons'].get(parent, '')}"
    else:
        done = _newest_reply(rt, rt.membership.member(parent))
        why = documents.reply_fails(rt, rt.membership.member(parent), done) if done is not None else None
    if why is not None:
        with run.lock:
            run.parent_failures[parent] = why
    return why


def _newest_reply(rt: Runtime, member: Member):
    """The newest reply saved for the document, or None (none, or one that cannot be read: its
    job says which file and the fix)."""
    newest = None
    for path in ledger.earlier_replies(rt.paths, member, ""):
        try:
            record = ledger.read_record(path)
        except ledger.ReplyRecordError:
            return None
        if newest is None or record.get("saved_at", "") > newest.get("saved_at", ""):
            newest = record
    return None if newest is None else ledger.saved_completion(newest)


def round_input(rt: Runtime, stage: str, gen_id: str) -> str | None:
    """A document job's wait: the round of its run that collects its reply, while raw.txt is
    missing (a document targeted by hand gets a round of its own)."""
    if not any_batched(rt) or rt.paths.raw_path(stage, gen_id).exists():
        return None
    member = rt.membership.member(gen_id)
    if not batched(rt, member):
        return None
    key = rt.run.batches.round_of.get(gen_id) or register(rt, stage, [gen_id])
    return str(round_path(rt, key))


def round_members(rt: Runtime, stage: str, run_id: str, round_id: str) -> list[Member]:
    run = rt.run.batches
    gen_ids = run.rounds.get((stage, round_id))
    if run_id != run.run_id or gen_ids is None:
        raise BatchError(f"{stage} batch round {round_id} of run {run_id} is not a round of this run "
                         f"({run.run_id}); run the default target (plain `snakemake`) instead of naming it")
    return [rt.membership.member(g) for g in gen_ids]
