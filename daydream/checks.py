"""What each document's files were checked to be, kept so that the tail after the documents
(the stale report, the reports' flags) re-reads only what changed since.

One record per document, appended to `7_reporting/document_checks.jsonl`
(`Paths.document_checks_jsonl`) by the job that wrote the document (`written`) and by the
stale report for each document it had to check by content (`integrity.DocumentChecks`):

- `files`: the stat key (`stat_key`: size, mtime_ns, ctime_ns, inode) of raw.txt, parsed.txt,
  metadata.json and, unless a copy, the saved reply `.replies/<sha16>.json`, taken after they
  were written (or before and after they were read), and `sha256`: the SHA-256 of the first
  three (Snakemake touches every output after its job, so their times move once: such a file,
  of the same size and inode, is hashed against it and its new stat key kept);
- `change`: `integrity.document_change` of those contents (None: nothing differs), and what the
  tail reads from them: `meta` (the `META_KEYS` of metadata.json), `paid_model` (the saved
  reply's model) and `parsed_sha256` (of parsed.txt's bytes: a child's prompt source);
- `prompt_key` and `prompt_now`: the key of the prompt's sources when the prompt was last
  rendered (`source_key`: the template's text, the combo's concept ids, names and texts, or the
  parent's parsed text) and the SHA-256 of that rendering.

A record is used only while every file's stat key is still the recorded one, or its content
hashes to the recorded SHA-256 (`Reuse.valid`);
any other document is checked by content, as if there were no record, so a lost, torn or old
record costs time, never a missed edit. A prompt is taken as rendered only while today's source
key is the recorded one; a changed template, concept text or name, or parent is rendered again.

Why a stat key with ctime: every write to a file moves its ctime, and no user call can set it
back (`os.utime` sets mtime and atime and itself moves ctime), so an edit of the same size with
its mtime restored is still seen; an atomic replace (editors, `cp`) gives a new inode. What it
misses: an in-place write of the same size within the same timestamp tick as the recorded stat
(a few ms on Linux file systems with nanosecond times, the granularity of coarser ones), or a
clock set back to that tick. Hashing every file instead would read 40,000 files at 10,000
documents, which is what the tail did before.

Why Snakemake's touch costs one hash of each file, and no key is made to survive it: the touch
(`DAG.check_and_touch_output`: `os.utime(path, None)` on every output, always, after the job and
before Snakemake records it finished) keeps the size and inode and sets atime, mtime and ctime to
one instant, which is also what it leaves after a same-size write in place before it (or a
`touch` after one). A record keyed on what the touch keeps, or refreshed from a stat taken after
it, would vouch for bytes nobody read since the job wrote them: an edit between the job's stat
and the touch would never be seen. Only the content read after the touch tells; the first report
after the run does it (`Reuse._same_files`) and keeps the new keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from collections.abc import Iterable, Sequence

from daydream import store
from daydream.paths import REPLIES, Paths

FILES = ("raw.txt", "parsed.txt", "metadata.json")
REPLY = "reply"
# What the tail reads from metadata.json (the stale report's comparisons, the lineage).
META_KEYS = ("prompt_sha256", "prompt_sources", "model", "model_id", "mode", "parent_gen_id")


def stat_key(path: str) -> list[int] | None:
    """(size, mtime_ns, ctime_ns, inode) of a regular file; None when it is missing or not one."""
    try:
        found = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(found.st_mode):
        return None
    return [found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino]


def file_keys(paths: Paths, stage: str, gen_id: str, prompt_sha256: str | None) -> dict[str, list[int]] | None:
    """The stat key of each file a document's check reads (the saved reply when `prompt_sha256`
    is given); None when one of them is missing."""
    folder = paths.gen_dir_texts(stage, [gen_id])[0] + os.sep  # string joins: called for every document
    keys = {name: stat_key(folder + name) for name in FILES}
    if prompt_sha256:
        keys[REPLY] = stat_key(f"{folder}{REPLIES}{os.sep}{prompt_sha256[:16]}.json")  # Paths.reply_path
    return None if any(key is None for key in keys.values()) else keys


def source_key(stage: str, template_id: str, concepts: Sequence[tuple[str, str]], sources: dict[str, str]) -> str:
    """The key of what a prompt is rendered from: the stage, the template id, the combo's concept
    (id, name) pairs and the SHA-256 of each source text (`Prompt.sources`). Equal keys render
    the same prompt."""
    text = json.dumps([stage, template_id, [list(c) for c in concepts], sorted(sources.items())],
                      separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def reply_of(meta: dict) -> str | None:
    """The prompt SHA-256 whose saved reply a document's check reads (None for a copy)."""
    return None if meta.get("mode") == "copy" else (meta.get("prompt_sha256") or None)


