"""Loopback fake of the OpenAI and Anthropic model APIs, for tests and benchmarks.

Served (127.0.0.1 only; the server never talks to anything else):

* OpenAI chat completions: ``POST /v1/chat/completions`` (also ``/chat/completions``)
  and ``GET /v1/models`` -- the subset litellm's non-streaming ``openai/`` provider uses.
* Anthropic messages: ``POST /v1/messages`` (one Message, same scripted actions).
* OpenAI Files and Batch APIs: ``POST /v1/files`` (multipart), ``GET /v1/files``,
  ``GET|DELETE /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``POST /v1/batches``,
  ``GET /v1/batches``, ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``.
* Anthropic Message Batches: ``POST /v1/messages/batches``, ``GET /v1/messages/batches``,
  ``GET|DELETE /v1/messages/batches/{id}``, ``GET /v1/messages/batches/{id}/results``,
  ``POST /v1/messages/batches/{id}/cancel``.

Chat and message behaviour is scripted with :class:`Action` values built by the
helper functions below (``reply``, ``empty``, ``length``, ``rate_limit``,
``server_error``, ``bad_request``, ``unauthorized``, ``error``, ``hang``,
``malformed``).  Each chat/message request consumes the oldest queued action
(``enqueue``); when the queue is empty the default action (``set_default``) is used.

Prompt caching (chat and message requests, not batches): a prompt of at least
``cache_min_tokens`` words (1,024, as OpenAI's and most Claude models' minimum) that shares a
prefix of that many words or more with an earlier prompt (within ``cache_ttl_s``, 300 s)
reports the shared words as ``usage.prompt_tokens_details.cached_tokens`` (OpenAI; they stay
counted in ``prompt_tokens``). On ``/v1/messages`` only a prefix marked with ``cache_control``
is cached, as Anthropic does: the text up to the last marked block, when it reaches the
minimum, is a ``cache_creation_input_tokens`` write the first time and a
``cache_read_input_tokens`` read after (``input_tokens`` counts the rest). Tokens are words.

Batches never touch that queue.  A batch request's outcome is decided when its
batch is created, by the first matching rule (``on_batch_request``: a ``reply``,
an ``error`` or ``expire()``), else the batch default (``reply()``).  A batch moves
through its statuses with time (``set_batch_timing``: seconds validating, in
progress, finalizing, cancelling), so a poller sees the intermediate states;
``finish_batches`` ends every running batch at once.  Batch replies are built by
the same reply builder as chat replies: same prompt, same content and usage.

Library use::

    with FakeOpenAIServer(latency=0.1) as server:
        server.enqueue(rate_limit(retry_after=2))
        server.set_batch_timing(validating=0.2, processing=1.0)
        server.on_batch_request(server_error(), "req-7")
        server.on_batch_request(expire(), pattern=r"^late-")
        ...  # point litellm / the SDKs at server.base_url (Anthropic: server.root_url)
        assert server.request_count == 1
        assert set(server.custom_id_counts().values()) == {1}

CLI use (for benchmarks running the client in another process)::

    python tests/openai_server.py --port 0 --latency 1.0 --stats-file stats.json

prints ``BASE_URL=http://127.0.0.1:PORT/v1`` and serves until SIGTERM/SIGINT,
rewriting the stats file (JSON counters) after every completed request.
Standard library only.
"""

from __future__ import annotations

