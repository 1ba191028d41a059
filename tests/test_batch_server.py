"""Tests of the fake server's batch APIs: OpenAI Files + Batch, Anthropic Message Batches.

Protocol tests speak plain HTTP; the fact tests drive the official ``openai`` SDK
and litellm's batch functions against the server, so that the calls the
workflow will make are pinned to the versions installed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx  # noqa: E402
import litellm  # noqa: E402
import openai  # noqa: E402
import pytest  # noqa: E402

from tests.openai_server import (  # noqa: E402
    BATCH_EXPIRED_MESSAGE,
    BatchTiming,
    FakeOpenAIServer,
    ManualClock,
    bad_request,
    completion_body,
    error,
    expire,
    hang,
    rate_limit,
    reply,
    server_error,
)

pytest_plugins = ["tests.openai_fixtures"]

litellm.suppress_debug_info = True

ENDPOINT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"
# One client for the module's plain HTTP: `httpx.get/post` build a new client (and its TLS
# context) for every request, several times the cost of the request itself.
HTTP = httpx.Client(timeout=30)


@pytest.fixture
def clock(openai_server) -> ManualClock:
    """The server's batches move only when the test advances this clock (no sleeping)."""
    manual = ManualClock()
    openai_server.restore(clock=manual)
    return manual


