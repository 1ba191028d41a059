"""The gens store (SPEC §5): `data/gens/<stage>/<gen_id>/{prompt,raw,parsed}.txt, metadata.json`,
and the one atomic writer every file of the workflow goes through.

Every write goes through `write_bytes_atomic` (a temp file in the same folder, then
`os.replace`), so a killed run leaves either the old complete file or none, never a
half-written file that looks complete. metadata.json is checked against
`config/schema/metadata.schema.yaml` before it is written.

Every metadata read goes through `read_document_metadata` (one document) or
`normalise_metadata` (what bulk readers such as the cross-experiment tables apply to each
record), so a gens store of the original pipeline is read as it is, with nothing rewritten:

- `metadata.json` may be missing or beside the original's `raw_metadata.json` and
  `parsed_metadata.json`; the files are merged in that order (a key of an earlier file wins).
- Keys are renamed by `ORIGINAL_KEYS` (`llm_model_id` -> `model_id`, `origin_cohort_id` ->
  `cohort_id`, `parser_name` -> `parser`, `<stage>_template` -> `template_id`); where a record
  holds both names, ours wins. Other keys are kept as they are.
- Absent keys of a lineage: `parent_gen_id` "" and `replicate` 1 (the original's default), and
  `combo_id` "" (an essay or evaluation of the original carries none: `read_document_metadata`
  takes it from the document's ancestors); `read_document_metadata` also gives a document without
  `prompt_sha256` the SHA-256 of its prompt.txt (the prompt that was sent).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import hashlib
import io
import itertools
import json
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import yaml

from daydream import json_check, stages
from daydream.paths import REPLIES, Paths, schema_path

log = logging.getLogger(__name__)

_UMASK = os.umask(0)
os.umask(_UMASK)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_COUNTER = itertools.count()
_TOKEN = ""


def _new_token() -> None:
    """Temp-file names unique to this process (a forked child gets its own)."""
    global _TOKEN
    _TOKEN = f"{os.getpid()}-{secrets.token_hex(4)}-"


_new_token()
os.register_at_fork(after_in_child=_new_token)


def read_bytes(path: Path | str) -> bytes:
    """A file's bytes with the fewest system calls (open, read until empty, close), for the
    small files read once per document (a parent's parsed.txt, a report's scores and texts);
    errors as `Path.read_bytes` raises them."""
    handle = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(handle, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(handle)
    return b"".join(chunks)


def write_bytes_atomic(path: Path, data: bytes, *, fsync: bool = False) -> None:
    """Write `data` to `path` through a temp file in the same folder and an atomic rename.

    Every document writes several files, so this is kept to the system calls it needs: the
    temp file is created with its final mode (the umask applies, as for any new file) under a
    name no other writer uses (this process's token and a counter), and the folder is made only
    when it is missing."""
    target = os.fspath(path)
    folder, name = os.path.split(target)
    tmp = os.path.join(folder, f".{name}.{_TOKEN}{next(_COUNTER)}.tmp")
    try:
        handle = os.open(tmp, _CREATE, 0o666)
    except FileNotFoundError:
        _make_folder(folder or ".")
        handle = os.open(tmp, _CREATE, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(handle, view):]
            if fsync:
                os.fsync(handle)
        finally:
            os.close(handle)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _make_folder(folder: str) -> None:
    """A missing folder, made with one system call when its parent exists (a document's
    ledger), else with its missing parents."""
    try:
        os.mkdir(folder)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
    except FileExistsError:
        pass  # made meanwhile (another thread), or a file: the open that follows says which


def write_text_atomic(path: Path, text: str, *, fsync: bool = False) -> None:
    """`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync)


def clear_temp_files(folder: Path) -> int:
    """Remove temp files a killed run left in a document's folder (and its .replies/).
    Only the job that (re)makes the document calls this; a temp file of this process is a live
    write (the call engine saving the document's reply while its job starts) and is left."""
    top = os.fspath(folder)
    removed, has_ledger = _clear_temp_files_in(top)
    if has_ledger:  # a new document's folder has no ledger: no second look
        removed += _clear_temp_files_in(os.path.join(top, REPLIES))[0]
    return removed


def _clear_temp_files_in(where: str) -> tuple[int, bool]:
    """`clear_temp_files` in one folder: how many were removed, and whether it lists a ledger."""
    live, removed, has_ledger = f".{_TOKEN}", 0, False
    try:
        entries = list(os.scandir(where))
    except (FileNotFoundError, NotADirectoryError):
        return 0, False
    for entry in entries:
        name = entry.name
        if name.startswith(".") and name.endswith(".tmp") and live not in name \
                and not entry.is_dir(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
        has_ledger = has_ledger or name == REPLIES
    return removed, has_ledger


def write_json_atomic(path: Path, data: dict, *, fsync: bool = False) -> None:
    write_text_atomic(path, json_text(data), fsync=fsync)


def json_text(data: object) -> str:
    """`json.dumps(data, indent=2, sort_keys=True) + "\n"`, byte for byte, in about half its time
    for the plain values every record is made of (str keys; str, int, float, bool, None, list,
    tuple, dict values): json's own encoder does an indented dump in Python, one generator step
    per value, and every document writes two (its saved reply, its metadata.json). Anything
    else (another type, a key that is no str, a cycle) is left to `json.dumps`, which then
    gives its own result or error."""
    try:
        return _json_value(data, "\n") + "\n"
    except (_NotPlain, TypeError, RecursionError):
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


class _NotPlain(Exception):
    """A value `json_text` leaves to `json.dumps`."""


_encode_str = json.encoder.encode_basestring_ascii  # what json.dumps uses with ensure_ascii (the default)
_INFINITY = float("inf")


def _json_value(value: object, newline: str) -> str:
    """One value as json.dumps(indent=2, sort_keys=True) writes it at the depth `newline` marks."""
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if kind is dict:
        if not value:
            return "{}"
        inner = newline + "  "
        return "{" + inner + ("," + inner).join(
            [_json_key(key) + ": " + (_encode_str(item) if type(item) is str else _json_value(item, inner))
             for key, item in sorted(value.items())]) + newline + "}"
    if kind is list or kind is tuple:
        if not value:
            return "[]"
        inner = newline + "  "
        return "[" + inner + ("," + inner).join([_json_value(item, inner) for item in value]) + newline + "]"
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float:
        if value != value:
            return "NaN"
        if value == _INFINITY or value == -_INFINITY:
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    raise _NotPlain(kind)


def _json_key(key: object) -> str:
    if type(key) is not str:
        raise _NotPlain(type(key))  # json.dumps turns numbers, bools and None into strings
    return _encode_str(key)


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


@functools.lru_cache(maxsize=1)
def _metadata_quick_check() -> json_check.Check | None:
    """The schema's quick yes (`daydream.json_check`); jsonschema decides whenever it says no."""
    return json_check.compile_check(_metadata_validator().schema)


class MetadataError(ValueError):
    """metadata.json content that does not fit its schema: a bug in what writes it."""


def metadata_problems(metadata: dict) -> list[str]:
    """What in a metadata record does not fit its schema (none: it fits)."""
    quick = _metadata_quick_check()
    if quick is not None and quick(metadata):
        return []
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}"
            for e in _metadata_validator().iter_errors(metadata)]


def write_metadata(paths: Paths, stage: str, gen_id: str, metadata: dict) -> str:
    """Check a document's metadata against its schema, then write it atomically; returns the
    SHA-256 of the bytes written (the document job's check record keeps it: no read back)."""
    problems = metadata_problems(metadata)
    if problems:
        raise MetadataError(f"{gen_id}: metadata does not fit {schema_path('metadata')}: " + "; ".join(problems))
    data = json_text(metadata).encode("utf-8")
    write_bytes_atomic(paths.metadata_path(stage, gen_id), data)
    return hashlib.sha256(data).hexdigest()


# The original pipeline's metadata keys -> ours (SPEC §5). `<stage>_template` is an alias of
# template_id in the original's older documents (e.g. `essay_template` in an essay's metadata).
ORIGINAL_KEYS = {"llm_model_id": "model_id", "origin_cohort_id": "cohort_id", "parser_name": "parser"}
# Keys whose presence marks a record written by the original pipeline.
ORIGINAL_MARKERS = (*ORIGINAL_KEYS, "input_mode", "legacy_fields")


@functools.cache
def original_aliases(stage: str) -> dict[str, str]:
    """The original's key -> ours, for a document of `stage` (ORIGINAL_KEYS plus the stage's
    `<stage>_template`); bulk readers apply it to whole columns."""
    return {**ORIGINAL_KEYS, f"{stage}_template": "template_id"}


def is_original_record(record: dict) -> bool:
    """True when a metadata record (as read, before normalising) is in the original's keys."""
    return any(key in record for key in ORIGINAL_MARKERS)


def normalise_metadata(stage: str, *records: dict | None) -> dict:
    """One document's metadata in our keys, from its metadata.json record and (for a document of
    the original pipeline) its raw_metadata.json and parsed_metadata.json records, in that order.
    See the module docstring for the key map; absent records are None. A new dict: the records
    are not changed."""
    aliases = original_aliases(stage)
    present = [record for record in records if record]
    merged: dict = dict(present[0]) if len(present) == 1 else {}
    if len(present) > 1:
        for record in present:
            for key, value in record.items():
                merged.setdefault(key, value)  # an earlier file wins
    if not aliases.keys() & merged.keys() and isinstance(merged.get("parent_gen_id"), str) \
            and isinstance(merged.get("combo_id"), str) and type(merged.get("replicate")) is int:
        merged.setdefault("stage", stage)
        return merged  # already in our keys (every document we write): the fast path
    out = {key: value for key, value in merged.items() if key not in aliases}
    for original, ours in aliases.items():
        if original in merged:
            out.setdefault(ours, merged[original])  # our own key wins over the original's
    out.setdefault("stage", stage)
    out.setdefault("parent_gen_id", "")
    out["parent_gen_id"] = "" if out["parent_gen_id"] is None else str(out["parent_gen_id"])
    out.setdefault("combo_id", "")
    out["combo_id"] = "" if out["combo_id"] is None else str(out["combo_id"])
    replicate = out.get("replicate")
    try:
        out["replicate"] = 1 if replicate in (None, "") else int(replicate)
    except (TypeError, ValueError):
        pass  # kept as written; whoever needs a number says which file holds it
    return out


def _read_json(path: Path) -> dict | None:
    """A JSON object file; None when it does not exist; ValueError naming the file if it is bad."""
    text = _read_optional(path)
    if text is None:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); restore the file from a copy") from error
    if not isinstance(record, dict):
        raise ValueError(f"{path} holds {type(record).__name__}, not a JSON object; restore the file")
    return record


def metadata_files(paths: Paths, stage: str, gen_id: str) -> tuple[Path, Path, Path]:
    """metadata.json, then the original's raw_metadata.json and parsed_metadata.json."""
    return (paths.metadata_path(stage, gen_id), paths.raw_metadata_path(stage, gen_id),
            paths.parsed_metadata_path(stage, gen_id))


def read_document_metadata(paths: Paths, stage: str, gen_id: str, *, lineage: bool = True) -> dict:
    """A document's metadata in our keys (module docstring), whether we or the original pipeline
    wrote it; FileNotFoundError when the document has none of its metadata files. Nothing is
    written. With `lineage` (the default) a missing combo_id is read from the document's
    ancestors (left "" when they are gone) and a missing prompt_sha256 from its prompt.txt."""
    records = [_read_json(path) for path in metadata_files(paths, stage, gen_id)]
    if all(record is None for record in records):
        raise FileNotFoundError(f"{paths.metadata_path(stage, gen_id)} does not exist (nor the original "
                                "pipeline's raw_metadata.json / parsed_metadata.json)")
    meta = normalise_metadata(stage, *records)
    if not lineage:
        return meta
    parent = stages.parent_of(stage)
    if not meta["combo_id"] and meta["parent_gen_id"] and parent is not None:
        try:
            meta["combo_id"] = read_document_metadata(paths, parent.name, meta["parent_gen_id"])["combo_id"]
        except FileNotFoundError:
            log.debug("%s: combo_id unknown, its %s %s has no metadata", gen_id, parent.name, meta["parent_gen_id"])
    if "prompt_sha256" not in meta:
        prompt = _read_optional(paths.prompt_path(stage, gen_id))
        if prompt is not None:
            meta["prompt_sha256"] = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
    return meta


# The name the gens-store rules use for the one reader.
read_metadata = read_document_metadata


def _read_optional(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def load_generation(gens_root: str | Path, stage: str, gen_id: str) -> dict:
    """`{prompt_text, raw_text, parsed_text, metadata}` of one document; absent files are None.
    `metadata` is `read_document_metadata`'s (our keys, also for the original's documents)."""
    paths = Paths(Path(gens_root).parent)
    if paths.gens_root != Path(gens_root):
        raise ValueError(f"{gens_root}: a gens root must be a folder named 'gens'")
    try:
        metadata = read_document_metadata(paths, stage, gen_id)
    except FileNotFoundError:
        metadata = None
    return {
        "prompt_text": _read_optional(paths.prompt_path(stage, gen_id)),
        "raw_text": _read_optional(paths.raw_path(stage, gen_id)),
        "parsed_text": _read_optional(paths.parsed_path(stage, gen_id)),
        "metadata": metadata,
    }


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line under an exclusive lock (safe across threads and processes). A last
    line cut short by a crash or a full disk is ended first, so it stays one unreadable line
    (readers skip it and name it) and this record is whole on a line of its own."""
    append_jsonl_records(path, [record])


def append_jsonl_records(path: Path, records: list[dict]) -> None:
    """`append_jsonl` for several records, in one write under one lock."""
    line = b"".join((json.dumps(record, sort_keys=True) + "\n").encode("utf-8") for record in records)
    name = os.fspath(path)
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        handle = os.open(name, flags, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
        handle = os.open(name, flags, 0o666)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        size = os.fstat(handle).st_size
        if size and os.pread(handle, 1, size - 1) != b"\n":
            line = b"\n" + line
        view = memoryview(line)
        while view:
            view = view[os.write(handle, view):]
    finally:
        os.close(handle)


def jsonl_records(path: Path) -> Iterator[tuple[int, dict | None]]:
    """Each non-empty line of an append-only record file as (line number, record), the record
    None where the line is no JSON object (a write torn by a crash or a full disk): every
    reader decides what such a line counts as, and none stops on it."""
    if not path.exists():
        return
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            yield number, record if isinstance(record, dict) else None


def write_job_log(log_path: str | Path | None, line: str) -> None:
    """One line of what a job did: to the package's logger and to the rule's `log:` file."""
    log.debug(line)
    if log_path:
        write_text_atomic(Path(log_path), line + "\n")
