"""Calling models (SPEC §7): one entry point, `call_model`, whatever the provider.

The provider for a model row comes from the registry by route (`daydream.providers`); this
module owns what is the same for all of them:
- the route (`route` column, else `llm.default_route`; every call goes to the offline model
  under `offline=true`) and the resolved model string `<route>/<model>`;
- keys, only from the environment, never logged, returned or written (messages are scrubbed);
- the concurrency caps (`daydream.limits`, the run's: `Run.limits`), one slot per attempt;
- retries with tenacity: exponential backoff with jitter while the provider's
  `retry_decision` says so, honouring the wait the server asked for; at most
  `llm.max_attempts` attempts and `llm.max_total_wait_s` seconds of waiting between them (a
  wait that would pass the budget ends the call at once);
- one log line per call and per retry: gen_id, model, attempt, status or error, wait, tokens,
  cost, duration;
- every failed attempt the provider may have billed (`http_errors.billing_of`: a reply without
  text, a refusal, a malformed 200 body, a timeout) is handed to the caller's `on_billed` the
  moment it comes back, as an `Attempt`, before any retry: the ledger records it and the budget
  counts it (`ledger.answer`). A refusal is final; the rest are retried as transient.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import tenacity

from daydream import providers
from daydream.experiment import ModelRow
from daydream.limits import ConcurrencyLimits
from daydream.providers import OFFLINE_ROUTE, CallRequest, Provider, Reply, http_errors, provider_for
from daydream.providers.http_errors import status_of
from daydream.settings import LLMSettings

log = logging.getLogger(__name__)

LONG_WAIT_S = 10.0  # retries waiting this long or longer are logged as warnings


@dataclass(frozen=True)
class Attempt:
    """A failed attempt the provider may have billed. `billed` is `http_errors.BILLED` (a reply
    came back: `usage` is what it reported, `cost_usd` its price, None when unknown) or
    `http_errors.MAYBE_BILLED` (a reply may have been made that nobody read: cost unknown)."""

    model: str
    attempt: int
    billed: str
    error_class: str
    status: int | None
    message: str
    usage: dict | None
    cost_usd: float | None
    finish_reason: str | None
    text: str
    temperature: float
    max_tokens: int
    duration_s: float


class LLMCallError(RuntimeError):
    """A call that failed for good; the message is one line: gen_id, model, error class, reason.
    `billed` is the last attempt when it was an answered reply without usable text (a refusal,
    an empty reply): the ledger keeps it as the paid reply, so a rerun does not pay again."""

    def __init__(self, message: str, *, error_class: str, attempts: int, status: int | None = None,
                 billed: Attempt | None = None):
        super().__init__(message)
        self.error_class = error_class
        self.attempts = attempts
        self.status = status
        self.billed = billed

    def __reduce__(self):
        """Pickled with its fields (the call process hands a failed call to its job this way)."""
        return (functools.partial(LLMCallError, error_class=self.error_class, attempts=self.attempts,
                                  status=self.status, billed=self.billed), (str(self),), self.__dict__)


@dataclass
class Completion:
    """One reply. `temperature` and `max_tokens` are those the call was made with (None in
    replies saved before they were recorded); `wait_s` is the time slept between attempts."""

    text: str
    model: str
    finish_reason: str | None
    usage: dict
    cost_usd: float | None
    duration_s: float
    attempts: int
    temperature: float | None = None
    max_tokens: int | None = None
    wait_s: float = 0.0

    def truncated(self, max_tokens: int | None = None) -> bool:
        """`finish_reason == "length"`, or completion tokens reaching the call's max_tokens
        (`max_tokens` is only used when the reply does not record its own)."""
        limit = self.max_tokens or max_tokens
        completion_tokens = (self.usage or {}).get("completion_tokens") or 0
        return self.finish_reason == "length" or bool(limit and completion_tokens >= limit)


def route_of(row: ModelRow, settings: LLMSettings) -> str:
    return OFFLINE_ROUTE if settings.offline else (row.route or settings.default_route)


def model_string(row: ModelRow, settings: LLMSettings) -> str:
    """The resolved model string: `<route>/<model>` (SPEC §2)."""
    return f"{route_of(row, settings)}/{row.model}"


def provider_of(row: ModelRow, settings: LLMSettings) -> Provider:
    return provider_for(route_of(row, settings))


def key_env_var(row: ModelRow, settings: LLMSettings) -> str | None:
    """The environment variable holding this model's key, or None when it needs none."""
    return providers.key_env_var(row, route_of(row, settings))