def line(custom_id: str, prompt: str | None = None, **overrides) -> dict:
    """One Batch API input line asking ``MODEL`` about ``prompt``."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt or f"Write about {custom_id}."}]}
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body, **overrides}


def jsonl(rows: list) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def read_jsonl(data: bytes) -> list[dict]:
    return [json.loads(x) for x in data.decode("utf-8").splitlines() if x.strip()]


def upload(server: FakeOpenAIServer, data: bytes, *, filename: str = "input.jsonl", purpose: str = "batch"):
    return HTTP.post(f"{server.base_url}/files", data={"purpose": purpose}, files={"file": (filename, data)})


def start_batch(server: FakeOpenAIServer, rows: list) -> dict:
    """Upload ``rows`` and create a batch from them; returns the created batch object."""
    file_id = upload(server, jsonl(rows)).json()["id"]
    created = HTTP.post(f"{server.base_url}/batches",
                         json={"input_file_id": file_id, "endpoint": ENDPOINT, "completion_window": "24h"})
    assert created.status_code == 200, created.text
    return created.json()


def get_batch(server: FakeOpenAIServer, batch_id: str) -> dict:
    return HTTP.get(f"{server.base_url}/batches/{batch_id}").json()


def content(server: FakeOpenAIServer, file_id: str) -> list[dict]:
    resp = HTTP.get(f"{server.base_url}/files/{file_id}/content")
    assert resp.status_code == 200
    return read_jsonl(resp.content)


def poll(fetch: Callable[[], dict], done: Callable[[dict], bool], clock: ManualClock, step: float = 0.1,
         limit: float = 100.0) -> list[dict]:
    """Call ``fetch``, advancing ``clock`` by ``step`` between calls, until ``done`` holds for its
    answer; return every answer seen."""
    seen = [fetch()]
    waited = 0.0
    while not done(seen[-1]):
        assert waited < limit, f"still not done after {limit} s of the server's time: {seen[-1]}"
        clock.advance(step)
        waited += step
        seen.append(fetch())
    return seen


def chat_reply(server: FakeOpenAIServer, prompt: str) -> dict:
    resp = HTTP.post(f"{server.base_url}/chat/completions",
                      json={"model": MODEL, "messages": [{"role": "user", "content": prompt}]})
    return resp.json()


def anthropic_request(custom_id: str, prompt: str | None = None, **params) -> dict:
    message = {"role": "user", "content": prompt or f"Write about {custom_id}."}
    return {"custom_id": custom_id,
            "params": {"model": "claude-haiku-4-5", "max_tokens": 256, "messages": [message], **params}}


def anthropic_batch(server: FakeOpenAIServer, requests: list) -> httpx.Response:
    return HTTP.post(f"{server.root_url}/v1/messages/batches", json={"requests": requests},
                      headers={"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"})


def anthropic_get(server: FakeOpenAIServer, batch_id: str) -> dict:
    return HTTP.get(f"{server.root_url}/v1/messages/batches/{batch_id}").json()


def anthropic_results(server: FakeOpenAIServer, batch_id: str) -> dict[str, dict]:
    resp = HTTP.get(f"{server.root_url}/v1/messages/batches/{batch_id}/results")
    assert resp.status_code == 200, resp.text
    return {row["custom_id"]: row["result"] for row in read_jsonl(resp.content)}


# ------------------------------------------------------------------------ OpenAI files


def test_file_upload_retrieve_content_list_and_delete(openai_server):
    data = jsonl([line("a", "Ünïcode prompt\r\nwith CRLF"), line("b")])
    created = upload(openai_server, data)
    assert created.status_code == 200
    file = created.json()
    assert file["object"] == "file" and file["purpose"] == "batch" and file["status"] == "processed"
    assert file["bytes"] == len(data) and file["filename"] == "input.jsonl"
    assert HTTP.get(f"{openai_server.base_url}/files/{file['id']}").json() == file
    raw = HTTP.get(f"{openai_server.base_url}/files/{file['id']}/content")
    assert raw.content == data, "the content is the uploaded bytes, exactly"
    listed = HTTP.get(f"{openai_server.base_url}/files").json()
    assert listed["object"] == "list" and [f["id"] for f in listed["data"]] == [file["id"]]
    deleted = HTTP.delete(f"{openai_server.base_url}/files/{file['id']}").json()
    assert deleted == {"id": file["id"], "object": "file", "deleted": True}
    missing = HTTP.get(f"{openai_server.base_url}/files/{file['id']}")
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}


def test_upload_errors_are_openais(openai_server):
    not_jsonl = upload(openai_server, b"hello", filename="notes.txt")
    assert not_jsonl.status_code == 400
    assert not_jsonl.json()["error"]["message"] == "Invalid file format for Batch API. Must be .jsonl"
    openai_server.set_batch_limits(max_file_bytes=100)
    too_big = upload(openai_server, jsonl([line("a"), line("b")]))
    assert too_big.status_code == 400
    assert too_big.json()["error"] == {"message": "File is too large.", "type": "invalid_request_error",
                                       "param": None, "code": None}
    no_purpose = HTTP.post(f"{openai_server.base_url}/files", files={"file": ("x.jsonl", b"{}")})
    assert no_purpose.status_code == 400 and no_purpose.json()["error"]["param"] == "purpose"
    assert upload(openai_server, b"{}\n", purpose="fine-tune", filename="x.txt").status_code == 200


# ---------------------------------------------------------------------- OpenAI batches


def test_batch_moves_through_its_statuses_with_time(openai_server, clock):
    openai_server.set_batch_timing(validating=0.4, processing=2.0, finalizing=0.8)
    rows = [line(f"r{i}") for i in range(8)]
    created = start_batch(openai_server, rows)
    assert created["status"] == "validating"
    assert created["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    seen = poll(lambda: get_batch(openai_server, created["id"]), lambda b: b["status"] == "completed", clock)
    statuses = [b["status"] for b in seen]
    assert statuses[0] == "validating" and "in_progress" in statuses and "finalizing" in statuses
    order = ["validating", "in_progress", "finalizing", "completed"]
    assert [order.index(s) for s in statuses] == sorted(order.index(s) for s in statuses)
    progress = [b["request_counts"]["completed"] for b in seen if b["status"] == "in_progress"]
    assert progress == sorted(progress) and any(0 < n < 8 for n in progress), progress
    final = seen[-1]
    assert final["request_counts"] == {"total": 8, "completed": 8, "failed": 0}
    assert final["created_at"] <= final["in_progress_at"] <= final["finalizing_at"] <= final["completed_at"]
    assert final["expires_at"] == final["created_at"] + 24 * 3600
    assert final["error_file_id"] is None and final["errors"] is None
    assert final["cancelled_at"] is None and final["failed_at"] is None and final["expired_at"] is None
    assert final["model"] == MODEL and final["endpoint"] == ENDPOINT and final["completion_window"] == "24h"


def test_output_lines_carry_the_chat_endpoints_reply_for_the_same_prompt(openai_server):
    created = start_batch(openai_server, [line("a", "Tidal pools at dawn."), line("b", "Glaciers.")])
    batch = get_batch(openai_server, created["id"])
    output = {row["custom_id"]: row for row in content(openai_server, batch["output_file_id"])}
    assert set(output) == {"a", "b"}
    row = output["a"]
    assert set(row) == {"id", "custom_id", "response", "error"} and row["error"] is None
    assert row["id"].startswith("batch_req_")
    assert row["response"]["status_code"] == 200 and row["response"]["request_id"]
    body = row["response"]["body"]
    direct = chat_reply(openai_server, "Tidal pools at dawn.")
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert body["choices"] == direct["choices"] and body["usage"] == direct["usage"]
    usage = batch["usage"]
    assert usage["input_tokens"] == sum(r["response"]["body"]["usage"]["prompt_tokens"] for r in output.values())
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_scripted_failures_by_id_pattern_and_predicate_go_to_the_error_file(openai_server):
    openai_server.on_batch_request(server_error(), "r1")
    openai_server.on_batch_request(rate_limit(), pattern=r"^slow-")
    openai_server.on_batch_request(bad_request("too long"), where=lambda cid, body: "LONG" in json.dumps(body))
    openai_server.on_batch_request(reply("custom text"), "r4")
    rows = [line("r0"), line("r1"), line("slow-2"), line("r3", "LONG prompt"), line("r4")]
    batch = get_batch(openai_server, start_batch(openai_server, rows)["id"])
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 5, "completed": 2, "failed": 3}
    errors = {row["custom_id"]: row for row in content(openai_server, batch["error_file_id"])}
    assert {cid: row["response"]["status_code"] for cid, row in errors.items()} == {"r1": 500, "slow-2": 429,
                                                                                    "r3": 400}
    assert errors["r3"]["error"] is None
    assert errors["r3"]["response"]["body"] == {"error": {"message": "too long", "type": "invalid_request_error",
                                                          "param": None, "code": "invalid_value"}}
    output = {row["custom_id"]: row for row in content(openai_server, batch["output_file_id"])}
    assert set(output) == {"r0", "r4"}
    assert output["r4"]["response"]["body"]["choices"][0]["message"]["content"] == "custom text"


def test_a_request_without_messages_fails_at_run_time_with_a_400_line(openai_server):
    rows = [line("ok"), {"custom_id": "bad", "method": "POST", "url": ENDPOINT, "body": {"model": MODEL}}]
    batch = get_batch(openai_server, start_batch(openai_server, rows)["id"])
    assert batch["status"] == "completed" and batch["request_counts"]["failed"] == 1
    (row,) = content(openai_server, batch["error_file_id"])
    assert row["custom_id"] == "bad" and row["response"]["status_code"] == 400
    assert row["response"]["body"]["error"]["param"] == "messages"


def test_all_failed_batch_completes_without_an_output_file(openai_server):
    openai_server.set_batch_default(server_error(503))
    batch = get_batch(openai_server, start_batch(openai_server, [line("a"), line("b")])["id"])
    assert batch["status"] == "completed" and batch["output_file_id"] is None
    assert batch["request_counts"] == {"total": 2, "completed": 0, "failed": 2}
    assert len(content(openai_server, batch["error_file_id"])) == 2


def test_expiring_requests_end_the_batch_expired(openai_server):
    openai_server.on_batch_request(expire(), pattern="^late")
    openai_server.on_batch_request(server_error(), "broken")
    rows = [line("a"), line("late-1"), line("broken"), line("late-2"), line("b")]
    batch = get_batch(openai_server, start_batch(openai_server, rows)["id"])
    assert batch["status"] == "expired" and batch["expired_at"] is not None and batch["completed_at"] is None
    assert batch["request_counts"] == {"total": 5, "completed": 2, "failed": 1}, "expired ones are not 'failed'"
    assert sorted(r["custom_id"] for r in content(openai_server, batch["output_file_id"])) == ["a", "b"]
    errors = {r["custom_id"]: r for r in content(openai_server, batch["error_file_id"])}
    assert set(errors) == {"late-1", "late-2", "broken"}
    expired = errors["late-1"]
    assert expired["response"] is None
    assert expired["error"] == {"code": "batch_expired", "message": BATCH_EXPIRED_MESSAGE}
    assert errors["broken"]["response"]["status_code"] == 500 and errors["broken"]["error"] is None


@pytest.mark.parametrize(
    ("rows", "code", "line_number", "param"),
    [
        ([line("a"), b"{not json"], "invalid_json_line", 2, None),
        ([line("a"), line("a")], "duplicate_custom_id", 2, "custom_id"),
        ([line("a"), line("b", url="/v1/embeddings")], "url_mismatch", 2, "url"),
        ([line("a"), {**line("b"), "body": {"model": "gpt-4.1", "messages": []}}], "model_mismatch", 2, "body.model"),
        ([{"custom_id": "a", "url": ENDPOINT, "body": {}}], "missing_required_parameter", 1, "method"),
        ([line("a", method="GET")], "invalid_value", 1, "method"),
        ([], "empty_file", None, None),
    ],
)
def test_invalid_input_files_fail_validation(openai_server, clock, rows, code, line_number, param):
    openai_server.set_batch_timing(validating=0.2)
    created = start_batch(openai_server, rows)
    assert created["status"] == "validating"
    seen = poll(lambda: get_batch(openai_server, created["id"]), lambda b: b["status"] != "validating", clock)
    batch = seen[-1]
    assert batch["status"] == "failed" and batch["failed_at"] is not None and batch["in_progress_at"] is None
    assert batch["output_file_id"] is None and batch["error_file_id"] is None
    assert batch["errors"]["object"] == "list"
    (first, *_) = batch["errors"]["data"]
    assert (first["code"], first["line"], first["param"]) == (code, line_number, param)
    assert first["message"]


def test_too_many_requests_and_scripted_validation_failure(openai_server):
    openai_server.set_batch_limits(max_requests=2)
    batch = get_batch(openai_server, start_batch(openai_server, [line("a"), line("b"), line("c")])["id"])
    assert batch["status"] == "failed" and batch["errors"]["data"][0]["code"] == "too_many_tasks"
    openai_server.set_batch_limits(max_requests=50_000)
    openai_server.fail_batch_validation("Enqueued token limit reached.", code="token_limit_exceeded")
    failed = get_batch(openai_server, start_batch(openai_server, [line("a")])["id"])
    assert failed["status"] == "failed"
    assert failed["errors"]["data"] == [{"code": "token_limit_exceeded", "line": None,
                                         "message": "Enqueued token limit reached.", "param": None}]
    assert get_batch(openai_server, start_batch(openai_server, [line("a")])["id"])["status"] == "completed"
    assert openai_server.batches_created == {"openai": 3, "anthropic": 0}


def test_batch_creation_errors_are_immediate(openai_server):
    url = f"{openai_server.base_url}/batches"
    file_id = upload(openai_server, jsonl([line("a")])).json()["id"]
    good = {"input_file_id": file_id, "endpoint": ENDPOINT, "completion_window": "24h"}
    missing = HTTP.post(url, json={k: v for k, v in good.items() if k != "input_file_id"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "input_file_id"
    assert HTTP.post(url, json={**good, "endpoint": "/v1/images"}).status_code == 400
    assert HTTP.post(url, json={**good, "completion_window": "1h"}).status_code == 400
    assert HTTP.post(url, json={**good, "input_file_id": "file-nope"}).status_code == 404
    other = upload(openai_server, b"{}\n", purpose="assistants").json()["id"]
    assert HTTP.post(url, json={**good, "input_file_id": other}).status_code == 400
    assert openai_server.batches_created["openai"] == 0


def test_cancel_keeps_what_finished_and_ends_cancelled(openai_server, clock):
    openai_server.set_batch_timing(processing=60, cancelling=0.3)
    batch = start_batch(openai_server, [line(f"r{i}") for i in range(4)])
    assert get_batch(openai_server, batch["id"])["status"] == "in_progress"
    cancelling = HTTP.post(f"{openai_server.base_url}/batches/{batch['id']}/cancel").json()
    assert cancelling["status"] == "cancelling" and cancelling["cancelling_at"] is not None
    seen = poll(lambda: get_batch(openai_server, batch["id"]), lambda b: b["status"] == "cancelled", clock)
    assert {b["status"] for b in seen} == {"cancelling", "cancelled"}
    final = seen[-1]
    assert final["cancelled_at"] >= final["cancelling_at"] and final["completed_at"] is None
    assert final["request_counts"]["total"] == 4 and final["request_counts"]["completed"] == 0
    assert final["output_file_id"] is None and final["error_file_id"] is None
    again = HTTP.post(f"{openai_server.base_url}/batches/{batch['id']}/cancel")
    assert again.status_code == 400


def test_cancel_midway_writes_the_finished_requests(openai_server, clock):
    openai_server.set_batch_timing(processing=4.0)
    batch = start_batch(openai_server, [line(f"r{i}") for i in range(10)])
    poll(lambda: get_batch(openai_server, batch["id"]), lambda b: b["request_counts"]["completed"] >= 3, clock)
    HTTP.post(f"{openai_server.base_url}/batches/{batch['id']}/cancel")
    clock.advance(60)  # long after the cancel: the work stopped at it
    final = poll(lambda: get_batch(openai_server, batch["id"]), lambda b: b["status"] == "cancelled", clock)[-1]
    done = final["request_counts"]["completed"]
    assert 3 <= done < 10
    assert [r["custom_id"] for r in content(openai_server, final["output_file_id"])] == [f"r{i}" for i in range(done)]


def test_finish_batches_ends_running_batches_at_once(openai_server):
    openai_server.set_batch_timing(validating=60, processing=60)
    batch = start_batch(openai_server, [line("a")])
    assert get_batch(openai_server, batch["id"])["status"] == "validating"
    openai_server.finish_batches()
    assert get_batch(openai_server, batch["id"])["status"] == "completed"


def test_list_batches_newest_first_with_pagination(openai_server):
    ids = [start_batch(openai_server, [line("a")])["id"] for _ in range(3)]
    page = HTTP.get(f"{openai_server.base_url}/batches", params={"limit": 2}).json()
    assert [b["id"] for b in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    rest = HTTP.get(f"{openai_server.base_url}/batches", params={"after": page["last_id"]}).json()
    assert [b["id"] for b in rest["data"]] == [ids[0]] and rest["has_more"] is False


def test_reversed_results_still_match_by_custom_id(openai_server):
    openai_server.set_batch_results_reversed()
    batch = get_batch(openai_server, start_batch(openai_server, [line("a"), line("b"), line("c")])["id"])
    assert [r["custom_id"] for r in content(openai_server, batch["output_file_id"])] == ["c", "b", "a"]


def test_counters_see_every_endpoint_and_every_custom_id(openai_server):
    for rows in ([line("a"), line("b")], [line("c")]):
        batch = start_batch(openai_server, rows)
        get_batch(openai_server, batch["id"])
    chat_reply(openai_server, "hi")
    counts = openai_server.endpoint_counts
    assert counts["POST /v1/files"] == 2 and counts["POST /v1/batches"] == 2
    assert counts["GET /v1/batches/{id}"] == 2 and counts["POST /v1/chat/completions"] == 1
    assert openai_server.custom_id_counts() == {"a": 1, "b": 1, "c": 1}
    assert openai_server.custom_id_counts("openai") == {"a": 1, "b": 1, "c": 1}
    assert openai_server.batches_created == {"openai": 2, "anthropic": 0}
    assert openai_server.request_count == 1, "request_count stays chat-only"
    stats = openai_server.stats()
    assert stats["batches_created"]["openai"] == 2 and stats["endpoint_counts"] == counts
    resubmitted = upload(openai_server, jsonl([line("a")])).json()["id"]
    HTTP.post(f"{openai_server.base_url}/batches",
               json={"input_file_id": resubmitted, "endpoint": ENDPOINT, "completion_window": "24h"})
    assert openai_server.custom_id_counts()["a"] == 2
    openai_server.reset()
    assert openai_server.endpoint_counts == {} and openai_server.custom_id_counts() == {}
    assert openai_server.batches_created == {"openai": 0, "anthropic": 0}


def test_batch_rules_refuse_chat_only_actions(openai_server):
    with pytest.raises(ValueError, match="not allowed"):
        openai_server.on_batch_request(hang(1))
    with pytest.raises(ValueError, match="not allowed"):
        openai_server.enqueue(expire())


# ------------------------------------------------------------------ Anthropic batches


def test_anthropic_batch_lifecycle_and_result_shapes(openai_server):
    openai_server.set_batch_timing(validating=0.1, processing=60)
    openai_server.on_batch_request(error(529, "Overloaded"), "busy")
    openai_server.on_batch_request(expire(), "late")
    requests = [anthropic_request("ok", "Tidal pools at dawn."), anthropic_request("busy"),
                anthropic_request("late"), {"custom_id": "noparams", "params": {"model": "m", "messages": []}}]
    created = anthropic_batch(openai_server, requests)
    assert created.status_code == 200, created.text
    batch = created.json()
    assert batch["type"] == "message_batch" and batch["processing_status"] == "in_progress"
    assert batch["id"].startswith("msgbatch_") and batch["results_url"] is None and batch["ended_at"] is None
    assert batch["request_counts"] == {"processing": 4, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    assert batch["created_at"].endswith("Z") and batch["expires_at"] > batch["created_at"]
    early = HTTP.get(f"{openai_server.root_url}/v1/messages/batches/{batch['id']}/results")
    assert early.status_code == 400 and early.json()["type"] == "error"
    openai_server.finish_batches()
    ended = anthropic_get(openai_server, batch["id"])
    assert ended["processing_status"] == "ended" and ended["ended_at"] is not None
    assert ended["request_counts"] == {"processing": 0, "succeeded": 1, "errored": 2, "canceled": 0, "expired": 1}
    assert ended["results_url"] == f"{openai_server.root_url}/v1/messages/batches/{batch['id']}/results"
    results = anthropic_results(openai_server, batch["id"])
    message = results["ok"]["message"]
    assert results["ok"]["type"] == "succeeded" and message["type"] == "message" and message["role"] == "assistant"
    direct = completion_body({"messages": [{"content": "Tidal pools at dawn."}]}, reply(), 0)
    assert message["content"] == [{"type": "text", "text": direct["choices"][0]["message"]["content"]}]
    assert message["usage"] == {"input_tokens": direct["usage"]["prompt_tokens"],
                                "output_tokens": direct["usage"]["completion_tokens"],
                                "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
    assert message["stop_reason"] == "end_turn" and message["model"] == "claude-haiku-4-5"
    assert results["busy"] == {"type": "errored", "error": {"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}}}
    assert results["noparams"]["type"] == "errored"
    assert results["noparams"]["error"]["error"]["message"] == "max_tokens: Field required"
    assert results["late"] == {"type": "expired"}


def test_anthropic_system_prompt_gets_the_same_reply_as_an_openai_system_message(openai_server):
    batch = anthropic_batch(openai_server, [anthropic_request("a", "Say hi.", system="Be brief.")]).json()
    message = anthropic_results(openai_server, batch["id"])["a"]["message"]
    direct = HTTP.post(f"{openai_server.base_url}/chat/completions", json={"model": "m", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}]}).json()
    assert message["content"][0]["text"] == direct["choices"][0]["message"]["content"]


def test_anthropic_cancel_marks_the_unfinished_requests_canceled(openai_server, clock):
    openai_server.set_batch_timing(processing=60, cancelling=0.2)
    batch = anthropic_batch(openai_server, [anthropic_request("a"), anthropic_request("b")]).json()
    cancel = HTTP.post(f"{openai_server.root_url}/v1/messages/batches/{batch['id']}/cancel").json()
    assert cancel["processing_status"] == "canceling" and cancel["cancel_initiated_at"] is not None
    seen = poll(lambda: anthropic_get(openai_server, batch["id"]), lambda b: b["processing_status"] == "ended",
                clock)
    assert {b["processing_status"] for b in seen} == {"canceling", "ended"}
    assert seen[-1]["request_counts"]["canceled"] == 2
    assert anthropic_results(openai_server, batch["id"]) == {"a": {"type": "canceled"}, "b": {"type": "canceled"}}
    again = HTTP.post(f"{openai_server.root_url}/v1/messages/batches/{batch['id']}/cancel")
    assert again.status_code == 400


def test_anthropic_creation_is_validated_at_once(openai_server):
    assert anthropic_batch(openai_server, []).status_code == 400
    bad_id = anthropic_batch(openai_server, [anthropic_request("has space")])
    assert bad_id.status_code == 400 and bad_id.json()["error"]["type"] == "invalid_request_error"
    assert anthropic_batch(openai_server, [anthropic_request("a"), anthropic_request("a")]).status_code == 400
    openai_server.set_batch_limits(anthropic_max_requests=1)
    assert anthropic_batch(openai_server, [anthropic_request("a"), anthropic_request("b")]).status_code == 400
    openai_server.set_batch_limits(anthropic_max_requests=10, anthropic_max_bytes=200)
    too_big = anthropic_batch(openai_server, [anthropic_request("a", "word " * 100)])
    assert too_big.status_code == 413 and too_big.json()["error"]["type"] == "request_too_large"
    openai_server.set_batch_limits(anthropic_max_bytes=10**6)
    openai_server.fail_batch_validation("Your credit balance is too low.", provider="anthropic")
    refused = anthropic_batch(openai_server, [anthropic_request("a")])
    assert refused.status_code == 400 and refused.json()["error"]["message"] == "Your credit balance is too low."
    assert openai_server.batches_created["anthropic"] == 0
    assert anthropic_batch(openai_server, [anthropic_request("a")]).status_code == 200
    assert openai_server.batches_created["anthropic"] == 1


def test_anthropic_list_and_delete(openai_server):
    first = anthropic_batch(openai_server, [anthropic_request("a")]).json()["id"]
    second = anthropic_batch(openai_server, [anthropic_request("b")]).json()["id"]
    listed = HTTP.get(f"{openai_server.root_url}/v1/messages/batches").json()
    assert [b["id"] for b in listed["data"]] == [second, first] and listed["has_more"] is False
    deleted = HTTP.delete(f"{openai_server.root_url}/v1/messages/batches/{first}").json()
    assert deleted == {"id": first, "type": "message_batch_deleted"}
    assert HTTP.get(f"{openai_server.root_url}/v1/messages/batches/{first}").status_code == 404
    assert openai_server.custom_id_counts("anthropic") == {"a": 1, "b": 1}


def test_plain_anthropic_message_uses_the_chat_queue(openai_server):
    openai_server.enqueue(rate_limit(retry_after=3))
    url = f"{openai_server.root_url}/v1/messages"
    payload = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi there"}]}
    limited = HTTP.post(url, json=payload)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert limited.json() == {"type": "error", "error": {"type": "rate_limit_error",
                                                         "message": "Rate limit reached (fake server)"}}
    message = HTTP.post(url, json=payload).json()
    assert message["type"] == "message" and message["usage"]["input_tokens"] == 2
    assert message["content"][0]["text"].endswith("SCORE: 7")
    assert openai_server.request_count == 2 and openai_server.endpoint_counts["POST /v1/messages"] == 2


# --------------------------------------------------------------- the clients, pinned


def test_openai_sdk_batch_calls_work_against_base_url(openai_server):
    openai_server.set_batch_timing(processing=60)
    openai_server.on_batch_request(server_error(), "b")
    client = openai.OpenAI(base_url=openai_server.base_url, api_key="sk-test", max_retries=0)
    file = client.files.create(file=("in.jsonl", jsonl([line("a"), line("b")])), purpose="batch")
    assert file.purpose == "batch" and file.status == "processed"
    batch = client.batches.create(input_file_id=file.id, endpoint=ENDPOINT, completion_window="24h")
    assert batch.status == "in_progress" and client.batches.retrieve(batch.id).status == "in_progress"
    openai_server.finish_batches()
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts.completed == 1 and done.request_counts.failed == 1
    assert [json.loads(x)["custom_id"] for x in client.files.content(done.output_file_id).text.splitlines()] == ["a"]
    assert client.files.content(done.error_file_id).text.count('"status_code": 500') == 1
    assert [b.id for b in client.batches.list()] == [batch.id]
    other = client.batches.create(input_file_id=file.id, endpoint=ENDPOINT, completion_window="24h")
    assert client.batches.cancel(other.id).status == "cancelling"
    assert client.batches.retrieve(other.id).status == "cancelled"
    assert client.files.delete(file.id).deleted is True
    assert openai_server.custom_id_counts() == {"a": 2, "b": 2}


def test_litellm_openai_batch_functions_work_against_api_base(openai_server):
    kwargs = {"custom_llm_provider": "openai", "api_base": openai_server.base_url, "api_key": "sk-test"}
    openai_server.on_batch_request(expire(), "late")
    file = litellm.create_file(file=("in.jsonl", jsonl([line("a"), line("late")])), purpose="batch", **kwargs)
    batch = litellm.create_batch(completion_window="24h", endpoint=ENDPOINT, input_file_id=file.id, **kwargs)
    retrieved = litellm.retrieve_batch(batch_id=batch.id, **kwargs)
    assert retrieved.status == "expired" and retrieved.request_counts.completed == 1
    output = read_jsonl(litellm.file_content(file_id=retrieved.output_file_id, **kwargs).content)
    errors = read_jsonl(litellm.file_content(file_id=retrieved.error_file_id, **kwargs).content)
    assert [r["custom_id"] for r in output] == ["a"] and errors[0]["error"]["code"] == "batch_expired"
    assert litellm.file_retrieve(file_id=file.id, **kwargs).filename == "in.jsonl"
    assert [b.id for b in litellm.list_batches(**kwargs).data] == [batch.id]
    openai_server.set_batch_timing(processing=60)
    running = litellm.create_batch(completion_window="24h", endpoint=ENDPOINT, input_file_id=file.id, **kwargs)
    assert litellm.cancel_batch(batch_id=running.id, **kwargs).status == "cancelling"
    assert litellm.file_delete(file_id=file.id, **kwargs).deleted is True
    assert openai_server.endpoint_counts["POST /v1/batches/{id}/cancel"] == 1


def test_litellm_anthropic_batches_retrieve_and_results_only(openai_server):
    """litellm (1.110) reads Anthropic Message Batches but cannot create or cancel them."""
    openai_server.on_batch_request(server_error(), "b")
    batch = anthropic_batch(openai_server, [anthropic_request("a"), anthropic_request("b")]).json()
    kwargs = {"custom_llm_provider": "anthropic", "api_base": openai_server.root_url, "api_key": "sk-ant-test"}
    retrieved = litellm.retrieve_batch(batch_id=batch["id"], **kwargs)
    assert retrieved.status == "completed", "litellm maps processing_status 'ended' to 'completed'"
    assert (retrieved.request_counts.total, retrieved.request_counts.completed, retrieved.request_counts.failed) == (
        2, 1, 1)
    assert retrieved.output_file_id == batch["id"]
    rows = read_jsonl(litellm.file_content(file_id=batch["id"], **kwargs).content)
    assert {r["custom_id"]: r["result"]["type"] for r in rows} == {"a": "succeeded", "b": "errored"}
    with pytest.raises(litellm.BadRequestError, match="create_batch"):
        litellm.create_batch(completion_window="24h", endpoint=ENDPOINT, input_file_id="x", **kwargs)
    with pytest.raises(litellm.BadRequestError, match="cancel_batch"):
        litellm.cancel_batch(batch_id=batch["id"], **kwargs)
    assert openai_server.endpoint_counts == {"POST /v1/messages/batches": 1, "GET /v1/messages/batches/{id}": 1,
                                             "GET /v1/messages/batches/{id}/results": 1}


def test_litellm_prices_batch_output_at_the_batch_rates(openai_server):
    from litellm.batches.batch_utils import batch_cost_and_usage

    info = litellm.get_model_info(MODEL)
    assert info["input_cost_per_token_batches"] == info["input_cost_per_token"] / 2
    assert info["output_cost_per_token_batches"] == info["output_cost_per_token"] / 2
    assert litellm.get_model_info("claude-haiku-4-5")["input_cost_per_token_batches"] is not None
    batch = get_batch(openai_server, start_batch(openai_server, [line("a"), line("b")])["id"])
    rows = content(openai_server, batch["output_file_id"])
    priced = batch_cost_and_usage(rows, "openai", model_name=MODEL)
    prompt, completion = batch["usage"]["input_tokens"], batch["usage"]["output_tokens"]
    assert priced.successful_requests == 2
    assert priced.usage.prompt_tokens == prompt and priced.usage.completion_tokens == completion
    expected = prompt * info["input_cost_per_token_batches"] + completion * info["output_cost_per_token_batches"]
    assert priced.cost == pytest.approx(expected)
    full = sum(litellm.cost_per_token(model=MODEL, prompt_tokens=prompt, completion_tokens=completion))
    assert priced.cost == pytest.approx(full / 2)


def test_cli_batch_timing_flags(tmp_path):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    stats = tmp_path / "stats.json"
    script = Path(__file__).with_name("openai_server.py")
    cmd = [sys.executable, str(script), "--batch-validating-seconds", "30", "--batch-max-requests", "5",
           "--stats-file", str(stats)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        base = proc.stdout.readline().strip().removeprefix("BASE_URL=")
        server = type("S", (), {"base_url": base})()
        batch = start_batch(server, [line("a")])
        assert get_batch(server, batch["id"])["status"] == "validating"
        assert json.loads(stats.read_text())["batches_created"] == {"openai": 1, "anthropic": 0}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()


def test_batch_timing_is_fixed_when_a_batch_is_created():
    with FakeOpenAIServer(batch_timing=BatchTiming(processing=60)) as server:
        batch = start_batch(server, [line("a")])
        server.set_batch_timing(processing=0)
        assert server.batch_timing.processing == 0
        assert get_batch(server, batch["id"])["status"] == "in_progress"


def test_litellm_retrieve_batch_reports_the_batch_rate_cost(openai_server):
    """Sync retrieve_batch prices a completed batch from its ``usage`` field; the async one
    downloads the output and error files again (in a logging task) on every poll."""
    import asyncio

    kwargs = {"custom_llm_provider": "openai", "api_base": openai_server.base_url, "api_key": "sk-test"}
    openai_server.on_batch_request(server_error(), "b")
    batch = start_batch(openai_server, [line("a"), line("b")])
    info = litellm.get_model_info(MODEL)
    usage = get_batch(openai_server, batch["id"])["usage"]
    expected = (usage["input_tokens"] * info["input_cost_per_token_batches"]
                + usage["output_tokens"] * info["output_cost_per_token_batches"])
    openai_server.reset()
    retrieved = litellm.retrieve_batch(batch_id=batch["id"], **kwargs)
    assert retrieved._hidden_params["response_cost"] == pytest.approx(expected)
    assert openai_server.endpoint_counts == {"GET /v1/batches/{id}": 1}

    async def poll_async() -> object:
        result = await litellm.aretrieve_batch(batch_id=batch["id"], **kwargs)
        deadline = time.monotonic() + 10
        while openai_server.endpoint_counts.get("GET /v1/files/{id}/content", 0) < 2:
            assert time.monotonic() < deadline, openai_server.endpoint_counts
            await asyncio.sleep(0.05)
        return result

    openai_server.reset()
    result = asyncio.run(poll_async())
    assert result._hidden_params["response_cost"] == pytest.approx(expected)
    assert openai_server.endpoint_counts == {"GET /v1/batches/{id}": 1, "GET /v1/files/{id}/content": 2}
