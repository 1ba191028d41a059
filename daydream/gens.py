"""The gens store (SPEC §5): `data/gens/<stage>/<gen_id>/{prompt,raw,parsed}.txt, metadata.json`.

Every write goes through `write_text_atomic` (a temp file in the same folder, then
`os.replace`), so a killed run leaves either the old complete file or none, never a
half-written file that looks complete.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

from daydream.paths import Paths

_UMASK = os.umask(0)
os.umask(_UMASK)


def write_bytes_atomic(path: Path, data: bytes, *, fsync: bool = False) -> None:
    """Write `data` to `path` through a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            if fsync:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str, *, fsync: bool = False) -> None:
    """`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync)


def clear_temp_files(folder: Path) -> int:
    """Remove temp files a killed run left in a document's folder (and its .replies/).
    Only the job that (re)makes the document calls this, so no live write is touched."""
    leftovers = [*Path(folder).glob(".*.tmp"), *Path(folder).glob(".replies/.*.tmp")]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


def write_json_atomic(path: Path, data: dict, *, fsync: bool = False) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n", fsync=fsync)


def write_csv_atomic(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def read_metadata(paths: Paths, stage: str, gen_id: str) -> dict:
    """A document's metadata.json; FileNotFoundError when the document has none."""
    return json.loads(paths.metadata_path(stage, gen_id).read_text(encoding="utf-8"))


def _read_optional(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def load_generation(gens_root: str | Path, stage: str, gen_id: str) -> dict:
    """`{prompt_text, raw_text, parsed_text, metadata}` of one document; absent files are None."""
    paths = Paths(Path(gens_root).parent)
    if paths.gens_root != Path(gens_root):
        raise ValueError(f"{gens_root}: a gens root must be a folder named 'gens'")
    metadata_text = _read_optional(paths.metadata_path(stage, gen_id))
    return {
        "prompt_text": _read_optional(paths.prompt_path(stage, gen_id)),
        "raw_text": _read_optional(paths.raw_path(stage, gen_id)),
        "parsed_text": _read_optional(paths.parsed_path(stage, gen_id)),
        "metadata": json.loads(metadata_text) if metadata_text is not None else None,
    }


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line under an exclusive lock (safe across threads and processes)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True) + "\n"
    with path.open("a", encoding="utf-8") as out:
        fcntl.flock(out, fcntl.LOCK_EX)
        try:
            out.write(line)
            out.flush()
        finally:
            fcntl.flock(out, fcntl.LOCK_UN)
