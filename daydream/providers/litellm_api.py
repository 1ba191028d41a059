"""Every route litellm knows (openrouter, anthropic, openai with an `api_base`, ...).

litellm is imported once per process, when this provider is first needed
(`litellm_import.litellm_module`). Each `complete` is exactly one HTTP request: litellm's and
the OpenAI SDK's own retries are off, the call engine retries. litellm's HTTP client holds
enough connections for the largest cap (`litellm_import`).
"""

from __future__ import annotations

import asyncio
import logging
import threading

from daydream import pricing
from daydream.providers import CallRequest, Reply, RetryDecision, http_errors
from daydream.providers.litellm_import import litellm_module

log = logging.getLogger(__name__)

KEY_ENV_BY_ROUTE = {
    "openrouter": "OPENROUTER_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY",
    "gemini": "GEMINI_API_KEY", "mistral": "MISTRAL_API_KEY", "groq": "GROQ_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY", "together_ai": "TOGETHERAI_API_KEY", "xai": "XAI_API_KEY",
}
NO_KEY_ROUTES = frozenset({"ollama", "ollama_chat", "hosted_vllm", "lm_studio"})

def usage_counts(usage: object | None) -> dict:
    """`prompt_tokens, completion_tokens, total_tokens` as ints, None where the provider gave none,
    plus the prompt-cache counts where the provider reports them (`cache_usage`)."""
    counts = {}
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = getattr(usage, name, None) if usage is not None else None
        counts[name] = int(value) if value is not None else None
    if counts["total_tokens"] is None and None not in (counts["prompt_tokens"], counts["completion_tokens"]):
        counts["total_tokens"] = counts["prompt_tokens"] + counts["completion_tokens"]
    return counts | cache_usage(usage)


def _field(holder: object | None, name: str):
    if holder is None:
        return None
    return holder.get(name) if isinstance(holder, dict) else getattr(holder, name, None)


def cache_usage(usage: object | None) -> dict:
    """`cached_tokens` (prompt tokens read from the provider's cache: OpenAI's
    `prompt_tokens_details.cached_tokens`, Anthropic's `cache_read_input_tokens`) and
    `cache_creation_tokens` (written to it: Anthropic's `cache_creation_input_tokens`), each only
    where the reply reports it. litellm counts both inside `prompt_tokens`."""
    details = _field(usage, "prompt_tokens_details")
    found = {}
    for key, sources in ((pricing.CACHED_KEY, ((details, "cached_tokens"), (usage, "cache_read_input_tokens"))),
                         (pricing.CACHE_WRITE_KEY, ((usage, "cache_creation_input_tokens"),
                                                    (details, "cache_creation_tokens")))):
        values = [_field(holder, name) for holder, name in sources]
        value = next((v for v in values if isinstance(v, int | float) and not isinstance(v, bool)), None)
        if value is not None:
            found[key] = int(value)
    return found


def cache_breakpoint(request: CallRequest) -> bool:
    """Whether the request's shared prefix is marked for the provider's prompt cache: on a
    route that needs it marked (Anthropic: `cache_control`), when the prefix reaches the
    model's minimum (`pricing.cache_min_tokens`, counted with litellm's tokenizer) and leaves
    some prompt after it. OpenAI caches a long prefix without a mark."""
    prefix = request.cache_prefix
    if request.route not in pricing.MARKED_CACHE_ROUTES or not prefix or len(prefix) >= len(request.prompt):
        return False
    tokens = litellm_module().token_counter(model=request.model, text=prefix)
    return tokens >= pricing.cache_min_tokens(request.row, request.route)


def message_content(request: CallRequest) -> str | list[dict]:
    """The user message: the prompt as one text, or two blocks with the shared prefix marked
    `cache_control` (`cache_breakpoint`)."""
    if not cache_breakpoint(request):
        return request.prompt
    prefix = request.cache_prefix
    return [{"type": "text", "text": prefix, "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": request.prompt[len(prefix):]}]


class _CallLoop:
    """One asyncio event loop per process, in a daemon thread, on which every request is made.
    Job threads hand it a request and wait for the reply; the caps (`daydream.limits`) are
    taken in the job threads, so the loop never holds more requests than they allow."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="daydream-calls", daemon=True).start()

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


class LiteLLMProvider:
    name = "litellm"

    def __init__(self) -> None:
        litellm_module()  # the one-off import is not part of any call's duration
        self._loop = _CallLoop()

    @staticmethod
    def key_env_var(row, route: str) -> str | None:
        if row.api_key_env:
            return row.api_key_env
        if route in NO_KEY_ROUTES or (route == "openai" and row.api_base):
            return None
        return KEY_ENV_BY_ROUTE.get(route, f"{route.upper()}_API_KEY")

    def complete(self, request: CallRequest) -> Reply:
        """One request, made on the process's call loop (litellm's async client, whose
        connection pool holds the caps; its sync client would hold 100), waited for here."""
        return self._loop.run(self.acomplete(request))

    async def acomplete(self, request: CallRequest) -> Reply:
        """One request on the running event loop (the call engine's, or the process's call loop)."""
        row = request.row
        extra = {"api_base": row.api_base} if row.api_base else {}
        key = request.api_key if request.api_key is not None else ("no-key" if row.api_base else None)
        response = await litellm_module().acompletion(
            model=request.model, messages=[{"role": "user", "content": message_content(request)}],
            temperature=request.temperature, max_tokens=request.max_tokens, timeout=request.timeout_s,
            num_retries=0, max_retries=0, api_key=key, **extra)
        usage = usage_counts(getattr(response, "usage", None))
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise http_errors.EmptyReplyError("the reply has no choices", usage=usage)
        message = getattr(choices[0], "message", None)
        text, finish = (getattr(message, "content", None) or ""), choices[0].finish_reason
        if finish in http_errors.REFUSAL_FINISH_REASONS:
            raise http_errors.RefusedReplyError(f"the provider refused the prompt (finish_reason={finish})",
                                                usage=usage, finish_reason=finish, text=text)
        if not text.strip() and finish != "length":
            raise http_errors.EmptyReplyError(f"the reply has no text (finish_reason={finish})", usage=usage,
                                              finish_reason=finish, text=text)
        return Reply(text, finish, usage, response, request.route)

    def errors(self) -> tuple[type[BaseException], ...]:
        """litellm's exceptions (all OpenAI SDK errors), HTTP transport errors (httpx's and
        aiohttp's, should one pass litellm unwrapped), a timeout, an empty reply."""
        import aiohttp
        import httpx
        import openai

        return openai.OpenAIError, httpx.HTTPError, aiohttp.ClientError, TimeoutError, http_errors.BilledReplyError

    def retry_decision(self, error: BaseException) -> RetryDecision | None:
        return http_errors.retry_decision(error)

    def cost_usd(self, row, reply: Reply) -> float | None:
        """The reply's cost from its usage at `pricing.direct_prices` (the row's own prices,
        else litellm's price map, looked up once per model), cached and cache-write tokens at
        their rates (`pricing.usage_cost`); None when unknown, never 0."""
        return pricing.usage_cost(pricing.direct_prices(row, reply.route), reply.usage)
