"""Anthropic Message Batches through the official `anthropic` SDK (litellm can read these
batches but cannot create or cancel them).

A batch is one create request carrying every request; results come as JSONL once the batch
has ended: `succeeded`, `errored`, `canceled` or `expired` per request. The create request is
never retried by the client (`max_retries=0`), so a batch is never created twice. Message
Batches keep no metadata: a batch whose create answer was lost is found by its creation time
and size (`find`).
"""

from __future__ import annotations

import threading
from datetime import datetime

from daydream.providers import BatchResult, BatchState, BatchTarget, CallRequest, Reply

STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}
# Anthropic's error types and the HTTP status each stands for (so retries follow http_errors).
ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
                "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
                "overloaded_error": 529}

_CLIENTS: dict[tuple, object] = {}
_LOCK = threading.Lock()


def _client(target: BatchTarget, retries: int = 2):
    import anthropic

    key = (target.api_base, target.api_key, retries)
    with _LOCK:
        if key not in _CLIENTS:
            _CLIENTS[key] = anthropic.Anthropic(base_url=target.api_base or None, api_key=target.api_key or "no-key",
                                                max_retries=retries)
        return _CLIENTS[key]


def _seconds(value) -> float:
    return value.timestamp() if isinstance(value, datetime) else datetime.fromisoformat(str(value)).timestamp()


def reply_of(custom_id: str, message) -> BatchResult:
    text = "".join(getattr(block, "text", "") or "" for block in (message.content or []))
    finish = STOP_REASONS.get(message.stop_reason, message.stop_reason)
    if not text.strip() and finish != "length":
        return BatchResult(custom_id, "errored", error=f"the reply has no text (stop_reason={message.stop_reason})")
    usage = message.usage
    prompt, completion = getattr(usage, "input_tokens", None), getattr(usage, "output_tokens", None)
    total = prompt + completion if prompt is not None and completion is not None else None
    counts = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    return BatchResult(custom_id, "succeeded", Reply(text, finish, counts))


def _result_of(row) -> BatchResult:
    result = row.result
    if result.type == "succeeded":
        return reply_of(row.custom_id, result.message)
    if result.type == "errored":
        detail = getattr(result.error, "error", None)
        kind = getattr(detail, "type", "") or ""
        return BatchResult(row.custom_id, "errored", error=f"{kind}: {getattr(detail, 'message', '')}",
                           status=ERROR_STATUS.get(kind))
    return BatchResult(row.custom_id, result.type)


class AnthropicBatchProvider:
    name = "anthropic-batch"
    max_requests = 100_000
    max_bytes = 256 * 1024 * 1024

    def request_line(self, custom_id: str, request: CallRequest) -> dict:
        params = {"model": request.row.model, "max_tokens": request.max_tokens, "temperature": request.temperature,
                  "messages": [{"role": "user", "content": request.prompt}]}
        return {"custom_id": custom_id, "params": params}

    def submit(self, target: BatchTarget, lines: list[dict], label: str) -> str:
        return _client(target, retries=0).messages.batches.create(requests=lines).id

    def status(self, target: BatchTarget, batch_id: str) -> BatchState:
        batch = _client(target).messages.batches.retrieve(batch_id)
        counts = batch.request_counts
        failed = counts.errored + counts.expired + counts.canceled
        total = counts.processing + counts.succeeded + failed
        return BatchState(batch.processing_status == "ended", batch.processing_status, total, counts.succeeded, failed)

    def results(self, target: BatchTarget, batch_id: str, custom_ids: list[str]) -> list[BatchResult]:
        found = {row.custom_id: _result_of(row) for row in _client(target).messages.batches.results(batch_id)}
        return [found.get(c) or BatchResult(c, "canceled", error="no result") for c in custom_ids]

    def cancel(self, target: BatchTarget, batch_id: str) -> None:
        _client(target).messages.batches.cancel(batch_id)

    def find(self, target: BatchTarget, label: str, since: float, size: int, known: set[str]) -> str | None:
        for batch in _client(target).messages.batches.list(limit=100):
            created = _seconds(batch.created_at)
            if created < since - 60:
                return None
            counts = batch.request_counts
            total = counts.processing + counts.succeeded + counts.errored + counts.expired + counts.canceled
            if batch.id not in known and total == size:
                return batch.id
        return None

    def errors(self) -> tuple[type[BaseException], ...]:
        import anthropic
        import httpx

        return anthropic.APIError, httpx.HTTPError
