"""What the gens-store rule does for one document (`rules/gens.smk`, rule `gen_document`).

`write_document` builds the prompt once from its sources, answers it (a copy, or through the
paid-reply ledger: a saved reply, the restored record of an earlier paid prompt, or a new
call), writes prompt.txt, raw.txt and metadata.json, then parses the reply into parsed.txt.
A reply that does not parse fails the job with the reason after raw.txt is written; the
profile's `keep-incomplete` keeps it readable, and the next run parses it again from the
ledger without a call. Rules call this with the shared `Runtime` and the wildcards.
"""

from __future__ import annotations

import logging

from daydream import checks, job_log, ledger, parsers, stages, store
from daydream.calls import Completion
from daydream.experiment import Template
from daydream.membership import Member
from daydream.prompts import Concept, Prompt, PromptFiles, build_prompt, sha256_text
from daydream.providers import http_errors
from daydream.run import PARSE
from daydream.runtime import Runtime

log = logging.getLogger(__name__)


class DocumentError(RuntimeError):
    """A document that cannot be made; the message names the document, the file and the fix."""

    failure_kind = PARSE  # how the run's summary counts it


def prompt_files(rt: Runtime, member: Member) -> PromptFiles:
    """The files a document's prompt is made from: its template (unless a copy), and its
    combo's concept texts (root stage) or its parent's parsed text."""
    stage, template = stages.get(member.stage), rt.template(member)
    template_path = rt.paths.template_path(member.stage, member.template_id) if template.generator == "llm" else None
    if template_path is not None:
        _inside_raw(rt, member, template_path)
    if stage.is_root:
        combo = rt.membership.combo(member.combo_id)
        concepts = tuple(Concept(c, rt.experiment.concepts.get(c, c), rt.paths.description_path(combo.level, c))
                         for c in combo.concepts)
        for concept in concepts:
            _inside_raw(rt, member, concept.path)
        return PromptFiles(member.stage, template_path, concepts=concepts)
    return PromptFiles(member.stage, template_path, parent=rt.paths.parsed_path(stage.parent, member.parent_gen_id))


def parent_file(rt: Runtime, member: Member) -> str | None:
    """The parent's parsed.txt a document's prompt is made from, None for the root stage: the
    one file its job waits for (`prompt_files` is the same path, with the template and concept
    files checked; the job itself checks them). A string, joined without Path objects:
    Snakemake asks it once per document job."""
    stage = stages.get(member.stage)
    return None if stage.is_root else rt.paths.gen_file_text(stage.parent, member.parent_gen_id, "parsed.txt")


def _inside_raw(rt: Runtime, member: Member, path) -> None:
    """DocumentError when a file a prompt would be built from lies outside 1_raw/ (an id that is
    a path, a symlink out): nothing outside the data root's definitions is ever sent."""
    if not rt.paths.inside_raw(path):
        raise DocumentError(f"{member.gen_id}: its prompt would read {path}, which is outside {rt.paths.raw_root}; "
                            "ids name files in 1_raw/ (letters, digits, '_', '.', '-'): fix the id in the "
                            "cohort or definition file, or replace the symlink by the file itself")


def document_prompt(rt: Runtime, member: Member, parent_text: str | None = None) -> Prompt:
    """The document's prompt; `parent_text`: its parent's parsed text, not read from its file
    (`prompts.build_prompt`)."""
    return build_prompt(prompt_files(rt, member), parent_text)


def _copy_answer(prompt: Prompt) -> ledger.Answer:
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return ledger.Answer(prompt, Completion(prompt.text, "", None, usage, 0.0, 0.0, 0), "copy")


def metadata(rt: Runtime, member: Member, template: Template, done: Completion, prompt: Prompt) -> dict:
    """metadata.json (SPEC §5). Temperature and max_tokens are those the reply was made with
    (the config's only for replies saved before calls recorded them); never a key."""
    stage_settings = rt.settings.stage(member.stage)
    is_copy = template.generator == "copy"
    temperature = done.temperature if done.temperature is not None else stage_settings.temperature
    max_tokens = done.max_tokens if done.max_tokens is not None else stage_settings.max_tokens
    return {
        "stage": member.stage, "gen_id": member.gen_id,
        "task_id": f"{member.parent_gen_id or member.combo_id}__{member.template_id}__{member.llm_model_id}",
        "template_id": member.template_id, "model_id": member.llm_model_id,
        "model": done.model, "parent_gen_id": member.parent_gen_id, "combo_id": member.combo_id,
        "replicate": member.replicate, "cohort_id": member.cohort_id, "mode": template.generator,
        "parser": template.parser, "finish_reason": done.finish_reason,
        "truncated": False if is_copy else done.truncated(max_tokens),
        "usage": done.usage, "cost_usd": done.cost_usd, "duration_s": done.duration_s,
        "attempts": done.attempts,
        "temperature": None if is_copy else temperature,
        "max_tokens": None if is_copy else max_tokens,
        "prompt_sha256": prompt.sha256, "prompt_sources": prompt.sources, "created_at": ledger.now_iso(),
        "parsed_sha256": None,  # set once the reply parses
    }


