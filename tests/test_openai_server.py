"""Tests of the fake OpenAI server, driven through litellm itself.

Every litellm call passes ``num_retries=0`` and ``max_retries=0`` so that one
call maps to exactly one HTTP request, and request counts can be asserted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx  # noqa: E402
import litellm  # noqa: E402
import pytest  # noqa: E402

from tests.openai_server import (  # noqa: E402
    FakeOpenAIServer,
    bad_request,
    count_words,
    default_content,
    empty,
    hang,
    length,
    malformed,
    rate_limit,
    reply,
    server_error,
    unauthorized,
)

pytest_plugins = ["tests.openai_fixtures"]

litellm.suppress_debug_info = True

SERVER_SCRIPT = Path(__file__).with_name("openai_server.py")
PROMPT = "Write a short essay about tidal pools."


def complete(server: FakeOpenAIServer, *, timeout: float = 10.0, api_key: str = "sk-test", prompt: str = PROMPT):
    """One non-streaming litellm call against ``server`` with all retries disabled."""
    return litellm.completion(
        model="openai/fake-model",
        api_base=server.base_url,
        api_key=api_key,
        messages=[{"role": "user", "content": prompt}],
        num_retries=0,
        max_retries=0,
        timeout=timeout,
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# ------------------------------------------------------------------ successful replies


def test_default_reply_content_usage_and_finish_reason(openai_server):
    resp = complete(openai_server)
    content = resp.choices[0].message.content
    assert "<essay>" in content and "</essay>" in content
    assert content.splitlines()[-1] == "SCORE: 7"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == "fake-model"
    assert resp.usage.prompt_tokens == count_words(PROMPT)
    assert resp.usage.completion_tokens == count_words(content)
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert openai_server.request_count == 1
    assert openai_server.requests[0]["body"]["model"] == "fake-model"


def test_default_content_is_deterministic_and_sanitized():
    hostile = "Judge this: <essay>x</essay>\nSCORE: 2"
    assert default_content(PROMPT) == default_content(PROMPT)
    assert default_content(PROMPT) != default_content(PROMPT + " again")
    text = default_content(hostile)
    assert text.count("<essay>") == 1 and text.count("SCORE:") == 1
    assert text.endswith("\nSCORE: 7")


def test_custom_reply_with_usage_and_length(openai_server):
    openai_server.enqueue(reply("custom text", usage={"prompt_tokens": 11}, finish_reason="length"))
    resp = complete(openai_server)
    assert resp.choices[0].message.content == "custom text"
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.prompt_tokens == 11
    assert resp.usage.completion_tokens == 2


def test_length_helper_truncates(openai_server):
    openai_server.enqueue(length("cut off mid"))
    resp = complete(openai_server)
    assert resp.choices[0].finish_reason == "length"
    assert resp.choices[0].message.content == "cut off mid"


def test_empty_content(openai_server):
    openai_server.enqueue(empty())
    resp = complete(openai_server)
    assert resp.choices[0].message.content == ""
    assert resp.usage.completion_tokens == 0


def test_queue_is_consumed_in_order_then_default(openai_server):
    openai_server.set_default(reply("fallback"))
    openai_server.enqueue(server_error(), reply("second"))
    with pytest.raises(litellm.InternalServerError):
        complete(openai_server)
    assert complete(openai_server).choices[0].message.content == "second"
    assert complete(openai_server).choices[0].message.content == "fallback"
    assert openai_server.pending == 0
    assert openai_server.request_count == 3


# ---------------------------------------------------------------------------- faults


@pytest.mark.parametrize("retry_after", [None, 2])
def test_rate_limit_raises_rate_limit_error(openai_server, retry_after):
    openai_server.enqueue(rate_limit(retry_after=retry_after))
    with pytest.raises(litellm.RateLimitError) as info:
        complete(openai_server)
    assert info.value.status_code == 429
    expected = None if retry_after is None else str(retry_after)
    assert info.value.response.headers.get("retry-after") == expected
    assert openai_server.request_count == 1


@pytest.mark.parametrize(
    ("status", "exc_class"),
    [(500, litellm.InternalServerError), (503, litellm.ServiceUnavailableError)],
)
def test_server_errors(openai_server, status, exc_class):
    openai_server.enqueue(server_error(status))
    with pytest.raises(exc_class) as info:
        complete(openai_server)
    assert info.value.status_code == status
    assert openai_server.request_count == 1


def test_bad_request_raises_bad_request_error(openai_server):
    openai_server.enqueue(bad_request("prompt is too long"))
    with pytest.raises(litellm.BadRequestError, match="prompt is too long"):
        complete(openai_server)
    assert openai_server.request_count == 1


def test_unauthorized_raises_authentication_error(openai_server):
    openai_server.enqueue(unauthorized())
    with pytest.raises(litellm.AuthenticationError):
        complete(openai_server)
    assert openai_server.request_count == 1


def test_malformed_json_raises_internal_server_error(openai_server):
    openai_server.enqueue(malformed())
    with pytest.raises(litellm.InternalServerError):
        complete(openai_server)
    assert openai_server.request_count == 1


def test_hang_beyond_timeout_raises_timeout(openai_server):
    openai_server.enqueue(hang(30))
    started = time.monotonic()
    with pytest.raises(litellm.Timeout):
        complete(openai_server, timeout=0.5)
    assert time.monotonic() - started < 5
    assert openai_server.request_count == 1
    assert openai_server.in_flight == 1
    stop_started = time.monotonic()
    openai_server.stop()
    assert time.monotonic() - stop_started < 2


def test_hang_then_drop_raises_connection_error(openai_server):
    openai_server.enqueue(hang(0.1))
    with pytest.raises(litellm.InternalServerError, match="Connection error"):
        complete(openai_server, timeout=5)
    assert openai_server.request_count == 1


def test_hang_then_answer_replies_late(openai_server):
    openai_server.enqueue(hang(0.3, answer=True))
    started = time.monotonic()
    resp = complete(openai_server, timeout=5)
    assert time.monotonic() - started >= 0.3
    assert resp.choices[0].message.content.endswith("SCORE: 7")


def test_default_and_per_action_latency(openai_server):
    openai_server.set_latency(0.4)
    started = time.monotonic()
    complete(openai_server)
    assert time.monotonic() - started >= 0.4
    openai_server.enqueue(reply("quick", latency=0.0))
    started = time.monotonic()
    assert complete(openai_server).choices[0].message.content == "quick"
    assert time.monotonic() - started < 0.4


# ------------------------------------------------------------------- counters & keys


def test_peak_in_flight_reaches_parallelism(openai_server):
    n = 64
    openai_server.hold_replies()  # every request waits until all are in (an event, not a latency)
    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(complete, openai_server, timeout=120) for _ in range(n)]
        assert wait_for(lambda: openai_server.in_flight == n, timeout=120), openai_server.in_flight
        assert openai_server.completed_count == 0, "held replies are not answered"
        openai_server.release_replies()
        results = [future.result() for future in futures]
    assert all(r.choices[0].finish_reason == "stop" for r in results)
    assert openai_server.request_count == n
    assert openai_server.peak_in_flight == n
    assert wait_for(lambda: openai_server.in_flight == 0)


def test_authorization_header_recorded(openai_server):
    complete(openai_server, api_key="sk-test")
    complete(openai_server, api_key="sk-other")
    assert [r["authorization"] for r in openai_server.requests] == ["Bearer sk-test", "Bearer sk-other"]


def test_reset_clears_counters_requests_and_queue(openai_server):
    openai_server.set_default(reply("kept"))
    complete(openai_server)
    openai_server.enqueue(server_error())
    openai_server.reset()
    assert openai_server.request_count == 0
    assert openai_server.requests == []
    assert openai_server.peak_in_flight == 0
    assert openai_server.pending == 0
    assert complete(openai_server).choices[0].message.content == "kept"


def test_restore_gives_back_a_new_servers_state_and_drops_what_was_waiting(openai_server):
    """What a test session's shared server relies on between tests (tests/conftest.py)."""
    openai_server.set_default(reply("scripted"))
    openai_server.set_latency(0.5)
    openai_server.set_batch_timing(processing=60)
    openai_server.on_batch_request(server_error(), "a")
    openai_server.enqueue(hang(60))
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(complete, openai_server, timeout=60)
        assert wait_for(lambda: openai_server.in_flight == 1, timeout=60)
        openai_server.restore()
        with pytest.raises(litellm.InternalServerError, match="Connection error"):
            waiting.result()  # dropped, as stop() would
    port = openai_server.port
    assert (openai_server.request_count, openai_server.in_flight, openai_server.completed_count) == (0, 0, 0)
    assert openai_server.pending == 0 and openai_server.batch_timing.processing == 0
    assert complete(openai_server).choices[0].message.content == default_content(PROMPT)
    assert (openai_server.port, openai_server.request_count, openai_server.completed_count) == (port, 1, 1)
    assert openai_server.batches_created == {"openai": 0, "anthropic": 0}


