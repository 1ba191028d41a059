"""Whether a document's files are still what was paid for: a changed raw.txt, parsed.txt or
metadata.json is reported, never silently scored.

A paid reply is saved in the ledger (`data/gens/<stage>/<gen_id>/.replies/<sha16>.json`,
`daydream.ledger.saved_texts`) before raw.txt is written from it, so the two are equal when
nothing has happened since. A raw.txt edited by hand, or damaged, parses into another text or
another score without any error; the ledger still holds the reply that came back. A copy's
raw.txt is its prompt (its parent's text), so its SHA-256 is the `prompt_sha256` of its
metadata.

- `raw_change(paths, stage, gen_id)`: why a document's raw.txt is not what was paid for
  (or copied), or None (it is, or it cannot be checked: no metadata, no raw.txt, or a store
  made before saved replies existed); `metadata_change`: metadata.json's model, finish_reason,
  usage and cost against the saved reply; `parsed_change`: parsed.txt against the
  `parsed_sha256` written with it; `document_change`: all three;
- `stale_reasons(paths)`: gen_id -> reason of the last stale report
  (`data/7_reporting/stale_generations.csv`), other than a changed raw.txt;
- `evaluation_flags(paths, gen_ids, stale)`: per scored document, the `flags` cell of the
  reports: which documents of its lineage (itself, its essay, its draft) have a changed raw.txt
  (or parsed.txt, or metadata.json: `<file> changed: <stage> <gen_id>`), and which are stale (their prompt or model would differ today, so the score stands on an
  outdated document).
"""

from __future__ import annotations

import csv
import hashlib
import os
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from daydream import checks, ledger, stages, store
from daydream.paths import Paths

READ_THREADS = 8
CHECK_CHUNK = 256  # documents per task of _lineage_checks' thread pool
RAW_CHANGED = "raw.txt changed"  # the flag in the reports
STALE = "stale"  # the flag in the reports for a stale document of the lineage
RAW_DIFFERS = "raw.txt differs"  # how a stale-report reason about it starts
PARSED_DIFFERS = "parsed.txt differs"
METADATA_DIFFERS = "metadata.json differs"
# Reasons a rerun mends for free from the saved reply (delete the file): never a regeneration.
RESTORABLE = (RAW_DIFFERS, PARSED_DIFFERS, METADATA_DIFFERS)
# Fields of metadata.json that must equal the saved reply they were written from.
PAID_FIELDS = ("model", "finish_reason", "usage", "cost_usd")


def restorable_only(reason: str) -> bool:
    """True when every part of a stale-report reason is a file that differs from the saved reply
    (deleting it and rerunning restores it, no call is made)."""
    parts = [p for p in str(reason or "").split("; ") if p]
    return bool(parts) and all(p.startswith(RESTORABLE) for p in parts)


def paid_record(paths: Paths, stage: str, gen_id: str, meta: dict) -> dict | None:
    """The saved reply record that metadata.json says the document was made from (by its
    prompt_sha256), or None (a copy, an old store, an unreadable record)."""
    prompt_sha = str(meta.get("prompt_sha256") or "")
    if meta.get("mode") == "copy" or not prompt_sha:
        return None
    try:
        return ledger.read_record(paths.reply_path(stage, gen_id, prompt_sha))
    except (FileNotFoundError, ledger.ReplyRecordError):
        return None


def metadata_change(paths: Paths, stage: str, gen_id: str, meta: dict) -> str | None:
    """Why metadata.json is not what was written from the saved reply (its model, finish_reason,
    usage or cost differ from the reply's, or its prompt_sha256 names no saved reply while some
    are saved), or None."""
    if meta.get("mode") == "copy":
        return None
    record = paid_record(paths, stage, gen_id, meta)
    path = paths.metadata_path(stage, gen_id)
    fix = f"delete {path} and rerun snakemake to write it again from the saved reply, no call is made"
    if record is None:
        if meta.get("prompt_sha256") and ledger.saved_texts(paths, stage, gen_id) and not \
                paths.reply_path(stage, gen_id, str(meta["prompt_sha256"])).exists():
            return f"{METADATA_DIFFERS}: its prompt_sha256 names no saved reply in {paths.replies_dir(stage, gen_id)}: {fix}"
        return None
    differ = [key for key in PAID_FIELDS if key in record and meta.get(key) != record.get(key)]
    if not differ:
        return None
    return (f"{METADATA_DIFFERS} from the reply that was paid for ({', '.join(differ)}, see "
            f"{paths.reply_path(stage, gen_id, str(meta['prompt_sha256']))}): {fix}")


