"""Whether a cohort's membership is current, decided by the content of what it was built from.

The checkpoint `cohort_membership` reads the cohort file, the definition tables, the template
files and the concept descriptions. Their modification times say nothing about their content:
`touch`, a `git checkout` or an edit that is reverted give a newer time and the same text, and
`rsync -a` or `cp -p` can give an older time and another text. Snakemake itself does not
rerun a job whose newer input has the checksum it recorded, so a decision by time alone can
target a membership that Snakemake will not remake, and documents are never made.

So the decision is by content:
- the *fingerprint* of a cohort is a hash over the path and SHA-256 of each of those files,
  each path written relative to the data root or the cohorts folder holding it, so a data root
  copied or moved with its cohorts folder (`cp -a`, `rsync -a`) keeps its memberships current;
- the checkpoint writes `checkpoint_inputs.json` beside the membership: the fingerprint it was
  built from and each file's hash (`write_record`);
- a membership is current when that record holds today's fingerprint (`is_current`);
- the checkpoint's input is `<cohort dir>/.inputs/<fingerprint>.json` (rule
  `cohort_inputs_fingerprint`), its other inputs are `ancient`: a new content is a new, missing
  file, so the checkpoint runs; the same content is the same file, so a touch changes nothing.
  The checkpoint keeps only its own fingerprint file, so returning to an earlier content makes
  that file missing again and rebuilds the membership.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from daydream import cohort_design, stages, store
from daydream.paths import Paths

FINGERPRINT_PATTERN = "[0-9a-f]{16}"
MISSING = "missing"

_HASHES: dict[tuple, str] = {}  # (path, mtime_ns, size, inode) -> sha256 of the content
_HASHES_LOCK = threading.Lock()


def input_files(paths: Paths, cohort_id: str) -> dict[str, list[Path]]:
    """What the checkpoint of `cohort_id` reads, by kind: the cohort file (a design spec with
    the files its `@file:` entries name), the definition tables, every template file and every
    concept description."""
    tables = [paths.concepts_metadata_csv, paths.models_csv, *(paths.templates_csv(s) for s in stages.NAMES)]
    definition = [Path(p) for p in cohort_design.definition_files(paths, cohort_id)]
    return {"cohort_file": definition, "tables": tables,
            "templates": paths.template_files(), "descriptions": paths.description_files()}


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (`missing` when it does not exist), cached per process by
    path, modification time, size and inode, so a file is hashed again only when it changes."""
    try:
        info = Path(path).stat()
    except FileNotFoundError:
        return MISSING
    key = (str(path), info.st_mtime_ns, info.st_size, info.st_ino)
    with _HASHES_LOCK:
        known = _HASHES.get(key)
    if known is None:
        known = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        with _HASHES_LOCK:
            _HASHES[key] = known
    return known


def file_hashes(paths: Paths, cohort_id: str) -> dict[str, str]:
    """path -> SHA-256 of every file the checkpoint reads."""
    return {str(p): file_sha256(p) for files in input_files(paths, cohort_id).values() for p in files}


def portable(paths: Paths, path: str) -> str:
    """`path` as the fingerprint names it: relative to the data root (`data_root/...`) or the
    cohorts folder (`cohorts_dir/...`) that holds it, else as it is."""
    for label, root in (("data_root", paths.data_root), ("cohorts_dir", paths.cohorts_dir)):
        try:
            return f"{label}/{Path(path).relative_to(root).as_posix()}"
        except ValueError:
            continue
    return str(path)


def fingerprint_of(paths: Paths, hashes: dict[str, str]) -> str:
    """16 hex of a hash over the portable path and the SHA-256 of each file in `hashes`."""
    named = sorted((portable(paths, path), digest) for path, digest in hashes.items())
    lines = "".join(f"{path}\t{digest}\n" for path, digest in named)
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()[:16]


def fingerprint(paths: Paths, cohort_id: str) -> str:
    """The cohort's fingerprint today: 16 hex of a hash over its inputs' (portable) paths and contents."""
    return fingerprint_of(paths, file_hashes(paths, cohort_id))


def read_record(paths: Paths, cohort_id: str) -> dict | None:
    """The record the checkpoint wrote (None when there is none or it cannot be read: the
    membership is then remade, which costs nothing)."""
    path = paths.checkpoint_record_json(cohort_id)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_current(paths: Paths, cohort_id: str) -> bool:
    """True when the membership, the manifest and the record exist and the record holds
    today's fingerprint: the membership was built from exactly today's inputs."""
    if not (paths.membership_csv(cohort_id).exists() and paths.manifest_json(cohort_id).exists()):
        return False
    record = read_record(paths, cohort_id)
    return record is not None and record.get("fingerprint") == fingerprint(paths, cohort_id)


def changed_files(paths: Paths, cohort_id: str) -> list[str]:
    """The inputs whose content differs from the record (for messages and tests)."""
    recorded = (read_record(paths, cohort_id) or {}).get("files", {})
    now = file_hashes(paths, cohort_id)
    return sorted(p for p in set(recorded) | set(now) if recorded.get(p) != now.get(p))


def write_fingerprint(paths: Paths, cohort_id: str, fingerprint_id: str, out: Path) -> None:
    """Rule `cohort_inputs_fingerprint`: the file naming one content of the cohort's inputs."""
    hashes = file_hashes(paths, cohort_id)
    store.write_json_atomic(Path(out), {"cohort_id": cohort_id, "fingerprint": fingerprint_id,
                                        "fingerprint_now": fingerprint_of(paths, hashes), "files": hashes})


def write_record(paths: Paths, cohort_id: str, hashes: dict[str, str]) -> None:
    """After the checkpoint built the membership from the inputs with `hashes` (taken before
    it read them): record them, and drop the cohort's other fingerprint files so that going
    back to an earlier content is seen as a change."""
    current = fingerprint_of(paths, hashes)
    store.write_json_atomic(paths.checkpoint_record_json(cohort_id),
                            {"cohort_id": cohort_id, "fingerprint": current, "files": hashes})
    folder = paths.cohort_fingerprint(cohort_id, current).parent
    for stale in folder.glob("*.json"):
        if stale.stem != current:
            stale.unlink(missing_ok=True)
