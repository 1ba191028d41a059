"""Batch mode without Snakemake: which calls are batched, the cut by size, which failures are
asked again, the durable ledger's holds, collecting into the paid-reply ledger at the batch
price, a batch whose create answer was lost, and the direct path's guard."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from daydream import cohorts, documents, experiment, ledger, pricing
from daydream.batch import gate as batch_gate
from daydream.batch import ledger as batch_ledger
from daydream.batch import policy as batch_policy
from daydream.batch import rounds
from daydream.paths import Paths
from daydream.providers import BatchResult, BatchState, Reply
from daydream.run import BudgetReached
from daydream.runtime import Runtime
from tests.openai_server import FakeOpenAIServer

pytest_plugins = ["tests.openai_fixtures"]


@pytest.fixture
def rt(data_root, cohorts_dir):
    def make(**config):
        runtime = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"],
                           **config})
        cohorts.build_cohort(runtime.paths, "tiny", runtime.paths.cohort_file("tiny"))
        return runtime
    return make


def batch_row(runtime: Runtime, model_id: str = "offline_b", **fields) -> None:
    """Turn a model of the loaded experiment into a loopback model in batch mode."""
    models = runtime.experiment.models
    models[model_id] = replace(models[model_id], **{"route": "openai", "batch": True, "input_cost_per_mtok": 2.0,
                                                    "output_cost_per_mtok": 8.0, **fields})


class FakeBatches:
    """A BatchProvider that answers every request of a batch with the same reply."""

    name, max_requests, max_bytes = "fake-batch", 1000, 10**9

    def __init__(self):
        self.submitted: list[list[str]] = []
        self.found: str | None = None

    def request_line(self, custom_id, request):
        return {"custom_id": custom_id, "prompt": request.prompt}

    def submit(self, target, lines, label):
        self.submitted.append([line["custom_id"] for line in lines])
        return f"remote_{len(self.submitted)}"

    def status(self, target, batch_id):
        return BatchState(True, "completed", 1, 1, 0)

    def results(self, target, batch_id, custom_ids):
        usage = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
        return [BatchResult(c, "succeeded", Reply("Fine work.\nSCORE: 7", "stop", usage)) for c in custom_ids]

    def cancel(self, target, batch_id):
        pass

    def find(self, target, label, since, size, known):
        return self.found

    def errors(self):
        return (ConnectionError,)


@pytest.fixture
def fake(monkeypatch):
    provider = FakeBatches()
    monkeypatch.setattr(rounds, "batch_provider_for", lambda route: provider)
    return provider


def evaluations(runtime: Runtime, model_id: str = "offline_b"):
    return [m for m in runtime.membership.members("tiny", "evaluation") if m.llm_model_id == model_id]


def wanted(runtime: Runtime, members):
    """The documents' prompts, after their drafts and essays are made on the offline model."""
    offline = Runtime({**runtime.config, "offline": True})
    for stage in ("draft", "essay"):
        for member in offline.membership.members("tiny", stage):
            if not offline.paths.parsed_path(stage, member.gen_id).exists():
                documents.write_document(offline, stage, member.gen_id)
    return {m.gen_id: rounds._Wanted(m, documents.document_prompt(runtime, m)) for m in members}


def test_the_batch_column_is_true_false_or_empty(data_root):
    path = Paths(data_root).models_csv
    path.write_text("id,model,provider,display_name,route,batch\n"
                    "a,m,p,A,openai,true\nb,m,p,B,openai,\nc,m,p,C,openai,false\n")
    rows = experiment.load_models(Paths(data_root), problems := [])
    assert problems == [] and [rows[i].batch for i in "abc"] == [True, False, False]
    path.write_text(path.read_text().replace(",true", ",yes"))
    experiment.load_models(Paths(data_root), problems := [])
    assert problems == [f"{path} line 2 (a) batch: 'yes' must be true or false (empty = false)"]


