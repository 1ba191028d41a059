"""Calling models (SPEC §7): one entry point, `call_model`, for the offline model and litellm.

- litellm is imported lazily, once per process, with `LITELLM_LOCAL_MODEL_COST_MAP=True`
  (no network fetch of the price map). Rules run in the Snakemake process
  (`--force-use-threads`), so thousands of calls share one import and one set of limits.
- Concurrency: a global semaphore caps calls in flight; each model has its own cap
  (`max_concurrency` column). One function, `concurrency_key`, says which calls share a cap.
  A slot is held for one HTTP attempt only, never while sleeping between attempts, so a
  rate-limited model does not starve the others. litellm's HTTP client holds at most 100
  connections per endpoint, key and timeout: a cap above 100 queues calls there instead.
- Retries: tenacity, exponential backoff with jitter on 429, 5xx, timeouts, dropped
  connections, malformed and empty replies, honouring `Retry-After` (and `retry-after-ms`);
  at most `llm.max_attempts` attempts and at most `llm.max_total_wait_s` seconds of waiting
  between them (a wait that would pass the budget ends the call at once). Other errors
  (400, 401, 403, 404, 422, ...) are final after one request. litellm's and the OpenAI
  SDK's own retries are off: every attempt counted here is exactly one HTTP request.
- Keys come only from the environment and are never logged, returned or written: error
  messages are scrubbed of the key before they go anywhere.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import tenacity

from daydream import offline_model
from daydream.experiment import ModelRow

log = logging.getLogger(__name__)

OFFLINE_ROUTE = "offline"
KEY_ENV_BY_ROUTE = {
    "openrouter": "OPENROUTER_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY",
    "gemini": "GEMINI_API_KEY", "mistral": "MISTRAL_API_KEY", "groq": "GROQ_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY", "together_ai": "TOGETHERAI_API_KEY", "xai": "XAI_API_KEY",
}
NO_KEY_ROUTES = frozenset({OFFLINE_ROUTE, "ollama", "ollama_chat", "hosted_vllm", "lm_studio"})
LONG_WAIT_S = 10.0  # retries waiting this long or longer are logged as warnings


class LLMCallError(RuntimeError):
    """A call that failed for good; the message is one line: gen_id, model, error class, reason."""

    def __init__(self, message: str, *, error_class: str, attempts: int, status: int | None = None):
        super().__init__(message)
        self.error_class = error_class
        self.attempts = attempts
        self.status = status


class EmptyReplyError(Exception):
    """HTTP 200 without any text, and not because the token limit was reached: retried."""

    status_code = None


@dataclass(frozen=True)
class StageSettings:
    temperature: float = 0.7
    max_tokens: int = 4096
    timeout_s: float = 300.0


@dataclass(frozen=True)
class LLMSettings:
    default_route: str = "openrouter"
    offline: bool = False
    max_concurrency: int = 16
    max_attempts: int = 5
    max_total_wait_s: float = 300.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    stages: dict[str, StageSettings] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: dict) -> LLMSettings:
        llm = dict(config.get("llm") or {})
        stages = {name: StageSettings(**values) for name, values in (llm.pop("stages", None) or {}).items()}
        return cls(offline=as_bool(config.get("offline", False)), stages=stages, **llm)

    def stage(self, stage: str) -> StageSettings:
        return self.stages.get(stage, StageSettings())


def as_bool(value: object) -> bool:
    """`--config offline=true` arrives as the string 'true': accept bools and their spellings."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"offline={value!r}: use true or false")


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


def litellm_model(row: ModelRow, settings: LLMSettings) -> str:
    """The resolved model string: `<route>/<model>` (SPEC §2)."""
    return f"{route_of(row, settings)}/{row.model}"


def key_env_var(row: ModelRow, settings: LLMSettings) -> str | None:
    """The environment variable holding this model's key, or None when it needs none."""
    route = route_of(row, settings)
    if route == OFFLINE_ROUTE:
        return None
    if row.api_key_env:
        return row.api_key_env
    if route in NO_KEY_ROUTES or (route == "openai" and row.api_base):
        return None
    return KEY_ENV_BY_ROUTE.get(route, f"{route.upper()}_API_KEY")


def missing_keys(rows: list[ModelRow], settings: LLMSettings, where: str) -> list[str]:
    """One problem line per model whose key variable is unset (checked before any call)."""
    problems = []
    for row in rows:
        var = key_env_var(row, settings)
        if var and not os.environ.get(var):
            problems.append(f"{where}: model {row.id!r} ({litellm_model(row, settings)}) needs an API key: "
                            f"export {var}=... (or run with --config offline=true)")
    return problems


