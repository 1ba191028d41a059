"""`calls.call_model` against the loopback OpenAI-protocol server: every fault, with the exact
number of HTTP requests it costs; retry classification with real litellm exceptions; cost;
concurrency caps; keys never logged."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from daydream import calls
from daydream.calls import LLMCallError, call_model
from daydream.experiment import ModelRow
from daydream.limits import ConcurrencyLimits
from daydream.settings import LLMSettings
from tests.conftest import llm_settings
from tests.openai_server import (
    FakeOpenAIServer,
    bad_request,
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

PROMPT = "Write about tidal pools and weak ties."
KEY = "sk-loopback-0123456789abcdef-SECRET"
FAST = llm_settings(max_concurrency=8, max_attempts=4, max_total_wait_s=30, backoff_initial_s=0.01,
                    backoff_max_s=0.05, stages={"draft": {"temperature": 0.5, "max_tokens": 100, "timeout_s": 2}})


def loop_row(server: FakeOpenAIServer, **overrides) -> ModelRow:
    fields = dict(id="loop", model="fake-model", provider="test", display_name="Loopback", route="openai",
                  api_base=server.base_url)
    return ModelRow(**{**fields, **overrides})


def ask(server: FakeOpenAIServer, settings: LLMSettings = FAST, limits: ConcurrencyLimits | None = None,
        sleep=time.sleep, **row_overrides) -> calls.Completion:
    """One call; calls that share `limits` (a run's caps, `Run.limits`) share the caps. `sleep`
    waits between attempts (call_model's: a test passes one that records or blocks)."""
    return call_model(loop_row(server, **row_overrides), PROMPT, stage="draft", settings=settings, gen_id="d_test1",
                      limits=limits, sleep=sleep)


def failure(server: FakeOpenAIServer, settings: LLMSettings = FAST, sleep=time.sleep, **row_overrides) -> LLMCallError:
    with pytest.raises(LLMCallError) as caught:
        ask(server, settings, sleep=sleep, **row_overrides)
    return caught.value


class Sleeps(list):
    """A `sleep` for call_model that sleeps not at all and records (seconds, requests the server had
    received by then)."""

    def __init__(self, server: FakeOpenAIServer):
        super().__init__()
        self.server = server

    def __call__(self, seconds: float) -> None:
        self.append((seconds, self.server.request_count))


# -- the fault matrix -------------------------------------------------------------------------
def test_two_rate_limits_then_a_reply_cost_three_requests_and_three_attempts(openai_server):
    openai_server.enqueue(rate_limit(), rate_limit(), reply("third time lucky"))
    done = ask(openai_server)
    assert openai_server.request_count == 3
    assert done.attempts == 3 and done.text == "third time lucky" and done.finish_reason == "stop"


def test_retry_after_is_waited_for_before_the_next_request(openai_server):
    openai_server.enqueue(rate_limit(retry_after=1), reply())
    slept = Sleeps(openai_server)
    done = ask(openai_server, sleep=slept)
    assert openai_server.request_count == 2 and done.attempts == 2
    ((seconds, requests_then),) = slept  # one wait, after the first request and before the second
    assert requests_then == 1
    # Retry-After (1 s) plus at most backoff_initial_s of jitter; the backoff alone is about 0.02 s
    assert 1.0 <= seconds <= 1.02 and done.wait_s == round(seconds, 3)


def test_retry_after_beyond_the_wait_budget_ends_the_call_at_once(openai_server):
    openai_server.enqueue(rate_limit(retry_after=60))
    slept = Sleeps(openai_server)
    error = failure(openai_server, replace(FAST, max_total_wait_s=5), sleep=slept)
    assert slept == [] and openai_server.request_count == 1
    assert error.error_class == "RateLimitError" and error.status == 429 and error.attempts == 1
    assert "llm.max_total_wait_s=5" in str(error)


def test_server_errors_500_and_503_are_retried(openai_server):
    openai_server.enqueue(server_error(500), server_error(503), reply())
    assert ask(openai_server).attempts == 3
    assert openai_server.request_count == 3


def test_persistent_server_errors_fail_after_max_attempts_with_a_one_line_reason(openai_server):
    openai_server.set_default(server_error(503))
    error = failure(openai_server, replace(FAST, max_attempts=3))
    assert openai_server.request_count == 3
    assert error.error_class == "ServiceUnavailableError" and error.attempts == 3 and error.status == 503
    message = str(error)
    assert "\n" not in message and len(message) < 500
    assert message.startswith("d_test1: model openai/fake-model (loop) failed after 3 attempt(s): "
                              "ServiceUnavailableError (HTTP 503): ")
    assert "llm.max_attempts=3" in message


def test_a_bad_request_is_final_after_one_request(openai_server):
    openai_server.enqueue(bad_request("max_tokens is too large"), reply())
    error = failure(openai_server)
    assert openai_server.request_count == 1
    assert error.error_class == "BadRequestError" and error.status == 400 and error.attempts == 1
    assert "max_tokens is too large" in str(error) and "not retried" in str(error)


def test_unauthorized_is_final_and_names_the_key_variable_not_the_key(openai_server, monkeypatch):
    monkeypatch.setenv("LOOP_API_KEY", KEY)
    openai_server.enqueue(unauthorized())
    error = failure(openai_server, api_key_env="LOOP_API_KEY")
    assert openai_server.request_count == 1 and error.error_class == "AuthenticationError"
    assert "$LOOP_API_KEY" in str(error) and KEY not in str(error)


def test_a_hang_past_the_timeout_is_retried(openai_server):
    openai_server.enqueue(hang(600), reply())
    settings = replace(FAST, stages={**FAST.stages, "draft": replace(FAST.stages["draft"], timeout_s=0.3)})
    done = ask(openai_server, settings)
    assert openai_server.request_count == 2 and done.attempts == 2
    assert openai_server.in_flight == 1, "the first request still hangs: the call gave up on it at its timeout"


def requests_seen(server, count: int, within_s: float = 10.0) -> int:
    """The server's request count once it reaches `count`, or after `within_s`: a client that gave
    up at its timeout may have sent a request the loaded server has not read yet."""
    deadline = time.monotonic() + within_s
    while server.request_count < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return server.request_count


def test_a_hang_on_every_attempt_fails_as_a_timeout(openai_server):
    openai_server.set_default(hang(5))
    settings = replace(FAST, max_attempts=2, stages={**FAST.stages, "draft": replace(FAST.stages["draft"], timeout_s=0.3)})
    error = failure(openai_server, settings)
    assert error.error_class == "Timeout" and error.attempts == 2
    assert requests_seen(openai_server, 2) == 2


def test_malformed_json_is_retried(openai_server):
    openai_server.enqueue(malformed(), reply("fine now"))
    done = ask(openai_server)
    assert openai_server.request_count == 2 and done.attempts == 2 and done.text == "fine now"


def test_malformed_json_on_every_attempt_fails_as_a_server_error(openai_server):
    openai_server.set_default(malformed())
    error = failure(openai_server, replace(FAST, max_attempts=2))
    assert openai_server.request_count == 2 and error.error_class == "InternalServerError"


def test_empty_content_is_retried(openai_server):
    openai_server.enqueue(empty(), reply("something"))
    done = ask(openai_server)
    assert openai_server.request_count == 2 and done.attempts == 2 and done.text == "something"


def test_empty_content_on_every_attempt_fails_as_an_empty_reply(openai_server):
    openai_server.set_default(empty())
    error = failure(openai_server, replace(FAST, max_attempts=2))
    assert openai_server.request_count == 2
    assert error.error_class == "EmptyReplyError" and "no text (finish_reason=stop)" in str(error)


def test_finish_reason_length_is_kept_and_marked_truncated(openai_server):
    openai_server.enqueue(length("cut off mid-sen"))
    done = ask(openai_server)
    assert openai_server.request_count == 1 and done.text == "cut off mid-sen"
    assert done.finish_reason == "length" and done.truncated()


def test_reaching_max_tokens_marks_a_reply_truncated_even_when_it_says_stop(openai_server):
    openai_server.enqueue(reply("x", usage={"completion_tokens": 100}), reply("y", usage={"completion_tokens": 99}))
    assert ask(openai_server).truncated()  # max_tokens of the draft stage is 100
    assert not ask(openai_server).truncated()


def test_litellm_and_sdk_retries_are_off_so_one_attempt_is_one_request(openai_server):
    one_attempt = replace(FAST, max_attempts=1)
    for fault in (rate_limit(), server_error(500), server_error(503), malformed()):
        openai_server.reset()
        openai_server.enqueue(fault, reply())
        failure(openai_server, one_attempt)
        assert openai_server.request_count == 1, fault


def test_the_wait_budget_caps_the_sleep_between_attempts(openai_server):
    openai_server.set_default(server_error(500))
    settings = replace(FAST, max_attempts=50, backoff_initial_s=0.1, backoff_max_s=0.1, max_total_wait_s=0.35)
    slept = Sleeps(openai_server)
    error = failure(openai_server, settings, sleep=slept)
    # every wait is 0.1 s (backoff_max_s): three fit in 0.35 s, a fourth would not
    assert slept == [(0.1, 1), (0.1, 2), (0.1, 3)]
    assert openai_server.request_count == 4 and error.attempts == 4
    assert "llm.max_total_wait_s=0.35" in str(error)


# -- what a successful call records -----------------------------------------------------------
def test_usage_comes_from_the_reply_and_the_call_settings_are_recorded(openai_server):
    openai_server.enqueue(reply("a b c", usage={"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}))
    done = ask(openai_server)
    # the loopback reports prompt_tokens_details.cached_tokens, as OpenAI does: recorded as reported
    assert done.usage == {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14, "cached_tokens": 0}
    assert (done.temperature, done.max_tokens, done.model) == (0.5, 100, "openai/fake-model")
    body = openai_server.requests[0]["body"]
    assert body["temperature"] == 0.5 and body["max_tokens"] == 100 and body["messages"][0]["content"] == PROMPT


def test_cost_comes_from_litellms_price_map_when_the_row_has_no_prices(openai_server):
    import litellm

    openai_server.enqueue(reply("a b c", usage={"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200}))
    done = ask(openai_server, model="gpt-4o-mini")
    price = litellm.model_cost["gpt-4o-mini"]
    expected = 1000 * price["input_cost_per_token"] + 200 * price["output_cost_per_token"]
    assert done.cost_usd == pytest.approx(expected) and done.cost_usd > 0


def test_the_rows_prices_win_over_the_price_map(openai_server):
    openai_server.enqueue(reply("a b c", usage={"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200}))
    done = ask(openai_server, model="gpt-4o-mini", input_cost_per_mtok=3.0, output_cost_per_mtok=15.0)
    assert done.cost_usd == pytest.approx((1000 * 3.0 + 200 * 15.0) / 1e6)


def test_cost_is_null_not_zero_for_a_model_without_a_price(openai_server):
    assert ask(openai_server).cost_usd is None


def test_the_offline_model_is_free_and_makes_no_request(openai_server):
    row = ModelRow(id="offline_a", model="daydream-offline-a", provider="daydream", display_name="A", route="offline")
    done = call_model(row, PROMPT, stage="draft", settings=FAST, gen_id="d_test1")
    assert done.attempts == 1 and done.cost_usd == 0.0 and done.model == "offline/daydream-offline-a"
    assert openai_server.request_count == 0


# -- concurrency ------------------------------------------------------------------------------
def run_in_threads(calls: list, threads: int = 64) -> None:
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(call) for call in calls]:
            future.result()


def test_the_global_cap_holds_with_64_threads(openai_server):
    openai_server.set_latency(0.1)
    caps = ConcurrencyLimits(8)
    run_in_threads([lambda: ask(openai_server, replace(FAST, max_concurrency=8), caps)] * 40)
    assert openai_server.request_count == 40 and openai_server.peak_in_flight == 8


class WatchedLimits(ConcurrencyLimits):
    """The run's caps, counting the calls waiting for a slot (inside `slot().__enter__`)."""

    def __init__(self, global_cap: int):
        super().__init__(global_cap)
        self.waiting, self._count_lock = 0, threading.Lock()

    def slot(self, key, cap):
        inner, outer = super().slot(key, cap), self

        class Watched:
            def __enter__(self):
                with outer._count_lock:
                    outer.waiting += 1
                try:
                    return inner.__enter__()
                finally:
                    with outer._count_lock:
                        outer.waiting -= 1

            def __exit__(self, *exc):
                return inner.__exit__(*exc)
        return Watched()


def test_a_cap_above_a_hundred_is_reached_and_never_passed(openai_server):
    """160 requests in flight at once (litellm's sync client would hold 100) and the other 10
    calls held back by the cap: the server holds every reply until both are seen (events, no
    latency to guess), then lets them all answer."""
    cap, made = 160, 170
    caps = WatchedLimits(cap)
    # one attempt each, with time to wait for its held reply: no request is given up on and sent again
    held = replace(FAST, max_concurrency=cap, max_attempts=1,
                   stages={**FAST.stages, "draft": replace(FAST.stages["draft"], timeout_s=600)})
    openai_server.hold_replies()
    with ThreadPoolExecutor(made) as pool:
        futures = [pool.submit(ask, openai_server, held, caps) for _ in range(made)]
        deadline = time.monotonic() + 300
        while not (openai_server.in_flight == cap and caps.waiting == made - cap):
            assert time.monotonic() < deadline, (openai_server.in_flight, caps.waiting)
            assert openai_server.in_flight <= cap, openai_server.in_flight
            time.sleep(0.02)
        openai_server.release_replies()
        for future in futures:
            future.result()
    assert openai_server.request_count == made and openai_server.peak_in_flight == cap


def test_a_models_own_cap_holds_alongside_the_global_cap():
    settings, caps = replace(FAST, max_concurrency=6), ConcurrencyLimits(6)
    with FakeOpenAIServer(latency=0.1) as capped, FakeOpenAIServer(latency=0.1) as free:
        peak_total, stop = [0], threading.Event()

        def watch():
            while not stop.is_set():
                peak_total[0] = max(peak_total[0], capped.in_flight + free.in_flight)
                time.sleep(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            run_in_threads([lambda: ask(capped, settings, caps, id="capped", max_concurrency=2),
                            lambda: ask(free, settings, caps, id="free")] * 12)
        finally:
            stop.set()
            watcher.join()
    assert capped.request_count == free.request_count == 12
    assert capped.peak_in_flight == 2 and free.peak_in_flight <= 6 and peak_total[0] <= 6


def test_a_call_waiting_to_retry_gives_its_slot_to_others(openai_server):
    openai_server.enqueue(rate_limit(retry_after=1))
    row_cap, caps = {"id": "solo", "max_concurrency": 1}, ConcurrencyLimits(FAST.max_concurrency)
    sleeping, wake = threading.Event(), threading.Event()

    def sleep(seconds):  # sleeps out the Retry-After until the test says so
        sleeping.set()
        assert wake.wait(120)

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(ask, openai_server, FAST, caps, sleep, **row_cap)
        assert sleeping.wait(120)  # the first call is now sleeping out its Retry-After
        try:
            second = pool.submit(ask, openai_server, FAST, caps, **row_cap).result(timeout=120)
            assert second.attempts == 1 and not first.done(), "the model's one slot is free while the first sleeps"
        finally:
            wake.set()
        assert first.result().attempts == 2


# -- keys -------------------------------------------------------------------------------------
def test_the_key_is_sent_but_never_logged_or_put_in_an_error(openai_server, monkeypatch, caplog):
    monkeypatch.setenv("LOOP_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    openai_server.enqueue(rate_limit(), reply(), bad_request(f"you sent {KEY}"))
    ask(openai_server, api_key_env="LOOP_API_KEY")
    error = failure(openai_server, api_key_env="LOOP_API_KEY")
    assert [r["authorization"] for r in openai_server.requests] == [f"Bearer {KEY}"] * 3
    assert KEY not in str(error) and "***" in str(error)
    assert "retry gen_id=d_test1 model=openai/fake-model attempt=1 error=RateLimitError status=429 wait=" in caplog.text
    assert KEY not in caplog.text


def test_a_missing_key_fails_before_any_request(openai_server, monkeypatch):
    monkeypatch.delenv("LOOP_API_KEY", raising=False)
    error = failure(openai_server, api_key_env="LOOP_API_KEY")
    assert error.error_class == "MissingKey" and "export LOOP_API_KEY=" in str(error)
    assert openai_server.request_count == 0


# -- honest failure labels: a status only when one was received --------------------------------
class _ClosedPort:
    """A loopback port nothing listens on (connection refused)."""
    base_url = ""

    def __init__(self):
        import socket
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"


def test_a_refused_connection_says_so_and_invents_no_status():
    closed = _ClosedPort()
    error = failure(closed, replace(FAST, max_attempts=1))
    assert f"connection refused by 127.0.0.1:{closed.port}" in str(error), str(error)
    assert "HTTP 500" not in str(error) and "no HTTP response" in str(error) and error.status is None


def test_a_refused_anthropic_endpoint_is_not_an_internal_server_error_500(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    closed = _ClosedPort()
    row = loop_row(closed, route="anthropic", model="claude-x", api_base=f"http://127.0.0.1:{closed.port}")
    with pytest.raises(LLMCallError) as caught:
        call_model(row, PROMPT, stage="draft", settings=replace(FAST, max_attempts=1), gen_id="d_test1")
    assert f"connection refused by 127.0.0.1:{closed.port}" in str(caught.value)
    assert "HTTP 500" not in str(caught.value) and caught.value.status is None


def test_a_host_that_does_not_resolve_says_could_not_resolve_host(monkeypatch):
    import socket

    def no_such_host(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    row = ModelRow(id="far", model="x", provider="test", display_name="Far", route="openai",
                   api_base="http://api.nowhere.invalid/v1")
    with pytest.raises(LLMCallError) as caught:
        call_model(row, PROMPT, stage="draft", settings=replace(FAST, max_attempts=1), gen_id="d_test1")
    message = str(caught.value)
    assert "could not resolve host api.nowhere.invalid" in message and "HTTP 500" not in message, message
    assert "Name or service not known" in message and caught.value.status is None


def test_a_client_timeout_says_timed_out_after_the_timeout_not_http_408(openai_server):
    openai_server.set_default(hang(5))
    settings = replace(FAST, max_attempts=1, stages={**FAST.stages, "draft": replace(FAST.stages["draft"], timeout_s=0.3)})
    error = failure(openai_server, settings)
    assert "timed out after 0.3 s" in str(error) and "HTTP 408" not in str(error) and error.status is None


def test_a_status_the_server_sent_is_still_reported(openai_server):
    openai_server.set_default(server_error(503))
    error = failure(openai_server, replace(FAST, max_attempts=1))
    assert "(HTTP 503)" in str(error) and error.status == 503


def test_litellm_exception_objects_are_labelled_from_their_cause():
    import socket

    import litellm

    from daydream.providers import http_errors

    def raised(outer, cause):
        try:
            try:
                raise cause
            except BaseException as inner:
                raise outer from inner
        except BaseException as caught:
            return caught

    dns = raised(litellm.APIConnectionError("Connection error.", "openrouter", "x"), socket.gaierror(-2, "Name or service not known"))
    assert http_errors.received_status(dns) is None and http_errors.describe(dns).startswith("could not resolve host")
    timeout = litellm.Timeout("Request timed out.", "x", "openai")
    assert http_errors.received_status(timeout) is None
    assert http_errors.describe(timeout, 900).startswith("timed out after 900 s")
    limited = litellm.RateLimitError("slow down", "openai", "x")
    assert http_errors.received_status(limited) == 429 and http_errors.describe(limited) == "RateLimitError (HTTP 429)"