def test_a_stage_override_wins_over_the_row_and_offline_runs_never_batch(rt):
    runtime = rt()
    batch_row(runtime)
    member = evaluations(runtime)[0]
    assert batch_policy.batched(runtime, member)
    assert not batch_policy.batched(rt(batch={"stages": {"evaluation": False}}), member)
    other = rt(batch={"stages": {"evaluation": True}})
    assert not batch_policy.batched(other, evaluations(other, "offline_a")[0]), "the offline model: never"
    batch_row(other, "offline_a", batch=False)
    assert batch_policy.batched(other, evaluations(other, "offline_a")[0])
    offline = rt(offline=True)
    batch_row(offline)
    assert not batch_policy.any_batched(offline) and not batch_policy.batched(offline, member)


def test_a_model_in_batch_mode_on_a_route_without_a_batch_api_is_named_with_the_routes_that_have_one(rt):
    runtime = rt()
    runtime.experiment.models["offline_a"] = replace(runtime.experiment.models["offline_a"], route="openrouter",
                                                     batch=True)
    problems = batch_policy.route_problems(runtime, {"evaluation": [runtime.experiment.models["offline_a"]]},
                                               "tiny.yaml")
    assert problems == [f"tiny.yaml: evaluation model 'offline_a' (route openrouter) is in batch mode (batch=true "
                        f"in {runtime.paths.models_csv}), but route openrouter has no batch API; batch mode works "
                        "with routes openai, anthropic: set batch to false for 'offline_a' or change its route"]


def test_requests_are_cut_by_the_request_limit_and_by_bytes_and_a_huge_one_goes_alone(rt, fake):
    runtime = rt()
    batch_row(runtime)
    items = list(wanted(runtime, evaluations(runtime)).values())  # 12 evaluations
    row = runtime.experiment.models["offline_b"]
    config = replace(batch_policy.batch_settings(runtime), max_requests=5)
    sizes = [len(c) for c in rounds._chunks(runtime, fake, config, "evaluation", row, items)]
    assert sizes == [5, 5, 2]
    one = len(json.dumps(fake.request_line("v_x", rounds._call_request(
        runtime, "evaluation", row, items[0].prompt.text)))) + 1
    config = replace(config, max_requests=100, max_bytes=int(one * 3.5))
    assert [len(c) for c in rounds._chunks(runtime, fake, config, "evaluation", row, items)] == [3, 3, 3, 3]
    config = replace(config, max_bytes=10)
    assert [len(c) for c in rounds._chunks(runtime, fake, config, "evaluation", row, items)] == [1] * 12


def test_only_transient_expired_and_cancelled_failures_are_asked_again():
    retry = rounds._retryable
    assert retry(BatchResult("a", "expired")) and retry(BatchResult("a", "canceled"))
    assert retry(BatchResult("a", "errored", status=429)) and retry(BatchResult("a", "errored", status=503))
    assert retry(BatchResult("a", "errored", error="no text"))
    assert not retry(BatchResult("a", "errored", status=400)) and not retry(BatchResult("a", "errored", status=501))


