"""The gens store (SPEC §5): `data/gens/<stage>/<gen_id>/{prompt,raw,parsed}.txt, metadata.json`,
and the one atomic writer every file of the workflow goes through.

Every write goes through `write_bytes_atomic` (a temp file in the same folder, then
`os.replace`), so a killed run leaves either the old complete file or none, never a
half-written file that looks complete. metadata.json is checked against
`config/schema/metadata.schema.yaml` before it is written.
"""

from __future__ import annotations

import csv
import fcntl
import functools
import io
import json
import logging
import os
import tempfile
from pathlib import Path

import jsonschema
import yaml

from daydream.paths import Paths, schema_path

log = logging.getLogger(__name__)

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


@functools.lru_cache(maxsize=1)
def _metadata_validator() -> jsonschema.Draft202012Validator:
    schema = yaml.safe_load(schema_path("metadata").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


class MetadataError(ValueError):
    """metadata.json content that does not fit its schema: a bug in what writes it."""


def write_metadata(paths: Paths, stage: str, gen_id: str, metadata: dict) -> None:
    """Check a document's metadata against its schema, then write it atomically."""
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}"
                for e in _metadata_validator().iter_errors(metadata)]
    if problems:
        raise MetadataError(f"{gen_id}: metadata does not fit {schema_path('metadata')}: " + "; ".join(problems))
    write_json_atomic(paths.metadata_path(stage, gen_id), metadata)


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
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True) + "\n"
    with path.open("a", encoding="utf-8") as out:
        fcntl.flock(out, fcntl.LOCK_EX)
        try:
            out.write(line)
            out.flush()
        finally:
            fcntl.flock(out, fcntl.LOCK_UN)


def write_job_log(log_path: str | Path | None, line: str) -> None:
    """One line of what a job did: to the package's logger and to the rule's `log:` file."""
    log.debug(line)
    if log_path:
        write_text_atomic(Path(log_path), line + "\n")
