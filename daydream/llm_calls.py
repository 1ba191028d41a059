"""Calling models (SPEC §7): one entry point, `call_model`, for the offline model and litellm.

- litellm is imported lazily, once per process, with `LITELLM_LOCAL_MODEL_COST_MAP=True`
  (no network fetch of the price map). Rules run in the Snakemake process
  (`--force-use-threads`), so thousands of calls share one import and one set of limits.
- Concurrency: a global semaphore caps calls in flight; each model has its own cap
  (`max_concurrency` column). One function, `concurrency_key`, says which calls share a cap.
- Retries: tenacity, exponential backoff with jitter on 429, 5xx, timeouts and connection
  errors, honouring `Retry-After`; capped attempts and capped total wait; other errors are final.
- Keys come only from the environment and are never logged or returned.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

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


class LLMCallError(RuntimeError):
    """A call that failed for good; the message is one line: gen_id, model, error class, reason."""

    def __init__(self, message: str, *, error_class: str, attempts: int):
        super().__init__(message)
        self.error_class = error_class
        self.attempts = attempts


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
    text: str
    model: str
    finish_reason: str | None
    usage: dict
    cost_usd: float | None
    duration_s: float
    attempts: int

    def truncated(self, max_tokens: int) -> bool:
        completion_tokens = (self.usage or {}).get("completion_tokens") or 0
        return self.finish_reason == "length" or completion_tokens >= max_tokens


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


# -- concurrency ------------------------------------------------------------------------------
class ConcurrencyLimits:
    """A global cap on calls in flight plus one cap per concurrency key, shared by all threads."""

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

    def slot(self, key: str, cap: int | None):
        return _Slot(self._global, self.for_key(key, cap))


class _Slot:
    def __init__(self, *semaphores: threading.BoundedSemaphore):
        self._semaphores = semaphores

    def __enter__(self):
        for semaphore in reversed(self._semaphores):  # per-model first, then a global slot
            semaphore.acquire()

    def __exit__(self, *exc):
        for semaphore in self._semaphores:
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
    """Calls to the same model string at the same endpoint share one per-model cap."""
    return f"{litellm_model(row, settings)}@{row.api_base}"


# -- litellm ----------------------------------------------------------------------------------
_LITELLM = None
_LITELLM_LOCK = threading.Lock()


def litellm_module():
    """litellm, imported once per process with the local price map (no network)."""
    global _LITELLM
    with _LITELLM_LOCK:
        if _LITELLM is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm

            litellm.suppress_debug_info = True
            litellm.telemetry = False
            _LITELLM = litellm
        return _LITELLM


RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})


def status_of(error: BaseException) -> int | None:
    status = getattr(error, "status_code", None)
    return status if isinstance(status, int) else None


def is_retryable(error: BaseException) -> bool:
    """429, 5xx, timeouts and connection failures are transient; other errors are final."""
    name = type(error).__name__
    if name in ("Timeout", "APIConnectionError", "RateLimitError", "InternalServerError",
                "ServiceUnavailableError"):
        return True
    status = status_of(error)
    return status in RETRYABLE_STATUS if status is not None else False


def retry_after_s(error: BaseException) -> float | None:
    """Seconds from a `Retry-After` header on the error's HTTP response, if any."""
    headers = getattr(error, "litellm_response_headers", None) or getattr(
        getattr(error, "response", None), "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


class _WaitRetryAfter(tenacity.wait.wait_base):
    """Exponential backoff with full jitter, or the server's Retry-After when it says more."""

    def __init__(self, initial: float, maximum: float):
        self._backoff = tenacity.wait_random_exponential(multiplier=initial, max=maximum)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        backoff = self._backoff(retry_state)
        error = retry_state.outcome.exception() if retry_state.outcome else None
        hinted = retry_after_s(error) if error is not None else None
        return max(backoff, hinted) if hinted is not None else backoff


def _log_retry(gen_id: str, model: str):
    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception()
        wait = state.next_action.sleep if state.next_action else 0.0
        level = logging.WARNING if wait >= 10 else logging.INFO
        log.log(level, "retry gen_id=%s model=%s attempt=%d error=%s status=%s wait=%.1fs",
                gen_id, model, state.attempt_number, type(error).__name__, status_of(error), wait)
    return before_sleep


def cost_usd(row: ModelRow, usage: dict, response: object | None) -> float | None:
    """Cost from the model row's per-million-token prices, else litellm's price map, else None."""
    if row.input_cost_per_mtok is not None and row.output_cost_per_mtok is not None:
        return (usage.get("prompt_tokens", 0) * row.input_cost_per_mtok
                + usage.get("completion_tokens", 0) * row.output_cost_per_mtok) / 1e6
    if response is None:
        return None
    try:
        return float(litellm_module().completion_cost(completion_response=response))
    except Exception as error:  # litellm raises plain Exception for models without a price
        log.debug("no price for %s: %s", getattr(response, "model", "?"), error)
        return None


def api_key(row: ModelRow, settings: LLMSettings) -> str | None:
    """The key from the environment; a placeholder for keyless OpenAI-compatible servers."""
    var = key_env_var(row, settings)
    if var is None:
        return "no-key" if row.api_base else None
    key = os.environ.get(var)
    if not key:
        raise LLMCallError(f"model {row.id}: environment variable {var} is not set; export it",
                           error_class="MissingKey", attempts=0)
    return key


def _litellm_once(row: ModelRow, settings: LLMSettings, prompt: str, stage: StageSettings):
    """One HTTP call through litellm (its own retries off: ours are the only ones)."""
    extra = {"api_base": row.api_base} if row.api_base else {}
    response = litellm_module().completion(
        model=litellm_model(row, settings), messages=[{"role": "user", "content": prompt}],
        temperature=stage.temperature, max_tokens=stage.max_tokens, timeout=stage.timeout_s,
        num_retries=0, max_retries=0, api_key=api_key(row, settings), **extra)
    choice = response.choices[0]
    usage = getattr(response, "usage", None)
    counts = {k: int(getattr(usage, k, 0) or 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return choice.message.content or "", choice.finish_reason, counts, response


def _offline_once(row: ModelRow, prompt: str, stage_name: str):
    text, usage = offline_model.generate(prompt, stage=stage_name, model=row.model)
    return text, "stop", usage, None


def _retrying(settings: LLMSettings, gen_id: str, model: str) -> tenacity.Retrying:
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_retryable),
        wait=_WaitRetryAfter(settings.backoff_initial_s, settings.backoff_max_s),
        stop=(tenacity.stop_after_attempt(settings.max_attempts)
              | tenacity.stop_after_delay(settings.max_total_wait_s)),
        before_sleep=_log_retry(gen_id, model), reraise=True)


def call_model(row: ModelRow, prompt: str, *, stage: str, settings: LLMSettings, gen_id: str) -> Completion:
    """Ask `row`'s model for a reply to `prompt`, within the limits and the retry policy.

    Raises LLMCallError (one-line message: gen_id, model, error class, reason) after the last
    attempt; the caller writes nothing for a failed call.
    """
    model, stage_settings = litellm_model(row, settings), settings.stage(stage)
    retrying, started = _retrying(settings, gen_id, model), time.monotonic()
    with limits(settings).slot(concurrency_key(row, settings), row.max_concurrency):
        try:
            for attempt in retrying:
                with attempt:
                    if route_of(row, settings) == OFFLINE_ROUTE:
                        text, finish, usage, response = _offline_once(row, prompt, stage)
                    else:
                        text, finish, usage, response = _litellm_once(row, settings, prompt, stage_settings)
        except LLMCallError:
            raise
        except Exception as error:  # every provider error class ends here, classified and logged
            attempts = retrying.statistics.get("attempt_number", 1)
            reason = " ".join(str(error).split())[:300]
            raise LLMCallError(f"{gen_id}: model {model} failed after {attempts} attempt(s): "
                               f"{type(error).__name__}: {reason}",
                               error_class=type(error).__name__, attempts=attempts) from error
    attempts = retrying.statistics.get("attempt_number", 1)
    done = Completion(text, model, finish, usage, cost_usd(row, usage, response),
                      round(time.monotonic() - started, 3), attempts)
    log.info("call gen_id=%s model=%s attempts=%d finish=%s tokens=%s cost=%s duration=%.2fs",
             gen_id, model, attempts, finish, usage.get("total_tokens"), done.cost_usd, done.duration_s)
    return done