def missing_keys(rows: list[ModelRow], settings: LLMSettings, where: str) -> list[str]:
    """One problem line per model whose key variable is unset (checked before any call)."""
    problems = []
    for row in rows:
        var = key_env_var(row, settings)
        if var and not os.environ.get(var):
            problems.append(f"{where}: model {row.id!r} ({model_string(row, settings)}) needs an API key: "
                            f"export {var}=... (or run with --config offline=true)")
    return problems


def api_key(row: ModelRow, settings: LLMSettings) -> str | None:
    """The key from the environment, None when the route needs none."""
    var = key_env_var(row, settings)
    if var is None:
        return None
    key = os.environ.get(var)
    if not key:
        raise LLMCallError(f"model {row.id} ({model_string(row, settings)}): environment variable {var} "
                           f"is not set; export {var}=... (or run with --config offline=true)",
                           error_class="MissingKey", attempts=0)
    return key


def concurrency_key(row: ModelRow, settings: LLMSettings) -> str:
    """Calls to the same model string, at the same endpoint, with the same key variable (the
    same account) share one per-model cap."""
    return f"{model_string(row, settings)}@{row.api_base or '-'}#{key_env_var(row, settings) or '-'}"


# -- retry policy -----------------------------------------------------------------------------
class _WaitBackoffOrRetryAfter(tenacity.wait.wait_base):
    """`initial * 2**(attempt-1)` plus up to `initial` of jitter, capped at `maximum`; or the
    server's Retry-After (plus the same jitter, so waiting calls do not return in a herd)
    when that is longer. Retry-After may exceed `maximum`: the total wait budget bounds it."""

    def __init__(self, provider: Provider, initial: float, maximum: float):
        self._provider, self._initial, self._maximum = provider, initial, maximum
        self._exponential = tenacity.wait_exponential(multiplier=initial, max=maximum)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        backoff = min(self._maximum, self._exponential(retry_state) + random.uniform(0, self._initial))
        error = retry_state.outcome.exception() if retry_state.outcome else None
        decision = self._provider.retry_decision(error) if error is not None else None
        hinted = decision.retry_after_s if decision else None
        return max(backoff, hinted + random.uniform(0, self._initial)) if hinted is not None else backoff


class _StopWhenWaitBudgetSpent(tenacity.stop.stop_base):
    """Stop when the waits so far plus the coming one would pass the budget (seconds)."""

    def __init__(self, budget_s: float):
        self.budget_s = budget_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return retry_state.idle_for + retry_state.upcoming_sleep > self.budget_s


def _log_retry(gen_id: str, model: str):
    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception()
        wait = state.next_action.sleep if state.next_action else 0.0
        log.log(logging.WARNING if wait >= LONG_WAIT_S else logging.INFO,
                "retry gen_id=%s model=%s attempt=%d error=%s status=%s wait=%.2fs",
                gen_id, model, state.attempt_number, type(error).__name__, http_errors.received_status(error), wait)
    return before_sleep


def _retrying(provider: Provider, settings: LLMSettings, gen_id: str, model: str,
              asynchronous: bool = False, sleep: Callable[[float], None] = time.sleep) -> tenacity.BaseRetrying:
    """The retry policy; `asynchronous`: the same policy sleeping on the event loop; `sleep`: how a
    thread waits between attempts (tests pass one that records or blocks instead)."""
    kind = tenacity.AsyncRetrying if asynchronous else tenacity.Retrying
    return kind(**({} if asynchronous else {"sleep": sleep}),
        retry=tenacity.retry_if_exception(lambda error: provider.retry_decision(error) is not None),
        wait=_WaitBackoffOrRetryAfter(provider, settings.backoff_initial_s, settings.backoff_max_s),
        stop=(tenacity.stop_after_attempt(settings.max_attempts)
              | _StopWhenWaitBudgetSpent(settings.max_total_wait_s)),
        before_sleep=_log_retry(gen_id, model), reraise=True)


# -- failures ---------------------------------------------------------------------------------
def one_line(text: str, secret: str | None, limit: int = 300) -> str:
    """Whitespace collapsed, litellm's `litellm.X: X:` prefixes dropped, the key masked."""
    line = " ".join(text.split())
    if secret:
        line = line.replace(secret, "***")
    line = re.sub(r"^litellm\.\w+:\s*", "", line)
    line = re.sub(r"^(\w+Error|Timeout):\s*", "", line)
    return line[:limit]