def write_document(rt: Runtime, stage: str, gen_id: str, log_path: str | None = None) -> None:
    """All four files of one document. prompt.txt is written before any call, so a failed call
    leaves it to read; a restored document gets the prompt that was paid for. Counted by the run
    (`Run.document`) for the progress line and the summary. The first document job of a
    Snakemake process settles its heap (`Runtime.settle_heap_once`)."""
    rt.settle_heap_once()
    with job_log.document_log(log_path) as job, rt.run.document(stage, gen_id) as counted:
        counted.source = _write_document(rt, stage, gen_id, job)


def _written(rt: Runtime, member: Member, path, write, answer: ledger.Answer | None = None):
    """Run `write` (one gens file) and return what it returns; an OSError (a full disk, a
    read-only folder, a folder where the file should be) becomes a DocumentError naming the
    document, the file and the fix (and, after a paid answer, where its reply is kept)."""
    try:
        return write()
    except OSError as error:
        if isinstance(error, IsADirectoryError) or path.is_dir():
            fix = f"{path} is a folder, not a file: remove it and run again"
        else:
            fix = (f"{error.strerror or error}: free space (or make {rt.paths.data_root} writable) and run "
                   "again")
        raise DocumentError(f"{member.gen_id}: could not write {path}: {fix}{_kept(rt, member, answer)}") from error


def _kept(rt: Runtime, member: Member, answer: ledger.Answer | None) -> str:
    """Where the reply of a document whose file could not be written is kept (none for a copy)."""
    if answer is None or answer.source == "copy":
        return ""
    return (f" (its reply is saved in {rt.paths.reply_path(member.stage, member.gen_id, answer.prompt.sha256)} "
            "or a spill file named in the log, so the next run makes no call)")


def _write_document(rt: Runtime, stage: str, gen_id: str, job: job_log.JobLog) -> str:
    member = rt.membership.member(gen_id)
    template = rt.template(member)
    files = prompt_files(rt, member)
    prompt = build_prompt(files)
    paths = rt.paths
    folder = paths.gen_dir(stage, gen_id)
    prompt_path, raw_path, parsed_path = folder / "prompt.txt", folder / "raw.txt", folder / "parsed.txt"
    _written(rt, member, folder, lambda: store.clear_temp_files(folder))
    _written(rt, member, prompt_path, lambda: store.write_text_atomic(prompt_path, prompt.text))
    answer = _copy_answer(prompt) if template.generator == "copy" else ledger.answer(rt, member, prompt)
    if answer.prompt.sha256 != prompt.sha256:
        _written(rt, member, prompt_path, lambda: store.write_text_atomic(prompt_path, answer.prompt.text), answer)
    done = answer.completion
    _written(rt, member, raw_path, lambda: store.write_text_atomic(raw_path, done.text), answer)
    meta = metadata(rt, member, template, done, answer.prompt)
    metadata_path = folder / "metadata.json"
    try:
        parsed = parse_reply(rt, member, template, meta, done.text)
    except DocumentError:
        _written(rt, member, metadata_path, lambda: store.write_metadata(paths, stage, gen_id, meta), answer)
        raise
    meta["parsed_sha256"] = sha256_text(parsed)  # parsed.txt is checked against it (daydream.integrity)
    metadata_sha256 = _written(rt, member, metadata_path, lambda: store.write_metadata(paths, stage, gen_id, meta),
                               answer)
    _written(rt, member, parsed_path, lambda: store.write_text_atomic(parsed_path, parsed), answer)
    _record_checks(rt, member, files, prompt, meta, None if answer.source == "copy" else done.model,
                   {"raw.txt": sha256_text(done.text), "parsed.txt": meta["parsed_sha256"],
                    "metadata.json": metadata_sha256})
    job.line(f"{gen_id}: {answer.source} model={done.model or '-'} attempts={done.attempts} "
             f"finish={done.finish_reason} usage={done.usage} cost_usd={done.cost_usd} "
             f"parsed with {template.parser!r}: {len(parsed)} characters; saved {folder}")
    return answer.source


