"""The provider seam: the registry by route, the offline provider, and how HTTP errors are
classified for retry (with real litellm exceptions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx

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
