"""Loopback fake of the OpenAI chat-completions endpoint, for tests and benchmarks.

Only the subset that litellm's non-streaming ``openai/`` provider uses is served:
``POST /v1/chat/completions`` (also ``/chat/completions``) and ``GET /v1/models``.
The server binds 127.0.0.1 only and never talks to anything else.

Behaviour is scripted with :class:`Action` values built by the helper functions
below (``reply``, ``empty``, ``length``, ``rate_limit``, ``server_error``,
``bad_request``, ``unauthorized``, ``error``, ``hang``, ``malformed``).  Each
request consumes the oldest queued action (``enqueue``); when the queue is empty
the default action (``set_default``) is used.

Library use::

    with FakeOpenAIServer(latency=0.1) as server:
        server.enqueue(rate_limit(retry_after=2))
        ...  # point litellm at server.base_url
        assert server.request_count == 1

CLI use (for benchmarks running the client in another process)::

    python tests/openai_server.py --port 0 --latency 1.0 --stats-file stats.json

prints ``BASE_URL=http://127.0.0.1:PORT/v1`` and serves until SIGTERM/SIGINT,
rewriting the stats file (JSON counters) after every completed request.
Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import socket
import socketserver
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
MODEL_PATHS = frozenset({"/v1/models", "/models"})
MALFORMED_BODY = b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{'

KIND_OK = "ok"
KIND_ERROR = "error"
KIND_HANG = "hang"
KIND_MALFORMED = "malformed"

Headers = tuple[tuple[str, str], ...]
_Response = tuple[int, bytes, Headers]  # status, body, extra headers


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Action:
    """One scripted server behaviour for a single request (immutable).

    kind: "ok" (a ChatCompletion), "error" (``status`` + OpenAI error JSON),
        "hang" (wait ``hang_seconds`` then drop the connection, or answer like
        "ok" when ``answer_after_hang``), "malformed" (200 with invalid JSON).
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
    """Deterministic reply for ``prompt``: one ``<essay>`` block, last line ``SCORE: 7``.

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
        "</essay>\n"
        "SCORE: 7"
    )


def completion_body(payload: Any, action: Action, serial: int) -> dict[str, Any]:
    """Build the ChatCompletion JSON object answering ``payload`` under ``action``."""
    prompt = prompt_text(payload)
    content = default_content(prompt) if action.content is None else action.content
    usage = {"prompt_tokens": count_words(prompt), "completion_tokens": count_words(content)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
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


# --------------------------------------------------------------------- HTTP plumbing


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
        if self.path.split("?")[0] in MODEL_PATHS:
            self.send_json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        else:
            self.send_json(404, {"error": {"message": "Not found", "type": "invalid_request_error", "code": None}})

    def do_POST(self) -> None:
        raw = self.read_body()
        if self.path.split("?")[0] not in CHAT_PATHS:
            self.send_json(404, {"error": {"message": "Not found", "type": "invalid_request_error", "code": None}})
            return
        self.server.fake._handle_chat(self, raw)

    def read_body(self) -> bytes:
        """Read exactly Content-Length bytes of request body (empty if absent)."""
        length_header = self.headers.get("Content-Length") or "0"
        return self.rfile.read(int(length_header)) if length_header.isdigit() else b""

    def send_json(self, status: int, obj: Any, headers: Headers = ()) -> None:
        """Serialize ``obj`` and send it with ``status``."""
        self.send_raw(status, _dumps(obj), headers)

    def send_raw(self, status: int, body: bytes, headers: Headers = ()) -> None:
        """Send ``body`` as application/json; a vanished client is tolerated."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
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


