"""What each gens-store rule does, one function per rule, for one document.

Rules call exactly one of these with the shared `Runtime` and the wildcards; they never
build paths or strings themselves. `write_response` is the only function that can spend
money, and it spends it at most once per prompt: every paid reply is first saved under
`.replies/` in the document's folder (never a Snakemake output, so never deleted by it) and
reused if the same prompt is asked again, e.g. after a killed run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path

from daydream import gens, llm_calls, parsers, prompts
from daydream.experiment import Experiment, Template, load_experiment
from daydream.membership import Member, MembershipIndex
from daydream.paths import GEN_FILES, Paths

log = logging.getLogger(__name__)


def configure_logging(level: int = logging.INFO) -> None:
    """Send the package's log lines (one per model call, retries, warnings) to stderr once."""
    logger = logging.getLogger("daydream")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("daydream %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


class StepError(RuntimeError):
    """A document that cannot be made; the message names the document, the file and the fix."""


def cohort_list(value: object) -> list[str]:
    """`cohorts` from config or `--config cohorts=pilot` / `'cohorts=["a","b"]'`."""
    items = [value] if isinstance(value, str) else list(value or [])
    return [str(item).strip() for item in items if str(item).strip()]


class Runtime:
    """Everything a job needs, built once per Snakemake process from the config."""

    def __init__(self, config: dict):
        self.paths = Paths.from_str(config["data_root"])
        self.cohort_ids = cohort_list(config["cohorts"])
        self.settings = llm_calls.LLMSettings.from_config(config)
        self.membership = MembershipIndex(self.paths, self.cohort_ids)
        self.reply_batch_size = int(config.get("reply_batch_size") or 0)  # cluster runs: see batches
        self.batch_cache: dict[tuple, tuple[dict[str, list[str]], dict[str, str]]] = {}
        self._experiment: Experiment | None = None
        self._lock = threading.Lock()
        if self.settings.offline and self.paths.data_root.resolve() == Path("data").resolve():
            log.warning("offline=true writes rehearsal replies into %s; they would stand in for paid "
                        "ones (the stale report flags them). Use --config data_root=<another folder>.",
                        self.paths.data_root)

    @property
    def experiment(self) -> Experiment:
        with self._lock:
            if self._experiment is None:
                self._experiment = load_experiment(self.paths)
            return self._experiment

    def template(self, member: Member) -> Template:
        return self.experiment.templates[member.stage][member.template_id]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parent_stage(stage: str) -> str | None:
    return {"essay": "draft", "evaluation": "essay"}.get(stage)


# -- inputs -----------------------------------------------------------------------------------
def prompt_inputs(rt: Runtime, stage: str, gen_id: str) -> dict[str, object]:
    """Files a prompt is rendered from: its template, concept texts or the parent's parsed text."""
    member = rt.membership.member(gen_id)
    inputs: dict[str, object] = {}
    if rt.template(member).generator == "llm":
        inputs["template"] = str(rt.paths.template_path(stage, member.template_id))
    if stage == "draft":
        combo = rt.membership.combo(member.combo_id)
        inputs["concepts"] = [str(rt.paths.description_path(combo.level, c)) for c in combo.concepts]
    else:
        inputs["parent"] = str(rt.paths.parsed_path(parent_stage(stage), member.parent_gen_id))
    return inputs


# -- prompt -----------------------------------------------------------------------------------
def _concepts(rt: Runtime, combo_id: str) -> list[dict]:
    combo = rt.membership.combo(combo_id)
    return [{"concept_id": c, "name": rt.experiment.concepts.get(c, c),
             "content": rt.paths.description_path(combo.level, c).read_text(encoding="utf-8").strip()}
            for c in combo.concepts]


def render_prompt(rt: Runtime, stage: str, gen_id: str) -> str:
    """The prompt text of a document; a `copy` essay's prompt is its draft's parsed text."""
    member = rt.membership.member(gen_id)
    if stage == "draft":
        variables = prompts.draft_variables(_concepts(rt, member.combo_id))
    else:
        parent = rt.paths.parsed_path(parent_stage(stage), member.parent_gen_id).read_text(encoding="utf-8")
        if rt.template(member).generator == "copy":
            return parent
        variables = (prompts.essay_variables if stage == "essay" else prompts.evaluation_variables)(parent)
    return prompts.render(rt.paths.template_path(stage, member.template_id), **variables)


def note(log_path: str | Path | None, line: str) -> None:
    """The job's own log file (the rule's `log:`), one line of what it did."""
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text(line + "\n", encoding="utf-8")


def prompt_sources(rt: Runtime, member: Member) -> dict[str, str]:
    """SHA-256 of what a prompt is rendered from: its template and its concepts or parent.
    Stored in metadata, so a stale report can say *why* a prompt changed."""
    files = prompt_inputs(rt, member.stage, member.gen_id)
    sources = {}
    if "template" in files:
        sources["template"] = sha256_text(Path(files["template"]).read_text(encoding="utf-8"))
    if "concepts" in files:
        texts = [Path(f).read_text(encoding="utf-8") for f in files["concepts"]]
        sources["concepts"] = sha256_text("\x1f".join(texts))
    if "parent" in files:
        sources["parent"] = sha256_text(Path(files["parent"]).read_text(encoding="utf-8"))
    return sources


# -- response ---------------------------------------------------------------------------------
def saved_reply_path(paths: Paths, stage: str, gen_id: str, prompt_sha256: str) -> Path:
    return paths.gen_dir(stage, gen_id) / ".replies" / f"{prompt_sha256[:16]}.json"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _copy_completion(text: str) -> llm_calls.Completion:
    return llm_calls.Completion(text, "", None, {"prompt_tokens": 0, "completion_tokens": 0,
                                                    "total_tokens": 0}, 0.0, 0.0, 0)


def paid_completion(rt: Runtime, member: Member, prompt: str, prompt_sha: str) -> llm_calls.Completion:
    """A saved reply for this exact prompt if one exists, else a new (paid) call, saved at once."""
    saved = saved_reply_path(rt.paths, member.stage, member.gen_id, prompt_sha)
    if saved.exists():
        log.info("reusing saved reply gen_id=%s (%s), no call made", member.gen_id, saved)
        return llm_calls.Completion(**json.loads(saved.read_text(encoding="utf-8")))
    row = rt.experiment.models[member.llm_model_id]
    try:
        done = llm_calls.call_model(row, prompt, stage=member.stage, settings=rt.settings, gen_id=member.gen_id)
    except llm_calls.LLMCallError as error:
        gens.append_jsonl(rt.paths.llm_errors_jsonl, {
            "time": now_iso(), "gen_id": member.gen_id, "stage": member.stage, "model_id": row.id,
            "model": llm_calls.litellm_model(row, rt.settings), "error_class": error.error_class,
            "status": error.status, "message": str(error), "attempts": error.attempts})
        raise
    gens.write_json_atomic(saved, done.__dict__, fsync=True)
    gens.append_jsonl(rt.paths.llm_calls_jsonl, {
        "time": now_iso(), "gen_id": member.gen_id, "stage": member.stage, "model_id": row.id,
        "model": done.model, "attempts": done.attempts, "wait_s": done.wait_s, "usage": done.usage,
        "cost_usd": done.cost_usd, "duration_s": done.duration_s, "finish_reason": done.finish_reason})
    return done


def metadata(rt: Runtime, member: Member, template: Template, done: llm_calls.Completion,
             prompt_sha: str) -> dict:
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
        "prompt_sha256": prompt_sha, "prompt_sources": prompt_sources(rt, member), "created_at": now_iso(),
    }


