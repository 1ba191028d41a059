"""The provider seam: how one prompt reaches a model, registered by route.

A provider answers one attempt of one call (`complete`), says which environment variable
holds its key, what a reply cost, and how an error should be treated: a `RetryDecision`
(a value: rate limit or transient, and the wait the server asked for) or None for a final
error. The call engine (`daydream.calls`) owns retries, limits and logging and never asks
which provider it talks to. Routes are registered in `_FACTORIES`; every route that is not
registered there goes to litellm, which knows hundreds. A factory imports its provider
lazily, so litellm is imported only when a call needs it.

Adding a provider: one module with a class implementing `Provider`, and one entry here.

Batch APIs (half price, within 24 hours) sit behind a second seam, `BatchProvider`, registered
by route in `_BATCH_FACTORIES` (`batch_provider_for`): the OpenAI Batch API (through litellm's
files and batches API: OpenAI and OpenAI-compatible servers) and Anthropic Message Batches
(the official SDK). `daydream.batch` owns the rest (the durable batch ledger,
splitting, polling, resubmission); a route that is not registered there has no batch mode.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from daydream.experiment import ModelRow


@dataclass(frozen=True)
class RetryDecision:
    """Why a failed attempt may be tried again: `rate_limit` (429) or `transient`, and how long
    the server asked us to wait (`Retry-After`), if it said."""

    kind: str
    retry_after_s: float | None = None


@dataclass(frozen=True)
class CallRequest:
    """One attempt: the model row, the resolved model string, the prompt and the sampling
    settings of its stage; `api_key` from the environment (None when the route needs none)."""

    row: ModelRow
    route: str
    model: str
    stage: str
    prompt: str
    temperature: float
    max_tokens: int
    timeout_s: float
    api_key: str | None
    replicate: int = 1  # the document's replicate: the offline model's replies differ by it
    cache_prefix: str = ""  # the prompt's start its template shares with every document (prompt caching)


@dataclass(frozen=True)
class Reply:
    """What one successful attempt returned; `response` is the provider's own object (None
    where there is none) and `route` the route it was asked on (for the price lookup)."""

    text: str
    finish_reason: str | None
    usage: dict
    response: object | None = None
    route: str = ""


class Provider(Protocol):
    name: str

    @staticmethod
    def key_env_var(row: ModelRow, route: str) -> str | None:
        """The environment variable holding the key for this row, or None when it needs none
        (a static method: `key_env_var` asks the class, without an instance)."""

    def complete(self, request: CallRequest) -> Reply:
        """One attempt (one request); raises one of `errors()` for a provider failure."""

    async def acomplete(self, request: CallRequest) -> Reply:
        """The same attempt as a coroutine, on the caller's event loop (`daydream.engine`)."""

    def errors(self) -> tuple[type[BaseException], ...]:
        """The exception types that are the provider's failures (anything else is a bug)."""

    def retry_decision(self, error: BaseException) -> RetryDecision | None:
        """How to treat a failure: retry (and how long to wait at least) or None (final)."""

    def cost_usd(self, row: ModelRow, reply: Reply) -> float | None:
        """The reply's cost in USD; None when unknown (never 0 for unknown)."""


@dataclass(frozen=True)
class BatchTarget:
    """Where a batch goes: the route, the bare model name sent in each request, the endpoint
    (`api_base`, empty for the provider's own) and the key from the environment (None: none)."""

    route: str
    model: str
    api_base: str
    api_key: str | None


@dataclass(frozen=True)
class BatchState:
    """One look at a batch: `ended` once no request of it will change any more; `status` is the
    provider's own word; counts of requests in it, finished and failed so far."""

    ended: bool
    status: str
    total: int
    done: int
    failed: int


@dataclass(frozen=True)
class BatchResult:
    """The outcome of one request of an ended batch: `succeeded` (with its `reply`), `errored`
    (HTTP `status` when the provider gave one), `expired` or `canceled` (no result)."""

    custom_id: str
    kind: str
    reply: Reply | None = None
    error: str = ""
    status: int | None = None


class BatchProvider(Protocol):
    name: str
    max_requests: int  # the provider's own limits per batch
    max_bytes: int

    def request_line(self, custom_id: str, request: CallRequest) -> dict:
        """One request of a batch, as the provider takes it (its size counts toward max_bytes)."""

    def submit(self, target: BatchTarget, lines: list[dict], label: str) -> str:
        """Create one batch of `lines` (a single create request, never retried by the client,
        so it is never created twice); `label` tags it where the provider keeps metadata.
        Returns the provider's batch id."""

    def status(self, target: BatchTarget, batch_id: str) -> BatchState: ...

    def results(self, target: BatchTarget, batch_id: str, custom_ids: list[str]) -> list[BatchResult]:
        """One result per custom_id of an ended batch (a request without a result is `canceled`)."""

    def cancel(self, target: BatchTarget, batch_id: str) -> None: ...

    def find(self, target: BatchTarget, label: str, since: float, size: int, known: set[str]) -> str | None:
        """The id of a batch created from `label` (at or after `since`, epoch seconds, with `size`
        requests, not one of `known`) whose create answer never reached us; None when none is."""

    def errors(self) -> tuple[type[BaseException], ...]:
        """The exception types that are the provider's failures (anything else is a bug)."""


OFFLINE_ROUTE = "offline"
_FACTORIES = {OFFLINE_ROUTE: "daydream.providers.offline:OfflineProvider"}
_DEFAULT = "daydream.providers.litellm_api:LiteLLMProvider"
_BATCH_FACTORIES = {"openai": "daydream.providers.openai_batch:OpenAIBatchProvider",
                    "anthropic": "daydream.providers.anthropic_batch:AnthropicBatchProvider"}
BATCH_ROUTES = tuple(_BATCH_FACTORIES)
_INSTANCES: dict[str, Provider] = {}
_LOCK = threading.Lock()


def _class(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _instance(target: str):
    with _LOCK:
        if target not in _INSTANCES:
            _INSTANCES[target] = _class(target)()
        return _INSTANCES[target]


def provider_for(route: str) -> Provider:
    """The provider serving `route` (one instance per process)."""
    return _instance(_FACTORIES.get(route, _DEFAULT))


def key_env_var(row: ModelRow, route: str) -> str | None:
    """The environment variable holding the key of `row` on `route` (None: it needs none),
    from the provider's class: no instance, so litellm is not imported for it (a run whose
    calls go out from the call process, `daydream.call_process`, never imports it here)."""
    return _class(_FACTORIES.get(route, _DEFAULT)).key_env_var(row, route)


def has_batch_api(route: str) -> bool:
    return route in _BATCH_FACTORIES


def batch_provider_for(route: str) -> BatchProvider:
    """The batch API serving `route`; KeyError for a route without one (see `has_batch_api`)."""
    return _instance(_BATCH_FACTORIES[route])
