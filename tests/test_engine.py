"""The call engine (daydream/engine.py) against the loopback server: each prompt is paid once
whether the job or the engine asks first, calls in flight reach the cap with no job running and
never pass it, a failed call reaches its job as the same error, a budget stops it, and a killed
engine's rerun pays for nothing twice. Every count is read from the server or the ledger."""

from __future__ import annotations

import csv
import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from daydream import calls, cohorts, documents, engine, ledger, pricing, stages
from daydream.paths import Paths
from daydream.run import BudgetReached
from daydream.runtime import Runtime
from tests.conftest import config_file, jsonl, run_workflow, write_cohort
from tests.openai_server import FakeOpenAIServer, bad_request

pytest_plugins = ["tests.openai_fixtures"]

PRICES = {"input": 2.0, "output": 10.0}  # USD per million tokens
MAX_TOKENS = 200
SETTINGS = {"max_attempts": 2, "backoff_initial_s": 0.01, "backoff_max_s": 0.02, "max_total_wait_s": 5,
            "stages": {stage: {"max_tokens": MAX_TOKENS, "timeout_s": 5.0} for stage in ("draft", "evaluation")}}


def cohort(draft_replicates: int, essay: str = "copy-draft") -> dict:
    return {"concepts": {"level": "paragraph", "k": 2, "ids": ["default-mode-network", "exaptation", "weak-ties"]},
            "draft": {"templates": ["links-brainstorm"], "models": ["loop"], "replicates": draft_replicates},
            "essay": {"templates": [essay], "models": ["draft" if essay == "copy-draft" else "loop"], "replicates": 1},
            "evaluation": {"templates": ["novelty-judge"], "models": ["loop"], "replicates": 1}}


@pytest.fixture(autouse=True)
def words_as_tokens(monkeypatch):
    monkeypatch.setattr(pricing, "count_tokens", lambda row, settings, text, route=None: len(text.split()))


def add_loop_model(data_root: Path, base_url: str) -> None:
    path = data_root / "1_raw" / "llm_models.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns, rows = list(reader.fieldnames), list(reader)
    rows.append({c: "" for c in columns} | {
        "id": "loop", "model": "fake-model", "provider": "test", "display_name": "loop", "route": "openai",
        "api_base": base_url, "input_cost_per_mtok": str(PRICES["input"]),
        "output_cost_per_mtok": str(PRICES["output"])})
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def loop_runtime(data_root: Path, cohorts_dir: Path, server: FakeOpenAIServer, draft_replicates: int = 1,
                 cap: int = 8, essay: str = "copy-draft", **config) -> Runtime:
    add_loop_model(data_root, server.base_url)
    write_cohort(cohorts_dir, "tiny", cohort(draft_replicates, essay))
    rt = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"],
                  "llm": {**SETTINGS, "max_concurrency": cap}, **config})
    cohorts.build_cohort(rt.paths, "tiny", rt.paths.cohort_file("tiny"))
    return rt


def every_document(rt: Runtime) -> list[tuple[str, str]]:
    return [(m.stage, m.gen_id) for m in rt.membership.members("tiny")]


def started(rt: Runtime) -> engine.Engine:
    found = engine.start(rt, lambda: every_document(rt), jobs_in_threads=True)
    assert isinstance(found, engine.Engine)
    return found


def make(rt: Runtime, member) -> BaseException | None:
    """One document job, as the rule runs it; the error it failed with, or None."""
    try:
        documents.write_document(rt, member.stage, member.gen_id, str(rt.paths.data_root / "logs" / member.gen_id))
    except Exception as error:  # noqa: BLE001 - the test looks at which error it was
        return error
    return None


def jobs(rt: Runtime, members, threads: int = 4) -> dict[str, BaseException | None]:
    """The members' jobs, `threads` at a time, as Snakemake runs them."""
    outcome: dict[str, BaseException | None] = {}
    pending, lock = list(members), threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not pending:
                    return
                member = pending.pop(0)
            outcome[member.gen_id] = make(rt, member)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return outcome


def by_stage(rt: Runtime) -> dict[str, list]:
    return {stage: rt.membership.members("tiny", stage) for stage in stages.NAMES}


def sent_prompts(server: FakeOpenAIServer) -> Counter:
    return Counter(r["body"]["messages"][0]["content"] for r in server.requests)


