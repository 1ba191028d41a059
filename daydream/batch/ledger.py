"""The durable batch ledger: every provider batch ever submitted, on disk before anyone waits on it.

`data/batches/` (`Paths.provider_batches_dir`) holds two files per batch, both written
atomically with fsync:
- `<local_id>.requests.json`, written once before the batch is created: for each `custom_id`
  the document (stage, gen_id), the prompt sent and its SHA-256 (and the hashes of its
  sources), the model settings and which submission of that request this is;
- `<local_id>.json`, its state: provider, route, endpoint, the name of the key variable
  (never the key), the provider's batch id, its last status and counts and, once collected,
  the outcome of each request. `state` moves `preparing` (requests on disk, not yet created)
  -> `submitted` (the provider's id on disk) -> `collected` (every result read and each reply
  saved in the paid-reply ledger); `abandoned` is a batch that was never created.

A batch that is `preparing` or `submitted` is live: its requests are held, and no request a
live batch holds is ever submitted again, by any run. Whoever submits or collects holds
`locked(paths)` (an flock on `data/batches/.lock`), so two jobs, two runs or
`scripts/batches.py` never submit the same request or save the same result twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from daydream import store
from daydream.paths import Paths

PREPARING, SUBMITTED, COLLECTED, ABANDONED = "preparing", "submitted", "collected", "abandoned"
LIVE = frozenset({PREPARING, SUBMITTED})
_STATE_SUFFIX = ".json"
_REQUESTS_SUFFIX = ".requests.json"

_THREAD_LOCK = threading.RLock()
# Caches of what the folder holds, keyed by the folder and its modification time (every state
# write is a rename into it): derived from the files, not run state.
_HELD_CACHE: dict[str, tuple[int, dict]] = {}
_LIVE_CACHE: dict[str, tuple[int, list]] = {}


def new_local_id() -> str:
    """Our own id of a batch: its creation time and 8 random hex digits."""
    return f"pb_{time.strftime('%Y%m%dT%H%M%S')}_{secrets.token_hex(4)}"


@contextlib.contextmanager
def locked(paths: Paths) -> Iterator[None]:
    """Exclusive use of the batch ledger across threads and processes."""
    paths.provider_batches_dir.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCK, open(paths.provider_batches_lock, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_requests(paths: Paths, local_id: str, requests: dict[str, dict]) -> None:
    store.write_json_atomic(paths.provider_batch_requests(local_id), requests, fsync=True)


def read_requests(paths: Paths, local_id: str) -> dict[str, dict]:
    return json.loads(paths.provider_batch_requests(local_id).read_text(encoding="utf-8"))


def write_state(paths: Paths, state: dict) -> None:
    store.write_json_atomic(paths.provider_batch_state(state["local_id"]), state, fsync=True)


def read_state(paths: Paths, local_id: str) -> dict:
    path = paths.provider_batch_state(local_id)
    if not path.exists():
        raise KeyError(f"{local_id}: no such batch in {paths.provider_batches_dir} "
                       "(python scripts/batches.py list shows them)")
    return json.loads(path.read_text(encoding="utf-8"))


def _state_files(paths: Paths) -> list[Path]:
    folder = paths.provider_batches_dir
    if not folder.exists():
        return []
    return sorted(p for p in folder.glob(f"pb_*{_STATE_SUFFIX}") if not p.name.endswith(_REQUESTS_SUFFIX))


def all_states(paths: Paths) -> list[dict]:
    """Every batch's state, oldest first."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in _state_files(paths)]


def live_states(paths: Paths) -> list[dict]:
    return [s for s in all_states(paths) if s["state"] in LIVE]


def _stamp(paths: Paths) -> int | None:
    try:
        return paths.provider_batches_dir.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def live_requests(paths: Paths) -> tuple[int | None, list[tuple[dict, dict]]]:
    """(the folder's stamp, [(state, request)] of every request a live batch holds): what the
    budget guard counts as committed. Cached on the folder's modification time."""
    stamp = _stamp(paths)
    if stamp is None:
        return None, []
    with _THREAD_LOCK:
        cached = _LIVE_CACHE.get(str(paths.provider_batches_dir))
        if cached and cached[0] == stamp:
            return stamp, cached[1]
    found = [(state, request) for state in live_states(paths)
             for request in read_requests(paths, state["local_id"]).values()]
    with _THREAD_LOCK:
        _LIVE_CACHE[str(paths.provider_batches_dir)] = (stamp, found)
    return stamp, found


def held(paths: Paths) -> dict[tuple[str, str], tuple[str, str]]:
    """(stage, gen_id) -> (local_id, prompt_sha256) of every request a live batch holds.
    Cached on the folder's modification time (every state write is a rename into it)."""
    folder = paths.provider_batches_dir
    try:
        stamp = folder.stat().st_mtime_ns
    except FileNotFoundError:
        return {}
    with _THREAD_LOCK:
        cached = _HELD_CACHE.get(str(folder))
        if cached and cached[0] == stamp:
            return cached[1]
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for state in live_states(paths):
        for request in read_requests(paths, state["local_id"]).values():
            found[(request["stage"], request["gen_id"])] = (state["local_id"], request["prompt_sha256"])
    with _THREAD_LOCK:
        _HELD_CACHE[str(folder)] = (stamp, found)
    return found