def api_key(row: ModelRow, settings: LLMSettings) -> str | None:
    """The key from the environment; a placeholder for keyless OpenAI-compatible servers."""
    var = key_env_var(row, settings)
    if var is None:
        return "no-key" if row.api_base else None
    key = os.environ.get(var)
    if not key:
        raise LLMCallError(f"model {row.id} ({litellm_model(row, settings)}): environment variable {var} "
                           f"is not set; export {var}=... (or run with --config offline=true)",
                           error_class="MissingKey", attempts=0)
    return key


# -- concurrency ------------------------------------------------------------------------------
class ConcurrencyLimits:
    """A global cap on calls in flight plus one cap per concurrency key, shared by all threads.

    The first call of a key fixes that key's cap (`max_concurrency` of its row, at most the
    global cap)."""

    def __init__(self, global_cap: int):
        self.global_cap = global_cap
        self._global = threading.BoundedSemaphore(global_cap)
        self._per_key: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def for_key(self, key: str, cap: int | None) -> threading.BoundedSemaphore:
        with self._lock:
            if key not in self._per_key:
                self._per_key[key] = threading.BoundedSemaphore(min(cap or self.global_cap, self.global_cap))
            return self._per_key[key]

    def slot(self, key: str, cap: int | None) -> _Slot:
        return _Slot(self.for_key(key, cap), self._global)


class _Slot:
    """Holds the per-model semaphore, then a global one (always in that order: no deadlock,
    and no global slot is held while waiting for a busy model)."""

    def __init__(self, *semaphores: threading.BoundedSemaphore):
        self._semaphores = semaphores

    def __enter__(self) -> _Slot:
        for semaphore in self._semaphores:
            semaphore.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        for semaphore in reversed(self._semaphores):
            semaphore.release()


_LIMITS: ConcurrencyLimits | None = None
_LIMITS_LOCK = threading.Lock()


def limits(settings: LLMSettings) -> ConcurrencyLimits:
    """The process-wide limits (rebuilt only if the configured global cap changes)."""
    global _LIMITS
    with _LIMITS_LOCK:
        if _LIMITS is None or _LIMITS.global_cap != settings.max_concurrency:
            _LIMITS = ConcurrencyLimits(settings.max_concurrency)
        return _LIMITS


def concurrency_key(row: ModelRow, settings: LLMSettings) -> str:
    """Calls to the same model string, at the same endpoint, with the same key variable (the
    same account) share one per-model cap."""
    return f"{litellm_model(row, settings)}@{row.api_base or '-'}#{key_env_var(row, settings) or '-'}"


# -- litellm ----------------------------------------------------------------------------------
_LITELLM = None
_LITELLM_LOCK = threading.Lock()


def litellm_module():
    """litellm, imported once per process with the local price map (no network)."""
    global _LITELLM
    with _LITELLM_LOCK:
        if _LITELLM is None:
            os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
            import litellm

            litellm.suppress_debug_info = True
            litellm.telemetry = False
            _LITELLM = litellm
        return _LITELLM


def provider_errors() -> tuple[type[BaseException], ...]:
    """What a provider call can raise: litellm's exceptions (all OpenAI SDK errors), HTTP
    transport errors and an empty reply. Anything else is a bug and propagates as it is."""
    import httpx
    import openai

    return openai.OpenAIError, httpx.HTTPError, EmptyReplyError


# -- retry policy -----------------------------------------------------------------------------
TRANSIENT_ERRORS = frozenset({"Timeout", "APITimeoutError", "APIConnectionError", "InternalServerError",
                              "ServiceUnavailableError", "BadGatewayError", "EmptyReplyError"})
TRANSIENT_STATUS = frozenset({408, 409, 425, 429})


@dataclass(frozen=True)
class RetryDecision:
    """Why a failed attempt may be tried again: `rate_limit` (429) or `transient`, and how long
    the server asked us to wait (`Retry-After`), if it said."""

    kind: str
    retry_after_s: float | None = None


def status_of(error: BaseException) -> int | None:
    status = getattr(error, "status_code", None)
    return status if isinstance(status, int) else None


def retry_decision(error: BaseException) -> RetryDecision | None:
    """None for a final error (other 4xx, or anything that is not a provider error)."""
    status, name = status_of(error), type(error).__name__
    if status == 429 or name == "RateLimitError":
        return RetryDecision("rate_limit", retry_after_s(error))
    transient = (name in TRANSIENT_ERRORS or status in TRANSIENT_STATUS
                 or (status is not None and 500 <= status < 600 and status not in (501, 505)))
    return RetryDecision("transient", retry_after_s(error)) if transient else None