def parsed_change(paths: Paths, stage: str, gen_id: str, meta: dict) -> str | None:
    """Why parsed.txt is not the parse written with the document (`parsed_sha256` in
    metadata.json), or None (it is, or a document made before that key was written)."""
    if "parsed_sha256" not in meta:
        return None
    path = paths.parsed_path(stage, gen_id)
    fix = f"delete {path} and rerun snakemake to parse the saved reply again, no call is made"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return f"{PARSED_DIFFERS}: {path} is a folder, not a file: remove it and rerun snakemake to parse it again"
    if meta["parsed_sha256"] is None:
        return f"{PARSED_DIFFERS}: its reply did not parse, yet {path} exists: {fix}"
    if hashlib.sha256(data).hexdigest() == meta["parsed_sha256"]:
        return None
    return f"{PARSED_DIFFERS} from the parse of the reply that was paid for (parsed_sha256 in metadata.json): {fix}"


def document_change(paths: Paths, stage: str, gen_id: str, meta: dict | None = None) -> str | None:
    """Every way the document's files differ from what was paid for and written from it: raw.txt,
    metadata.json, parsed.txt (joined by "; "), or None."""
    try:
        meta = meta if meta is not None else store.read_metadata(paths, stage, gen_id)
    except FileNotFoundError:
        return None
    except ValueError as error:
        return f"{METADATA_DIFFERS}: {error}"
    reasons = [raw_change(paths, stage, gen_id, meta), metadata_change(paths, stage, gen_id, meta),
               parsed_change(paths, stage, gen_id, meta)]
    return "; ".join(r for r in reasons if r) or None


def raw_change(paths: Paths, stage: str, gen_id: str, meta: dict | None = None) -> str | None:
    """Why the document's raw.txt is not the reply paid for (or the text copied); None when it
    is, or when there is nothing to check it against."""
    try:
        meta = meta if meta is not None else store.read_metadata(paths, stage, gen_id)
        data = paths.raw_path(stage, gen_id).read_bytes()
    except (FileNotFoundError, ValueError):
        return None
    except IsADirectoryError:
        return (f"{RAW_DIFFERS}: {paths.raw_path(stage, gen_id)} is a folder, not a file: remove it and rerun "
                "snakemake to restore it, no call is made")
    try:
        raw = data.decode("utf-8")
    except UnicodeDecodeError:
        raw = None
    if meta.get("mode") == "copy":
        if hashlib.sha256(data).hexdigest() == meta.get("prompt_sha256"):
            return None
        return (f"{RAW_DIFFERS} from the text it copied (prompt_sha256 in metadata.json): delete "
                f"{paths.raw_path(stage, gen_id)} and rerun snakemake to copy it again")
    prompt_sha = str(meta.get("prompt_sha256") or "")
    saved = ledger.saved_texts(paths, stage, gen_id)
    own = saved.get(prompt_sha[:16]) if prompt_sha else None
    if own is not None:
        if raw == own:
            return None
        where = paths.reply_path(stage, gen_id, prompt_sha)
    else:
        if not saved or raw in saved.values():
            return None  # no saved reply to check against (an old store), or one of them
        where = paths.replies_dir(stage, gen_id)
    return (f"{RAW_DIFFERS} from the reply that was paid for ({where}): delete {paths.raw_path(stage, gen_id)} "
            "and rerun snakemake to restore it, no call is made")


@dataclass(frozen=True)
class Checked:
    """One document as checked: what the stale report reads of its metadata (`checks.META_KEYS`,
    or all of it when read now), its saved reply's model, `document_change` and the SHA-256 of
    its parsed.txt (None when it has none)."""

    meta: dict
    paid_model: str | None
    change: str | None
    parsed_sha256: str | None