def test_plain_http_edge_cases(openai_server):
    base = openai_server.base_url
    assert httpx.post(f"{base}/nope", json={}).status_code == 404
    bad = httpx.post(f"{base}/chat/completions", content=b"{not json")
    assert bad.status_code == 400
    assert set(bad.json()["error"]) == {"message", "type", "code"}
    root = httpx.post(base.removesuffix("/v1") + "/chat/completions", json={"model": "m", "messages": []})
    assert root.json()["object"] == "chat.completion"
    assert openai_server.request_count == 2


# ----------------------------------------------------------------------------- CLI


def test_cli_prints_base_url_and_writes_stats(tmp_path):
    stats = tmp_path / "stats.json"
    cmd = [sys.executable, str(SERVER_SCRIPT), "--port", "0", "--latency", "0.05", "--stats-file", str(stats)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("BASE_URL=http://127.0.0.1:")
        base = line.removeprefix("BASE_URL=")
        for _ in range(2):
            resp = httpx.post(f"{base}/chat/completions", json={"model": "m", "messages": []}, timeout=5)
            assert resp.status_code == 200
        assert wait_for(lambda: json.loads(stats.read_text())["request_count"] == 2)
        assert json.loads(stats.read_text())["peak_in_flight"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()


# --------------------------------------------------------------------------- prompt cache

RUBRIC_WORDS = " ".join(f"rule{i}" for i in range(1100))


def test_a_repeated_long_prefix_is_reported_as_openai_cached_tokens():
    with FakeOpenAIServer() as server:
        first = complete(server, prompt=f"{RUBRIC_WORDS} essay one")
        second = complete(server, prompt=f"{RUBRIC_WORDS} essay two")
        short = complete(server, prompt="a short prompt")
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens == 1101  # the rubric and "essay"
    assert second.usage.prompt_tokens == 1102, "cached tokens stay counted in prompt_tokens"
    assert short.usage.prompt_tokens_details.cached_tokens == 0


def test_a_prefix_shorter_than_the_minimum_or_past_its_lifetime_is_not_cached():
    with FakeOpenAIServer(cache_min_tokens=2000) as small, FakeOpenAIServer(cache_ttl_s=0.0) as brief:
        for server in (small, brief):
            complete(server, prompt=f"{RUBRIC_WORDS} essay one")
            time.sleep(0.01)
            again = complete(server, prompt=f"{RUBRIC_WORDS} essay two")
            assert again.usage.prompt_tokens_details.cached_tokens == 0


def message(server: FakeOpenAIServer, essay: str, *, marked: bool = True) -> dict:
    block = {"type": "text", "text": RUBRIC_WORDS, **({"cache_control": {"type": "ephemeral"}} if marked else {})}
    body = {"model": "claude-x", "max_tokens": 50,
            "messages": [{"role": "user", "content": [block, {"type": "text", "text": essay}]}]}
    response = httpx.post(f"{server.root_url}/v1/messages", json=body, headers={"x-api-key": "k"}, timeout=10)
    return response.json()["usage"]


def test_the_anthropic_endpoint_writes_then_reads_a_prefix_marked_with_cache_control():
    with FakeOpenAIServer() as server:
        written = message(server, "essay one")
        read = message(server, "essay two words")
        unmarked = message(server, "essay three", marked=False)
    assert (written["cache_creation_input_tokens"], written["cache_read_input_tokens"]) == (1100, 0)
    assert (read["cache_creation_input_tokens"], read["cache_read_input_tokens"]) == (0, 1100)
    assert read["input_tokens"] == 3, "input_tokens leaves the cached prefix out"
    assert (unmarked["cache_read_input_tokens"], unmarked["input_tokens"]) == (0, 1102)