def _record_checks(rt: Runtime, member: Member, files: PromptFiles, prompt: Prompt, meta: dict,
                   paid_model: str | None, shas: dict[str, str]) -> None:
    """Keep what this job knows for the tail (`daydream.checks`): raw.txt is the saved reply it
    wrote, metadata.json was made from that reply, parsed.txt is its parse (`shas`: the SHA-256
    of each file's bytes as this job wrote them, atomically), and the prompt of today's sources
    is `prompt`. A record that cannot be written costs the tail a content check of this
    document, nothing else."""
    key = checks.source_key(member.stage, member.template_id, [(c.concept_id, c.name) for c in files.concepts],
                            prompt.sources)
    try:
        made = checks.record(rt.paths, member.stage, member.gen_id, meta, change=None, paid_model=paid_model,
                             parsed_sha256=meta["parsed_sha256"], prompt_key=key, prompt_now=prompt.sha256, shas=shas)
        checks.append(rt.paths, [made])
    except OSError as error:
        log.warning("%s: its check record could not be written to %s (%s); the stale report checks it by content",
                    member.gen_id, rt.paths.document_checks_jsonl, error.strerror or error)


def _parse_failure(rt: Runtime, member: Member, parser: str, reason: str, raw: str) -> DocumentError:
    tail = raw[-300:]
    store.append_jsonl(rt.paths.parse_errors_jsonl, {
        "time": ledger.now_iso(), "gen_id": member.gen_id, "stage": member.stage, "parser": parser,
        "reason": reason, "raw_tail": tail})
    raw_path = rt.paths.raw_path(member.stage, member.gen_id)
    return DocumentError(f"{member.gen_id}: parser {parser!r} failed: {reason}; the response is kept in "
                         f"{raw_path}; its tail: {' '.join(tail.split())[-160:]!r}")


def parse_reply(rt: Runtime, member: Member, template: Template, meta: dict, raw: str) -> str:
    """The parsed text of a reply; a refused, empty, truncated or unparsable reply fails with
    the reason (its reply stays saved: a rerun does not pay for it again)."""
    parsed, reason, error = _parsed(rt, member, template, meta, raw)
    if reason is not None:
        raise _parse_failure(rt, member, template.parser, reason, raw) from error
    return parsed


def parsed_ahead(rt: Runtime, member: Member, answer: ledger.Answer) -> str | None:
    """What the document's job will write to parsed.txt from this answer (the same steps,
    `metadata` and `parse_reply`'s checks), with no side effect; None when it will not parse.
    The call engine builds the children's prompts from it before that job runs."""
    template = rt.template(member)
    meta = metadata(rt, member, template, answer.completion, answer.prompt)
    return _parsed(rt, member, template, meta, answer.completion.text)[0]


def reply_fails(rt: Runtime, member: Member, done: Completion) -> str | None:
    """Why a document whose reply is `done` cannot be made (the reason its job would fail on), or
    None: asked before the job runs (`batch.gate`: a parent that fails holds back only its own
    children's batch requests). Writes nothing."""
    template = rt.template(member)
    max_tokens = done.max_tokens if done.max_tokens is not None else rt.settings.stage(member.stage).max_tokens
    meta = {"mode": template.generator, "finish_reason": done.finish_reason, "usage": done.usage,
            "max_tokens": max_tokens, "truncated": template.generator != "copy" and done.truncated(max_tokens)}
    return _parsed(rt, member, template, meta, done.text)[1]


def _parsed(rt: Runtime, member: Member, template: Template, meta: dict,
            raw: str) -> tuple[str | None, str | None, BaseException | None]:
    """(parsed text, None, None), or (None, the reason it does not parse, the ParseError)."""
    finish = meta.get("finish_reason")
    if meta.get("mode") != "copy" and (finish in http_errors.REFUSAL_FINISH_REASONS
                                       or (not raw.strip() and finish != "length")):
        what = "refused the prompt" if finish in http_errors.REFUSAL_FINISH_REASONS else "sent a reply without text"
        return None, (
            f"the provider {what} (finish_reason={finish}); it was paid for and is kept, so a rerun does not "
            f"send the prompt again: change the prompt or the model and regenerate it on purpose "
            f"(python scripts/regenerate.py --data-root {rt.paths.data_root} {member.gen_id})"), None
    if meta.get("truncated"):
        return None, (
            f"the reply was truncated (finish_reason={meta.get('finish_reason')}, "
            f"{(meta.get('usage') or {}).get('completion_tokens')} completion tokens, max_tokens="
            f"{meta.get('max_tokens')}); raise llm.stages.{member.stage}.max_tokens and regenerate it"), None
    try:
        parsed = parsers.parse(member.stage, template.parser, raw, score_min=template.score_min,
                               score_max=template.score_max)
        parsers.check_min_lines(member.stage, parsed, parsers.min_lines(rt.config, member.stage))
        return parsed, None, None
    except parsers.ParseError as error:
        return None, error.reason, error
