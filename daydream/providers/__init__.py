"""The provider seam: how one prompt reaches a model, registered by route.

A provider answers one attempt of one call (`complete`), says which environment variable
holds its key, what a reply cost, and how an error should be treated: a `RetryDecision`
(a value: rate limit or transient, and the wait the server asked for) or None for a final
error. The call engine (`daydream.calls`) owns retries, limits and logging and never asks
which provider it talks to. Routes are registered in `_FACTORIES`; every route that is not
registered there goes to litellm, which knows hundreds. A factory imports its provider
lazily, so litellm is imported only when a call needs it.

Adding a provider: one module with a class implementing `Provider`, and one entry here.
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

    def key_env_var(self, row: ModelRow, route: str) -> str | None:
        """The environment variable holding the key for this row, or None when it needs none."""

    def complete(self, request: CallRequest) -> Reply:
        """One attempt (one request); raises one of `errors()` for a provider failure."""

    def errors(self) -> tuple[type[BaseException], ...]:
        """The exception types that are the provider's failures (anything else is a bug)."""

    def retry_decision(self, error: BaseException) -> RetryDecision | None:
        """How to treat a failure: retry (and how long to wait at least) or None (final)."""

    def cost_usd(self, row: ModelRow, reply: Reply) -> float | None:
        """The reply's cost in USD; None when unknown (never 0 for unknown)."""


OFFLINE_ROUTE = "offline"
_FACTORIES = {OFFLINE_ROUTE: "daydream.providers.offline:OfflineProvider"}
_DEFAULT = "daydream.providers.litellm_api:LiteLLMProvider"
_INSTANCES: dict[str, Provider] = {}
_LOCK = threading.Lock()


def provider_for(route: str) -> Provider:
    """The provider serving `route` (one instance per process)."""
    target = _FACTORIES.get(route, _DEFAULT)
    with _LOCK:
        if target not in _INSTANCES:
            module, _, name = target.partition(":")
            _INSTANCES[target] = getattr(importlib.import_module(module), name)()
        return _INSTANCES[target]
