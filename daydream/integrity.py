"""Whether a document's raw.txt is still what was paid for: a changed raw.txt is reported,
never silently scored.

A paid reply is saved in the ledger (`data/gens/<stage>/<gen_id>/.replies/<sha16>.json`,
`daydream.ledger.saved_texts`) before raw.txt is written from it, so the two are equal when
nothing has happened since. A raw.txt edited by hand, or damaged, parses into another text or
another score without any error; the ledger still holds the reply that came back. A copy's
raw.txt is its prompt (its parent's text), so its SHA-256 is the `prompt_sha256` of its
metadata.

- `raw_change(paths, stage, gen_id)`: why a document's raw.txt is not what was paid for
  (or copied), or None (it is, or it cannot be checked: no metadata, no raw.txt, or a store
  made before saved replies existed);
- `stale_reasons(paths)`: gen_id -> reason of the last stale report
  (`data/7_reporting/stale_generations.csv`), other than a changed raw.txt;
- `evaluation_flags(paths, gen_ids, stale)`: per scored document, the `flags` cell of the
  reports: which documents of its lineage (itself, its essay, its draft) have a changed raw.txt,
  and which are stale (their prompt or model would differ today, so the score stands on an
  outdated document).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

from daydream import ledger, stages, store
from daydream.paths import Paths

READ_THREADS = 8
RAW_CHANGED = "raw.txt changed"  # the flag in the reports
STALE = "stale"  # the flag in the reports for a stale document of the lineage
RAW_DIFFERS = "raw.txt differs"  # how a stale-report reason about it starts


def raw_change(paths: Paths, stage: str, gen_id: str, meta: dict | None = None) -> str | None:
    """Why the document's raw.txt is not the reply paid for (or the text copied); None when it
    is, or when there is nothing to check it against."""
    try:
        meta = meta if meta is not None else store.read_metadata(paths, stage, gen_id)
        data = paths.raw_path(stage, gen_id).read_bytes()
    except (FileNotFoundError, ValueError):
        return None
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


def _lineage_checks(paths: Paths, gen_ids: list[str]) -> dict[str, tuple[str | None, str]]:
    """gen_id -> (raw change or None, parent gen_id) for the scored documents and all their
    ancestors, each read once."""
    found: dict[str, tuple[str | None, str]] = {}

    def check(gen_id: str) -> tuple[str, str | None, str]:
        stage = stages.of_gen_id(gen_id).name
        try:
            meta = store.read_metadata(paths, stage, gen_id)
        except (FileNotFoundError, ValueError):
            return gen_id, None, ""
        return gen_id, raw_change(paths, stage, gen_id, meta), str(meta.get("parent_gen_id") or "")

    wave = sorted(set(gen_ids))
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        while wave:
            for gen_id, change, parent in pool.map(check, wave):
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
        kept = [r for r in str(row.get("reason") or "").split("; ") if r and not r.startswith(RAW_DIFFERS)]
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
        changed, outdated, current = [], [], gen_id
        while current and current in checks:
            change, parent = checks[current]
            if change:
                changed.append(f"{stages.of_gen_id(current).name} {current}")
            if current in stale:
                outdated.append(f"{stages.of_gen_id(current).name} {current} ({stale[current]})")
            current = parent
        parts = ([f"{RAW_CHANGED}: {', '.join(changed)}"] if changed else []) + (
            [f"{STALE}: {', '.join(outdated)}"] if outdated else [])
        flags.append("; ".join(parts))
    return flags
