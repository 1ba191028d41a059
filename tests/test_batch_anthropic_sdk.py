"""The official ``anthropic`` SDK's Message Batches calls against the fake server.

``anthropic`` is a dependency of the project (batch mode uses it); the module still
skips where the SDK is not importable (it needs only the SDK, pytest and the
standard-library fake server).
"""

from __future__ import annotations

import time

import pytest

from tests.openai_server import FakeOpenAIServer, expire, server_error

anthropic = pytest.importorskip("anthropic")

pytest_plugins = ["tests.openai_fixtures"]


def request(custom_id: str) -> dict:
    return {"custom_id": custom_id, "params": {"model": "claude-haiku-4-5", "max_tokens": 64,
                                               "messages": [{"role": "user", "content": f"About {custom_id}."}]}}


def test_sdk_create_retrieve_results_cancel_list_delete(openai_server: FakeOpenAIServer):
    openai_server.set_batch_timing(processing=0.4)
    openai_server.on_batch_request(server_error(), "b")
    openai_server.on_batch_request(expire(), "c")
    client = anthropic.Anthropic(base_url=openai_server.root_url, api_key="sk-ant-test", max_retries=0)
    batch = client.messages.batches.create(requests=[request(c) for c in "abc"])
    assert batch.processing_status == "in_progress" and batch.request_counts.processing == 3
    deadline = time.monotonic() + 20
    while batch.processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.05)
        batch = client.messages.batches.retrieve(batch.id)
    counts = batch.request_counts
    assert (counts.succeeded, counts.errored, counts.expired, counts.processing) == (1, 1, 1, 0)
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert results["a"].type == "succeeded" and results["a"].message.usage.input_tokens == 2
    assert results["b"].type == "errored" and results["b"].error.error.type == "api_error"
    assert results["c"].type == "expired"

    openai_server.set_batch_timing(processing=60)
    running = client.messages.batches.create(requests=[request("d")])
    assert client.messages.batches.cancel(running.id).processing_status == "canceling"
    assert client.messages.batches.retrieve(running.id).processing_status == "ended"
    assert [r.result.type for r in client.messages.batches.results(running.id)] == ["canceled"]
    assert [b.id for b in client.messages.batches.list()] == [running.id, batch.id]
    assert client.messages.batches.delete(running.id).type == "message_batch_deleted"
    message = client.messages.create(model="claude-haiku-4-5", max_tokens=10,
                                     messages=[{"role": "user", "content": "About a."}])
    assert message.content[0].text == results["a"].message.content[0].text
    assert openai_server.custom_id_counts("anthropic") == {"a": 1, "b": 1, "c": 1, "d": 1}