def refuse_silent_repayment(rt: Runtime, member: Member, prompt_sha: str) -> None:
    """A reply paid for an earlier prompt of this document exists: making it again must be a
    deliberate regeneration, not a side effect of a deleted file or a rerun trigger."""
    replies = rt.paths.gen_dir(member.stage, member.gen_id) / ".replies"
    earlier = sorted(p for p in replies.glob("*.json") if p.stem != prompt_sha[:16]) if replies.exists() else []
    if earlier and not saved_reply_path(rt.paths, member.stage, member.gen_id, prompt_sha).exists():
        raise StepError(
            f"{member.gen_id}: a reply was already paid for an earlier prompt ({earlier[-1]}) and the "
            f"prompt has changed since (see {rt.paths.stale_generations_csv}); to pay for a new reply "
            f"run: python scripts/regenerate.py --data-root {rt.paths.data_root} {member.gen_id}")


def write_response(rt: Runtime, stage: str, gen_id: str, log_path: str | None = None) -> None:
    """prompt.txt, raw.txt and metadata.json of one document: the prompt is rendered now and
    answered by a model call, a reply saved earlier for the same prompt, or a copy."""
    member = rt.membership.member(gen_id)
    template = rt.template(member)
    prompt = render_prompt(rt, stage, gen_id)
    prompt_sha = sha256_text(prompt)
    gens.clear_temp_files(rt.paths.gen_dir(stage, gen_id))
    gens.write_text_atomic(rt.paths.prompt_path(stage, gen_id), prompt)
    if template.generator == "llm":
        refuse_silent_repayment(rt, member, prompt_sha)
    done = _copy_completion(prompt) if template.generator == "copy" else paid_completion(rt, member, prompt, prompt_sha)
    gens.write_text_atomic(rt.paths.raw_path(stage, gen_id), done.text)
    gens.write_json_atomic(rt.paths.metadata_path(stage, gen_id), metadata(rt, member, template, done, prompt_sha))
    note(log_path, f"{gen_id}: {template.generator} model={done.model or '-'} attempts={done.attempts} "
                   f"finish={done.finish_reason} usage={done.usage} cost_usd={done.cost_usd}")