def test_a_submitted_batch_holds_its_requests_until_collected_into_the_paid_reply_ledger_at_the_batch_price(
        rt, fake, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unit")
    runtime = rt()
    batch_row(runtime)
    items = wanted(runtime, evaluations(runtime)[:3])
    states: dict[str, str] = {}
    with batch_ledger.locked(runtime.paths):
        rounds._decide_and_submit(runtime, "evaluation", batch_policy.batch_settings(runtime), items,
                                            states)
    assert fake.submitted == [list(items)] and states == {}
    assert set(batch_ledger.held(runtime.paths)) == {("evaluation", g) for g in items}
    (state,) = batch_ledger.live_states(runtime.paths)
    assert state["state"] == "submitted" and state["batch_id"] == "remote_1" and state["key_env"] == "OPENAI_API_KEY"
    assert "sk-unit" not in runtime.paths.provider_batch_state(state["local_id"]).read_text()

    with batch_ledger.locked(runtime.paths):
        assert rounds.collect_live(runtime, items, states)
    assert states == dict.fromkeys(items, batch_policy.COLLECTED)
    assert batch_ledger.held(runtime.paths) == {} and batch_ledger.live_states(runtime.paths) == []
    member, prompt = items[next(iter(items))].member, items[next(iter(items))].prompt
    saved = ledger.saved_reply(runtime.paths, member, prompt.sha256)
    assert saved.cost_usd == pytest.approx((1000 * 1 + 500 * 4) / 1e6) and saved.attempts == 1
    calls = [json.loads(line) for line in runtime.paths.llm_calls_jsonl.read_text().splitlines()]
    calls = [c for c in calls if c["stage"] == "evaluation"]
    assert sorted((c["gen_id"], c["batch_id"]) for c in calls) == sorted((g, "remote_1") for g in items)
    assert ledger.answer(runtime, member, prompt).source == "saved"


def test_a_batch_whose_create_answer_was_lost_is_found_again_or_abandoned(rt, fake, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unit")
    runtime = rt()
    batch_row(runtime)
    base = {"state": "preparing", "provider": "fake-batch", "route": "openai", "api_base": "", "key_env":
            "OPENAI_API_KEY", "model_id": "offline_b", "model": "openai/m", "stage": "evaluation", "batch_id": None,
            "requests": 1, "created_at": "now", "created_epoch": 0.0}
    for local_id, found in (("pb_20250101T000000_00000001", "remote_lost"), ("pb_20250101T000000_00000002", None)):
        batch_ledger.write_requests(runtime.paths, local_id, {})
        fake.found = found
        state = {**base, "local_id": local_id}
        with batch_ledger.locked(runtime.paths):
            assert rounds._resolve_preparing(runtime.paths, fake, None, state) is bool(found)
    states = {s["local_id"]: (s["state"], s["batch_id"]) for s in batch_ledger.all_states(runtime.paths)}
    assert states == {"pb_20250101T000000_00000001": ("submitted", "remote_lost"),
                      "pb_20250101T000000_00000002": ("abandoned", None)}


def test_no_direct_call_for_a_request_a_live_batch_holds_or_for_a_batched_document_left_uncollected(rt, fake,
                                                                                                       monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unit")
    runtime = rt()
    batch_row(runtime)
    items = wanted(runtime, evaluations(runtime)[:1])
    with batch_ledger.locked(runtime.paths):
        rounds._decide_and_submit(runtime, "evaluation", batch_policy.batch_settings(runtime), items,
                                            {})
    item = next(iter(items.values()))
    with pytest.raises(batch_policy.BatchPendingError, match="still in flight, so no direct call is made"):
        ledger.answer(runtime, item.member, item.prompt)
    other = evaluations(runtime)[1]
    with pytest.raises(batch_policy.BatchPendingError, match="no batch round of this run collected it"):
        ledger.answer(runtime, other, documents.document_prompt(runtime, other))
    calls = [json.loads(line) for line in runtime.paths.llm_calls_jsonl.read_text().splitlines()]
    assert [c for c in calls if c["stage"] == "evaluation"] == []


def test_the_gate_holds_back_batched_documents_and_the_reports_and_targets_one_round_per_stage(rt):
    from daydream import targets

    runtime = rt()
    batch_row(runtime)
    gate = batch_gate.gate(runtime)
    batched = {m.gen_id for m in evaluations(runtime)}
    assert gate.blocked == batched and len(gate.rounds) == 1 and "/batch_rounds/" in gate.rounds[0]
    assert batch_gate.gate(runtime) == gate, "the same round on every look"
    outputs = targets.cohort_outputs(runtime, "tiny")
    assert gate.rounds[0] in outputs and not any("/reports/" in f for f in outputs)
    assert not [f for f in outputs if any(f"/{g}/" in f for g in batched)]
    assert not targets.nothing_waits_on_batches(runtime)
    # the other documents, in groups of about sqrt(N) (stand-ins asking for their missing files), not the
    # stale report, which reads every document
    due = targets.document_targets(runtime, ["tiny"])
    assert due and all("/documents_due/" in f for f in due)
    asked = [f for path in due for f in targets.documents_due_inputs(
        runtime, *path.rsplit("/", 1)[1].removesuffix(".txt").rsplit("-", 1))]
    others = [m for m in runtime.membership.members("tiny") if m.gen_id not in batched]
    # one file of each (none is made yet): a document's one job makes all four
    assert sorted(asked) == sorted(targets.gen_files(runtime, m)[0] for m in others)


def test_with_resubmit_direct_a_failed_request_is_let_through_to_a_direct_call_and_a_final_error_is_not(
        rt, fake, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unit")
    runtime = rt(batch={"resubmit": "direct"})
    batch_row(runtime)
    busy, refused = evaluations(runtime)[:2]
    monkeypatch.setattr(fake, "results", lambda target, batch_id, ids: [
        BatchResult(busy.gen_id, "errored", error="overloaded", status=503),
        BatchResult(refused.gen_id, "errored", error="too long", status=400)])
    items, states = wanted(runtime, [busy, refused]), {}
    config = batch_policy.batch_settings(runtime)
    with batch_ledger.locked(runtime.paths):
        rounds._decide_and_submit(runtime, "evaluation", config, items, states)
        rounds.collect_live(runtime, items, states)
        rounds._decide_and_submit(runtime, "evaluation", config, items, states)
    assert states == {busy.gen_id: batch_policy.DIRECT, refused.gen_id: batch_policy.FAILED}
    assert len(fake.submitted) == 1, "nothing submitted again"
    rounds._finish_round(runtime, "evaluation", "0123456789ab", str(tmp_path / "round.json"), None,
                                   [busy, refused], items, states)
    batch_policy.refuse_direct_call(runtime, busy, items[busy.gen_id].prompt)
    with pytest.raises(batch_policy.BatchPendingError, match=r"errored \(HTTP 400\): too long after 1"):
        batch_policy.refuse_direct_call(runtime, refused, items[refused.gen_id].prompt)
    errors = [json.loads(line) for line in runtime.paths.llm_errors_jsonl.read_text().splitlines()]
    assert [(e["gen_id"], e["error_class"], e["status"]) for e in errors] == [(refused.gen_id, "BatchErrored", 400)]


def test_a_waiting_round_stops_sleeping_once_the_main_thread_has_ended(monkeypatch):
    import threading

    monkeypatch.setattr(threading, "main_thread", lambda: type("Ended", (), {"is_alive": lambda self: False})())
    started = time.monotonic()
    assert rounds._sleep(30) is False and time.monotonic() - started < 1


# -- the budget: a batch is reserved before it is submitted; batches in flight commit the budget ------
EVALUATION_MAX_TOKENS = 2048  # the tests reason with this completion limit


def loopback(runtime: Runtime, server: FakeOpenAIServer, model_id: str, *, batch: bool) -> None:
    """A model of the loaded experiment on the loopback server, USD 2 and 8 per million tokens
    direct (half in a batch), in batch mode or called directly."""
    batch_row(runtime, model_id, api_base=server.base_url, batch=batch)


def batch_high(runtime: Runtime, items: dict) -> float:
    """What the guard reserves for these requests: prompt words as tokens, the reply at
    max_tokens, at half of 2 and 8 USD per million tokens."""
    return sum((len(i.prompt.text.split()) * 2 + EVALUATION_MAX_TOKENS * 8) / 2 / 1e6 for i in items.values())


def one_round(runtime: Runtime, items: dict, out: Path) -> dict:
    """The round job of these documents, as the checkpoint runs it, and the record it writes."""
    stage, round_id = batch_gate.register(runtime, "evaluation", list(items))
    rounds.write_round(runtime, stage, runtime.run.batches.run_id, round_id, str(out))
    return json.loads(out.read_text())


@pytest.fixture
def budgeted(rt, monkeypatch, openai_server):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unit")
    monkeypatch.setattr(pricing, "count_tokens", lambda row, settings, text: len(text.split()))

    def make(budget_usd: float) -> Runtime:
        runtime = rt(budget_usd=budget_usd, batch={"wait": False},
                     llm={"stages": {"evaluation": {"max_tokens": EVALUATION_MAX_TOKENS}}})
        loopback(runtime, openai_server, "offline_b", batch=True)
        return runtime
    return make


def test_a_batch_that_could_pass_the_budget_is_not_submitted_and_its_documents_say_why(budgeted, openai_server,
                                                                                          tmp_path):
    runtime = budgeted(1.0)  # made again below with a budget under this batch's high estimate
    items = wanted(runtime, evaluations(runtime)[:3])
    high = batch_high(runtime, items)
    runtime = budgeted(high * 0.9)
    items = wanted(runtime, evaluations(runtime)[:3])
    record = one_round(runtime, items, tmp_path / "round.json")
    assert sum(openai_server.batches_created.values()) == 0, "zero batches created"
    assert record["documents"] == dict.fromkeys(items, batch_policy.REFUSED) and record["counts"]["refused"] == 3
    assert batch_ledger.all_states(runtime.paths) == []
    member = next(iter(items.values())).member
    with pytest.raises(BudgetReached) as refused:
        ledger.answer(runtime, member, items[member.gen_id].prompt)
    assert str(refused.value) == (
        f"{member.gen_id}: not submitted: the budget of all active cohorts (tiny) (budget_usd in the config = "
        f"{pricing.money(high * 0.9)}) is reached: spent $0.0000, and a batch of 3 requests (evaluation offline_b) "
        f"may cost up to {pricing.money(high)}; no new call starts, calls in flight finish and are saved. To make "
        "the rest: `snakemake plan` shows what it may cost; raise the budget (--config budget_usd=<more>) and run "
        "again")
    assert runtime.run.counters.snapshot()["budget_stop"].startswith("the budget of all active cohorts (tiny)")
    assert not runtime.paths.llm_calls_jsonl.exists() or not [
        c for c in map(json.loads, runtime.paths.llm_calls_jsonl.read_text().splitlines()) if c["stage"] == "evaluation"]


def test_a_run_whose_batches_in_flight_commit_the_budget_starts_no_more_calls(budgeted, openai_server, tmp_path):
    openai_server.set_batch_timing(processing=600)  # the batch stays in flight
    runtime = budgeted(1.0)
    items = wanted(runtime, evaluations(runtime)[:3])
    high = batch_high(runtime, items)
    runtime = budgeted(high)  # exactly this batch's high estimate
    items = wanted(runtime, evaluations(runtime)[:3])
    record = one_round(runtime, items, tmp_path / "round.json")
    assert record["documents"] == dict.fromkeys(items, batch_policy.IN_FLIGHT)
    assert sum(openai_server.batches_created.values()) == 1
    (state,) = batch_ledger.live_states(runtime.paths)
    requests = batch_ledger.read_requests(runtime.paths, state["local_id"]).values()
    assert sum(r["high_usd"] for r in requests) == pytest.approx(high), "each request carries its high estimate"

    later = budgeted(high)  # the next run: a new Run, the batch still in flight
    loopback(later, openai_server, "offline_a", batch=False)  # a priced model called directly
    direct = evaluations(later, "offline_a")[0]
    chat_before = openai_server.stats()["endpoint_counts"].get("POST /v1/chat/completions", 0)
    with pytest.raises(BudgetReached, match=r"spent \$0\.0000 and \$[0-9.]+ committed to provider batches in flight, "
                                            r"and a call \(evaluation offline_a\) may cost up to"):
        ledger.answer(later, direct, documents.document_prompt(later, direct))
    assert openai_server.stats()["endpoint_counts"].get("POST /v1/chat/completions", 0) == chat_before
    more = wanted(later, evaluations(later)[3:5])
    assert one_round(later, more, tmp_path / "later.json")["documents"] == dict.fromkeys(more, batch_policy.REFUSED)
    assert sum(openai_server.batches_created.values()) == 1, "no second batch"