class DocumentChecks:
    """Each document's `Checked`: from its check record while its files still have the recorded
    stat keys (`checks.Reuse`), else by content, as `document_change` always did. A content
    check of a document we wrote becomes a record (`reuse.keep`; the stale report saves them).
    `used` and `checked` count both ways. Safe to call from threads."""

    def __init__(self, paths: Paths, reuse: checks.Reuse | None = None):
        self.paths = paths
        self.reuse = reuse if reuse is not None else checks.Reuse(paths)
        self.used = self.checked = 0
        self._lock = threading.Lock()

    def get(self, stage: str, gen_id: str) -> Checked | None:
        """The document as checked; None when it has no metadata (not made). ValueError (naming
        the file) when its metadata.json is not a JSON object."""
        found = self.reuse.valid(stage, gen_id)
        if found is not None:
            with self._lock:
                self.used += 1
            return Checked(found["meta"], found["paid_model"], found["change"], found["parsed_sha256"])
        with self._lock:
            self.checked += 1
        return self._by_content(stage, gen_id)

    def _by_content(self, stage: str, gen_id: str) -> Checked | None:
        paths = self.paths
        try:
            meta = store.read_document_metadata(paths, stage, gen_id, lineage=False)
        except FileNotFoundError:
            return None
        # Only a document we wrote is recorded: one of the original pipeline's (side files, or
        # no prompt_sha256 of its own) is read with its lineage and checked by content each time.
        ours = "prompt_sha256" in meta and not any(
            os.path.exists(p) for p in store.metadata_files(paths, stage, gen_id)[1:])
        if not ours:
            meta = store.read_document_metadata(paths, stage, gen_id)
        before = checks.file_keys(paths, stage, gen_id, checks.reply_of(meta)) if ours else None
        paid = paid_record(paths, stage, gen_id, meta)
        change = document_change(paths, stage, gen_id, meta)
        folder = paths.gen_dir_texts(stage, [gen_id])[0] + os.sep
        shas = {name: checks.file_sha256(folder + name) for name in checks.FILES}
        done = Checked(meta, (paid or {}).get("model"), change, shas["parsed.txt"])
        if before is not None and checks.file_keys(paths, stage, gen_id, checks.reply_of(meta)) == before:
            old = self.reuse.latest(gen_id) or {}  # its prompt part stands: it depends on the sources only
            self.reuse.keep(checks.record(paths, stage, gen_id, meta, change=change, paid_model=done.paid_model,
                                          parsed_sha256=shas["parsed.txt"], prompt_key=old.get("prompt_key"),
                                          prompt_now=old.get("prompt_now"), shas=shas, keys=before))
        return done


def _lineage_checks(paths: Paths, gen_ids: list[str]) -> dict[str, tuple[str | None, str]]:
    """gen_id -> (document change or None, parent gen_id) for the scored documents and all their
    ancestors, each checked once (`DocumentChecks`: from its check record while its files are
    unchanged)."""
    found: dict[str, tuple[str | None, str]] = {}
    documents = DocumentChecks(paths)

    def check(gen_id: str) -> tuple[str, str | None, str]:
        try:
            done = documents.get(stages.of_gen_id(gen_id).name, gen_id)
        except ValueError:
            return gen_id, None, ""
        if done is None:
            return gen_id, None, ""
        return gen_id, done.change, str(done.meta.get("parent_gen_id") or "")

    def check_all(chunk: list[str]) -> list[tuple[str, str | None, str]]:
        return [check(gen_id) for gen_id in chunk]

    # One task per CHECK_CHUNK documents: a thread pool ignores map's chunksize, and a future
    # per document cost more than checking it from its record.
    wave = sorted(set(gen_ids))
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        while wave:
            chunks = [wave[start:start + CHECK_CHUNK] for start in range(0, len(wave), CHECK_CHUNK)]
            for checked in pool.map(check_all, chunks):
                for gen_id, change, parent in checked:
                    found[gen_id] = (change, parent)
            wave = sorted({parent for _, parent in (found[g] for g in wave) if parent and parent not in found})
    return found


def stale_reasons(paths: Paths) -> dict[str, str]:
    """gen_id -> reason of each document in the last stale report, leaving out a changed
    raw.txt (the reports check that themselves); empty when there is no stale report yet."""
    try:
        with paths.stale_generations_csv.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        return {}
    reasons = {}
    for row in rows:
        kept = [r for r in str(row.get("reason") or "").split("; ") if r and not r.startswith(RESTORABLE)]
        if kept:
            reasons[row["gen_id"]] = "; ".join(kept)
    return reasons


def evaluation_flags(paths: Paths, gen_ids: Iterable[str], stale: Mapping[str, str] | None = None) -> list[str]:
    """The `flags` cell of each scored document, in order: empty when the raw.txt of the
    document and of each of its ancestors is what was paid for and none of them is in `stale`
    (gen_id -> reason, `stale_reasons`); else `raw.txt changed: ...` naming each changed one
    (the document first) and `stale: <stage> <gen_id> (<reason>), ...`, joined by "; "."""
    gen_ids = [str(g) for g in gen_ids]
    stale = stale or {}
    checks = _lineage_checks(paths, gen_ids)
    flags = []
    for gen_id in gen_ids:
        changed: dict[str, list[str]] = {}  # the changed file -> the documents, in lineage order
        outdated, current = [], gen_id
        while current and current in checks:
            change, parent = checks[current]
            for part in (change or "").split("; "):
                if part:
                    changed.setdefault(part.split(" ")[0], []).append(f"{stages.of_gen_id(current).name} {current}")
            if current in stale:
                outdated.append(f"{stages.of_gen_id(current).name} {current} ({stale[current]})")
            current = parent
        parts = [f"{name} changed: {', '.join(dict.fromkeys(found))}" for name, found in changed.items()] + (
            [f"{STALE}: {', '.join(outdated)}"] if outdated else [])
        flags.append("; ".join(parts))
    return flags