def llm_documents(rt: Runtime) -> list:
    return [m for m in rt.membership.members("tiny") if rt.template(m).generator == "llm"]


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_engine_serves_only_a_real_runs_llm_documents_with_jobs_in_threads(data_root, cohorts_dir,
                                                                                 openai_server):
    rt = loop_runtime(data_root, cohorts_dir, openai_server)
    documents_of_run = lambda: every_document(rt)  # noqa: E731
    assert engine.start(rt, documents_of_run, jobs_in_threads=False) is None
    assert engine.start(Runtime({**rt.config, "offline": True}), documents_of_run, jobs_in_threads=True) is None
    assert engine.start(Runtime({**rt.config, "reply_batch_size": 10}), documents_of_run,
                        jobs_in_threads=True) is None
    essays = [(m.stage, m.gen_id) for m in by_stage(rt)["essay"]]
    assert engine.served(rt, essays) == []  # copies: nothing to call
    served = engine.served(rt, every_document(rt))
    assert {m.gen_id for m in served} == {m.gen_id for m in llm_documents(rt)}
    assert openai_server.request_count == 0


def test_jobs_racing_the_engine_pay_for_each_prompt_once_and_take_the_engines_answer(data_root, cohorts_dir):
    with FakeOpenAIServer(latency=0.2) as server:
        rt = loop_runtime(data_root, cohorts_dir, server, draft_replicates=2)
        run = started(rt)
        try:
            for members in by_stage(rt).values():  # Snakemake's order: a stage after its parents
                outcome = jobs(rt, members)
                assert all(error is None for error in outcome.values()), outcome
        finally:
            engine.finish(rt)
        assert rt.run.engine is None and run._stopped
        wanted = llm_documents(rt)
        assert server.request_count == len(wanted)
        assert sent_prompts(server) == Counter(
            rt.paths.prompt_path(m.stage, m.gen_id).read_text(encoding="utf-8") for m in wanted)
        assert Counter(c["gen_id"] for c in jsonl(rt.paths.llm_calls_jsonl)) == {m.gen_id: 1 for m in wanted}
        snapshot = rt.run.counters.snapshot()
        assert snapshot["sources"]["called"] == len(wanted) and snapshot["calls_made"] == len(wanted)
        assert snapshot["calls_in_flight"] == 0
        draft = by_stage(rt)["draft"][0]
        job_log = (rt.paths.data_root / "logs" / draft.gen_id).read_text(encoding="utf-8")
        assert f"call gen_id={draft.gen_id}" in job_log and f"{draft.gen_id}: called" in job_log


def test_calls_in_flight_reach_the_cap_with_no_job_running_and_never_pass_it(data_root, cohorts_dir):
    with FakeOpenAIServer(latency=0.3) as server:
        rt = loop_runtime(data_root, cohorts_dir, server, draft_replicates=4, cap=5)
        drafts = by_stage(rt)["draft"]
        assert len(drafts) == 12
        started(rt)
        try:
            wait_until(lambda: server.completed_count == len(drafts))  # no job has run
            wait_until(lambda: all(ledger.saved_reply(rt.paths, m, documents.document_prompt(rt, m).sha256)
                                   for m in drafts))
            assert server.peak_in_flight == 5
            outcome = jobs(rt, drafts, threads=1)
        finally:
            engine.finish(rt)
        assert all(error is None for error in outcome.values())
        assert server.request_count == len(drafts)  # the jobs took the engine's answers
        assert rt.run.counters.snapshot()["sources"]["called"] == len(drafts)


def test_children_are_called_ahead_of_their_parents_jobs_with_the_prompts_their_jobs_build(data_root, cohorts_dir):
    with FakeOpenAIServer() as server:
        rt = loop_runtime(data_root, cohorts_dir, server, essay="essay-from-draft")
        wanted = llm_documents(rt)  # drafts, essays and evaluations: three waves of calls
        started(rt)
        try:
            wait_until(lambda: server.completed_count == len(wanted))  # no job has run
            assert not any(rt.paths.parsed_path(m.stage, m.gen_id).exists() for m in wanted)
            outcome = {}
            for members in by_stage(rt).values():
                outcome.update(jobs(rt, members))
        finally:
            engine.finish(rt)
        assert all(error is None for error in outcome.values())
        assert server.request_count == len(wanted)  # the jobs' prompts were the ones sent, byte for byte
        assert rt.run.counters.snapshot()["sources"]["called"] == len(wanted)