def _why_it_stopped(provider: Provider, error: BaseException, state: tenacity.RetryCallState | None,
                    settings: LLMSettings, key_var: str | None) -> str:
    if provider.retry_decision(error) is None:
        status = status_of(error)
        hint = f"; check the key in ${key_var}" if status in (401, 403) and key_var else ""
        return f"not retried (a final error){hint}"
    if state is not None and state.attempt_number < settings.max_attempts:
        return (f"gave up: the next wait of {state.upcoming_sleep:.1f}s would pass "
                f"llm.max_total_wait_s={settings.max_total_wait_s:g}; rerun later")
    return f"gave up after llm.max_attempts={settings.max_attempts}; rerun later"


def _failure(provider: Provider, error: BaseException, state: tenacity.RetryCallState | None, row: ModelRow,
             settings: LLMSettings, gen_id: str, key: str | None, billed: Attempt | None = None,
             timeout_s: float | None = None) -> LLMCallError:
    """The one-line failure: what happened (`http_errors.describe`: a status only when one was
    received; else could not resolve host, connection refused, timed out after N s), the
    innermost cause's text when no response came, and why it stopped."""
    model, attempts = model_string(row, settings), state.attempt_number if state else 1
    status, name = http_errors.received_status(error), type(error).__name__
    detail = str(error) if status is not None else http_errors.root_message(error)
    why = _why_it_stopped(provider, error, state, settings, key_env_var(row, settings))
    message = f"{gen_id}: model {model} ({row.id}) failed after {attempts} attempt(s): " \
              f"{http_errors.describe(error, timeout_s)}: {one_line(detail, key)}; {why}"
    log.warning("failed gen_id=%s model=%s attempts=%d error=%s status=%s", gen_id, model, attempts, name, status)
    return LLMCallError(message, error_class=name, attempts=attempts, status=status, billed=billed)


def _billed_attempt(provider: Provider, request: CallRequest, error: BaseException, attempt: int, duration_s: float,
                    key: str | None) -> Attempt | None:
    """The failed attempt as an `Attempt` when the provider may have billed it, else None."""
    billed = http_errors.billing_of(error)
    if billed is None:
        return None
    usage = getattr(error, "usage", None) if billed == http_errors.BILLED else None
    finish = getattr(error, "finish_reason", None)
    cost = provider.cost_usd(request.row, Reply("", finish, usage, None, request.route)) if usage else None
    return Attempt(request.model, attempt, billed, type(error).__name__, status_of(error),
                   one_line(str(error), key), usage, cost, finish, getattr(error, "text", "") or "",
                   request.temperature, request.max_tokens, round(duration_s, 3))


# -- the entry points --------------------------------------------------------------------------
class _Call:
    """One call's request and state, whichever driver makes its attempts: a thread
    (`call_model`) or an event loop (`acall_model`). Everything but the waiting is here, once."""

    def __init__(self, row: ModelRow, prompt: str, *, stage: str, settings: LLMSettings, gen_id: str,
                 on_billed: Callable[[Attempt], None] | None, replicate: int, cache_prefix: str,
                 limits: ConcurrencyLimits | None):
        self.row, self.settings, self.gen_id, self.on_billed = row, settings, gen_id, on_billed
        self.provider, self.model = provider_of(row, settings), model_string(row, settings)
        self.stage_settings = settings.stage(stage)
        self.key = api_key(row, settings)
        self.request = CallRequest(row, route_of(row, settings), self.model, stage, prompt,
                                   self.stage_settings.temperature, self.stage_settings.max_tokens,
                                   self.stage_settings.timeout_s, self.key, replicate, cache_prefix)
        self.cap_key = concurrency_key(row, settings)
        self.limits = limits if limits is not None else ConcurrencyLimits(settings.max_concurrency)
        self.failures = self.provider.errors()
        self.state: tenacity.RetryCallState | None = None
        self.started: float | None = None  # when the first attempt got its slot: waiting for one is not duration
        self.last_billed: tuple[BaseException, Attempt] | None = None

    def retrying(self, asynchronous: bool = False,
                 sleep: Callable[[float], None] = time.sleep) -> tenacity.BaseRetrying:
        return _retrying(self.provider, self.settings, self.gen_id, self.model, asynchronous, sleep)

    def sending(self, state: tenacity.RetryCallState) -> float:
        """An attempt got its slot and is sent now: its start time."""
        self.state = state
        now = time.monotonic()
        self.started = now if self.started is None else self.started
        return now

    def attempt_failed(self, error: BaseException, sent: float):
        """A failed attempt the provider may have billed goes to `on_billed` before any retry;
        what it returned (an awaitable, for `acall_model`'s caller in the call process)."""
        billed = _billed_attempt(self.provider, self.request, error, self.state.attempt_number,
                                 time.monotonic() - sent, self.key)
        if billed is not None:
            self.last_billed = (error, billed)
            if self.on_billed is not None:
                return self.on_billed(billed)  # recorded and counted before any retry
        return None

    def failure(self, error: BaseException) -> LLMCallError:
        billed = self.last_billed[1] if self.last_billed is not None and self.last_billed[0] is error else None
        return _failure(self.provider, error, self.state, self.row, self.settings, self.gen_id, self.key, billed,
                        self.request.timeout_s)

    def completion(self, reply: Reply) -> Completion:
        state, stage_settings = self.state, self.stage_settings
        attempts = state.attempt_number if state else 1
        done = Completion(reply.text, self.model, reply.finish_reason, reply.usage,
                          self.provider.cost_usd(self.row, reply), round(time.monotonic() - self.started, 3), attempts,
                          stage_settings.temperature, stage_settings.max_tokens,
                          round(state.idle_for if state else 0.0, 3))
        log.info("call gen_id=%s model=%s attempts=%d status=ok finish=%s tokens=%s cost=%s wait=%.2fs "
                 "duration=%.2fs", self.gen_id, self.model, attempts, reply.finish_reason,
                 reply.usage.get("total_tokens"), done.cost_usd, done.wait_s, done.duration_s)
        return done


