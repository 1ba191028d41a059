"""Regenerate chosen documents on purpose (SPEC §8), never by accident.

`archive_for_regeneration` moves a document's files, and those of every descendant (essays of
a draft, evaluations of those essays), into `<gen_dir>/.history/<timestamp>/`. Nothing paid for
is deleted; the next `snakemake` run sees the files missing and makes exactly those documents
again (a new, paid call for each LLM document).
"""

from __future__ import annotations

import csv
import re
import shutil
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from daydream import integrity, stages, store
from daydream.paths import GEN_FILES, ORIGINAL_METADATA_FILES, REPLIES, Paths

# A document's files, the original pipeline's metadata files beside them, and its saved replies.
ARCHIVED = (*GEN_FILES, *ORIGINAL_METADATA_FILES, REPLIES)


def children_index(paths: Paths) -> dict[str, list[str]]:
    """parent gen_id -> child gen_ids, from the metadata of every document of the child stages
    (ours or the original pipeline's, `store.read_document_metadata`)."""
    children: dict[str, list[str]] = defaultdict(list)
    for stage in stages.STAGES:
        if stage.is_root or not paths.stage_dir(stage.name).is_dir():
            continue
        for folder in sorted(p for p in paths.stage_dir(stage.name).iterdir() if p.is_dir() and p.name[0] != "."):
            try:
                meta = store.read_document_metadata(paths, stage.name, folder.name, lineage=False)
            except FileNotFoundError:
                continue  # a folder without metadata has no known parent
            if meta["parent_gen_id"]:
                children[meta["parent_gen_id"]].append(folder.name)
    return children


def with_descendants(paths: Paths, gen_ids: list[str]) -> list[str]:
    """The chosen documents and all their descendants, parents first, each once."""
    children = children_index(paths)
    ordered: list[str] = []
    queue = list(dict.fromkeys(gen_ids))
    while queue:
        gen_id = queue.pop(0)
        if gen_id not in ordered:
            ordered.append(gen_id)
            queue.extend(children.get(gen_id, []))
    return ordered


def archive_document(paths: Paths, gen_id: str, stamp: str) -> Path | None:
    """Move a document's files into its .history/<stamp>/ folder; None when it has none."""
    stage = stages.of_gen_id(gen_id).name
    folder = paths.gen_dir(stage, gen_id)
    present = [folder / name for name in ARCHIVED if (folder / name).exists()]
    if not present:
        return None
    target = paths.history_dir(stage, gen_id, stamp)
    target.mkdir(parents=True, exist_ok=False)
    for item in present:
        shutil.move(str(item), str(target / item.name))
    return target


class RegenerateError(ValueError):
    """Chosen gen_ids that are not documents of this data root; the message names each and the fix."""


def check_gen_ids(paths: Paths, gen_ids: list[str]) -> None:
    """RegenerateError unless every gen_id has the gen_id pattern and is a document of this data
    root with files to archive (nothing is moved when one is not)."""
    problems = []
    for gen_id in gen_ids:
        if not isinstance(gen_id, str) or not re.fullmatch(stages.GEN_ID_PATTERN, gen_id):
            problems.append(f"{gen_id!r} is not a gen_id (d_..., e_..., v_...: a prefix, then lower-case letters and "
                            "digits)")
            continue
        stage = stages.of_gen_id(gen_id).name
        folder = paths.gen_dir(stage, gen_id)
        if not any((folder / name).exists() for name in ARCHIVED):
            where = "has nothing left to archive (already regenerated?)" if folder.is_dir() else "does not exist"
            problems.append(f"{gen_id}: {folder} {where}; check the gen_id (membership.csv of each cohort and "
                            f"{paths.stale_generations_csv} list them)")
    if problems:
        raise RegenerateError("nothing archived: " + "; ".join(problems))


def archive_for_regeneration(paths: Paths, gen_ids: list[str], *, dry_run: bool = False) -> list[str]:
    """Archive the chosen documents and their descendants; return the gen_ids affected.
    RegenerateError (nothing moved) when a gen_id is not a document of this data root."""
    check_gen_ids(paths, gen_ids)
    chosen = with_descendants(paths, gen_ids)
    if not dry_run:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        for gen_id in chosen:
            archive_document(paths, gen_id, stamp)
    return chosen


def _stale_rows(paths: Paths) -> list[dict]:
    report = paths.stale_generations_csv
    if not report.exists():
        raise FileNotFoundError(f"{report} not found: run snakemake once to build the stale report")
    with report.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def stale_gen_ids(paths: Paths) -> list[str]:
    """The gen_ids listed in the last stale report, except those whose only reasons are files
    that differ from the saved reply (raw.txt, parsed.txt, metadata.json): regenerating would pay
    again for a reply the ledger still holds (`restorable_gen_ids`; deleting those files
    restores them for free)."""
    return [row["gen_id"] for row in _stale_rows(paths) if not integrity.restorable_only(row["reason"])]


def restorable_gen_ids(paths: Paths) -> list[str]:
    """The gen_ids of the last stale report whose only reasons are files that differ from the
    saved reply (a rerun restores them after they are deleted, no call is made)."""
    return [row["gen_id"] for row in _stale_rows(paths) if integrity.restorable_only(row["reason"])]


raw_changed_gen_ids = restorable_gen_ids  # the name scripts and tests of the raw.txt check use
