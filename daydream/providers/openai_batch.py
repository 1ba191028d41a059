"""The OpenAI Batch API through litellm's files and batches API: OpenAI itself, and any
OpenAI-compatible server that implements it (route `openai` with an `api_base`).

A batch is one uploaded JSONL file of `/v1/chat/completions` requests and one created batch;
its results are an output file (replies) and an error file (failed and expired requests). The
create request is never retried by the client (`max_retries=0`): a retry after a lost answer
would create, and bill, the batch twice. Our label goes into the batch's `metadata`, so a batch
whose create answer was lost is found again (`find`).
"""

from __future__ import annotations

import json

from daydream.providers import BatchResult, BatchState, BatchTarget, CallRequest, Reply
from daydream.providers.litellm_api import litellm_module

ENDPOINT = "/v1/chat/completions"
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
LABEL_KEY = "daydream_batch"


def _kwargs(target: BatchTarget, retries: int = 2) -> dict:
    extra = {"api_base": target.api_base} if target.api_base else {}
    key = target.api_key if target.api_key is not None else "no-key"
    return {"custom_llm_provider": "openai", "api_key": key, "max_retries": retries, **extra}


def usage_of(usage: dict | None) -> dict:
    usage = usage or {}
    counts = {name: usage.get(name) for name in ("prompt_tokens", "completion_tokens", "total_tokens")}
    if counts["total_tokens"] is None and None not in (counts["prompt_tokens"], counts["completion_tokens"]):
        counts["total_tokens"] = counts["prompt_tokens"] + counts["completion_tokens"]
    return counts


def reply_of(custom_id: str, body: dict) -> BatchResult:
    """A 200 line's chat completion. One without text (a refusal, an empty reply) was answered and
    billed all the same: it is a reply, saved and recorded with its usage like any other (its
    document then fails with the reason, and is not paid for again by a rerun); a line without
    choices is a failure."""
    choices = body.get("choices") or []
    if not choices:
        return BatchResult(custom_id, "errored", error="the reply has no choices")
    message = choices[0].get("message") or {}
    text, finish = message.get("content") or "", choices[0].get("finish_reason")
    return BatchResult(custom_id, "succeeded", Reply(text, finish, usage_of(body.get("usage"))))


def _field(item: object, name: str) -> object:
    """A field of an SDK object (pydantic: an attribute) or of a plain dict."""
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def batch_errors(batch: object) -> str:
    """Why a batch failed as a whole: each of its `errors.data` (the SDK's `BatchError` objects,
    or dicts), as `code: message (line N)`."""
    errors = getattr(batch, "errors", None)
    items = (_field(errors, "data") if errors is not None else None) or []
    parts = []
    for item in items:
        code, message, line = _field(item, "code"), _field(item, "message"), _field(item, "line")
        text = ": ".join(str(p) for p in (code, message) if p) or "no detail"
        parts.append(f"{text} (line {line})" if line is not None else text)
    return "; ".join(parts) or "no reason given"


def _error_line(row: dict) -> BatchResult:
    custom_id, response, error = row.get("custom_id", ""), row.get("response"), row.get("error") or {}
    if response is None:
        kind = "expired" if error.get("code") == "batch_expired" else "errored"
        return BatchResult(custom_id, kind, error=str(error.get("message") or error.get("code") or "no response"))
    detail = ((response.get("body") or {}).get("error") or {})
    return BatchResult(custom_id, "errored", error=str(detail.get("message") or "request failed"),
                       status=response.get("status_code"))


class OpenAIBatchProvider:
    name = "openai-batch"
    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024

    def request_line(self, custom_id: str, request: CallRequest) -> dict:
        body = {"model": request.row.model, "messages": [{"role": "user", "content": request.prompt}],
                "temperature": request.temperature, "max_tokens": request.max_tokens}
        return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}

    def submit(self, target: BatchTarget, lines: list[dict], label: str) -> str:
        litellm = litellm_module()
        data = b"".join(json.dumps(line).encode("utf-8") + b"\n" for line in lines)
        uploaded = litellm.create_file(file=(f"{label}.jsonl", data), purpose="batch", **_kwargs(target))
        created = litellm.create_batch(completion_window="24h", endpoint=ENDPOINT, input_file_id=uploaded.id,
                                       metadata={LABEL_KEY: label}, **_kwargs(target, retries=0))
        return created.id

    def status(self, target: BatchTarget, batch_id: str) -> BatchState:
        batch = litellm_module().retrieve_batch(batch_id=batch_id, **_kwargs(target))
        counts = batch.request_counts
        return BatchState(batch.status in ENDED, batch.status, getattr(counts, "total", 0) or 0,
                          getattr(counts, "completed", 0) or 0, getattr(counts, "failed", 0) or 0)

    def _lines(self, target: BatchTarget, file_id: str | None) -> list[dict]:
        if not file_id:
            return []
        data = litellm_module().file_content(file_id=file_id, **_kwargs(target)).content
        return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]

    def results(self, target: BatchTarget, batch_id: str, custom_ids: list[str]) -> list[BatchResult]:
        batch = litellm_module().retrieve_batch(batch_id=batch_id, **_kwargs(target))
        found: dict[str, BatchResult] = {}
        for row in self._lines(target, batch.output_file_id):
            response = row.get("response") or {}
            found[row["custom_id"]] = (reply_of(row["custom_id"], response.get("body") or {})
                                       if response.get("status_code") == 200 else _error_line(row))
        for row in self._lines(target, batch.error_file_id):
            found[row["custom_id"]] = _error_line(row)
        why = batch_errors(batch)
        missing = BatchResult("", "errored", error=f"the batch failed: {why}") if batch.status == "failed" else None
        return [found.get(c) or BatchResult(c, missing.kind if missing else "canceled",
                                            error=missing.error if missing else "no result (cancelled)")
                for c in custom_ids]

    def cancel(self, target: BatchTarget, batch_id: str) -> None:
        """Ask for the batch to be cancelled; nothing to do for a batch that has ended already
        (a batch that failed validation, say: the provider answers 400 to a cancel then)."""
        import openai

        litellm = litellm_module()
        if litellm.retrieve_batch(batch_id=batch_id, **_kwargs(target)).status in ENDED:
            return
        try:
            litellm.cancel_batch(batch_id=batch_id, **_kwargs(target))
        except openai.BadRequestError:  # it may have ended between the look and the cancel
            if litellm.retrieve_batch(batch_id=batch_id, **_kwargs(target)).status not in ENDED:
                raise

    def find(self, target: BatchTarget, label: str, since: float, size: int, known: set[str]) -> str | None:
        after = None
        while True:
            page = litellm_module().list_batches(after=after, limit=100, **_kwargs(target))
            for batch in page.data:
                if (batch.metadata or {}).get(LABEL_KEY) == label and batch.id not in known:
                    return batch.id
                if batch.created_at < since - 60:
                    return None
            if not page.has_more or not page.data:
                return None
            after = page.data[-1].id

    def errors(self) -> tuple[type[BaseException], ...]:
        import httpx
        import openai

        return openai.OpenAIError, httpx.HTTPError
