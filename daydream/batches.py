"""Cluster runs: batches of model calls, one Slurm job each (README.md, "Running on a cluster").

With `reply_batch_size` > 0 (profiles/slurm sets it), a `<stage>_replies` job makes the model
calls of up to that many documents in threads of one process, under llm.max_concurrency and the
per-model caps, and saves each reply under its document's `.replies/` (atomic, as any paid
reply). It writes no gens file: each document's own `<stage>_response` job, a localrule, then
writes prompt.txt, raw.txt and metadata.json from the saved reply without a call. A cancelled
or failed batch therefore leaves only whole saved replies, and its rerun calls only the rest.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from daydream import gens
from daydream.steps import (
    Runtime,
    StepError,
    note,
    now_iso,
    paid_completion,
    prompt_inputs,
    refuse_silent_repayment,
    render_prompt,
    saved_reply_path,
    sha256_text,
)


def reply_batches(rt: Runtime, stage: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The stage's model-call documents of the active cohorts in membership order, cut into
    batches: ({batch_id: gen_ids}, {gen_id: batch_id}). Cut from all documents, done or not,
    so the main Snakemake and the one in the Slurm job agree; an id is the batch's position
    plus a hash of its gen_ids, so it never names other documents after a cohort changes."""
    key = (stage, rt.membership.signature(), rt.reply_batch_size)
    if key not in rt.batch_cache:
        ids = {m.gen_id: None for c in rt.cohort_ids for m in rt.membership.members(c, stage)
               if rt.template(m).generator == "llm"}
        size, ordered = rt.reply_batch_size, list(ids)
        chunks = [ordered[i:i + size] for i in range(0, len(ordered), size)]
        batches = {f"{n:04d}_{sha256_text('|'.join(chunk))[:10]}": chunk for n, chunk in enumerate(chunks)}
        rt.batch_cache[key] = batches, {g: b for b, chunk in batches.items() for g in chunk}
    return rt.batch_cache[key]


def response_inputs(rt: Runtime, stage: str, gen_id: str) -> dict[str, object]:
    """A response job's inputs: its prompt's sources and, in cluster runs while raw.txt is
    missing, the record of the batch that makes its call (a finished document waits for none)."""
    inputs = prompt_inputs(rt, stage, gen_id)
    if rt.reply_batch_size and not rt.paths.raw_path(stage, gen_id).exists():
        batch_id = reply_batches(rt, stage)[1].get(gen_id)
        if batch_id:
            inputs["replies"] = str(rt.paths.reply_batch_path(stage, batch_id))
    return inputs


def pending_in_batch(rt: Runtime, stage: str, batch_id: str) -> list[str]:
    batches = reply_batches(rt, stage)[0]
    if batch_id not in batches:
        raise StepError(f"{stage} batch {batch_id} is no batch of cohorts {rt.cohort_ids} with reply_batch_size="
                        f"{rt.reply_batch_size}; run with the cohorts and batch size that planned it")
    return [g for g in batches[batch_id] if not rt.paths.raw_path(stage, g).exists()]


def reply_batch_inputs(rt: Runtime, stage: str, batch_id: str) -> dict[str, list[str]]:
    """What a batch's prompts are rendered from: the prompt inputs of its pending documents."""
    merged: dict[str, set[str]] = {}
    for gen_id in pending_in_batch(rt, stage, batch_id):
        for name, value in prompt_inputs(rt, stage, gen_id).items():
            merged.setdefault(name, set()).update(value if isinstance(value, list) else [value])
    return {name: sorted(values) for name, values in merged.items()}


def save_reply(rt: Runtime, stage: str, gen_id: str) -> str:
    """Render one document's prompt and make sure a reply to it is saved: `called` or `reused`."""
    member = rt.membership.member(gen_id)
    prompt = render_prompt(rt, stage, gen_id)
    prompt_sha = sha256_text(prompt)
    refuse_silent_repayment(rt, member, prompt_sha)
    reused = saved_reply_path(rt.paths, stage, gen_id, prompt_sha).exists()
    paid_completion(rt, member, prompt, prompt_sha)
    return "reused" if reused else "called"


def write_reply_batch(rt: Runtime, stage: str, batch_id: str, out_path: str, log_path: str | None = None) -> None:
    """One Slurm job: the calls of a batch's pending documents in threads, each reply saved as
    soon as it arrives. Fails once all calls ended if any failed (see llm_errors.jsonl); the
    saved replies stay, so the next run reuses them and calls only the failed documents."""
    gen_ids = pending_in_batch(rt, stage, batch_id)
    with ThreadPoolExecutor(max_workers=rt.settings.max_concurrency) as pool:
        futures = {gen_id: pool.submit(save_reply, rt, stage, gen_id) for gen_id in gen_ids}
    outcome = {g: f"failed: {f.exception()}" if f.exception() else f.result() for g, f in futures.items()}
    failed = sorted(g for g, result in outcome.items() if result.startswith("failed"))
    note(log_path, f"{stage} batch {batch_id}: " + ", ".join(f"{g}={r}" for g, r in outcome.items()))
    if failed:
        raise StepError(f"{stage} batch {batch_id}: {len(failed)} of {len(gen_ids)} calls failed ({', '.join(failed)}; "
                        f"see {rt.paths.llm_errors_jsonl}); the other replies are saved and a rerun reuses them")
    gens.write_json_atomic(Path(out_path), {"stage": stage, "batch_id": batch_id, "documents": outcome,
                                            "created_at": now_iso()})