class FakeOpenAIServer:
    """A scriptable OpenAI chat-completions server on 127.0.0.1 (thread-safe).

    ``port=0`` picks a free port.  ``latency`` is the default delay (seconds)
    before answering any request whose action has no latency of its own.
    ``stats_file``, when given, is atomically rewritten with :meth:`stats`
    after every completed chat request.
    """

    def __init__(self, port: int = 0, *, latency: float = 0.0, stats_file: str | None = None) -> None:
        self._port = port
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stopping = threading.Event()
        self._queue: deque[Action] = deque()
        self._default = reply()
        self._default_latency = float(latency)
        self._stats_file = stats_file
        self._httpd: _LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._clear_counters()

    # ---- lifecycle

    def start(self) -> FakeOpenAIServer:
        """Bind and start serving in a daemon thread; returns self.  Idempotent."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _LoopbackHTTPServer(self._port, self)
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

    # ---- scripting

    def enqueue(self, *actions: Action) -> None:
        """Append actions; each chat request consumes the oldest one."""
        with self._lock:
            self._queue.extend(actions)

    def set_default(self, action: Action) -> None:
        """Set the action used when the queue is empty (initially ``reply()``)."""
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

    # ---- counters

    def _clear_counters(self) -> None:
        self._request_count = 0
        self._completed_count = 0
        self._in_flight = 0
        self._peak_in_flight = 0
        self._requests: list[dict[str, Any]] = []

    def reset(self) -> None:
        """Zero all counters, forget recorded requests and drop queued actions.

        The default action and default latency are kept.  ``peak_in_flight``
        restarts from the current ``in_flight``.
        """
        with self._lock:
            in_flight = self._in_flight
            self._clear_counters()
            self._in_flight = self._peak_in_flight = in_flight
            self._queue.clear()

    @property
    def request_count(self) -> int:
        """Chat requests received (counted on arrival, before any latency)."""
        with self._lock:
            return self._request_count

    @property
    def completed_count(self) -> int:
        """Chat requests whose handling has finished (answered or dropped)."""
        with self._lock:
            return self._completed_count

    @property
    def in_flight(self) -> int:
        """Chat requests currently being handled (received, reply not yet released)."""
        with self._lock:
            return self._in_flight

    @property
    def peak_in_flight(self) -> int:
        """Maximum value ``in_flight`` has reached since start or :meth:`reset`."""
        with self._lock:
            return self._peak_in_flight

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Copy of the received chat requests, oldest first.

        Each record has ``path``, ``headers`` (dict), ``authorization`` (the
        Authorization header value or None), ``body`` (parsed JSON, or None if
        invalid) and ``raw`` (the body bytes).
        """
        with self._lock:
            return list(self._requests)

    def stats(self) -> dict[str, int]:
        """Snapshot of the counters as a JSON-ready dict."""
        with self._lock:
            return {
                "request_count": self._request_count,
                "completed_count": self._completed_count,
                "in_flight": self._in_flight,
                "peak_in_flight": self._peak_in_flight,
            }

    # ---- request handling (called from handler threads)

    def _handle_chat(self, handler: _Handler, raw: bytes) -> None:
        """Record the request, run its action, update counters, then send the reply.

        Counters and the stats file are updated *before* the reply is written,
        so a client holding its answer always sees its request as completed.
        """
        payload = _parse_json(raw)
        action, latency, serial = self._begin(handler, raw, payload)
        try:
            response = self._respond(action, latency, payload, serial)
        finally:
            self._end()
        if response is None:
            handler.drop()
        else:
            handler.send_raw(*response)

    def _begin(self, handler: _Handler, raw: bytes, payload: Any) -> tuple[Action, float, int]:
        """Count and record one request and pick its action and latency."""
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
            return action, latency, self._request_count

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._completed_count += 1
        self._write_stats()

    def _respond(self, action: Action, latency: float, payload: Any, serial: int) -> _Response | None:
        """Wait ``latency`` seconds, then return the reply for ``action`` (None = drop).

        A body that is not a JSON object gets a 400 whatever the action (the
        action is still consumed).  Stopping the server drops pending requests.
        """
        if self._stopping.wait(max(latency, 0.0)):
            return None
        if not isinstance(payload, dict):
            return 400, _dumps(error_body(bad_request("Request body is not a JSON object"))), ()
        if action.kind == KIND_HANG:
            if self._stopping.wait(action.hang_seconds) or not action.answer_after_hang:
                return None
        if action.kind == KIND_ERROR:
            return action.status, _dumps(error_body(action)), action.headers
        if action.kind == KIND_MALFORMED:
            return 200, MALFORMED_BODY, action.headers
        return 200, _dumps(completion_body(payload, action, serial)), action.headers

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
    parser = argparse.ArgumentParser(description="Fake OpenAI chat-completions server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0 = pick a free one)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait before each reply")
    parser.add_argument("--stats-file", default=None, help="JSON counters, rewritten after each request")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; print ``BASE_URL=...`` once listening."""
    args = _parse_args(argv)
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    with FakeOpenAIServer(args.port, latency=args.latency, stats_file=args.stats_file) as server:
        print(f"BASE_URL={server.base_url}", flush=True)
        while not done.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