import argparse
import email.message
import email.utils
import hashlib
import itertools
import json
import math
import os
import re
import signal
import socket
import socketserver
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
MODEL_PATHS = frozenset({"/v1/models", "/models"})
MESSAGES_PATHS = frozenset({"/v1/messages"})
MALFORMED_BODY = b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{'

KIND_OK = "ok"
KIND_ERROR = "error"
KIND_HANG = "hang"
KIND_MALFORMED = "malformed"
KIND_EXPIRE = "expire"

FLAVOR_OPENAI = "openai"
FLAVOR_ANTHROPIC = "anthropic"

Headers = tuple[tuple[str, str], ...]
_Response = tuple[int, bytes, Headers]  # status, body, extra headers


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Action:
    """One scripted server behaviour for a single request (immutable).

    kind: "ok" (a ChatCompletion), "error" (``status`` + OpenAI error JSON),
        "hang" (wait ``hang_seconds`` then drop the connection, or answer like
        "ok" when ``answer_after_hang``), "malformed" (200 with invalid JSON),
        "expire" (batch requests only, see :func:`expire`).
    latency: seconds to wait before acting; None means the server default.
    content: assistant text for "ok"; None means the deterministic default text.
    usage: overrides merged into the computed word-count usage.
    headers: extra response headers as (name, value) pairs.
    """

    kind: str = KIND_OK
    status: int = 200
    content: str | None = None
    finish_reason: str = "stop"
    usage: dict[str, int] | None = None
    latency: float | None = None
    headers: tuple[tuple[str, str], ...] = ()
    error_message: str = ""
    error_type: str = ""
    error_code: str | None = None
    hang_seconds: float = 0.0
    answer_after_hang: bool = False

    def with_latency(self, seconds: float | None) -> Action:
        """Return a copy of this action that waits ``seconds`` before acting."""
        return replace(self, latency=seconds)


def reply(
    content: str | None = None,
    *,
    usage: dict[str, int] | None = None,
    finish_reason: str = "stop",
    latency: float | None = None,
) -> Action:
    """A 200 ChatCompletion; ``content=None`` uses the deterministic default text."""
    return Action(content=content, usage=usage, finish_reason=finish_reason, latency=latency)


def empty(*, latency: float | None = None) -> Action:
    """A 200 ChatCompletion whose assistant content is the empty string."""
    return reply("", latency=latency)


def length(content: str | None = None, *, latency: float | None = None) -> Action:
    """A 200 ChatCompletion with ``finish_reason="length"`` (truncated output)."""
    return reply(content, finish_reason="length", latency=latency)


def error(
    status: int,
    message: str,
    *,
    error_type: str = "invalid_request_error",
    code: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
    latency: float | None = None,
) -> Action:
    """An HTTP ``status`` reply with body ``{"error": {"message", "type", "code"}}``."""
    return Action(
        kind=KIND_ERROR,
        status=status,
        error_message=message,
        error_type=error_type,
        error_code=code,
        headers=headers,
        latency=latency,
    )


def rate_limit(retry_after: float | None = None, *, latency: float | None = None) -> Action:
    """HTTP 429; adds a ``Retry-After: <seconds>`` header when ``retry_after`` is given."""
    headers = () if retry_after is None else (("Retry-After", _format_seconds(retry_after)),)
    return error(
        429,
        "Rate limit reached (fake server)",
        error_type="requests",
        code="rate_limit_exceeded",
        headers=headers,
        latency=latency,
    )


def server_error(status: int = 500, *, latency: float | None = None) -> Action:
    """HTTP 5xx (500 by default, 503 for "overloaded") with an error JSON body."""
    message = "The server is overloaded (fake server)" if status == 503 else "Internal error (fake server)"
    return error(status, message, error_type="server_error", latency=latency)


def bad_request(
    message: str = "Invalid request (fake server)",
    *,
    code: str | None = "invalid_value",
    latency: float | None = None,
) -> Action:
    """HTTP 400 with an OpenAI-style ``invalid_request_error`` body."""
    return error(400, message, code=code, latency=latency)


def unauthorized(*, latency: float | None = None) -> Action:
    """HTTP 401 with an ``invalid_api_key`` error body."""
    return error(401, "Incorrect API key provided (fake server)", code="invalid_api_key", latency=latency)


def hang(seconds: float, *, answer: bool = False, latency: float | None = None) -> Action:
    """Wait ``seconds``, then drop the connection (or reply normally if ``answer``)."""
    return Action(kind=KIND_HANG, hang_seconds=seconds, answer_after_hang=answer, latency=latency)


def malformed(*, latency: float | None = None) -> Action:
    """HTTP 200 with ``Content-Type: application/json`` but a truncated, invalid JSON body."""
    return Action(kind=KIND_MALFORMED, latency=latency)


def expire() -> Action:
    """Batch-only: the request is never run before its batch's completion window ends.

    OpenAI: the batch ends ``expired`` and the request is in the error file with
    code ``batch_expired``.  Anthropic: the request's result is ``{"type": "expired"}``.
    """
    return Action(kind=KIND_EXPIRE)


def _format_seconds(seconds: float) -> str:
    """Render seconds as an integer string when whole, else as a decimal."""
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


# ------------------------------------------------------------------ response bodies


def _content_text(content: Any) -> str:
    """Flatten a message ``content`` (string or list of parts) into plain text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def prompt_text(payload: Any) -> str:
    """Join the text of every message in a request payload (empty if none)."""
    messages = payload.get("messages") if isinstance(payload, dict) else None
    if not isinstance(messages, list):
        return ""
    texts = [_content_text(m.get("content")) for m in messages if isinstance(m, dict)]
    return "\n".join(texts)


def count_words(text: str) -> int:
    """Deterministic token stand-in: the number of whitespace-separated words."""
    return len(text.split())


def default_content(prompt: str) -> str:
    """Deterministic reply for ``prompt``: one ``<essay>`` block of three lines (a real
    draft's length: the workflow refuses drafts shorter than that), last line ``SCORE: 7``.

    Prompt words are reduced to alphanumerics so that tags or ``SCORE:`` lines
    inside the prompt can never leak into the parsed structure of the reply.
    """
    digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]
    words = [re.sub(r"[^0-9A-Za-z]", "", w) for w in prompt.split()]
    topic = " ".join(w for w in words if w)[:200] or "nothing"
    return (
        f"Fake answer {digest}.\n"
        "<essay>\n"
        f"This deterministic essay responds to a prompt about: {topic}.\n"
        "Its second line weighs what the prompt asks for.\n"
        "Its third line says what would follow from it.\n"
        "</essay>\n"
        "SCORE: 7"
    )


def completion_body(payload: Any, action: Action, serial: int, cached_tokens: int = 0) -> dict[str, Any]:
    """Build the ChatCompletion JSON object answering ``payload`` under ``action``
    (``cached_tokens``: of the prompt's tokens, read from the prompt cache)."""
    prompt = prompt_text(payload)
    content = default_content(prompt) if action.content is None else action.content
    usage: dict[str, Any] = {"prompt_tokens": count_words(prompt), "completion_tokens": count_words(content)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    usage.update(action.usage or {})
    model = payload.get("model") if isinstance(payload, dict) else None
    return {
        "id": f"chatcmpl-fake-{serial}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model if isinstance(model, str) else "fake-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": action.finish_reason,
            }
        ],
        "usage": usage,
    }


def error_body(action: Action) -> dict[str, Any]:
    """Build the OpenAI-style error JSON for an error ``action``."""
    return {"error": {"message": action.error_message, "type": action.error_type, "code": action.error_code}}


def openai_error_object(message: str, error_type: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object with all four documented fields (used by the file and batch APIs)."""
    return {"message": message, "type": error_type, "param": param, "code": code}


ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int, preferred: str = "") -> str:
    """Anthropic's error ``type`` for an HTTP status.

    ``preferred`` wins when it is an Anthropic type other than ``invalid_request_error``
    (the default type of :func:`error`, which must not hide e.g. a 529's ``overloaded_error``).
    """
    if preferred in ANTHROPIC_ERROR_TYPES.values() and preferred != "invalid_request_error":
        return preferred
    return ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def anthropic_error_body(status: int, message: str, preferred_type: str = "") -> dict[str, Any]:
    """Anthropic's error JSON: ``{"type": "error", "error": {"type", "message"}}``."""
    return {"type": "error", "error": {"type": anthropic_error_type(status, preferred_type), "message": message}}


def anthropic_prompt_text(params: Any) -> str:
    """The prompt of an Anthropic Messages request: ``system`` first, then every message.

    Joined like :func:`prompt_text`, so a request whose system prompt is an OpenAI
    system message gets the same deterministic reply from both APIs.
    """
    if not isinstance(params, dict):
        return ""
    system = _content_text(params.get("system"))
    messages = prompt_text(params)
    return "\n".join(t for t in (system, messages) if t) if system else messages


_ANTHROPIC_USAGE_KEYS = {"prompt_tokens": "input_tokens", "completion_tokens": "output_tokens"}
_ANTHROPIC_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}


def message_body(params: Any, action: Action, serial: int | str, cache: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """Build the Anthropic Message JSON answering ``params`` under ``action``.

    Content and token counts equal :func:`completion_body`'s for the same prompt;
    ``action.usage`` keys may use either API's names (``prompt_tokens`` maps to
    ``input_tokens``, ``completion_tokens`` to ``output_tokens``). ``cache``: the prompt's
    tokens (read, written) from and to the prompt cache, which ``input_tokens`` leaves out.
    """
    prompt = anthropic_prompt_text(params)
    content = default_content(prompt) if action.content is None else action.content
    read, written = cache
    usage: dict[str, Any] = {"input_tokens": count_words(prompt) - read - written, "output_tokens": count_words(content),
                             "cache_read_input_tokens": read, "cache_creation_input_tokens": written}
    for key, value in (action.usage or {}).items():
        if key != "total_tokens":
            usage[_ANTHROPIC_USAGE_KEYS.get(key, key)] = value
    model = params.get("model") if isinstance(params, dict) else None
    return {
        "id": f"msg_fake{serial}",
        "type": "message",
        "role": "assistant",
        "model": model if isinstance(model, str) else "fake-model",
        "content": [{"type": "text", "text": content}],
        "stop_reason": _ANTHROPIC_STOP_REASONS.get(action.finish_reason, action.finish_reason),
        "stop_sequence": None,
        "usage": usage,
    }


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [p for p in content if isinstance(p, dict)] if isinstance(content, list) else []


def anthropic_cached_prefix(params: Any) -> int:
    """Words of a Messages request's prompt up to its last block marked ``cache_control``
    (``system`` first, then the messages, as :func:`anthropic_prompt_text` joins them); 0 if none."""
    if not isinstance(params, dict):
        return 0
    parts = [_blocks(params.get("system"))]
    parts += [_blocks(m.get("content")) for m in params.get("messages") or [] if isinstance(m, dict)]
    words = marked = 0
    for block in (b for part in parts for b in part):
        words += count_words(block.get("text", "") if isinstance(block.get("text"), str) else "")
        if block.get("cache_control"):
            marked = words
    return marked


class PromptCache:
    """The loopback's prompt cache (see the module's docstring); thread-safe."""

    def __init__(self, min_tokens: int = 1024, ttl_s: float = 300.0, size: int = 256) -> None:
        self.min_tokens, self.ttl_s = min_tokens, ttl_s
        self._lock = threading.Lock()
        self._prompts: deque[tuple[float, tuple[str, ...]]] = deque(maxlen=size)  # OpenAI: recent long prompts
        self._prefixes: dict[str, float] = {}  # Anthropic: SHA-256 of a marked prefix -> last use

    def openai(self, payload: Any) -> int:
        """Cached tokens of a chat request: its longest prefix shared with a recent prompt."""
        words = tuple(prompt_text(payload).split())
        if len(words) < self.min_tokens:
            return 0
        with self._lock:
            now, best = time.monotonic(), 0
            for seen_at, seen in self._prompts:
                if now - seen_at <= self.ttl_s:
                    best = max(best, _common_prefix(words, seen))
            self._prompts.append((now, words))
        return best if best >= self.min_tokens else 0

    def anthropic(self, params: Any) -> tuple[int, int]:
        """(read, written) tokens of a Messages request's marked prefix."""
        marked = anthropic_cached_prefix(params)
        if marked < self.min_tokens:
            return 0, 0
        words = anthropic_prompt_text(params).split()[:marked]
        key = hashlib.sha256(" ".join(words).encode("utf-8")).hexdigest()
        with self._lock:
            now = time.monotonic()
            fresh = now - self._prefixes.get(key, -math.inf) <= self.ttl_s
            self._prefixes[key] = now  # a read refreshes the lifetime, as Anthropic's does
        return (marked, 0) if fresh else (0, marked)


def _common_prefix(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# ------------------------------------------------------------------------ batch APIs

DAY_SECONDS = 24 * 3600
OPENAI_BATCH_ENDPOINTS = ("/v1/chat/completions",)
FILE_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
BATCH_EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
OPENAI_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
ANTHROPIC_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
OUTCOMES = frozenset({KIND_OK, KIND_ERROR, KIND_EXPIRE})


class SystemClock:
    """The batch store's clock: ``monotonic()`` orders the phases, ``time()`` stamps the objects."""

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)


class ManualClock:
    """A clock that moves only when told (``advance``): a test sees every batch phase without
    sleeping. ``time()`` is the wall time at creation plus the seconds advanced."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._elapsed = 0.0
        self._wall0 = time.time()

    def monotonic(self) -> float:
        with self._lock:
            return self._elapsed

    def time(self) -> float:
        with self._lock:
            return self._wall0 + self._elapsed

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._elapsed += seconds


@dataclass(frozen=True)
class BatchTiming:
    """Seconds a new batch spends in each phase (the values in force when it is created).

    OpenAI: ``validating`` -> ``in_progress`` (``processing`` seconds, requests finishing
    at an even pace, in input order) -> ``finalizing`` -> ``completed`` (or ``expired``
    / ``failed``).  ``cancelling``: seconds between a cancel and ``cancelled``.
    Anthropic batches are ``in_progress`` for ``validating + processing`` seconds,
    then ``ended``; a cancel leaves them ``canceling`` for ``cancelling`` seconds.
    """

    validating: float = 0.0
    processing: float = 0.0
    finalizing: float = 0.0
    cancelling: float = 0.0


@dataclass(frozen=True)
class BatchLimits:
    """Provider limits, enforced with the provider's own error.

    OpenAI: at most ``max_requests`` requests per batch (the batch fails validation
    with code ``too_many_tasks``) and ``max_file_bytes`` per uploaded file (the
    upload gets 400 "File is too large.").  Anthropic: at most
    ``anthropic_max_requests`` requests (400) and ``anthropic_max_bytes`` of request
    body (413 ``request_too_large``) per batch.  Defaults are the documented
    limits (50,000 requests and 200 MB; 100,000 requests and 256 MB).
    """

    max_requests: int = 50_000
    max_file_bytes: int = 200 * 1024 * 1024
    anthropic_max_requests: int = 100_000
    anthropic_max_bytes: int = 256 * 1024 * 1024


class ApiError(Exception):
    """An error answer: HTTP ``status`` with JSON ``body`` (raised inside route handlers)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


def _openai_error(
    status: int, message: str, *, param: str | None = None, code: str | None = None,
    error_type: str = "invalid_request_error",
) -> ApiError:
    return ApiError(status, {"error": openai_error_object(message, error_type, code, param)})


def _anthropic_error(status: int, message: str, error_type: str = "") -> ApiError:
    return ApiError(status, anthropic_error_body(status, message, error_type))


@dataclass(frozen=True)
class _BatchRule:
    """``action`` for batch requests whose custom_id is listed, matches ``pattern``, or
    satisfies ``where(custom_id, body)``; with no selector at all, every request."""

    action: Action
    custom_ids: frozenset[str] = frozenset()
    pattern: re.Pattern[str] | None = None
    where: Callable[[str, Any], bool] | None = None

    def matches(self, custom_id: str, body: Any) -> bool:
        if not self.custom_ids and self.pattern is None and self.where is None:
            return True
        return (
            custom_id in self.custom_ids
            or (self.pattern is not None and self.pattern.search(custom_id) is not None)
            or (self.where is not None and bool(self.where(custom_id, body)))
        )


@dataclass(frozen=True)
class _Failure:
    """A scripted whole-batch validation failure, consumed by the next batch of ``provider``."""

    message: str
    code: str
    provider: str | None


@dataclass
class _Item:
    """One request of a batch and its outcome, fixed when the batch is created."""

    custom_id: str
    body: Any
    outcome: str  # KIND_OK | KIND_ERROR | KIND_EXPIRE
    status_code: int = 200
    reply: dict[str, Any] | None = None  # ChatCompletion / Message for "ok"
    error: dict[str, Any] | None = None  # error object for "error"
    request_id: str = ""


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


@dataclass
class _Batch:
    """One batch of either provider; phase ends are ``time.monotonic()`` deadlines."""

    provider: str
    id: str
    created_wall: float
    created_mono: float
    validated: float
    processed: float
    finalized: float
    cancelling_for: float
    items: list[_Item]
    errors: list[dict[str, Any]] = field(default_factory=list)
    input_file_id: str = ""
    endpoint: str = ""
    completion_window: str = "24h"
    metadata: Any = None
    model: str | None = None
    cancel_at: float | None = None
    materialized: bool = False
    output_file_id: str | None = None
    error_file_id: str | None = None
    results: bytes = b""

    def wall(self, mono: float) -> float:
        return self.created_wall + (mono - self.created_mono)

    def done(self, at: float) -> list[_Item]:
        """The runnable (not expiring) requests finished by monotonic time ``at``."""
        runnable = [i for i in self.items if i.outcome != KIND_EXPIRE]
        if self.errors or at < self.validated:
            return []
        span = self.processed - self.validated
        if at >= self.processed or span <= 0:
            return runnable
        return runnable[: math.floor(len(runnable) * (at - self.validated) / span)]

    def effective(self, now: float) -> float:
        """The time the batch's work stopped at (a cancel freezes it)."""
        return now if self.cancel_at is None else min(now, self.cancel_at)


def _iso(wall: float | None) -> str | None:
    """RFC 3339 UTC timestamp for Anthropic objects."""
    if wall is None:
        return None
    return datetime.fromtimestamp(wall, tz=UTC).isoformat().replace("+00:00", "Z")


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode("utf-8") + b"\n" for r in rows)


def _page(objects: list[Any], query: dict[str, list[str]], *, default: int = 20) -> tuple[list[Any], bool]:
    """Newest-first page of ``objects`` (oldest first in the argument) after ``after``/``after_id``."""
    newest = list(reversed(objects))
    cursor = (query.get("after") or query.get("after_id") or [None])[0]
    before = (query.get("before_id") or [None])[0]
    ids = [o.id for o in newest]
    if cursor in ids:
        newest = newest[ids.index(cursor) + 1:]
    elif before in ids:
        newest = newest[: ids.index(before)]
    try:
        limit = int((query.get("limit") or [default])[0])
    except ValueError:
        limit = default
    limit = min(max(limit, 1), 1000)
    return newest[:limit], len(newest) > limit


class _BatchStore:
    """Files, batches, batch scripting and batch counters (thread-safe)."""

    def __init__(self, timing: BatchTiming, limits: BatchLimits, clock: SystemClock | ManualClock) -> None:
        self._lock = threading.Lock()
        self.clock = clock
        self._ids = itertools.count(1)
        self._serial = itertools.count(1)
        self.timing = timing
        self.limits = limits
        self.reversed_results = False
        self.root_url = ""
        self._files: dict[str, _File] = {}
        self._batches: dict[str, _Batch] = {}
        self.clear_scripting()
        self.clear_counters()

    # ---- scripting and counters

    def clear_scripting(self) -> None:
        self._rules: list[_BatchRule] = []
        self._failures: deque[_Failure] = deque()
        self.default = reply()

    def clear_counters(self) -> None:
        self._custom_ids: dict[str, Counter[str]] = {FLAVOR_OPENAI: Counter(), FLAVOR_ANTHROPIC: Counter()}
        self._created: Counter[str] = Counter({FLAVOR_OPENAI: 0, FLAVOR_ANTHROPIC: 0})

    def add_rule(self, rule: _BatchRule) -> None:
        with self._lock:
            self._rules.append(rule)

    def add_failure(self, failure: _Failure, count: int) -> None:
        with self._lock:
            self._failures.extend([failure] * count)

    def custom_id_counts(self, provider: str | None) -> dict[str, int]:
        with self._lock:
            if provider is not None:
                return dict(self._custom_ids[provider])
            total: Counter[str] = Counter()
            for counts in self._custom_ids.values():
                total.update(counts)
            return dict(total)

    def batches_created(self) -> dict[str, int]:
        with self._lock:
            return dict(self._created)

    def finish(self) -> None:
        """Move every phase deadline of every batch to now: running batches end at the next look."""
        now = self.clock.monotonic()
        with self._lock:
            for b in self._batches.values():
                b.validated = min(b.validated, now)
                b.processed = min(b.processed, now)
                b.finalized = min(b.finalized, now)
                if b.cancel_at is not None:
                    b.cancelling_for = min(b.cancelling_for, max(now - b.cancel_at, 0.0))

    # ---- helpers (call with the lock held)

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):08d}"

    def _take_failure(self, provider: str) -> _Failure | None:
        for failure in self._failures:
            if failure.provider in (None, provider):
                self._failures.remove(failure)
                return failure
        return None

    def _decide(self, custom_id: str, body: Any, provider: str) -> _Item:
        """Pick the request's action (first matching rule, else the default) and build its result."""
        action = next((r.action for r in self._rules if r.matches(custom_id, body)), self.default)
        item = _Item(custom_id, body, action.kind, request_id=f"req_fake{next(self._serial):08d}")
        if action.kind == KIND_ERROR:
            item.status_code = action.status
            if provider == FLAVOR_OPENAI:
                item.error = openai_error_object(action.error_message, action.error_type, action.error_code)
            else:
                item.error = anthropic_error_body(action.status, action.error_message, action.error_type)
        elif action.kind == KIND_OK:
            serial = next(self._serial)
            if provider == FLAVOR_OPENAI:
                item.reply = completion_body(body, action, serial)
                item.reply["id"] = f"chatcmpl-fakebatch-{serial}"
            else:
                item.reply = message_body(body, action, f"batch{serial:08d}")
        return item

    def _new_batch(self, provider: str, prefix: str, items: list[_Item]) -> _Batch:
        now, wall, t = self.clock.monotonic(), self.clock.time(), self.timing
        validated = now + max(t.validating, 0.0)
        processed = validated + max(t.processing, 0.0)
        return _Batch(
            provider=provider, id=self._new_id(prefix), created_wall=wall, created_mono=now,
            validated=validated, processed=processed, finalized=processed + max(t.finalizing, 0.0),
            cancelling_for=max(t.cancelling, 0.0), items=items,
        )

    def _order(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(reversed(rows)) if self.reversed_results else rows

    # ---- OpenAI files

    def create_file(self, content_type: str, raw: bytes) -> dict[str, Any]:
        fields = _parse_multipart(content_type, raw)
        purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", "replace").strip()
        if "purpose" not in fields:
            raise _openai_error(400, "Missing required parameter: 'purpose'.", param="purpose",
                                code="missing_required_parameter")
        if "file" not in fields:
            raise _openai_error(400, "Missing required parameter: 'file'.", param="file",
                                code="missing_required_parameter")
        if purpose not in FILE_PURPOSES:
            raise _openai_error(400, f"Invalid value for 'purpose': '{purpose}'.", param="purpose", code="invalid_value")
        filename, data = fields["file"]
        filename = filename or "upload"
        if purpose == "batch" and not filename.endswith(".jsonl"):
            raise _openai_error(400, "Invalid file format for Batch API. Must be .jsonl")
        with self._lock:
            if len(data) > self.limits.max_file_bytes:
                raise _openai_error(400, "File is too large.")
            record = _File(self._new_id("file-fake"), filename, purpose, data, int(self.clock.time()))
            self._files[record.id] = record
            return record.view()

    def _file(self, file_id: str) -> _File:
        record = self._files.get(file_id)
        if record is None:
            raise _openai_error(404, f"No such File object: {file_id}", param="id")
        return record

    def list_files(self, query: dict[str, list[str]]) -> dict[str, Any]:
        purpose = (query.get("purpose") or [None])[0]
        with self._lock:
            files = [f for f in self._files.values() if purpose in (None, f.purpose)]
            page, more = _page(files, query, default=10_000)
            data = [f.view() for f in page]
        return {"object": "list", "data": data, "has_more": more,
                "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}

    def retrieve_file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            return self._file(file_id).view()

    def file_content(self, file_id: str) -> bytes:
        with self._lock:
            return self._file(file_id).data

    def delete_file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            self._file(file_id)
            del self._files[file_id]
        return {"id": file_id, "object": "file", "deleted": True}

    # ---- OpenAI batches

    def create_openai_batch(self, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise _openai_error(400, "Request body is not a JSON object")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(payload.get(name), str):
                raise _openai_error(400, f"Missing required parameter: '{name}'.", param=name,
                                    code="missing_required_parameter")
        endpoint, window = payload["endpoint"], payload["completion_window"]
        if endpoint not in OPENAI_BATCH_ENDPOINTS:
            raise _openai_error(400, f"Invalid value: '{endpoint}'. Supported values are: '/v1/chat/completions'.",
                                param="endpoint", code="invalid_value")
        if window != "24h":
            raise _openai_error(400, f"Invalid value: '{window}'. Supported values are: '24h'.",
                                param="completion_window", code="invalid_value")
        with self._lock:
            source = self._files.get(payload["input_file_id"])
            if source is None:
                raise _openai_error(404, f"No such File object: {payload['input_file_id']}", param="input_file_id")
            if source.purpose != "batch":
                raise _openai_error(400, f"The input file must have purpose 'batch', not '{source.purpose}'.",
                                    param="input_file_id", code="invalid_value")
            items, errors, model = self._read_openai_lines(source.data, endpoint)
            failure = self._take_failure(FLAVOR_OPENAI)
            if failure is not None:
                errors.append({"code": failure.code, "line": None, "message": failure.message, "param": None})
            batch = self._new_batch(FLAVOR_OPENAI, "batch_fake", [] if errors else items)
            batch.errors, batch.input_file_id, batch.endpoint = errors, source.id, endpoint
            batch.metadata, batch.model = payload.get("metadata"), model
            self._batches[batch.id] = batch
            self._created[FLAVOR_OPENAI] += 1
            return self._openai_view(batch, self.clock.monotonic())

    def _read_openai_lines(self, data: bytes, endpoint: str) -> tuple[list[_Item], list[dict[str, Any]], str | None]:
        """Parse and validate an input file: (items, validation errors, model); counts custom_ids."""
        errors: list[dict[str, Any]] = []
        items: list[_Item] = []
        seen: set[str] = set()
        models: set[str] = set()

        def fail(code: str, line: int | None, message: str, param: str | None = None) -> None:
            errors.append({"code": code, "line": line, "message": message, "param": param})

        lines = [(n, text) for n, text in enumerate(data.split(b"\n"), start=1) if text.strip()]
        if not lines:
            fail("empty_file", None, "The batch input file is empty. Please ensure that the batch contains at "
                 "least one request.")
        if len(lines) > self.limits.max_requests:
            fail("too_many_tasks", None, f"The batch input file has {len(lines)} requests, more than the "
                 f"{self.limits.max_requests} allowed per batch.")
        for number, text in lines:
            try:
                row = json.loads(text.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                fail("invalid_json_line", number, "This line is not parseable as valid JSON.")
                continue
            if not isinstance(row, dict):
                fail("invalid_json_line", number, "This line is not a JSON object.")
                continue
            custom_id = row.get("custom_id")
            if isinstance(custom_id, str):
                self._custom_ids[FLAVOR_OPENAI][custom_id] += 1
            problem = self._line_problem(row, endpoint)
            if problem is not None:
                fail(problem[0], number, problem[1], problem[2])
                continue
            if custom_id in seen:
                fail("duplicate_custom_id", number, "The custom_id for this request is a duplicate of another "
                     "request. The custom_id parameter must be unique for each request in a batch.", "custom_id")
                continue
            seen.add(custom_id)
            body = row["body"]
            if isinstance(body.get("model"), str):
                models.add(body["model"])
            if len(models) > 1:
                fail("model_mismatch", number, "All requests of a batch must use the same model.", "body.model")
                models = {next(iter(models))}
                continue
            items.append(self._openai_item(custom_id, body))
        return items, errors, next(iter(models), None)

    @staticmethod
    def _line_problem(row: dict[str, Any], endpoint: str) -> tuple[str, str, str] | None:
        for name, kind in (("custom_id", str), ("method", str), ("url", str), ("body", dict)):
            if not isinstance(row.get(name), kind):
                return "missing_required_parameter", f"Missing required parameter: '{name}'.", name
        if row["method"] != "POST":
            return "invalid_value", f"Invalid value: '{row['method']}'. Supported values are: 'POST'.", "method"
        if row["url"] != endpoint:
            return ("url_mismatch", f"The url '{row['url']}' does not match the batch endpoint '{endpoint}'.",
                    "url")
        return None

    def _openai_item(self, custom_id: str, body: dict[str, Any]) -> _Item:
        for name, kind in (("model", str), ("messages", list)):
            if not isinstance(body.get(name), kind):
                item = _Item(custom_id, body, KIND_ERROR, status_code=400,
                             request_id=f"req_fake{next(self._serial):08d}")
                item.error = openai_error_object(f"Missing required parameter: '{name}'.", "invalid_request_error",
                                                 "missing_required_parameter", name)
                return item
        return self._decide(custom_id, body, FLAVOR_OPENAI)

    def _openai_status(self, b: _Batch, now: float) -> str:
        if b.cancel_at is not None:
            return "cancelling" if now <= b.cancel_at + b.cancelling_for else "cancelled"
        if now < b.validated:
            return "validating"
        if b.errors:
            return "failed"
        if now < b.processed:
            return "in_progress"
        if any(i.outcome == KIND_EXPIRE for i in b.items):
            return "expired"
        return "finalizing" if now < b.finalized else "completed"

    def _openai_view(self, b: _Batch, now: float) -> dict[str, Any]:
        status = self._openai_status(b, now)
        if status in ("completed", "expired", "cancelled") and not b.materialized:
            self._materialize_openai(b, status)
        done = b.done(b.effective(now))
        started = not b.errors and now >= b.validated and (b.cancel_at is None or b.cancel_at >= b.validated)
        ok = [i for i in done if i.outcome == KIND_OK]

        def at(mono: float, shown: bool) -> int | None:
            return int(b.wall(mono)) if shown else None

        usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        for item in ok:
            reply_usage = (item.reply or {}).get("usage", {})
            usage["input_tokens"] += int(reply_usage.get("prompt_tokens", 0))
            usage["output_tokens"] += int(reply_usage.get("completion_tokens", 0))
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        cancel_end = (b.cancel_at or 0.0) + b.cancelling_for
        return {
            "id": b.id,
            "object": "batch",
            "endpoint": b.endpoint,
            "model": b.model,
            "errors": {"object": "list", "data": list(b.errors)} if status == "failed" else None,
            "input_file_id": b.input_file_id,
            "completion_window": b.completion_window,
            "status": status,
            "output_file_id": b.output_file_id,
            "error_file_id": b.error_file_id,
            "created_at": int(b.created_wall),
            "in_progress_at": at(b.validated, started),
            "expires_at": int(b.created_wall) + DAY_SECONDS,
            "finalizing_at": at(b.processed, status in ("finalizing", "completed")),
            "completed_at": at(b.finalized, status == "completed"),
            "failed_at": at(b.validated, status == "failed"),
            "expired_at": at(b.processed, status == "expired"),
            "cancelling_at": at(b.cancel_at or 0.0, b.cancel_at is not None),
            "cancelled_at": at(cancel_end, status == "cancelled"),
            "request_counts": {
                "total": 0 if status in ("validating", "failed") else len(b.items),
                "completed": len(ok),
                "failed": sum(1 for i in done if i.outcome == KIND_ERROR),
            },
            "metadata": b.metadata,
            "usage": {**usage, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}},
        }

    def _materialize_openai(self, b: _Batch, status: str) -> None:
        """Write the output and error files of a batch that just reached a terminal status."""
        b.materialized = True
        done = b.done(b.effective(self.clock.monotonic()) if b.cancel_at is not None else b.processed)
        output, errors = [], []
        for item in done:
            line_id = self._new_id("batch_req_fake")
            if item.outcome == KIND_OK:
                response = {"status_code": 200, "request_id": item.request_id, "body": item.reply}
                output.append({"id": line_id, "custom_id": item.custom_id, "response": response, "error": None})
            else:
                response = {"status_code": item.status_code, "request_id": item.request_id,
                            "body": {"error": item.error}}
                errors.append({"id": line_id, "custom_id": item.custom_id, "response": response, "error": None})
        if status == "expired":
            for item in b.items:
                if item.outcome == KIND_EXPIRE:
                    errors.append({"id": self._new_id("batch_req_fake"), "custom_id": item.custom_id,
                                   "response": None,
                                   "error": {"code": "batch_expired", "message": BATCH_EXPIRED_MESSAGE}})
        for rows, kind in ((output, "output"), (errors, "error")):
            if rows:
                record = _File(self._new_id("file-fake"), f"{b.id}_{kind}.jsonl", "batch_output",
                               _jsonl(self._order(rows)), int(self.clock.time()))
                self._files[record.id] = record
                if kind == "output":
                    b.output_file_id = record.id
                else:
                    b.error_file_id = record.id

    def _batch(self, batch_id: str, provider: str) -> _Batch:
        b = self._batches.get(batch_id)
        if b is None or b.provider != provider:
            if provider == FLAVOR_OPENAI:
                raise _openai_error(404, f"No batch found with id '{batch_id}'.", param="batch_id")
            raise _anthropic_error(404, f"No batch found with id '{batch_id}'.")
        return b

    def retrieve_openai_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            return self._openai_view(self._batch(batch_id, FLAVOR_OPENAI), self.clock.monotonic())

    def cancel_openai_batch(self, batch_id: str) -> dict[str, Any]:
        now = self.clock.monotonic()
        with self._lock:
            b = self._batch(batch_id, FLAVOR_OPENAI)
            status = self._openai_status(b, now)
            if status in OPENAI_TERMINAL:
                raise _openai_error(400, f"Cannot cancel a batch with status '{status}'.")
            if b.cancel_at is None:
                b.cancel_at = now
            return self._openai_view(b, now)

    def list_openai_batches(self, query: dict[str, list[str]]) -> dict[str, Any]:
        now = self.clock.monotonic()
        with self._lock:
            batches = [b for b in self._batches.values() if b.provider == FLAVOR_OPENAI]
            page, more = _page(batches, query)
            data = [self._openai_view(b, now) for b in page]
        return {"object": "list", "data": data, "has_more": more,
                "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}

    # ---- Anthropic message batches

    def create_anthropic_batch(self, payload: Any, size: int) -> dict[str, Any]:
        with self._lock:
            if size > self.limits.anthropic_max_bytes:
                raise _anthropic_error(413, "Request exceeds the maximum allowed number of bytes.")
            requests = payload.get("requests") if isinstance(payload, dict) else None
            if not isinstance(requests, list):
                raise _anthropic_error(400, "requests: Field required")
            for request in requests:
                if isinstance(request, dict) and isinstance(request.get("custom_id"), str):
                    self._custom_ids[FLAVOR_ANTHROPIC][request["custom_id"]] += 1
            limit = self.limits.anthropic_max_requests
            if not requests:
                raise _anthropic_error(400, "requests: List should have at least 1 item after validation, not 0")
            if len(requests) > limit:
                raise _anthropic_error(400, f"requests: List should have at most {limit} items after validation, "
                                       f"not {len(requests)}")
            seen: set[str] = set()
            for n, request in enumerate(requests):
                custom_id = request.get("custom_id") if isinstance(request, dict) else None
                if not isinstance(custom_id, str) or ANTHROPIC_CUSTOM_ID.fullmatch(custom_id) is None:
                    raise _anthropic_error(400, f"requests.{n}.custom_id: String should match pattern "
                                           "'^[a-zA-Z0-9_-]{1,64}$'")
                if custom_id in seen:
                    raise _anthropic_error(400, f"requests.{n}.custom_id: Duplicate custom_id '{custom_id}'; "
                                           "each custom_id must be unique within a Message Batch.")
                seen.add(custom_id)
            failure = self._take_failure(FLAVOR_ANTHROPIC)
            if failure is not None:
                raise _anthropic_error(400, failure.message)
            items = [self._anthropic_item(r["custom_id"], r.get("params")) for r in requests]
            batch = self._new_batch(FLAVOR_ANTHROPIC, "msgbatch_fake", items)
            self._batches[batch.id] = batch
            self._created[FLAVOR_ANTHROPIC] += 1
            return self._anthropic_view(batch, self.clock.monotonic())

    def _anthropic_item(self, custom_id: str, params: Any) -> _Item:
        """Params are checked as the batch runs: a bad request is an ``errored`` result, not a 400."""
        problem = None
        if not isinstance(params, dict):
            problem = "params: Input should be a valid dictionary"
        else:
            for name, kinds in (("model", (str,)), ("max_tokens", (int,)), ("messages", (list,))):
                if not isinstance(params.get(name), kinds):
                    problem = f"{name}: Field required"
                    break
        if problem is None:
            return self._decide(custom_id, params, FLAVOR_ANTHROPIC)
        item = _Item(custom_id, params, KIND_ERROR, status_code=400)
        item.error = anthropic_error_body(400, problem)
        return item

    @staticmethod
    def _anthropic_status(b: _Batch, now: float) -> str:
        if b.cancel_at is not None:
            return "canceling" if now <= b.cancel_at + b.cancelling_for else "ended"
        return "in_progress" if now < b.processed else "ended"

    def _anthropic_view(self, b: _Batch, now: float) -> dict[str, Any]:
        status = self._anthropic_status(b, now)
        counts = {"processing": len(b.items), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        ended_at = None
        if status == "ended":
            if not b.materialized:
                self._materialize_anthropic(b)
            done = b.done(b.effective(now))
            counts["processing"] = 0
            counts["succeeded"] = sum(1 for i in done if i.outcome == KIND_OK)
            counts["errored"] = sum(1 for i in done if i.outcome == KIND_ERROR)
            rest = len(b.items) - len(done)
            counts["canceled" if b.cancel_at is not None else "expired"] = rest
            ended_at = b.wall(b.processed if b.cancel_at is None else b.cancel_at + b.cancelling_for)
        return {
            "id": b.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "ended_at": _iso(ended_at),
            "created_at": _iso(b.created_wall),
            "expires_at": _iso(b.created_wall + DAY_SECONDS),
            "archived_at": None,
            "cancel_initiated_at": _iso(None if b.cancel_at is None else b.wall(b.cancel_at)),
            "results_url": f"{self.root_url}/v1/messages/batches/{b.id}/results" if status == "ended" else None,
        }

    def _materialize_anthropic(self, b: _Batch) -> None:
        b.materialized = True
        done = {id(i) for i in b.done(b.effective(self.clock.monotonic()) if b.cancel_at is not None else b.processed)}
        rows = []
        for item in b.items:
            if id(item) not in done:
                result: dict[str, Any] = {"type": "canceled" if b.cancel_at is not None else "expired"}
            elif item.outcome == KIND_OK:
                result = {"type": "succeeded", "message": item.reply}
            else:
                result = {"type": "errored", "error": item.error}
            rows.append({"custom_id": item.custom_id, "result": result})
        b.results = _jsonl(self._order(rows))

    def retrieve_anthropic_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            return self._anthropic_view(self._batch(batch_id, FLAVOR_ANTHROPIC), self.clock.monotonic())

    def anthropic_results(self, batch_id: str) -> bytes:
        with self._lock:
            b = self._batch(batch_id, FLAVOR_ANTHROPIC)
            status = self._anthropic_view(b, self.clock.monotonic())["processing_status"]
            if status != "ended":
                raise _anthropic_error(400, f"Message Batch {batch_id} has not ended yet (processing_status "
                                       f"'{status}'); results are available once it has ended.")
            return b.results

    def cancel_anthropic_batch(self, batch_id: str) -> dict[str, Any]:
        now = self.clock.monotonic()
        with self._lock:
            b = self._batch(batch_id, FLAVOR_ANTHROPIC)
            if self._anthropic_status(b, now) == "ended":
                raise _anthropic_error(400, f"Message Batch {batch_id} has already ended and cannot be canceled.")
            if b.cancel_at is None:
                b.cancel_at = now
            return self._anthropic_view(b, now)

    def delete_anthropic_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            b = self._batch(batch_id, FLAVOR_ANTHROPIC)
            if self._anthropic_status(b, self.clock.monotonic()) != "ended":
                raise _anthropic_error(400, f"Message Batch {batch_id} is still processing; cancel it and wait "
                                       "for it to end before deleting it.")
            del self._batches[batch_id]
        return {"id": batch_id, "type": "message_batch_deleted"}

    def list_anthropic_batches(self, query: dict[str, list[str]]) -> dict[str, Any]:
        now = self.clock.monotonic()
        with self._lock:
            batches = [b for b in self._batches.values() if b.provider == FLAVOR_ANTHROPIC]
            page, more = _page(batches, query)
            data = [self._anthropic_view(b, now) for b in page]
        return {"data": data, "has_more": more,
                "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


def _header_param(header: str, value: str, param: str) -> str | None:
    """One parameter (``boundary``, ``name``, ``filename``) of a MIME header value."""
    message = email.message.Message()
    message[header] = value
    got = message.get_param(param, header=header)
    if isinstance(got, tuple):
        got = email.utils.collapse_rfc2231_value(got)
    return got if isinstance(got, str) else None


def _parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """``multipart/form-data`` fields as ``{name: (filename or None, bytes)}`` (exact bytes)."""
    boundary = _header_param("Content-Type", content_type, "boundary")
    if not content_type.lower().startswith("multipart/form-data") or not boundary:
        return {}
    fields: dict[str, tuple[str | None, bytes]] = {}
    for chunk in body.split(b"--" + boundary.encode("latin-1"))[1:]:
        if chunk.startswith(b"--"):
            break
        head, separator, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not separator:
            continue
        disposition = ""
        for line in head.split(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-disposition":
                disposition = value.strip()
        field_name = _header_param("Content-Disposition", disposition, "name")
        if field_name:
            fields[field_name] = (_header_param("Content-Disposition", disposition, "filename"),
                                  data.removesuffix(b"\r\n"))
    return fields


# --------------------------------------------------------------------- HTTP plumbing

# (method, path pattern, route name); the route name is also the endpoint-count key.
_ROUTES = tuple(
    (method, re.compile(pattern), name)
    for method, pattern, name in (
        ("POST", r"/v1/files", "POST /v1/files"),
        ("GET", r"/v1/files", "GET /v1/files"),
        ("GET", r"/v1/files/(?P<id>[^/]+)", "GET /v1/files/{id}"),
        ("DELETE", r"/v1/files/(?P<id>[^/]+)", "DELETE /v1/files/{id}"),
        ("GET", r"/v1/files/(?P<id>[^/]+)/content", "GET /v1/files/{id}/content"),
        ("POST", r"/v1/batches", "POST /v1/batches"),
        ("GET", r"/v1/batches", "GET /v1/batches"),
        ("GET", r"/v1/batches/(?P<id>[^/]+)", "GET /v1/batches/{id}"),
        ("POST", r"/v1/batches/(?P<id>[^/]+)/cancel", "POST /v1/batches/{id}/cancel"),
        ("POST", r"/v1/messages/batches", "POST /v1/messages/batches"),
        ("GET", r"/v1/messages/batches", "GET /v1/messages/batches"),
        ("GET", r"/v1/messages/batches/(?P<id>[^/]+)", "GET /v1/messages/batches/{id}"),
        ("DELETE", r"/v1/messages/batches/(?P<id>[^/]+)", "DELETE /v1/messages/batches/{id}"),
        ("GET", r"/v1/messages/batches/(?P<id>[^/]+)/results", "GET /v1/messages/batches/{id}/results"),
        ("POST", r"/v1/messages/batches/(?P<id>[^/]+)/cancel", "POST /v1/messages/batches/{id}/cancel"),
    )
)
JSONL_TYPE = "application/binary"


class _LoopbackHTTPServer(ThreadingHTTPServer):
    """Threading HTTP server with daemon handler threads and a deep accept backlog."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, port: int, fake: FakeOpenAIServer) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:
        """Bind without the reverse-DNS lookup that HTTPServer.server_bind performs."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the owning :class:`FakeOpenAIServer`."""

    protocol_version = "HTTP/1.1"
    server: _LoopbackHTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.fake._track_connection(self.connection, add=True)

    def finish(self) -> None:
        self.server.fake._track_connection(self.connection, add=False)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging."""

    def do_GET(self) -> None:
        self.server.fake._dispatch(self, "GET")

    def do_POST(self) -> None:
        self.server.fake._dispatch(self, "POST")

    def do_DELETE(self) -> None:
        self.server.fake._dispatch(self, "DELETE")

    def read_body(self) -> bytes:
        """Read the request body: Content-Length bytes, or a chunked body (empty if absent)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length") or "0"
        return self.rfile.read(int(length_header)) if length_header.isdigit() else b""

    def _read_chunked(self) -> bytes:
        chunks = []
        try:
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        except ValueError:
            self.close_connection = True
            return b"".join(chunks)

    def send_json(self, status: int, obj: Any, headers: Headers = ()) -> None:
        """Serialize ``obj`` and send it with ``status``."""
        self.send_raw(status, _dumps(obj), headers)

    def send_raw(self, status: int, body: bytes, headers: Headers = (), content_type: str = "application/json") -> None:
        """Send ``body`` (application/json unless told); a vanished client is tolerated."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def drop(self) -> None:
        """Close the connection without sending a response."""
        self.close_connection = True


# ------------------------------------------------------------------------ the server

NOT_FOUND = {"error": {"message": "Not found", "type": "invalid_request_error", "code": None}}


class FakeOpenAIServer:
    """A scriptable OpenAI/Anthropic model server on 127.0.0.1 (thread-safe).

    ``port=0`` picks a free port.  ``latency`` is the default delay (seconds)
    before answering any chat/message request whose action has no latency of its
    own (batch and file endpoints answer at once).  ``stats_file``, when given, is
    atomically rewritten with :meth:`stats` after every completed request.
    ``batch_timing`` and ``batch_limits`` set the batch phases and limits;
    ``cache_min_tokens`` and ``cache_ttl_s`` the prompt cache's; ``clock`` (a
    :class:`ManualClock`) the time batches move by (the system clock by default).

    One server can serve many tests in turn: :meth:`restore` gives it back the state it
    started with (a test session's shared server, ``tests/conftest.py``).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        latency: float = 0.0,
        stats_file: str | None = None,
        batch_timing: BatchTiming | None = None,
        batch_limits: BatchLimits | None = None,
        cache_min_tokens: int = 1024,
        cache_ttl_s: float = 300.0,
        clock: SystemClock | ManualClock | None = None,
    ) -> None:
        self._port = port
        self._initial = (float(latency), batch_timing or BatchTiming(), batch_limits or BatchLimits(),
                         cache_min_tokens, cache_ttl_s)
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stats_file = stats_file
        self._httpd: _LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._generation = 0
        self._set_initial_state(clock or SystemClock())

    def _set_initial_state(self, clock: SystemClock | ManualClock) -> None:
        """Everything a test can script or count, as a new server has it (call with the lock held
        or before serving)."""
        latency, timing, limits, cache_min_tokens, cache_ttl_s = self._initial
        self.prompt_cache = PromptCache(cache_min_tokens, cache_ttl_s)
        self._queue: deque[Action] = deque()
        self._default = reply()
        self._default_latency = latency
        self._wake = threading.Event()  # set by stop() and restore(): waiting requests are dropped
        self._released = threading.Event()  # cleared by hold_replies()
        self._released.set()
        self._batches = _BatchStore(timing, limits, clock)
        self._batches.root_url = self.root_url if self._httpd is not None else ""
        self._clear_counters()

    # ---- lifecycle

    def start(self) -> FakeOpenAIServer:
        """Bind and start serving in a daemon thread; returns self.  Idempotent."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        if self._wake.is_set():  # started again after stop()
            self._wake = threading.Event()
        self._httpd = _LoopbackHTTPServer(self._port, self)
        self._batches.root_url = self.root_url
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()
        self._write_stats()
        return self

    def stop(self) -> None:
        """Stop serving, wake sleeping handlers and close open connections.  Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        self._wake.set()
        httpd.shutdown()
        self._close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (raises RuntimeError when not started)."""
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer is not running")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        """Anthropic-style base URL (no ``/v1``), e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    # ---- scripting: chat completions and messages

    def enqueue(self, *actions: Action) -> None:
        """Append actions; each chat/message request consumes the oldest one."""
        for action in actions:
            _check_kind(action, allowed=frozenset({KIND_OK, KIND_ERROR, KIND_HANG, KIND_MALFORMED}))
        with self._lock:
            self._queue.extend(actions)

    def set_default(self, action: Action) -> None:
        """Set the action used when the queue is empty (initially ``reply()``)."""
        _check_kind(action, allowed=frozenset({KIND_OK, KIND_ERROR, KIND_HANG, KIND_MALFORMED}))
        with self._lock:
            self._default = action

    def set_latency(self, seconds: float) -> None:
        """Set the default delay for actions whose own ``latency`` is None."""
        with self._lock:
            self._default_latency = float(seconds)

    @property
    def pending(self) -> int:
        """Number of queued, not yet consumed actions."""
        with self._lock:
            return len(self._queue)

    # ---- scripting: batches (OpenAI Batch API and Anthropic Message Batches alike)

    def on_batch_request(
        self,
        action: Action,
        *custom_ids: str,
        pattern: str | None = None,
        where: Callable[[str, Any], bool] | None = None,
    ) -> None:
        """Give ``action`` to batch requests selected by custom_id, regex or predicate.

        ``action`` is a ``reply(...)`` (custom content/usage), an ``error(...)`` (or
        ``server_error()``, ``rate_limit()``...: the request fails with that status
        and error body) or ``expire()``.  A request is selected when its custom_id
        is one of ``custom_ids``, or ``re.search(pattern, custom_id)`` matches, or
        ``where(custom_id, body)`` is true (``body``: the OpenAI line's ``body`` /
        the Anthropic ``params``); with no selector, every request is.  Rules are
        tried in the order added, the first match wins; they apply to batches
        created afterwards and stay until :meth:`reset`.  ``where`` runs with the
        batch store's lock held: it must not call back into the server.
        """
        _check_kind(action, allowed=OUTCOMES)
        compiled = re.compile(pattern) if pattern is not None else None
        self._batches.add_rule(_BatchRule(action, frozenset(custom_ids), compiled, where))

    def set_batch_default(self, action: Action) -> None:
        """The action for batch requests no rule selects (initially ``reply()``)."""
        _check_kind(action, allowed=OUTCOMES)
        with self._batches._lock:
            self._batches.default = action

    def fail_batch_validation(
        self,
        message: str = "The batch failed validation (fake server).",
        *,
        code: str = "invalid_request",
        provider: str | None = None,
        count: int = 1,
    ) -> None:
        """Make the next ``count`` batches fail validation as a whole.

        OpenAI: the batch is created, then (after the validating seconds) ends
        ``failed`` with ``errors.data == [{"code", "line": None, "message", "param": None}]``.
        Anthropic: creation answers 400 ``invalid_request_error`` with ``message``.
        ``provider`` ("openai" / "anthropic") limits which batches consume it.
        """
        self._batches.add_failure(_Failure(message, code, provider), count)

    def set_batch_timing(
        self,
        *,
        validating: float | None = None,
        processing: float | None = None,
        finalizing: float | None = None,
        cancelling: float | None = None,
    ) -> None:
        """Change the phase seconds (see :class:`BatchTiming`) for batches created from now on."""
        given = {"validating": validating, "processing": processing, "finalizing": finalizing,
                 "cancelling": cancelling}
        with self._batches._lock:
            self._batches.timing = replace(self._batches.timing, **{k: v for k, v in given.items() if v is not None})

    @property
    def batch_timing(self) -> BatchTiming:
        return self._batches.timing

    def set_batch_limits(
        self,
        *,
        max_requests: int | None = None,
        max_file_bytes: int | None = None,
        anthropic_max_requests: int | None = None,
        anthropic_max_bytes: int | None = None,
    ) -> None:
        """Change the limits (see :class:`BatchLimits`)."""
        given = {"max_requests": max_requests, "max_file_bytes": max_file_bytes,
                 "anthropic_max_requests": anthropic_max_requests, "anthropic_max_bytes": anthropic_max_bytes}
        with self._batches._lock:
            self._batches.limits = replace(self._batches.limits, **{k: v for k, v in given.items() if v is not None})

    def set_batch_results_reversed(self, reversed_order: bool = True) -> None:
        """Write result files in reverse input order (clients must match on custom_id)."""
        with self._batches._lock:
            self._batches.reversed_results = reversed_order

    def finish_batches(self) -> None:
        """End every running phase now: each running batch shows its final status at the next look."""
        self._batches.finish()

    # ---- counters

    def _clear_counters(self) -> None:
        self._request_count = 0
        self._completed_count = 0
        self._in_flight = 0
        self._peak_in_flight = 0
        self._requests: list[dict[str, Any]] = []
        self._endpoint_counts: Counter[str] = Counter()

    def reset(self) -> None:
        """Zero all counters, forget recorded requests, drop queued actions and batch scripting.

        The default action, default latency, batch timing and limits are kept,
        and so are uploaded files and existing batches.  ``peak_in_flight``
        restarts from the current ``in_flight``.
        """
        with self._lock:
            in_flight = self._in_flight
            self._clear_counters()
            self._in_flight = self._peak_in_flight = in_flight
            self._queue.clear()
        with self._batches._lock:
            self._batches.clear_scripting()
            self._batches.clear_counters()

    def restore(self, clock: SystemClock | ManualClock | None = None) -> None:
        """Give the server back the state it started with, on the same port: counters, queued
        and default actions, latency, prompt cache, files, batches, batch scripting, timing and
        limits. Requests still waiting from before are dropped and never counted. ``clock``
        replaces the batch clock (the system clock by default)."""
        with self._lock:
            self._wake.set()
            self._generation += 1
            self._set_initial_state(clock or SystemClock())

    @property
    def initial_latency(self) -> float:
        """The default latency given at construction (the one :meth:`restore` goes back to)."""
        return self._initial[0]

    def hold_replies(self) -> None:
        """From now on every chat/message request waits, counted in ``in_flight``, until
        :meth:`release_replies` (an event, where a test would otherwise choose a latency)."""
        self._released.clear()

    def release_replies(self) -> None:
        """Let every held request (and every later one) answer."""
        self._released.set()

    @property
    def request_count(self) -> int:
        """Chat/message requests received (counted on arrival, before any latency)."""
        with self._lock:
            return self._request_count

    @property
    def completed_count(self) -> int:
        """Chat/message requests whose handling has finished (answered or dropped)."""
        with self._lock:
            return self._completed_count

    @property
    def in_flight(self) -> int:
        """Chat/message requests currently being handled (received, reply not yet released)."""
        with self._lock:
            return self._in_flight

    @property
    def peak_in_flight(self) -> int:
        """Maximum value ``in_flight`` has reached since start or :meth:`reset`."""
        with self._lock:
            return self._peak_in_flight

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Copy of the received chat/message requests, oldest first.

        Each record has ``path``, ``headers`` (dict), ``authorization`` (the
        Authorization header value or None), ``body`` (parsed JSON, or None if
        invalid) and ``raw`` (the body bytes).
        """
        with self._lock:
            return list(self._requests)

    @property
    def endpoint_counts(self) -> dict[str, int]:
        """Every HTTP request received, by endpoint: ``{"POST /v1/files": 1, "GET /v1/batches/{id}": 3, ...}``.

        Chat paths count under their literal path; unknown paths under ``"METHOD /path"``.
        """
        with self._lock:
            return dict(self._endpoint_counts)

    def custom_id_counts(self, provider: str | None = None) -> dict[str, int]:
        """How many times each custom_id was submitted in a batch (``provider``: "openai"/"anthropic").

        Counted when a batch is created from it (OpenAI) or posted (Anthropic),
        including batches that then fail validation or are refused.
        """
        return self._batches.custom_id_counts(provider)

    @property
    def batches_created(self) -> dict[str, int]:
        """Batches created, by provider: ``{"openai": n, "anthropic": m}``."""
        return self._batches.batches_created()

    def stats(self) -> dict[str, Any]:
        """Snapshot of the counters as a JSON-ready dict."""
        created = self._batches.batches_created()
        with self._lock:
            return {
                "request_count": self._request_count,
                "completed_count": self._completed_count,
                "in_flight": self._in_flight,
                "peak_in_flight": self._peak_in_flight,
                "batches_created": created,
                "endpoint_counts": dict(self._endpoint_counts),
            }

    # ---- request handling (called from handler threads)

    def _dispatch(self, handler: _Handler, method: str) -> None:
        """Route one HTTP request, counting it by endpoint on arrival."""
        path, _, query_string = handler.path.partition("?")
        raw = handler.read_body()
        if method == "POST" and (path in CHAT_PATHS or path in MESSAGES_PATHS):
            self._count(f"POST {path}")
            flavor = FLAVOR_ANTHROPIC if path in MESSAGES_PATHS else FLAVOR_OPENAI
            self._handle_chat(handler, raw, flavor)
            return
        if method == "GET" and path in MODEL_PATHS:
            self._count(f"GET {path}")
            handler.send_json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
            self._write_stats()
            return
        for route_method, pattern, name in _ROUTES:
            match = pattern.fullmatch(path)
            if route_method == method and match is not None:
                self._count(name)
                self._serve_route(handler, name, match.groupdict().get("id", ""), parse_qs(query_string), raw)
                self._write_stats()
                return
        self._count(f"{method} {path}")
        if path.startswith("/v1/messages"):
            handler.send_json(404, anthropic_error_body(404, "Not found"))
        else:
            handler.send_json(404, NOT_FOUND)
        self._write_stats()

    def _count(self, endpoint: str) -> None:
        with self._lock:
            self._endpoint_counts[endpoint] += 1

    def _serve_route(self, handler: _Handler, name: str, item_id: str, query: dict[str, list[str]], raw: bytes) -> None:
        store = self._batches
        try:
            if name == "POST /v1/files":
                result: Any = store.create_file(handler.headers.get("Content-Type") or "", raw)
            elif name == "GET /v1/files":
                result = store.list_files(query)
            elif name == "GET /v1/files/{id}":
                result = store.retrieve_file(item_id)
            elif name == "DELETE /v1/files/{id}":
                result = store.delete_file(item_id)
            elif name == "GET /v1/files/{id}/content":
                handler.send_raw(200, store.file_content(item_id), content_type=JSONL_TYPE)
                return
            elif name == "POST /v1/batches":
                result = store.create_openai_batch(_parse_json(raw))
            elif name == "GET /v1/batches":
                result = store.list_openai_batches(query)
            elif name == "GET /v1/batches/{id}":
                result = store.retrieve_openai_batch(item_id)
            elif name == "POST /v1/batches/{id}/cancel":
                result = store.cancel_openai_batch(item_id)
            elif name == "POST /v1/messages/batches":
                result = store.create_anthropic_batch(_parse_json(raw), len(raw))
            elif name == "GET /v1/messages/batches":
                result = store.list_anthropic_batches(query)
            elif name == "GET /v1/messages/batches/{id}":
                result = store.retrieve_anthropic_batch(item_id)
            elif name == "DELETE /v1/messages/batches/{id}":
                result = store.delete_anthropic_batch(item_id)
            elif name == "GET /v1/messages/batches/{id}/results":
                handler.send_raw(200, store.anthropic_results(item_id), content_type=JSONL_TYPE)
                return
            else:  # "POST /v1/messages/batches/{id}/cancel"
                result = store.cancel_anthropic_batch(item_id)
        except ApiError as exc:
            handler.send_json(exc.status, exc.body)
            return
        handler.send_json(200, result)

    def _handle_chat(self, handler: _Handler, raw: bytes, flavor: str = FLAVOR_OPENAI) -> None:
        """Record the request, run its action, update counters, then send the reply.

        Counters and the stats file are updated *before* the reply is written,
        so a client holding its answer always sees its request as completed.
        """
        payload = _parse_json(raw)
        action, latency, serial, generation, wake, released = self._begin(handler, raw, payload)
        try:
            response = self._respond(action, latency, payload, serial, flavor, wake, released)
        finally:
            self._end(generation)
        if response is None:
            handler.drop()
        else:
            handler.send_raw(*response)

    def _begin(self, handler: _Handler, raw: bytes, payload: Any) -> tuple[Action, float, int, int, threading.Event,
                                                                            threading.Event]:
        """Count and record one request and pick its action and latency; with them, the state's
        generation and the events that wake it (stop or restore) and let it answer (the gate)."""
        record = {
            "path": handler.path,
            "headers": dict(handler.headers.items()),
            "authorization": handler.headers.get("Authorization"),
            "body": payload,
            "raw": raw,
        }
        with self._lock:
            self._request_count += 1
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
            self._requests.append(record)
            action = self._queue.popleft() if self._queue else self._default
            latency = self._default_latency if action.latency is None else action.latency
            return action, latency, self._request_count, self._generation, self._wake, self._released

    def _end(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation:  # a request from before restore(): not this state's
                return
            self._in_flight -= 1
            self._completed_count += 1
        self._write_stats()

    def _respond(
        self, action: Action, latency: float, payload: Any, serial: int, flavor: str = FLAVOR_OPENAI,
        wake: threading.Event | None = None, released: threading.Event | None = None,
    ) -> _Response | None:
        """Wait ``latency`` seconds, then return the reply for ``action`` (None = drop).

        A body that is not a JSON object gets a 400 whatever the action (the
        action is still consumed).  Stopping the server drops pending requests.
        ``flavor`` "anthropic" answers with Anthropic's Message and error shapes.
        """
        anthropic = flavor == FLAVOR_ANTHROPIC
        wake = wake if wake is not None else self._stopping
        if wake.wait(max(latency, 0.0)):
            return None
        while released is not None and not released.wait(0.02):
            if wake.is_set():
                return None
        if not isinstance(payload, dict):
            if anthropic:
                return 400, _dumps(anthropic_error_body(400, "Request body is not a JSON object")), ()
            return 400, _dumps(error_body(bad_request("Request body is not a JSON object"))), ()
        if action.kind == KIND_HANG:
            if wake.wait(action.hang_seconds) or not action.answer_after_hang:
                return None
        if action.kind == KIND_ERROR:
            if anthropic:
                body = anthropic_error_body(action.status, action.error_message, action.error_type)
                return action.status, _dumps(body), action.headers
            return action.status, _dumps(error_body(action)), action.headers
        if action.kind == KIND_MALFORMED:
            return 200, MALFORMED_BODY, action.headers
        if anthropic:
            return 200, _dumps(message_body(payload, action, serial, self.prompt_cache.anthropic(payload))), \
                action.headers
        return 200, _dumps(completion_body(payload, action, serial, self.prompt_cache.openai(payload))), action.headers

    def _track_connection(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _close_connections(self) -> None:
        """Shut down every open client socket so idle keep-alive handlers exit."""
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _write_stats(self) -> None:
        """Atomically rewrite the stats file (if configured) with :meth:`stats`."""
        if not self._stats_file:
            return
        with self._stats_lock:
            tmp = f"{self._stats_file}.tmp{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(self.stats(), fh)
            os.replace(tmp, self._stats_file)


def _check_kind(action: Action, *, allowed: frozenset[str]) -> None:
    if action.kind not in allowed:
        raise ValueError(f"action kind {action.kind!r} is not allowed here (allowed: {sorted(allowed)})")


def _dumps(obj: Any) -> bytes:
    """Serialize ``obj`` as UTF-8 JSON bytes."""
    return json.dumps(obj).encode("utf-8")


def _parse_json(raw: bytes) -> Any:
    """Decode a JSON request body; None when it is not valid JSON."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


# ----------------------------------------------------------------------------- CLI


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Fake OpenAI/Anthropic model server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0 = pick a free one)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait before each reply")
    parser.add_argument("--stats-file", default=None, help="JSON counters, rewritten after each request")
    defaults, limits = BatchTiming(), BatchLimits()
    parser.add_argument("--batch-validating-seconds", type=float, default=defaults.validating,
                        help="seconds a new batch is 'validating'")
    parser.add_argument("--batch-processing-seconds", type=float, default=defaults.processing,
                        help="seconds a batch is 'in_progress'")
    parser.add_argument("--batch-finalizing-seconds", type=float, default=defaults.finalizing,
                        help="seconds an OpenAI batch is 'finalizing'")
    parser.add_argument("--batch-cancelling-seconds", type=float, default=defaults.cancelling,
                        help="seconds between a cancel and the batch ending")
    parser.add_argument("--batch-max-requests", type=int, default=limits.max_requests,
                        help="requests allowed per OpenAI batch")
    parser.add_argument("--batch-max-file-bytes", type=int, default=limits.max_file_bytes,
                        help="bytes allowed per uploaded file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; print ``BASE_URL=...`` once listening."""
    args = _parse_args(argv)
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    timing = BatchTiming(args.batch_validating_seconds, args.batch_processing_seconds,
                         args.batch_finalizing_seconds, args.batch_cancelling_seconds)
    limits = replace(BatchLimits(), max_requests=args.batch_max_requests, max_file_bytes=args.batch_max_file_bytes)
    with FakeOpenAIServer(args.port, latency=args.latency, stats_file=args.stats_file, batch_timing=timing,
                          batch_limits=limits) as server:
        print(f"BASE_URL={server.base_url}", flush=True)
        while not done.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