def call_model(row: ModelRow, prompt: str, *, stage: str, settings: LLMSettings, gen_id: str,
               on_billed: Callable[[Attempt], None] | None = None, replicate: int = 1,
               cache_prefix: str = "", limits: ConcurrencyLimits | None = None,
               sleep: Callable[[float], None] = time.sleep) -> Completion:
    """Ask `row`'s model for a reply to `prompt`, within the limits and the retry policy.

    `limits` are the concurrency caps shared by the calls of a run (`Run.limits`); without
    them the call gets caps of its own (`llm.max_concurrency`), shared with no other call.

    Raises LLMCallError (one-line message: gen_id, model, error class, status, reason) after
    the last attempt, or at once for a final error or a missing key. Each failed attempt the
    provider may have billed goes to `on_billed` as soon as it comes back (an exception it
    raises, such as `run.BudgetReached`, ends the call with no further attempt). Bugs
    (errors that are not provider errors) propagate as they are. `replicate`: the document's
    replicate (the offline model's replies differ by it). `cache_prefix`: the start of `prompt`
    that every prompt of its template shares (a provider may mark it for its prompt cache).
    `sleep` waits between attempts (tests pass one that records or blocks instead).
    """
    call = _Call(row, prompt, stage=stage, settings=settings, gen_id=gen_id, on_billed=on_billed,
                 replicate=replicate, cache_prefix=cache_prefix, limits=limits)
    reply: Reply | None = None
    try:
        for attempt in call.retrying(sleep=sleep):
            with attempt, call.limits.slot(call.cap_key, row.max_concurrency):
                sent = call.sending(attempt.retry_state)
                try:
                    reply = call.provider.complete(call.request)
                except call.failures as error:
                    call.attempt_failed(error, sent)
                    raise
    except call.failures as error:
        raise call.failure(error) from error
    return call.completion(reply)


async def acall_model(row: ModelRow, prompt: str, *, stage: str, settings: LLMSettings, gen_id: str,
                      on_billed: Callable[[Attempt], None] | None = None, replicate: int = 1,
                      cache_prefix: str = "", limits: ConcurrencyLimits | None = None) -> Completion:
    """`call_model` as a coroutine on the running event loop (`daydream.engine`): the same
    request, caps (`ConcurrencyLimits.aslot`), retry policy, billed attempts and errors; waits
    (for a slot, between attempts) sleep on the loop instead of a thread. `on_billed` may be a
    coroutine function (`daydream.call_process`: the attempt is recorded by the Snakemake
    process, which answers before any retry)."""
    call = _Call(row, prompt, stage=stage, settings=settings, gen_id=gen_id, on_billed=on_billed,
                 replicate=replicate, cache_prefix=cache_prefix, limits=limits)
    reply: Reply | None = None
    try:
        async for attempt in call.retrying(asynchronous=True):
            with attempt:
                async with call.limits.aslot(call.cap_key, row.max_concurrency):
                    sent = call.sending(attempt.retry_state)
                    try:
                        reply = await call.provider.acomplete(call.request)
                    except call.failures as error:
                        recorded = call.attempt_failed(error, sent)
                        if inspect.isawaitable(recorded):
                            await recorded
                        raise
    except call.failures as error:
        raise call.failure(error) from error
    return call.completion(reply)