# -- parse ------------------------------------------------------------------------------------
def _parse_failure(rt: Runtime, member: Member, parser: str, reason: str, raw: str) -> StepError:
    tail = raw[-300:]
    gens.append_jsonl(rt.paths.parse_errors_jsonl, {
        "time": now_iso(), "gen_id": member.gen_id, "stage": member.stage, "parser": parser,
        "reason": reason, "raw_tail": tail})
    raw_path = rt.paths.raw_path(member.stage, member.gen_id)
    return StepError(f"{member.gen_id}: parser {parser!r} failed: {reason}; the response is kept in "
                     f"{raw_path}; its tail: {' '.join(tail.split())[-160:]!r}")


def write_parsed(rt: Runtime, stage: str, gen_id: str, log_path: str | None = None) -> None:
    """parsed.txt of one document; a truncated or unparsable reply fails with the reason."""
    member = rt.membership.member(gen_id)
    template = rt.template(member)
    gens.clear_temp_files(rt.paths.gen_dir(stage, gen_id))
    raw = rt.paths.raw_path(stage, gen_id).read_text(encoding="utf-8")
    meta = gens.read_metadata(rt.paths, stage, gen_id)
    if meta.get("truncated"):
        raise _parse_failure(rt, member, template.parser, (
            f"the reply was truncated (finish_reason={meta.get('finish_reason')}, "
            f"{meta.get('usage', {}).get('completion_tokens')} completion tokens, max_tokens="
            f"{meta.get('max_tokens')}); raise llm.stages.{stage}.max_tokens and regenerate it"), raw)
    try:
        parsed = parsers.parse(stage, template.parser, raw,
                               score_min=template.score_min, score_max=template.score_max)
    except parsers.ParseError as error:
        raise _parse_failure(rt, member, template.parser, error.reason, raw) from error
    gens.write_text_atomic(rt.paths.parsed_path(stage, gen_id), parsed)
    note(log_path, f"{gen_id}: parsed with {template.parser!r}: {len(parsed)} characters")


# -- cohorts ----------------------------------------------------------------------------------
def cohort_file(cohorts_dir: Path, cohort_id: str) -> Path:
    return Path(cohorts_dir) / f"{cohort_id}.yaml"


def cohort_inputs(rt: Runtime, cohorts_dir: Path, cohort_id: str) -> dict[str, object]:
    """The cohort file and every definition it is checked against (tables and templates)."""
    raw = rt.paths.raw_root
    tables = [rt.paths.concepts_metadata_csv, rt.paths.models_csv,
              *(rt.paths.templates_csv(stage) for stage in ("draft", "essay", "evaluation"))]
    return {"cohort_file": str(cohort_file(cohorts_dir, cohort_id)),
            "tables": [str(t) for t in tables],
            "templates": sorted(str(p) for p in (raw / "templates").glob("*/*.txt"))}


def cohort_is_current(rt: Runtime, cohorts_dir: Path, cohort_id: str) -> bool:
    """True when membership and manifest exist and are newer than every checkpoint input."""
    outputs = [rt.paths.membership_csv(cohort_id), rt.paths.manifest_json(cohort_id)]
    if not all(p.exists() for p in outputs):
        return False
    sources = cohort_inputs(rt, cohorts_dir, cohort_id)
    files = [Path(sources["cohort_file"]), *map(Path, sources["tables"]), *map(Path, sources["templates"])]
    newest_input = max((f.stat().st_mtime for f in files if f.exists()), default=0.0)
    return min(p.stat().st_mtime for p in outputs) >= newest_input


def cohort_targets(rt: Runtime, cohort_id: str) -> list[str]:
    """Every gens-store file of every member of a cohort."""
    paths = rt.paths
    return [str(paths.gen_dir(m.stage, m.gen_id) / name)
            for m in rt.membership.members(cohort_id) for name in GEN_FILES]


def drop_derived_reports(rt: Runtime, cohort_id: str) -> None:
    """A new membership outdates the cohort's reports and the stale report. Snakemake 9 does
    not rerun jobs it adds after a checkpoint when their outputs exist but are older than
    their inputs, so these derived (free to rebuild) files are removed and made again."""
    shutil.rmtree(rt.paths.reports_dir(cohort_id), ignore_errors=True)
    rt.paths.stale_generations_csv.unlink(missing_ok=True)


def write_cohort(rt: Runtime, cohort_path: str, cohort_id: str, log_path: str | None = None) -> None:
    """The checkpoint: validate the cohort and write its manifest and membership."""
    from daydream import cohorts

    def check_models(rows, where):
        return llm_calls.missing_keys(rows, rt.settings, where)

    rows = cohorts.build_cohort(rt.paths, cohort_id, Path(cohort_path), check_models=check_models)
    drop_derived_reports(rt, cohort_id)
    counts = {stage: sum(r["stage"] == stage for r in rows) for stage in ("draft", "essay", "evaluation")}
    note(log_path, f"cohort {cohort_id}: {counts}")
