"""The two batch providers against the loopback server: OpenAI's Batch API through litellm and
Anthropic's Message Batches through the SDK. Submit, status, results of every kind, cancel,
finding a batch whose create answer was lost, and the documented limits."""

from __future__ import annotations

import time

import pytest

from daydream.experiment import ModelRow
from daydream.providers import BatchTarget, CallRequest, batch_provider_for, has_batch_api
from tests.openai_server import FakeOpenAIServer, bad_request, expire, server_error

pytest_plugins = ["tests.openai_fixtures"]


def request(prompt: str, route: str) -> CallRequest:
    row = ModelRow(id="judge", model="claude-haiku-4-5" if route == "anthropic" else "gpt-4o-mini",
                   provider="p", display_name="J", route=route)
    return CallRequest(row, route, f"{route}/{row.model}", "evaluation", prompt, 0.2, 256, 30, None)


def target(server: FakeOpenAIServer, route: str) -> BatchTarget:
    base = server.root_url if route == "anthropic" else server.base_url
    return BatchTarget(route, "m", base, "sk-loop")


def submit(server, route, ids, label="pb_test"):
    provider = batch_provider_for(route)
    lines = [provider.request_line(c, request(f"Judge essay {c}.", route)) for c in ids]
    return provider, provider.submit(target(server, route), lines, label)


def ended(provider, server, route, batch_id):
    deadline = time.monotonic() + 20
    while not (state := provider.status(target(server, route), batch_id)).ended:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return state


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_every_kind_of_result_is_read_by_custom_id(openai_server, route):
    openai_server.on_batch_request(server_error(503), "v_busy")
    openai_server.on_batch_request(bad_request("prompt too long"), "v_long")
    openai_server.on_batch_request(expire(), "v_late")
    openai_server.set_batch_results_reversed()
    provider, batch_id = submit(openai_server, route, ["v_ok", "v_busy", "v_long", "v_late"])
    state = ended(provider, openai_server, route, batch_id)
    assert state.total == 4 and state.done == 1
    results = {r.custom_id: r for r in provider.results(target(openai_server, route), batch_id,
                                                        ["v_ok", "v_busy", "v_long", "v_late", "v_never"])}
    ok = results["v_ok"]
    assert ok.kind == "succeeded" and ok.reply.text.endswith("SCORE: 7") and ok.reply.finish_reason == "stop"
    assert ok.reply.usage["prompt_tokens"] > 0 and ok.reply.usage["total_tokens"] == (
        ok.reply.usage["prompt_tokens"] + ok.reply.usage["completion_tokens"])
    assert (results["v_busy"].kind, results["v_busy"].status) == ("errored", 503 if route == "openai" else 500)
    assert (results["v_long"].kind, results["v_long"].status) == ("errored", 400)
    assert "prompt too long" in results["v_long"].error
    assert results["v_late"].kind == "expired" and results["v_never"].kind == "canceled"
    assert openai_server.custom_id_counts(route) == dict.fromkeys(["v_ok", "v_busy", "v_long", "v_late"], 1)


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_a_cancelled_batch_ends_and_its_unfinished_requests_count_as_cancelled(openai_server, route):
    openai_server.set_batch_timing(processing=60)
    provider, batch_id = submit(openai_server, route, ["v_a", "v_b"])
    assert not provider.status(target(openai_server, route), batch_id).ended
    provider.cancel(target(openai_server, route), batch_id)
    ended(provider, openai_server, route, batch_id)
    kinds = {r.kind for r in provider.results(target(openai_server, route), batch_id, ["v_a", "v_b"])}
    assert kinds == {"canceled"}


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_a_batch_whose_create_answer_was_lost_is_found_by_its_label_or_its_size(openai_server, route):
    since = time.time()
    provider, batch_id = submit(openai_server, route, ["v_a", "v_b", "v_c"], label="pb_lost")
    submit(openai_server, route, ["v_x"], label="pb_other")
    found = provider.find(target(openai_server, route), "pb_lost", since, 3, set())
    assert found == batch_id
    assert provider.find(target(openai_server, route), "pb_lost", since, 3, {batch_id}) is None


def test_the_create_request_is_never_retried_by_the_client(openai_server):
    openai_server.fail_batch_validation("Enqueued token limit reached.", provider="anthropic")
    provider = batch_provider_for("anthropic")
    with pytest.raises(provider.errors()):
        submit(openai_server, "anthropic", ["v_a"])
    assert openai_server.endpoint_counts["POST /v1/messages/batches"] == 1


def test_routes_with_a_batch_api_and_their_limits():
    assert has_batch_api("openai") and has_batch_api("anthropic") and not has_batch_api("openrouter")
    assert (batch_provider_for("openai").max_requests, batch_provider_for("anthropic").max_requests) == (
        50_000, 100_000)


def test_a_batch_that_fails_validation_as_a_whole_gives_its_reason_and_can_be_cancelled(openai_server):
    """The SDK's BatchError objects are read as attributes: the failure is reported per request
    (so each can be submitted again) and a cancel of the ended batch is not refused."""
    openai_server.fail_batch_validation("Enqueued token limit reached.", code="token_limit_exceeded",
                                        provider="openai")
    provider, batch_id = submit(openai_server, "openai", ["v_a", "v_b"])
    state = ended(provider, openai_server, "openai", batch_id)
    assert state.status == "failed"
    results = provider.results(target(openai_server, "openai"), batch_id, ["v_a", "v_b"])
    assert [(r.custom_id, r.kind, r.status) for r in results] == [("v_a", "errored", None), ("v_b", "errored", None)]
    assert all("token_limit_exceeded: Enqueued token limit reached." in r.error for r in results)
    provider.cancel(target(openai_server, "openai"), batch_id)  # ended: nothing to cancel, no 400


def test_a_batch_line_answered_without_text_is_a_billed_reply_with_its_usage(openai_server):
    from tests.openai_server import reply

    openai_server.on_batch_request(reply("", usage={"completion_tokens": 9}), "v_empty")
    openai_server.on_batch_request(reply("no", finish_reason="content_filter", usage={"completion_tokens": 1}),
                                   "v_refused")
    provider, batch_id = submit(openai_server, "openai", ["v_empty", "v_refused"])
    ended(provider, openai_server, "openai", batch_id)
    results = {r.custom_id: r for r in provider.results(target(openai_server, "openai"), batch_id,
                                                        ["v_empty", "v_refused"])}
    assert results["v_empty"].kind == "succeeded" and results["v_empty"].reply.text == ""
    assert results["v_empty"].reply.usage["completion_tokens"] == 9
    assert results["v_refused"].reply.finish_reason == "content_filter"
