"""Every route litellm knows (openrouter, anthropic, openai with an `api_base`, ...).

litellm is imported once per process, when this provider is first needed
(`litellm_import.litellm_module`). Each `complete` is exactly one HTTP request: litellm's and
the OpenAI SDK's own retries are off, the call engine retries. litellm's HTTP client holds
at most 100 connections per endpoint, key and timeout.
"""

from __future__ import annotations

import logging

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
    """`prompt_tokens, completion_tokens, total_tokens` as ints, None where the provider gave none."""
    counts = {}
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = getattr(usage, name, None) if usage is not None else None
        counts[name] = int(value) if value is not None else None
    if counts["total_tokens"] is None and None not in (counts["prompt_tokens"], counts["completion_tokens"]):
        counts["total_tokens"] = counts["prompt_tokens"] + counts["completion_tokens"]
    return counts


class LiteLLMProvider:
    name = "litellm"

    def __init__(self) -> None:
        litellm_module()  # the one-off import is not part of any call's duration

    def key_env_var(self, row, route: str) -> str | None:
        if row.api_key_env:
            return row.api_key_env
        if route in NO_KEY_ROUTES or (route == "openai" and row.api_base):
            return None
        return KEY_ENV_BY_ROUTE.get(route, f"{route.upper()}_API_KEY")

    def complete(self, request: CallRequest) -> Reply:
        row = request.row
        extra = {"api_base": row.api_base} if row.api_base else {}
        key = request.api_key if request.api_key is not None else ("no-key" if row.api_base else None)
        response = litellm_module().completion(
            model=request.model, messages=[{"role": "user", "content": request.prompt}],
            temperature=request.temperature, max_tokens=request.max_tokens, timeout=request.timeout_s,
            num_retries=0, max_retries=0, api_key=key, **extra)
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise http_errors.EmptyReplyError("the reply has no choices")
        message = getattr(choices[0], "message", None)
        text, finish = (getattr(message, "content", None) or ""), choices[0].finish_reason
        if not text.strip() and finish != "length":
            raise http_errors.EmptyReplyError(f"the reply has no text (finish_reason={finish})")
        return Reply(text, finish, usage_counts(getattr(response, "usage", None)), response)

    def errors(self) -> tuple[type[BaseException], ...]:
        """litellm's exceptions (all OpenAI SDK errors), HTTP transport errors, an empty reply."""
        import httpx
        import openai

        return openai.OpenAIError, httpx.HTTPError, http_errors.EmptyReplyError

    def retry_decision(self, error: BaseException) -> RetryDecision | None:
        return http_errors.retry_decision(error)

    def cost_usd(self, row, reply: Reply) -> float | None:
        """The row's own prices when it has them (`daydream.pricing`: they win, being the
        researcher's own rates); else litellm's `completion_cost` of the reply, which knows the
        model's tiers; else None (unknown, never 0)."""
        if row.input_cost_per_mtok is not None and row.output_cost_per_mtok is not None:
            prices = pricing.direct_prices(row, self.name)
            return prices.cost(reply.usage.get("prompt_tokens"), reply.usage.get("completion_tokens"))
        if reply.response is None:
            return None
        try:
            return float(litellm_module().completion_cost(completion_response=reply.response))
        # litellm raises plain Exception (or ModelNotMappedError) for a model it has no price for;
        # the reply is already paid for and must not be lost over its price: the cost is unknown.
        except Exception as error:
            log.debug("no price in litellm's map for %s: %s", getattr(reply.response, "model", "?"), error)
            return None
