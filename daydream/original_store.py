"""Bringing the original pipeline's gens store along (SPEC §4), without rewriting it.

The workflow reads such a store as it is (`store.read_document_metadata`). Reading alone cannot
stop two things Snakemake would do to documents of a cohort:

- a folder without one of the files our rules make (`prompt.txt`, `raw.txt`, `metadata.json`)
  is a document to make: a new model call whose reply replaces the original's raw.txt;
- a `parsed.txt` older than its `raw.txt` or `metadata.json` is one to parse again
  (`rerun-triggers: mtime`), which replaces the original's parse.

`checkpoint_problems` finds such documents among a cohort's members, so the cohort checkpoint
refuses before any call and names each folder and the fix. `import_store` (the command
`scripts/import_gens_store.py`) is the fix where one exists: it writes our `metadata.json`
where the original left only `raw_metadata.json` / `parsed_metadata.json`, a copy's `prompt.txt`
(its parent's parsed text, as our copies keep it) where the original wrote none, and brings an
older `parsed.txt`'s modification time forward (its content is never touched). It never overwrites,
moves or deletes a file, and changes nothing without `write=True`.

A document is the original's when its folder holds `raw_metadata.json` or `parsed_metadata.json`,
or its metadata.json is in the original's keys (`store.is_original_record`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from daydream import stages, store
from daydream.columns import IMPORTED_METADATA_KEY
from daydream.paths import ORIGINAL_METADATA_FILES, Paths

MADE_BY_RESPONSE = ("prompt.txt", "raw.txt", "metadata.json")  # what a response job writes
IMPORT_COMMAND = "python scripts/import_gens_store.py --data-root {data_root} --write"
SHOWN = 5  # folders named per problem; the count gives the rest


def is_original(paths: Paths, stage: str, gen_id: str) -> bool:
    """True when the document's folder was written by the original pipeline."""
    folder = paths.gen_dir(stage, gen_id)
    if any((folder / name).exists() for name in ORIGINAL_METADATA_FILES):
        return True
    try:
        record = json.loads(paths.metadata_path(stage, gen_id).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return isinstance(record, dict) and store.is_original_record(record)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def parse_is_outdated(paths: Paths, stage: str, gen_id: str) -> bool:
    """True when parsed.txt exists and is older than raw.txt or metadata.json (Snakemake would
    parse the reply again)."""
    parsed = _mtime(paths.parsed_path(stage, gen_id))
    inputs = [t for t in (_mtime(paths.raw_path(stage, gen_id)), _mtime(paths.metadata_path(stage, gen_id))) if t]
    return parsed is not None and bool(inputs) and parsed < max(inputs)


def _grouped(where: str, found: list[tuple[str, str]], paths: Paths, what: str, fix: str) -> str:
    shown = ", ".join(str(paths.gen_dir(stage, gen_id)) for stage, gen_id in found[:SHOWN])
    more = f" and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
    return f"{where}: {len(found)} document(s) of the original pipeline {what} ({shown}{more}); {fix}"


def copy_prompt_source(paths: Paths, stage: str, gen_id: str, meta: dict) -> Path | None:
    """For a copy of the original without prompt.txt (the original wrote none for copies): the
    parent's parsed.txt, which is what our copies keep as their prompt; else None."""
    parent = stages.parent_of(stage)
    if parent is None or "copy" not in (meta.get("mode"), meta.get("input_mode")) or not meta["parent_gen_id"]:
        return None
    source = paths.parsed_path(parent.name, meta["parent_gen_id"])
    return source if source.exists() else None


def _importable(paths: Paths, stage: str, gen_id: str, absent: tuple[str, ...]) -> bool:
    """True when the import can add what is absent: metadata.json always, prompt.txt of a copy."""
    if not set(absent) <= {"prompt.txt", "metadata.json"}:
        return False
    if "prompt.txt" not in absent:
        return True
    meta = store.read_document_metadata(paths, stage, gen_id, lineage=False)
    return copy_prompt_source(paths, stage, gen_id, meta) is not None


def checkpoint_problems(paths: Paths, rows: list[dict], where: str) -> list[str]:
    """Problems, for the cohort checkpoint, with the members that are documents of the original
    pipeline and that Snakemake would make or parse again (module docstring); one line per kind."""
    importable, missing, outdated = [], {}, []
    for row in rows:
        stage, gen_id = row["stage"], row["gen_id"]
        if not paths.gen_dir(stage, gen_id).is_dir() or not is_original(paths, stage, gen_id):
            continue
        absent = tuple(n for n in MADE_BY_RESPONSE if not (paths.gen_dir(stage, gen_id) / n).exists())
        if absent and _importable(paths, stage, gen_id, absent):
            importable.append((stage, gen_id))
        elif absent:
            missing.setdefault(absent, []).append((stage, gen_id))
        elif parse_is_outdated(paths, stage, gen_id):
            outdated.append((stage, gen_id))
    command = IMPORT_COMMAND.format(data_root=paths.data_root)
    problems = []
    if importable:
        problems.append(_grouped(where, importable, paths, "lack a metadata.json or (copies) a prompt.txt of ours, "
                                 "so Snakemake would make them again (replacing raw.txt)",
                                 f"run `{command}` once: it writes those files beside the original's"))
    for absent, found in missing.items():
        problems.append(_grouped(where, found, paths, f"have no {', '.join(absent)}, so Snakemake would make them "
                                 "again (a new model call replacing the original's files)",
                                 "restore those files from the original store, or leave these documents out of "
                                 "the cohort"))
    if outdated:
        problems.append(_grouped(where, outdated, paths, "have a parsed.txt older than their raw.txt or "
                                 "metadata.json, so Snakemake would parse them again and replace it",
                                 f"run `{command}` once: it brings parsed.txt's time forward, its text unchanged"))
    return problems


# -- the import command ----------------------------------------------------------------------
@dataclass(frozen=True)
class Action:
    """What the import does (or would do) to one document: `write-prompt`, `write-metadata`,
    `touch-parsed`, or `skip` with the reason and what to do."""

    stage: str
    gen_id: str
    action: str
    detail: str
    recovered: tuple[tuple[str, object], ...] = ()  # keys the metadata lacks, found elsewhere


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return float(value)


def _count(value: object) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _usage(meta: dict) -> dict:
    usage = meta.get("usage") if isinstance(meta.get("usage"), dict) else {}
    return {key: _count(usage.get(key, meta.get(key))) for key in ("prompt_tokens", "completion_tokens",
                                                                    "total_tokens")}


def _timestamp(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")


def imported_metadata(paths: Paths, stage: str, gen_id: str, meta: dict) -> dict:
    """Our metadata.json (config/schema/metadata.schema.yaml) of a document of the original, from
    its metadata as `store.read_document_metadata` gives it. What the original did not record
    is null (`model`: empty, `prompt_sources`: none); `imported_from` names the files read."""
    duration = _number(meta.get("duration_s"))
    if duration is None and _number(meta.get("duration_ms")) is not None:
        duration = _number(meta["duration_ms"]) / 1000
    parent, template, model = meta["parent_gen_id"], str(meta["template_id"]), str(meta["model_id"])
    folder = paths.gen_dir(stage, gen_id)
    return {
        "stage": stage, "gen_id": gen_id,
        "task_id": str(meta.get("task_id") or f"{parent or meta['combo_id']}__{template}__{model}"),
        "template_id": template, "model_id": model, "model": "", "parent_gen_id": parent,
        "combo_id": meta["combo_id"], "replicate": int(meta["replicate"]), "cohort_id": str(meta.get("cohort_id") or ""),
        "mode": meta.get("mode") if meta.get("mode") in ("llm", "copy") else "llm",
        "parser": str(meta.get("parser") or ""),
        "finish_reason": meta.get("finish_reason") if isinstance(meta.get("finish_reason"), str) else None,
        "truncated": meta.get("truncated") is True or str(meta.get("truncated")).lower() == "true",
        "usage": _usage(meta), "cost_usd": _number(meta.get("cost_usd")), "duration_s": duration,
        "attempts": None,
        "temperature": _number(meta.get("temperature")), "max_tokens": _count(meta.get("max_tokens")),
        "prompt_sha256": meta["prompt_sha256"], "prompt_sources": {},
        "created_at": str(meta.get("created_at") or _timestamp(paths.raw_path(stage, gen_id))),
        IMPORTED_METADATA_KEY: sorted(n for n in ORIGINAL_METADATA_FILES if (folder / n).exists()),
    }


# -- what the original's current writer leaves out ------------------------------------------------
# Its raw_metadata.json has no template_id (nor, at times, the model). They are recovered from
# the original's membership.csv files, else from the gen_id itself: ids are deterministic
# (SPEC §4), so the one template x model x replicate of 1_raw whose id from the document's
# parent (or combo) is this gen_id is its lineage.
MAX_SEARCHED_REPLICATE = 5


@dataclass
class _Known:
    """What recovery reads once per import: membership rows by gen_id, templates and models."""

    members: dict[str, tuple[dict, str]]
    templates: dict[str, list[str]]
    models: list[str]


def _known(paths: Paths) -> _Known:
    import csv

    from daydream.experiment import load_models, load_templates

    members: dict[str, tuple[dict, str]] = {}
    for path in sorted((paths.data_root / "cohorts").glob("*/membership.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row.get("gen_id"):
                    members.setdefault(row["gen_id"], (row, str(path)))
    ignored: list[str] = []  # a damaged table only narrows the search; the checkpoint reports it
    templates = {s: list(load_templates(paths, s, ignored)) for s in stages.NAMES}
    return _Known(members, templates, list(load_models(paths, ignored)))


def recover_lineage(paths: Paths, stage: str, gen_id: str, meta: dict, known: _Known) -> tuple[dict, str]:
    """The template_id and model_id (and replicate) the metadata lacks, and where they were
    found; ({}, "") when nothing tells them for sure."""
    row, path = known.members.get(gen_id, ({}, ""))
    model = row.get("model_id") or row.get("llm_model_id")
    if row.get("stage", stage) == stage and row.get("template_id") and model:
        found = {"template_id": row["template_id"], "model_id": model}
        found.update({k: row[k] for k in ("parent_gen_id", "combo_id") if row.get(k)})
        if str(row.get("replicate", "")).isdigit():
            found["replicate"] = int(row["replicate"])
        return {k: v for k, v in found.items() if not meta.get(k) or k == "replicate"}, f"membership {path}"
    return _from_gen_id(paths, stage, gen_id, meta, known)


def _from_gen_id(paths: Paths, stage: str, gen_id: str, meta: dict, known: _Known) -> tuple[dict, str]:
    from daydream import ids

    parent = stages.parent_of(stage)
    anchor = meta["parent_gen_id"] if parent is not None else meta["combo_id"]
    if not anchor:
        return {}, ""
    parent_model = None
    if parent is not None:
        try:
            parent_model = store.read_document_metadata(paths, parent.name, anchor, lineage=False).get("model_id")
        except FileNotFoundError:
            parent_model = None
    templates = [meta["template_id"]] if meta.get("template_id") else known.templates.get(stage, [])
    models = [meta["model_id"]] if meta.get("model_id") else list(dict.fromkeys([parent_model, *known.models]))
    replicates = [meta["replicate"]] if isinstance(meta.get("replicate"), int) else range(1, MAX_SEARCHED_REPLICATE + 1)
    matches = {(t, m, r) for t in templates for m in models if m for r in replicates
               if ids.document_id(stage, anchor, t, m, r, parent_model) == gen_id}
    if len({(t, r) for t, _, r in matches}) != 1:
        return {}, ""
    template, _, replicate = next(iter(matches))
    models_found = {m for _, m, _ in matches}
    # an essay in its draft's model leaves the model out of the id: every model matches; it is the draft's
    model = next(iter(models_found)) if len(models_found) == 1 else parent_model if parent_model in models_found else None
    if model is None:
        return {}, ""
    found = {"template_id": template, "model_id": model, "replicate": replicate}
    return {k: v for k, v in found.items() if not meta.get(k) or k == "replicate"}, "its gen_id (SPEC §4)"


def _plan_document(paths: Paths, stage: str, gen_id: str, known: _Known) -> list[Action]:
    folder = paths.gen_dir(stage, gen_id)
    meta = store.read_document_metadata(paths, stage, gen_id, lineage=False)
    actions = []
    if not paths.prompt_path(stage, gen_id).exists():
        source = copy_prompt_source(paths, stage, gen_id, meta)
        if source is None:
            return [Action(stage, gen_id, "skip", "no prompt.txt (and not a copy whose parent's parsed.txt "
                           "exists): restore it from the original store or leave it out of your cohorts")]
        actions.append(Action(stage, gen_id, "write-prompt", f"{paths.prompt_path(stage, gen_id)} (from {source})"))
    if not paths.metadata_path(stage, gen_id).exists():
        unknown = [key for key in ("template_id", "model_id") if not meta.get(key)]
        recovered, source = recover_lineage(paths, stage, gen_id, meta, known) if unknown else ({}, "")
        if not (folder / "raw.txt").exists() or (unknown and not recovered) or not isinstance(meta["replicate"], int):
            if (folder / "raw.txt").exists() and unknown:
                return [Action(stage, gen_id, "skip", (
                    f"its metadata has no {', '.join(unknown)}, and neither a membership.csv under "
                    f"{paths.data_root / 'cohorts'} nor its gen_id (from its parent or combo and the templates and "
                    "models of 1_raw) tells them: add its row (stage, gen_id, template_id, llm_model_id, replicate) "
                    "to the original cohort's membership.csv and import again, or leave it out of your cohorts"))]
            why = "no raw.txt" if not (folder / "raw.txt").exists() else f"replicate {meta['replicate']!r}"
            return [Action(stage, gen_id, "skip", f"{why}: not a complete document; restore it from the original "
                           "store or leave it out of your cohorts")]
        detail = str(paths.metadata_path(stage, gen_id))
        if recovered:
            detail += f" ({', '.join(f'{k}={v}' for k, v in recovered.items())} from {source})"
        actions.append(Action(stage, gen_id, "write-metadata", detail, tuple(recovered.items())))
    writes_metadata = any(a.action == "write-metadata" for a in actions)
    if paths.parsed_path(stage, gen_id).exists() and (writes_metadata or parse_is_outdated(paths, stage, gen_id)):
        actions.append(Action(stage, gen_id, "touch-parsed", str(paths.parsed_path(stage, gen_id))))
    return actions


def _write_new(path: Path, data: bytes) -> None:
    if path.exists():  # never overwrite
        raise FileExistsError(f"{path} appeared during the import; run it again")
    store.write_bytes_atomic(path, data)


def _apply(paths: Paths, action: Action) -> None:
    if action.action == "write-prompt":
        meta = store.read_document_metadata(paths, action.stage, action.gen_id, lineage=False)
        source = copy_prompt_source(paths, action.stage, action.gen_id, meta)
        _write_new(paths.prompt_path(action.stage, action.gen_id), source.read_bytes())
    elif action.action == "write-metadata":
        meta = {**store.read_document_metadata(paths, action.stage, action.gen_id), **dict(action.recovered)}
        parent = stages.parent_of(action.stage)
        if not meta["combo_id"] and meta["parent_gen_id"] and parent is not None:  # a recovered parent's combo
            meta["combo_id"] = store.read_document_metadata(paths, parent.name, meta["parent_gen_id"])["combo_id"]
        record = imported_metadata(paths, action.stage, action.gen_id, meta)
        if paths.metadata_path(action.stage, action.gen_id).exists():
            raise FileExistsError(f"{paths.metadata_path(action.stage, action.gen_id)} appeared during the import")
        store.write_metadata(paths, action.stage, action.gen_id, record)
    elif action.action == "touch-parsed":
        os.utime(paths.parsed_path(action.stage, action.gen_id))


def import_store(paths: Paths, *, write: bool = False) -> list[Action]:
    """Every action the import takes (or, without `write`, would take) over the whole gens store,
    stage by stage (root first) and gen_id by gen_id. Documents we made are left alone."""
    actions, known = [], _known(paths)
    for stage in stages.STAGES:
        root = paths.stage_dir(stage.name)
        folders = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[0] != ".") if root.is_dir() else []
        for gen_id in folders:
            if is_original(paths, stage.name, gen_id):
                actions.extend(_plan_document(paths, stage.name, gen_id, known))
    if write:
        for action in actions:
            _apply(paths, action)
    return actions
