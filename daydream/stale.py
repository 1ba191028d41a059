"""Stale documents (SPEC §8): responses whose prompt would be different today, and responses
whose raw.txt is no longer the reply that was paid for.

A paid response is never re-requested because a template, a concept text or a parent changed;
instead it is listed in `data/7_reporting/stale_generations.csv`, rebuilt at the end of every
run, with the reason and both prompt hashes. `scripts/regenerate.py` re-makes chosen ones.

The report is built in two levels, so that no Snakemake job lists every document: the documents
are split into about sqrt(N) shards by draft lineage (`shards`: a draft, its essays and their
evaluations together, by a stable function of the draft's gen_id); each shard's job
(`write_stale_shard`, rule `stale_shard`) has its documents' files as inputs and writes their
verdicts to `7_reporting/stale_shards/<shard>.json`, and the report (`write_stale_report`) has
only the shard files as inputs and joins them. Snakemake's cost of preparing and finishing a job
grows with its inputs times its dependencies, which for one job over N documents is O(N^2).
Snakemake's greedy scheduler makes a run's documents lineage by lineage (a draft's children are
ready, and preferred for their larger inputs, as soon as it is made), so a shard of a few whole
lineages is ready, and runs, while the other documents go on; a shard of documents spread over
the whole cohort would wait for nearly the last one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import threading
import time
import zlib
from collections.abc import Sequence

from daydream import calls, checks, definitions, documents, integrity, stages, store
from daydream.columns import STALE_COLUMNS
from daydream.membership import Member
from daydream.prompts import CONCEPT_SEPARATOR, Prompt, PromptError, PromptFiles, build_prompt, sha256_text
from daydream.runtime import Runtime

log = logging.getLogger(__name__)

# A shard of the stale report: `by-draft-<index>-of-<count>` (`shard_name`). The prefix names the
# grouping: a store whose shard files were grouped otherwise (`<index>-of-<count>`, by the
# document's own gen_id) gets new ones once, so no file of the old grouping is an input.
SHARD_PATTERN = r"by-draft-[0-9]+-of-[0-9]+"
# A source of a prompt (see daydream.prompts.build_prompt) and the reason its change gives.
REASONS = {"template": "template changed", "concepts": "concepts changed", "parent": "parent changed"}


def stale_reason(stored: dict, current: dict) -> str:
    """Which prompt source changed, from the source hashes in metadata and now."""
    changed = [REASONS[key] for key in REASONS if key in stored and stored.get(key) != current.get(key)]
    return "; ".join(changed) or "prompt changed"


def current_model(rt: Runtime, member: Member) -> str | None:
    """The model string a new call would use (None for copies): a document made by the
    offline rehearsal model is stale for a real run."""
    if rt.template(member).generator != "llm" or member.llm_model_id not in rt.experiment.models:
        return None
    return calls.model_string(rt.experiment.models[member.llm_model_id], rt.settings)


class StaleCheck:
    """What one stale report reads once: every document's check (`integrity.DocumentChecks`, from
    the records the document jobs left) and today's SHA-256 of each prompt source, each template
    and concept file read once and each parent's parsed.txt taken from its record while it is
    unchanged. A document whose sources' key is the one recorded with its last rendering is not
    rendered again (`rendered` counts those that are). With `records={}` nothing is reused."""

    def __init__(self, rt: Runtime, records: dict[str, dict] | None = None):
        self.rt = rt
        self.documents = integrity.DocumentChecks(rt.paths, checks.Reuse(rt.paths, records))
        self.rendered = 0
        self._texts: dict[str, str | None] = {}
        self._parents: dict[str, str | None] = {}
        self._files: dict[tuple[str, str, str], PromptFiles] = {}

    def _text(self, path, what: str) -> str | None:
        key = str(path)
        if key not in self._texts:
            try:
                self._texts[key] = definitions.read_text(path, what)
            except definitions.DefinitionError:
                self._texts[key] = None  # rendering says why
        return self._texts[key]

    def _parent_sha(self, stage: str, gen_id: str, path) -> str | None:
        if gen_id not in self._parents:
            found = self.documents.reuse.valid(stage, gen_id)
            sha = found.get("parsed_sha256") if found is not None else None
            if sha is None:
                try:
                    data = path.read_bytes()
                    data.decode("utf-8")
                    sha = hashlib.sha256(data).hexdigest()
                except (OSError, UnicodeDecodeError):
                    sha = None  # rendering says why
            self._parents[gen_id] = sha
        return self._parents[gen_id]

    def sources(self, member: Member, files: PromptFiles) -> tuple[str, dict[str, str]] | None:
        """The key of the document's prompt sources as they are today (`checks.source_key`) and
        their SHA-256s (`Prompt.sources`), or None when one cannot be read (then the prompt is
        rendered, which says why)."""
        sources: dict[str, str] = {}
        if files.concepts:
            texts = [self._text(c.path, "concept description") for c in files.concepts]
            if any(t is None for t in texts):
                return None
            sources["concepts"] = sha256_text(CONCEPT_SEPARATOR.join(texts))
        if files.parent is not None:
            parent = self._parent_sha(stages.get(member.stage).parent, member.parent_gen_id, files.parent)
            if parent is None:
                return None
            sources["parent"] = parent
        if files.template is not None:
            template = self._text(files.template, "template")
            if template is None:
                return None
            sources["template"] = sha256_text(template)
        return checks.source_key(member.stage, member.template_id, _names(files), sources), sources

    def prompt_files(self, member: Member) -> PromptFiles:
        """`documents.prompt_files`, its definition files checked once per template and combo (a
        child's differ only by the parent's path)."""
        root = stages.get(member.stage).is_root
        key = (member.stage, member.template_id, member.combo_id if root else "")
        if key not in self._files:
            self._files[key] = documents.prompt_files(self.rt, member)
        files = self._files[key]
        if root:
            return files
        return dataclasses.replace(files, parent=self.rt.paths.parsed_path(stages.get(member.stage).parent,
                                                                           member.parent_gen_id))

    def current_prompt(self, member: Member) -> Prompt:
        """The document's prompt as it would be built today: its last rendering while the key of
        its sources is unchanged, else rendered now (FileNotFoundError, PromptError as
        `build_prompt`)."""
        files = self.prompt_files(member)
        today = self.sources(member, files)
        last = self.documents.reuse.latest(member.gen_id) or {}
        if today is not None and last.get("prompt_key") == today[0] and last.get("prompt_now"):
            return Prompt("", last["prompt_now"], today[1])  # its text is not needed: only its hashes
        self.rendered += 1
        prompt = build_prompt(files)
        found = self.documents.reuse.valid(member.stage, member.gen_id)
        if found is not None:
            self.documents.reuse.keep({**found, "prompt_key": checks.source_key(
                member.stage, member.template_id, _names(files), prompt.sources), "prompt_now": prompt.sha256})
        return prompt


def _names(files: PromptFiles) -> list[tuple[str, str]]:
    return [(c.concept_id, c.name) for c in files.concepts]


def check_member(rt: Runtime, member: Member, check: StaleCheck | None = None) -> dict | None:
    """A stale-report row for one document, or None when it is current or not made yet: its
    prompt would differ today, its model changed, or its raw.txt is no longer the reply that
    was paid for (`daydream.integrity`). `check` (one per report) reuses what the document jobs
    checked; without it everything is read and rendered."""
    check = check if check is not None else StaleCheck(rt, records={})
    done = check.documents.get(member.stage, member.gen_id)
    if done is None:
        return None  # not made yet: nothing paid to be stale
    meta = done.meta
    reasons = []
    try:
        current: Prompt | None = check.current_prompt(member)
    except FileNotFoundError:
        current = None  # its parent is missing: the prompt cannot be compared today
    except PromptError as error:
        current = None
        reasons.append(f"prompt cannot be rendered today: {error}")
    if current is not None and meta.get("prompt_sha256") != current.sha256:
        reasons.append(stale_reason(meta.get("prompt_sources") or {}, current.sources))
    model_now = current_model(rt, member)
    # The model of the reply that was paid for (an edited metadata.json is reported below instead).
    made_by = done.paid_model or meta.get("model")
    if made_by and model_now and made_by != model_now:
        reasons.append(f"model changed (made by {made_by}, now {model_now})")
    change = done.change
    if meta.get("model_id") not in (None, member.llm_model_id) and meta.get("mode") != "copy":
        change = "; ".join(filter(None, [change, (
            f"{integrity.METADATA_DIFFERS} from its membership row (model_id {meta.get('model_id')!r}, the row says "
            f"{member.llm_model_id!r}): delete {rt.paths.metadata_path(member.stage, member.gen_id)} and rerun "
            "snakemake to write it again from the saved reply, no call is made")]))
    if change:
        reasons.append(change)  # last: a reason made only of these is mended by a rerun, for free
    if not reasons:
        return None
    return {"stage": member.stage, "gen_id": member.gen_id, "cohort_id": member.cohort_id,
            "template_id": member.template_id, "reason": "; ".join(reasons),
            "stored_prompt_sha256": meta.get("prompt_sha256", ""),
            "current_prompt_sha256": current.sha256 if current is not None else ""}


def report_members(rt: Runtime) -> list[Member]:
    """The stale report's documents in its row order: each gen_id of the active cohorts once, as
    a member of the first cohort that has it."""
    seen: set[str] = set()
    found = []
    for cohort_id in rt.cohort_ids:
        for member in rt.membership.members(cohort_id):
            if member.gen_id not in seen:
                seen.add(member.gen_id)
                found.append(member)
    return found


def stale_rows(rt: Runtime, check: StaleCheck | None = None) -> list[dict]:
    check = check if check is not None else StaleCheck(rt)
    return [row for member in report_members(rt) if (row := check_member(rt, member, check))]


def shard_count(documents: int) -> int:
    """How many shards `documents` documents are checked in: the power of two nearest their
    square root (1 for one document), so a shard's job lists about sqrt(N) documents' files and
    the report about sqrt(N) shards."""
    return 1 << round(math.log2(documents) / 2) if documents > 1 else 1


def shard_name(index: int, count: int) -> str:
    return f"by-draft-{index:0{len(str(count - 1))}d}-of-{count}"


def shard_index(lineage: str, count: int) -> int:
    """The shard of a lineage: a stable function of its draft's gen_id alone (CRC-32), so a
    document stays in its shard while the count is the same (a gen_id fixes its parent)."""
    return zlib.crc32(lineage.encode("utf-8")) % count


def lineages(members: Sequence[Member]) -> dict[str, str]:
    """gen_id -> the gen_id of its lineage's first document among `members`: its draft, reached
    through each parent that is one of them (a document whose parent is not is its own)."""
    parents = {m.gen_id: m.parent_gen_id for m in members}
    found: dict[str, str] = {}
    for member in members:
        chain, gen_id = [], member.gen_id
        while gen_id not in found and parents.get(gen_id) in parents and gen_id not in chain:
            chain.append(gen_id)
            gen_id = parents[gen_id]
        first = found.get(gen_id, gen_id)
        found.update(dict.fromkeys([*chain, gen_id], first))
    return found


_SHARDS: dict[tuple, dict[str, list[Member]]] = {}
_SHARDS_LOCK = threading.Lock()


def shards(rt: Runtime) -> dict[str, list[Member]]:
    """Shard name -> its documents (in the report's order), every shard of the count named,
    empty ones too. Worked out once per membership (Snakemake asks once for each shard's job)."""
    key = (os.fspath(rt.paths.data_root), tuple(rt.cohort_ids), rt.membership.signature())
    with _SHARDS_LOCK:
        if key not in _SHARDS:
            found = group(report_members(rt))
            _SHARDS.clear()  # one membership at a time
            _SHARDS[key] = found
        return _SHARDS[key]


def group(members: Sequence[Member]) -> dict[str, list[Member]]:
    """Shard name -> its documents among `members` (in their order), every shard of the count
    named, empty ones too: `shard_count` of them, each lineage (`lineages`) whole in
    `shard_index`'s."""
    count = shard_count(len(members))
    found: dict[str, list[Member]] = {shard_name(i, count): [] for i in range(count)}
    names = list(found)
    lineage = lineages(members)
    for member in members:
        found[names[shard_index(lineage[member.gen_id], count)]].append(member)
    return found


def shard_members(rt: Runtime, shard: str) -> list[Member]:
    """The documents of one shard; ValueError when the active cohorts have no such shard."""
    found = shards(rt)
    if shard not in found:
        raise ValueError(f"{rt.paths.stale_shard(shard)}: the active cohorts' stale report has no shard {shard!r} "
                         f"(its shards are {next(iter(found))} to {next(reversed(found))}); "
                         "ask for the stale report itself, not one of its shards")
    return found[shard]


def write_stale_shard(rt: Runtime, shard: str, log_path: str | None = None) -> int:
    """The verdicts of one shard's documents (`check_member`), written to its file: the gen_ids
    it checked and the rows of the stale ones; return the number of those. The documents
    checked by content become check records."""
    started, cpu = time.perf_counter(), time.process_time()
    members = shard_members(rt, shard)
    check = StaleCheck(rt)
    rows = [row for member in members if (row := check_member(rt, member, check))]
    store.write_json_atomic(rt.paths.stale_shard(shard),
                            {"shard": shard, "gen_ids": [m.gen_id for m in members], "rows": rows})
    check.documents.reuse.save(may_compact=False)  # the report compacts, once nothing else appends
    store.write_job_log(log_path, f"shard {shard}: {len(rows)} stale of {len(members)} document(s); "
                                  f"{_checked(check)}, {time.perf_counter() - started:.2f} s "
                                  f"({time.process_time() - cpu:.2f} s CPU)")
    return len(rows)


def _checked(check: StaleCheck) -> str:
    return (f"{check.documents.used} taken from their check records ({check.documents.reuse.rehashed} hashed "
            f"again: their times moved), {check.documents.checked} checked by content, {check.rendered} "
            "prompt(s) rendered")


def _shard_verdicts(path: str, today: dict[str, list[Member]]) -> dict[str, dict | None] | None:
    """gen_id -> its row (None: not stale) from one shard file, for the documents that shard holds
    today (`today`: `shards`), so that no verdict comes from a file of another grouping or
    membership; None when it cannot be read (its documents are then checked by the report itself)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        found: dict[str, dict | None] = dict.fromkeys(data["gen_ids"])
        found.update((row["gen_id"], row) for row in data["rows"])
        holds = {m.gen_id for m in today.get(data["shard"], ())}
        return {gen_id: row for gen_id, row in found.items() if gen_id in holds}
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("%s could not be read (%s): the stale report checks its documents itself", path, error)
        return None


def write_stale_report(rt: Runtime, log_path: str | None = None, shard_files: Sequence[str] = ()) -> int:
    """Rebuild stale_generations.csv for the active cohorts; return the number of stale rows.
    Each document's verdict comes from its shard's file among `shard_files` (the rule's inputs:
    Snakemake has made each after its documents' files), or is worked out here for a document
    none of them checked (no shards given: the `onerror` hook; a cohort added since). The
    documents checked by content become check records, so the next report reuses them."""
    started, cpu = time.perf_counter(), time.process_time()
    verdicts: dict[str, dict | None] = {}
    today = shards(rt) if shard_files else {}
    for path in shard_files:
        verdicts.update(_shard_verdicts(path, today) or {})
    check: StaleCheck | None = None
    rows = []
    for member in report_members(rt):
        if member.gen_id in verdicts:
            row = verdicts[member.gen_id]
            row = row and {**row, "cohort_id": member.cohort_id}
        else:
            check = check if check is not None else StaleCheck(rt)
            row = check_member(rt, member, check)
        if row:
            rows.append(row)
    store.write_csv_atomic(rt.paths.stale_generations_csv, STALE_COLUMNS, rows)
    if check is not None:
        check.documents.reuse.save()
    else:
        checks.tidy(rt.paths)
    here = f"the others: {_checked(check)}" if check is not None else "none checked here"
    store.write_job_log(log_path, f"{len(rows)} stale document(s) in {rt.paths.stale_generations_csv}; "
                                  f"{len(verdicts)} verdict(s) from {len(shard_files)} shard(s), {here}, "
                                  f"{time.perf_counter() - started:.2f} s ({time.process_time() - cpu:.2f} s CPU)")
    if rows:
        log.warning("%d stale document(s): see %s; regenerate chosen ones with scripts/regenerate.py",
                    len(rows), rt.paths.stale_generations_csv)
    return len(rows)


def write_reports_after_failure(rt: Runtime) -> None:
    """The `onerror` hook: the stale report and the cohort reports, with `error` filled for
    what failed. When the definitions themselves cannot be read (the checkpoint said why,
    above), nothing can be compared or reported: say so in one line instead of a traceback."""
    from daydream import reports
    from daydream.experiment import ExperimentError

    try:
        write_stale_report(rt)
        reports.write_reports_despite_failures(rt.paths, rt.cohort_ids, rt.experiment)
    except ExperimentError:
        log.warning("stale and cohort reports not rebuilt: the definition files have problems (listed above)")
    except OSError as error:  # a full disk or a read-only data root: the summary still follows
        log.warning("stale and cohort reports not rebuilt: %s could not be written (%s); free space (or make %s "
                    "writable) and run again", getattr(error, "filename", None) or rt.paths.reporting_dir,
                    error.strerror or error, rt.paths.data_root)
