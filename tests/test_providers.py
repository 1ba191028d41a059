"""The provider seam: the registry by route, the offline provider, and how HTTP errors are
classified for retry (with real litellm exceptions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from daydream import providers
from daydream.experiment import ModelRow
from daydream.providers import CallRequest, http_errors
from daydream.providers.offline import OfflineProvider


def row(**overrides) -> ModelRow:
    fields = dict(id="m", model="some-model", provider="p", display_name="M", route="", api_base="",
                  api_key_env="", max_concurrency=None, input_cost_per_mtok=None, output_cost_per_mtok=None)
    return ModelRow(**{**fields, **overrides})


def test_the_offline_route_has_its_own_provider_and_every_other_route_goes_to_litellm():
    assert isinstance(providers.provider_for("offline"), OfflineProvider)
    assert providers.provider_for("openrouter").name == "litellm"
    assert providers.provider_for("anthropic") is providers.provider_for("openrouter"), "one instance per process"


def test_key_variables_come_from_the_route_or_the_row():
    litellm = providers.provider_for("openrouter")
    assert litellm.key_env_var(row(), "openrouter") == "OPENROUTER_API_KEY"
    assert litellm.key_env_var(row(), "somecloud") == "SOMECLOUD_API_KEY"
    assert litellm.key_env_var(row(api_key_env="MY_KEY"), "openrouter") == "MY_KEY"
    assert litellm.key_env_var(row(api_base="http://127.0.0.1:9/v1"), "openai") is None
    assert providers.provider_for("offline").key_env_var(row(), "offline") is None


def test_the_offline_provider_replies_per_stage_for_free_and_never_retries():
    offline = providers.provider_for("offline")
    request = CallRequest(row(route="offline"), "offline", "offline/some-model", "evaluation", "Judge it.", 0.2, 100, 5, None)
    reply = offline.complete(request)
    assert reply.text.splitlines()[-1].startswith("SCORE: ")
    assert offline.cost_usd(request.row, reply) == 0.0
    assert offline.retry_decision(RuntimeError("x")) is None and offline.errors() == ()


# -- classification, with real litellm exceptions ----------------------------------------------
def _response(status: int, headers: dict | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers or {}, request=httpx.Request("POST", "http://127.0.0.1/v1"))


def test_rate_limits_5xx_timeouts_and_connection_errors_are_retried_other_4xx_are_final():
    import litellm

    retried = [litellm.RateLimitError("slow", "openai", "m", response=_response(429)),
               litellm.InternalServerError("boom", "openai", "m", response=_response(500)),
               litellm.BadGatewayError("gw", "openai", "m", response=_response(502)),
               litellm.ServiceUnavailableError("busy", "openai", "m", response=_response(503)),
               litellm.Timeout("slow", model="m", llm_provider="openai"),
               litellm.APIConnectionError("reset", "openai", "m")]
    final = [litellm.BadRequestError("bad", "m", "openai", response=_response(400)),
             litellm.AuthenticationError("key", "openai", "m", response=_response(401)),
             litellm.NotFoundError("gone", "m", "openai", response=_response(404)),
             litellm.ContextWindowExceededError("long", "m", "openai", response=_response(400)),
             litellm.UnprocessableEntityError("odd", "m", "openai", response=_response(422)),
             ValueError("a bug, not a provider error")]
    assert [http_errors.retry_decision(e).kind for e in retried] == ["rate_limit"] + ["transient"] * 5
    assert [http_errors.retry_decision(e) for e in final] == [None] * len(final)


def test_retry_after_is_read_as_seconds_as_an_http_date_and_as_milliseconds():
    import litellm

    def limited(headers):
        return litellm.RateLimitError("slow", "openai", "m", response=_response(429, headers))

    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert http_errors.retry_after_s(limited({"Retry-After": "7"})) == 7.0
    assert 28 <= http_errors.retry_after_s(limited({"Retry-After": later})) <= 30
    assert http_errors.retry_after_s(limited({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    assert http_errors.retry_after_s(limited({})) is None
    assert http_errors.retry_after_s(limited({"Retry-After": "soon"})) is None
    assert http_errors.retry_decision(limited({"Retry-After": "7"})).retry_after_s == 7.0


def test_cached_and_cache_write_tokens_come_from_either_providers_usage():
    from litellm.types.utils import PromptTokensDetailsWrapper, Usage

    from daydream.providers.litellm_api import usage_counts

    openai_usage = Usage(prompt_tokens=1200, completion_tokens=10, total_tokens=1210,
                         prompt_tokens_details=PromptTokensDetailsWrapper(cached_tokens=1024))
    anthropic_usage = Usage(prompt_tokens=1200, completion_tokens=10, total_tokens=1210,
                            cache_creation_input_tokens=1100, cache_read_input_tokens=0)
    assert usage_counts(openai_usage) == {"prompt_tokens": 1200, "completion_tokens": 10, "total_tokens": 1210,
                                          "cached_tokens": 1024}
    assert usage_counts(anthropic_usage)["cache_creation_tokens"] == 1100
    assert usage_counts(anthropic_usage)["cached_tokens"] == 0
    assert "cached_tokens" not in usage_counts(None)


def test_an_anthropic_request_marks_a_long_shared_prefix_for_the_cache_and_others_send_plain_text():
    from daydream.providers.litellm_api import message_content

    rubric = "judge the essay by what it claims " * 200  # 1,400 tokens
    claude = row(model="claude-sonnet-4-5", route="anthropic")

    def request(route: str, prefix: str, prompt: str) -> CallRequest:
        return CallRequest(claude, route, f"{route}/claude-sonnet-4-5", "evaluation", prompt, 0.0, 10, 5, None, cache_prefix=prefix)

    marked = message_content(request("anthropic", rubric, rubric + "the essay"))
    assert marked == [{"type": "text", "text": rubric, "cache_control": {"type": "ephemeral"}},
                      {"type": "text", "text": "the essay"}]
    assert message_content(request("openai", rubric, rubric + "the essay")) == rubric + "the essay"
    assert message_content(request("anthropic", "short rubric ", "short rubric the essay")) == \
        "short rubric the essay", "below the model's minimum (1,024 tokens)"


def test_a_reply_with_cached_tokens_costs_them_at_the_cached_rate():
    from daydream.providers import Reply

    priced = row(input_cost_per_mtok=3, output_cost_per_mtok=15, cached_input_cost_per_mtok=0.3,
                 cache_write_cost_per_mtok=3.75)
    usage = {"prompt_tokens": 2000, "completion_tokens": 100, "total_tokens": 2100, "cached_tokens": 1000,
             "cache_creation_tokens": 500}
    cost = providers.provider_for("anthropic").cost_usd(priced, Reply("x", "stop", usage, None, "anthropic"))
    assert cost * 1e6 == pytest.approx(500 * 3 + 1000 * 0.3 + 500 * 3.75 + 100 * 15)


def test_through_litellm_an_anthropic_route_writes_then_reads_its_marked_prefix_and_pays_the_cached_rates():
    from tests.openai_server import FakeOpenAIServer

    rubric = "judge the essay by what it claims " * 200
    with FakeOpenAIServer() as server:
        claude = row(model="claude-sonnet-4-5", route="anthropic", api_base=server.root_url, input_cost_per_mtok=3,
                     output_cost_per_mtok=15, cached_input_cost_per_mtok=0.3, cache_write_cost_per_mtok=3.75)
        provider = providers.provider_for("anthropic")
        replies = [provider.complete(CallRequest(claude, "anthropic", "anthropic/claude-sonnet-4-5", "evaluation",
                                                 rubric + essay, 0.0, 50, 10, "k", cache_prefix=rubric))
                   for essay in ("the first essay", "the second essay")]
    assert [r.usage["cache_creation_tokens"] for r in replies] == [1400, 0]
    assert [r.usage["cached_tokens"] for r in replies] == [0, 1400]
    for reply in replies:
        usage = reply.usage
        plain = usage["prompt_tokens"] - usage["cached_tokens"] - usage["cache_creation_tokens"]
        expected = (plain * 3 + usage["cached_tokens"] * 0.3 + usage["cache_creation_tokens"] * 3.75
                    + usage["completion_tokens"] * 15) / 1e6
        assert provider.cost_usd(claude, reply) == pytest.approx(expected)
