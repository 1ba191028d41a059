"""Cluster runs: batches of model calls, one Slurm job each (README.md, "Running on a cluster").

With `reply_batch_size` > 0 (profiles/slurm sets it), a `gen_replies` job makes the model
calls of up to that many documents of one stage in threads of one process, under
llm.max_concurrency and the per-model caps, and saves each reply in the paid-reply ledger
(`daydream.ledger`), as any paid reply. It writes no gens file: each document's own
`gen_document` job, a localrule, then writes its files from the saved reply without a call. A cancelled or failed batch therefore leaves only whole saved
replies, and its rerun calls only the rest.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from daydream import documents, ledger, store
from daydream.batch import policy as batch_policy
from daydream.prompts import sha256_text
from daydream.runtime import Runtime

BATCH_ID_PATTERN = r"[0-9]{4}_[0-9a-f]{10}"


class BatchError(RuntimeError):
    """A batch that cannot run or whose calls failed; the message says what to do."""


def reply_batches(rt: Runtime, stage: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The stage's model-call documents of the active cohorts in membership order, cut into
    batches: ({batch_id: gen_ids}, {gen_id: batch_id}). Cut from all documents, done or not,
    so the main Snakemake and the one in the Slurm job agree; an id is the batch's position
    plus a hash of its gen_ids, so it never names other documents after a cohort changes."""
    key = (stage, rt.membership.signature(), rt.reply_batch_size)
    cuts = rt.run.reply_cuts
    with rt.run.reply_cuts_lock:
        if key not in cuts:
            ids = {m.gen_id: None for c in rt.cohort_ids for m in rt.membership.members(c, stage)
                   if rt.template(m).generator == "llm" and not batch_policy.batched(rt, m)}
            size, ordered = rt.reply_batch_size, list(ids)
            chunks = [ordered[i:i + size] for i in range(0, len(ordered), size)]
            cut = {f"{n:04d}_{sha256_text('|'.join(chunk))[:10]}": chunk for n, chunk in enumerate(chunks)}
            cuts[key] = cut, {g: b for b, chunk in cut.items() for g in chunk}
        return cuts[key]


def batch_of(rt: Runtime, stage: str, gen_id: str) -> str | None:
    """Cluster runs: the batch that makes a document's call while its raw.txt is missing."""
    if not rt.reply_batch_size or rt.paths.raw_path(stage, gen_id).exists():
        return None
    return reply_batches(rt, stage)[1].get(gen_id)


def pending_in_batch(rt: Runtime, stage: str, batch_id: str) -> list[str]:
    batches = reply_batches(rt, stage)[0]
    if batch_id not in batches:
        raise BatchError(f"{stage} batch {batch_id} is no batch of cohorts {rt.cohort_ids} with reply_batch_size="
                         f"{rt.reply_batch_size}; run with the cohorts and batch size that planned it")
    return [g for g in batches[batch_id] if not rt.paths.raw_path(stage, g).exists()]


def save_reply(rt: Runtime, gen_id: str) -> str:
    """Render one document's prompt and make sure a reply to it is saved: `called` or `reused`."""
    member = rt.membership.member(gen_id)
    prompt = documents.document_prompt(rt, member)
    return "called" if ledger.answer(rt, member, prompt).source == "called" else "reused"


def write_reply_batch(rt: Runtime, stage: str, batch_id: str, out_path: str, log_path: str | None = None) -> None:
    """One Slurm job: the calls of a batch's pending documents in threads, each reply saved as
    soon as it arrives. Fails once all calls ended if any failed (see llm_errors.jsonl); the
    saved replies stay, so the next run reuses them and calls only the failed documents."""
    gen_ids = pending_in_batch(rt, stage, batch_id)
    with ThreadPoolExecutor(max_workers=rt.settings.max_concurrency) as pool:
        futures = {gen_id: pool.submit(save_reply, rt, gen_id) for gen_id in gen_ids}
    outcome = {g: f"failed: {f.exception()}" if f.exception() else f.result() for g, f in futures.items()}
    failed = sorted(g for g, result in outcome.items() if result.startswith("failed"))
    store.write_job_log(log_path, f"{stage} batch {batch_id}: " + ", ".join(f"{g}={r}" for g, r in outcome.items()))
    if failed:
        raise BatchError(f"{stage} batch {batch_id}: {len(failed)} of {len(gen_ids)} calls failed ({', '.join(failed)}; "
                         f"see {rt.paths.llm_errors_jsonl}); the other replies are saved and a rerun reuses them")
    store.write_json_atomic(Path(out_path), {"stage": stage, "batch_id": batch_id, "documents": outcome,
                                             "created_at": ledger.now_iso()})