def file_sha256(path: str) -> str | None:
    """The SHA-256 of a file's bytes, read whole (a gens file is small: `hashlib.file_digest`
    allocated and zeroed a buffer of 256 KiB for each); None when it cannot be read."""
    try:
        with open(path, "rb", buffering=0) as handle:
            return hashlib.sha256(handle.readall()).hexdigest()
    except OSError:
        return None


def keyed_sha256(path: str, key: list[int]) -> str | None:
    """The SHA-256 of the file at `path` while it is the file of stat key `key` (`stat_key`) from
    before its read to after it (the file read has that key once read: no write or replace
    came between), else None (it differs, changed meanwhile, or cannot be read)."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks, size = [], 0
        while size <= key[0]:
            chunk = os.read(handle, key[0] + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        found = os.fstat(handle)
    except OSError:
        return None
    finally:
        os.close(handle)
    if size != key[0] or [found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino] != key:
        return None
    return hashlib.sha256(b"".join(chunks)).hexdigest()


def record(paths: Paths, stage: str, gen_id: str, meta: dict, *, change: str | None, paid_model: str | None,
           parsed_sha256: str | None, prompt_key: str | None, prompt_now: str | None, shas: dict[str, str],
           keys: dict | None = None) -> dict | None:
    """One document's record from what was checked (`meta`: its metadata.json; `shas`: the
    SHA-256 of each of `FILES` as checked; `keys`: the stat keys taken around the check, else
    now); None when a file of it is missing."""
    keys = keys if keys is not None else file_keys(paths, stage, gen_id, reply_of(meta))
    if keys is None or set(shas) != set(FILES):
        return None
    return {"stage": stage, "gen_id": gen_id, "files": keys, "sha256": dict(shas), "change": change,
            "meta": {key: meta.get(key) for key in META_KEYS}, "paid_model": paid_model,
            "parsed_sha256": parsed_sha256, "prompt_key": prompt_key, "prompt_now": prompt_now}


def append(paths: Paths, records: Iterable[dict | None]) -> int:
    """Append records (None ones skipped) in one write; return how many."""
    kept = [r for r in records if r is not None]
    if kept:
        store.append_jsonl_records(paths.document_checks_jsonl, kept)
    return len(kept)


def load(paths: Paths) -> dict[str, dict]:
    """gen_id -> its last record (a torn or foreign line is skipped: that document is checked
    by content)."""
    return _load(paths)[0]


def _load(paths: Paths) -> tuple[dict[str, dict], int]:
    """gen_id -> last record, and the number of lines read (`_RecordFile`: once per process, then
    only what was appended since)."""
    name = os.fspath(paths.document_checks_jsonl)
    with _FILES_LOCK:
        found = _FILES.setdefault(name, _RecordFile(name))
    return found.read()


def _record_of(line: bytes) -> dict | None:
    try:
        item = json.loads(line.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    if isinstance(item, dict) and isinstance(item.get("gen_id"), str) and isinstance(item.get("files"), dict) \
            and isinstance(item.get("meta"), dict):
        return item
    return None


class _RecordFile:
    """One record file as this process has read it: whole the first time, then only the lines
    appended since. The document jobs append as they end and every stale-report shard of the
    run reads the file, so each line is parsed once per process, not once per shard. The file is
    only appended to (`append`) or replaced (`compact`: a new inode): a file replaced, shrunk, or
    whose last bytes before the point read so far differ is read again from its start; a last
    line without its newline waits for the next read."""

    TAIL = 64  # bytes before the point read so far, compared on each read

    def __init__(self, name: str):
        self.name = name
        self.lock = threading.Lock()
        self._reset(None)

    def _reset(self, identity: tuple[int, int] | None) -> None:
        self.identity, self.offset, self.tail = identity, 0, b""
        self.records: dict[str, dict] = {}
        self.lines = 0

    def read(self) -> tuple[dict[str, dict], int]:
        """A copy of gen_id -> last record, and the number of non-empty lines."""
        with self.lock:
            try:
                handle = open(self.name, "rb")
            except FileNotFoundError:
                self._reset(None)
                return {}, 0
            with handle:
                found = os.fstat(handle.fileno())
                identity = (found.st_dev, found.st_ino)
                if identity != self.identity or found.st_size < self.offset or (
                        self.tail and os.pread(handle.fileno(), len(self.tail),
                                               self.offset - len(self.tail)) != self.tail):
                    self._reset(identity)
                handle.seek(self.offset)
                data = handle.read()
            end = data.rfind(b"\n") + 1
            for line in data[:end].split(b"\n"):
                if not line.strip():
                    continue
                self.lines += 1
                item = _record_of(line)
                if item is not None:
                    self.records[item["gen_id"]] = item
            if end:
                self.tail = (self.tail + data[:end])[-self.TAIL:]
                self.offset += end
            return dict(self.records), self.lines


_FILES: dict[str, _RecordFile] = {}
_FILES_LOCK = threading.Lock()


def compact(paths: Paths, records: dict[str, dict]) -> None:
    """Rewrite the record file with one record per document (the stale report, at the end of a
    run, when the file has grown past twice that). A record appended meanwhile by another
    process may be lost: that document is then checked by content."""
    store.write_text_atomic(paths.document_checks_jsonl,
                            "".join(json.dumps(r, sort_keys=True) + "\n" for r in records.values()))


def tidy(paths: Paths) -> None:
    """`compact` the record file once it holds more than twice as many lines as documents (the
    stale report, when its shards made the records: each shard only appends)."""
    records, lines = _load(paths)
    if lines > 2 * len(records):
        compact(paths, records)


class Reuse:
    """The records of a data root (read once per process, then only the lines appended since:
    `_RecordFile`), and which of them still hold. `used` and `checked` count documents taken
    from a record and checked by content."""

    def __init__(self, paths: Paths, records: dict[str, dict] | None = None):
        self.paths = paths
        self.records, self.lines = _load(paths) if records is None else (records, len(records))
        self.fresh: dict[str, dict] = {}  # records made by content checks, to append
        self._valid: dict[str, dict | None] = {}
        self.rehashed = 0

    def latest(self, gen_id: str) -> dict | None:
        """The document's newest record, whether or not its files still match it."""
        return self.fresh.get(gen_id) or self.records.get(gen_id)

    def valid(self, stage: str, gen_id: str) -> dict | None:
        """The document's record while each of its files has the recorded stat key, else None
        (each document's files are looked at once per `Reuse`)."""
        if gen_id in self.fresh:
            return self.fresh[gen_id]
        if gen_id not in self._valid:
            found = self.records.get(gen_id)
            if found is not None and found.get("stage") == stage:
                found = self._same_files(found)
            self._valid[gen_id] = found if found is not None and found.get("stage") == stage else None
        return self._valid[gen_id]

    def _same_files(self, found: dict) -> dict | None:
        """`found` while its files are as recorded; a file of the same size and inode whose times
        moved (Snakemake touches every output after its job) is hashed, and one with the recorded
        SHA-256 counts: the record is kept with the new stat keys (`rehashed`)."""
        stage, gen_id = found["stage"], found["gen_id"]
        keys = file_keys(self.paths, stage, gen_id, reply_of(found["meta"]))
        if keys == found["files"]:
            return found
        shas = found.get("sha256") or {}
        if keys is None or keys.get(REPLY) != found["files"].get(REPLY) or set(keys) != set(found["files"]):
            return None
        folder = self.paths.gen_dir_texts(stage, [gen_id])[0] + os.sep
        for name in FILES:
            if keys[name] == found["files"][name]:
                continue
            if keys[name][0] != found["files"][name][0] or keys[name][3] != found["files"][name][3] \
                    or keyed_sha256(folder + name, keys[name]) != shas.get(name):
                return None
        self.rehashed += 1
        self.fresh[gen_id] = {**found, "files": keys}
        return self.fresh[gen_id]

    def keep(self, fresh: dict | None) -> None:
        """A record made now (by a content check, or with a prompt rendered now), saved by `save`."""
        if fresh is not None:
            self.fresh[fresh["gen_id"]] = fresh

    def save(self, *, may_compact: bool = True) -> None:
        """Append the records made by content checks; compact the file when it holds more than
        twice as many lines as documents, unless `may_compact` is false (a stale-report shard:
        other jobs of the run append meanwhile, and a compaction from this `Reuse`'s records
        would drop their lines)."""
        if not self.fresh:
            return
        merged = {**self.records, **self.fresh}
        if may_compact and self.lines + len(self.fresh) > 2 * len(merged):
            compact(self.paths, merged)
            self.lines = len(merged)
        else:
            self.lines += append(self.paths, self.fresh.values())
        self.records, self.fresh = merged, {}