def test_a_failed_call_reaches_its_job_as_the_same_error_and_is_recorded_once(data_root, cohorts_dir):
    with FakeOpenAIServer() as server:
        server.set_default(bad_request("no such model (fake server)"))
        rt = loop_runtime(data_root, cohorts_dir, server)
        drafts = by_stage(rt)["draft"]
        started(rt)
        try:
            wait_until(lambda: len(jsonl(rt.paths.llm_errors_jsonl)) == len(drafts))
            outcome = jobs(rt, drafts)
        finally:
            engine.finish(rt)
        errors = {e["gen_id"]: e for e in jsonl(rt.paths.llm_errors_jsonl)}
        assert set(errors) == {m.gen_id for m in drafts}  # once each: the job did not call again
        for member in drafts:
            error = outcome[member.gen_id]
            assert isinstance(error, calls.LLMCallError) and str(error) == errors[member.gen_id]["message"]
            assert "no such model" in str(error) and "not retried" in str(error)
        assert server.request_count == len(drafts)
        assert rt.run.counters.snapshot()["calls_failed"] == len(drafts)


def test_a_budget_stops_the_engine_and_its_jobs_fail_as_budget_stops(data_root, cohorts_dir):
    with FakeOpenAIServer(latency=0.05) as server:
        probe = loop_runtime(data_root, cohorts_dir, server, draft_replicates=4)
        drafts = by_stage(probe)["draft"]
        high = probe.run.guard._high(drafts[0], documents.document_prompt(probe, drafts[0]))
        rt = Runtime({**probe.config, "budget_usd": 2.5 * high})
        started(rt)
        try:
            outcome = jobs(rt, drafts)
        finally:
            engine.finish(rt)
        stopped = [g for g, error in outcome.items() if isinstance(error, BudgetReached)]
        made = [g for g, error in outcome.items() if error is None]
        assert made and stopped and len(made) + len(stopped) == len(drafts)
        assert server.request_count == len(made)  # no call past the budget, none paid twice
        spent = sum(c["cost_usd"] for c in jsonl(probe.paths.llm_calls_jsonl))
        assert spent <= 2.5 * high
        assert rt.run.counters.snapshot()["budget_stop"]


def test_a_killed_engine_is_rerun_without_paying_for_any_prompt_twice(data_root, cohorts_dir):
    with FakeOpenAIServer(latency=0.5) as server:
        rt = loop_runtime(data_root, cohorts_dir, server, draft_replicates=4, cap=4)
        drafts = by_stage(rt)["draft"]
        prompts = {m.gen_id: documents.document_prompt(rt, m) for m in drafts}

        def saved_now() -> set[str]:
            return {m.gen_id for m in drafts if ledger.saved_reply(rt.paths, m, prompts[m.gen_id].sha256)}

        run = started(rt)
        wait_until(lambda: len(saved_now()) >= 4 and server.request_count > 4)
        run.stop(wait=False)  # the kill: no new call; the call process saves the calls in flight, then ends
        run._process.process.wait(timeout=30)
        first, saved = sent_prompts(server), saved_now()
        assert 4 <= len(saved) < len(drafts)

        again = Runtime(dict(rt.config))  # the next run: a new process
        started(again)
        try:
            outcome = jobs(again, drafts)
        finally:
            engine.finish(again)
        assert all(error is None for error in outcome.values())
        second = sent_prompts(server) - first
        # only the documents whose reply was not saved are called again (replicates share a prompt)
        assert second == Counter(documents.document_prompt(again, m).text for m in drafts if m.gen_id not in saved)
        assert again.run.counters.snapshot()["sources"] == {"saved": len(saved), "called": len(drafts) - len(saved)}


@pytest.mark.e2e
def test_through_snakemake_calls_in_flight_pass_the_jobs_running_and_reach_the_cap(tmp_path, data_root,
                                                                                    cohorts_dir):
    with FakeOpenAIServer(latency=0.5) as server:
        add_loop_model(data_root, server.base_url)
        write_cohort(cohorts_dir, "wide", cohort(4))
        settings = config_file(tmp_path, {"llm": {**SETTINGS, "max_concurrency": 6}})
        done = run_workflow(data_root, cohorts_dir, ["wide"], "--configfile", settings, offline=False)
        membership = list(csv.DictReader((data_root / "cohorts" / "wide" / "membership.csv").open()))
        llm = [r for r in membership if r["stage"] != "essay"]
        # --cores 2: at most 2 jobs at a time, yet the engine holds the cap of 6 in flight
        assert server.peak_in_flight == 6
        assert server.request_count == len(llm) == 24
        assert len(jsonl(Paths(data_root).llm_calls_jsonl)) == len(llm)
        assert "daydream" in done.stderr
        record = json.loads((data_root / "gens" / "draft" / llm[0]["gen_id"] / "metadata.json").read_text())
        assert record["model"] == "openai/fake-model"