def is_retryable(error: BaseException) -> bool:
    return retry_decision(error) is not None


def _headers(error: BaseException) -> dict[str, str]:
    """The HTTP response headers carried by a litellm/OpenAI SDK error, lower-cased."""
    for source in (getattr(error, "litellm_response_headers", None),
                   getattr(getattr(error, "response", None), "headers", None),
                   getattr(error, "headers", None)):
        if source:
            return {str(k).lower(): str(v) for k, v in source.items()}
    return {}


def retry_after_s(error: BaseException) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, or `Retry-After` given as seconds
    or as an HTTP date; None when absent or unreadable."""
    headers = _headers(error)
    if "retry-after-ms" in headers:
        try:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        except ValueError:
            pass  # an unreadable header falls through to Retry-After, then to plain backoff
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if email.utils.parsedate_tz(value) else None
        return max(0.0, (when - datetime.now(UTC)).total_seconds()) if when and when.tzinfo else None


class _WaitBackoffOrRetryAfter(tenacity.wait.wait_base):
    """`initial * 2**(attempt-1)` plus up to `initial` of jitter, capped at `maximum`; or the
    server's Retry-After (plus the same jitter, so waiting calls do not return in a herd)
    when that is longer. Retry-After may exceed `maximum`: the total wait budget bounds it."""

    def __init__(self, initial: float, maximum: float):
        self._initial, self._maximum = initial, maximum
        self._exponential = tenacity.wait_exponential(multiplier=initial, max=maximum)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        backoff = min(self._maximum, self._exponential(retry_state) + random.uniform(0, self._initial))
        error = retry_state.outcome.exception() if retry_state.outcome else None
        hinted = retry_after_s(error) if error is not None else None
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
                gen_id, model, state.attempt_number, type(error).__name__, status_of(error), wait)
    return before_sleep


def _retrying(settings: LLMSettings, gen_id: str, model: str) -> tenacity.Retrying:
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_retryable),
        wait=_WaitBackoffOrRetryAfter(settings.backoff_initial_s, settings.backoff_max_s),
        stop=(tenacity.stop_after_attempt(settings.max_attempts)
              | _StopWhenWaitBudgetSpent(settings.max_total_wait_s)),
        before_sleep=_log_retry(gen_id, model), reraise=True)


# -- one attempt ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Reply:
    text: str
    finish_reason: str | None
    usage: dict
    response: object | None


def usage_counts(usage: object | None) -> dict:
    """`prompt_tokens, completion_tokens, total_tokens` as ints, None where the provider gave none."""
    counts = {}
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = getattr(usage, name, None) if usage is not None else None
        counts[name] = int(value) if value is not None else None
    if counts["total_tokens"] is None and None not in (counts["prompt_tokens"], counts["completion_tokens"]):
        counts["total_tokens"] = counts["prompt_tokens"] + counts["completion_tokens"]
    return counts


def _litellm_once(row: ModelRow, settings: LLMSettings, prompt: str, stage: StageSettings,
                  key: str | None) -> _Reply:
    """One HTTP request through litellm (its retries and the OpenAI SDK's are off)."""
    extra = {"api_base": row.api_base} if row.api_base else {}
    response = litellm_module().completion(
        model=litellm_model(row, settings), messages=[{"role": "user", "content": prompt}],
        temperature=stage.temperature, max_tokens=stage.max_tokens, timeout=stage.timeout_s,
        num_retries=0, max_retries=0, api_key=key, **extra)
    choices = getattr(response, "choices", None) or []
    if not choices:
        raise EmptyReplyError("the reply has no choices")
    message = getattr(choices[0], "message", None)
    text, finish = (getattr(message, "content", None) or ""), choices[0].finish_reason
    if not text.strip() and finish != "length":
        raise EmptyReplyError(f"the reply has no text (finish_reason={finish})")
    return _Reply(text, finish, usage_counts(getattr(response, "usage", None)), response)


def _offline_once(row: ModelRow, prompt: str, stage_name: str) -> _Reply:
    text, usage = offline_model.generate(prompt, stage=stage_name, model=row.model)
    return _Reply(text, "stop", usage, None)


def cost_usd(row: ModelRow, route: str, usage: dict, response: object | None) -> float | None:
    """The call's cost in USD: 0 for the offline model; the row's `input_cost_per_mtok` and
    `output_cost_per_mtok` when both are set (they win: they are the researcher's own
    prices, e.g. a self-hosted model or a negotiated rate); else litellm's price map;
    else None (unknown, never 0)."""
    if route == OFFLINE_ROUTE:
        return 0.0
    prompt_tokens, completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if row.input_cost_per_mtok is not None and row.output_cost_per_mtok is not None:
        if prompt_tokens is None or completion_tokens is None:
            return None
        return (prompt_tokens * row.input_cost_per_mtok + completion_tokens * row.output_cost_per_mtok) / 1e6
    if response is None:
        return None
    try:
        return float(litellm_module().completion_cost(completion_response=response))
    # litellm raises plain Exception (or ModelNotMappedError) for a model it has no price for;
    # the reply is already paid for and must not be lost over its price: the cost is unknown.
    except Exception as error:
        log.debug("no price in litellm's map for %s: %s", getattr(response, "model", "?"), error)
        return None


# -- the entry point --------------------------------------------------------------------------
def _one_line(text: str, secret: str | None, limit: int = 300) -> str:
    """Whitespace collapsed, litellm's `litellm.X: X:` prefixes dropped, the key masked."""
    line = " ".join(text.split())
    if secret and secret != "no-key":
        line = line.replace(secret, "***")
    line = re.sub(r"^litellm\.\w+:\s*", "", line)
    line = re.sub(r"^(\w+Error|Timeout):\s*", "", line)
    return line[:limit]


def _why_it_stopped(error: BaseException, state: tenacity.RetryCallState | None, settings: LLMSettings,
                    key_var: str | None) -> str:
    if not is_retryable(error):
        status = status_of(error)
        hint = f"; check the key in ${key_var}" if status in (401, 403) and key_var else ""
        return f"not retried (a final error){hint}"
    if state is not None and state.attempt_number < settings.max_attempts:
        return (f"gave up: the next wait of {state.upcoming_sleep:.1f}s would pass "
                f"llm.max_total_wait_s={settings.max_total_wait_s:g}; rerun later")
    return f"gave up after llm.max_attempts={settings.max_attempts}; rerun later"


def _failure(error: BaseException, state: tenacity.RetryCallState | None, row: ModelRow,
             settings: LLMSettings, gen_id: str, key: str | None) -> LLMCallError:
    model, attempts = litellm_model(row, settings), state.attempt_number if state else 1
    status, name = status_of(error), type(error).__name__
    http = f" (HTTP {status})" if status else ""
    message = (f"{gen_id}: model {model} ({row.id}) failed after {attempts} attempt(s): {name}{http}: "
               f"{_one_line(str(error), key)}; {_why_it_stopped(error, state, settings, key_env_var(row, settings))}")
    log.warning("failed gen_id=%s model=%s attempts=%d error=%s status=%s", gen_id, model, attempts, name, status)
    return LLMCallError(message, error_class=name, attempts=attempts, status=status)


def call_model(row: ModelRow, prompt: str, *, stage: str, settings: LLMSettings, gen_id: str) -> Completion:
    """Ask `row`'s model for a reply to `prompt`, within the limits and the retry policy.

    Raises LLMCallError (one-line message: gen_id, model, error class, status, reason) after
    the last attempt, or at once for a final error or a missing key; the caller writes
    nothing for a failed call. Bugs (errors that are not provider errors) propagate as they are.
    """
    model, stage_settings, route = litellm_model(row, settings), settings.stage(stage), route_of(row, settings)
    key = api_key(row, settings)
    if route != OFFLINE_ROUTE:
        litellm_module()  # the one-off import is not part of any call's duration
    cap_key, retrying = concurrency_key(row, settings), _retrying(settings, gen_id, model)
    state: tenacity.RetryCallState | None = None
    started = None  # when the first attempt got its slot: waiting for a slot is not duration
    try:
        for attempt in retrying:
            state = attempt.retry_state
            with attempt, limits(settings).slot(cap_key, row.max_concurrency):
                started = time.monotonic() if started is None else started
                if route == OFFLINE_ROUTE:
                    reply = _offline_once(row, prompt, stage)
                else:
                    reply = _litellm_once(row, settings, prompt, stage_settings, key)
    except provider_errors() as error:
        raise _failure(error, state, row, settings, gen_id, key) from error
    attempts = state.attempt_number if state else 1
    done = Completion(reply.text, model, reply.finish_reason, reply.usage,
                      cost_usd(row, route, reply.usage, reply.response), round(time.monotonic() - started, 3),
                      attempts, stage_settings.temperature, stage_settings.max_tokens,
                      round(state.idle_for if state else 0.0, 3))
    log.info("call gen_id=%s model=%s attempts=%d status=ok finish=%s tokens=%s cost=%s wait=%.2fs duration=%.2fs",
             gen_id, model, attempts, reply.finish_reason, reply.usage.get("total_tokens"), done.cost_usd,
             done.wait_s, done.duration_s)
    return done
