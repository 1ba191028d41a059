"""The call engine's call process (daydream/call_process.py) under faults, against the loopback
server with its replies held: a call process killed mid-call fails only its calls in flight
(the engine makes the rest itself); a Snakemake process killed while calls are in flight takes
its call process with it, which first saves every reply that came back, so the next run reuses
them and pays for nothing twice. Counts are read from the server, the ledger and the records."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from daydream import call_process, calls, documents, engine, ledger
from daydream.call_process import CallProcessDied, portable
from daydream.runtime import Runtime
from tests.conftest import jsonl
from tests.openai_server import FakeOpenAIServer
from tests.test_engine import by_stage, jobs, llm_documents, loop_runtime, started, wait_until

pytest_plugins = ["tests.openai_fixtures"]
REPO = Path(__file__).resolve().parent.parent

# The Snakemake process of a run, reduced to what owns the call process: it starts the engine
# on the cohort's documents, prints its call process's pid, then waits to be killed.
PARENT = """
import json, sys, time
from daydream import engine
from daydream.runtime import Runtime
rt = Runtime(json.loads(sys.argv[1]))
run = engine.start(rt, lambda: [(m.stage, m.gen_id) for m in rt.membership.members("tiny")], jobs_in_threads=True)
print(run._process.process.pid, flush=True)
time.sleep(600)
"""

# A whole run's calls from the Snakemake process's side: every document's job, then the run's
# end; prints which documents failed and whether litellm was imported in this process.
WHOLE_RUN = """
import json, sys
from daydream import documents, engine
from daydream.runtime import Runtime
rt = Runtime(json.loads(sys.argv[1]))
members = rt.membership.members("tiny")
engine.start(rt, lambda: [(m.stage, m.gen_id) for m in members], jobs_in_threads=True)
failed = []
for m in members:
    try:
        documents.write_document(rt, m.stage, m.gen_id, str(rt.paths.data_root / "logs" / m.gen_id))
    except Exception as error:
        failed.append(f"{m.gen_id}: {error!r}")
engine.finish(rt)
print(json.dumps({"failed": failed, "litellm": "litellm" in sys.modules}), flush=True)
"""


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie waiting for a parent that does not reap it has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def saved(rt: Runtime, members) -> set[str]:
    return {m.gen_id for m in members
            if ledger.saved_reply(rt.paths, m, documents.document_prompt(rt, m).sha256) is not None}


def next_run_pays_for_none_of(rt: Runtime, server: FakeOpenAIServer, drafts, kept: set[str]) -> None:
    """The next run makes every draft: the `kept` replies from the ledger (no request to the
    server, each recorded once, as recovered), the others by a call."""
    again = Runtime(dict(rt.config))
    started(again)
    try:
        outcome = jobs(again, drafts)
    finally:
        engine.finish(again)
    assert all(error is None for error in outcome.values()), outcome
    assert server.request_count == len(drafts)  # the kept replies were not paid for again
    assert again.run.counters.snapshot()["sources"] == {"saved": len(kept), "called": len(drafts) - len(kept)}
    lines = jsonl(again.paths.llm_calls_jsonl)
    assert Counter(c["gen_id"] for c in lines) == {m.gen_id: 1 for m in drafts}
    assert {c["gen_id"] for c in lines if c.get("recovered")} == kept


def test_errors_cross_the_boundary_as_themselves_or_with_their_text():
    billed = calls.Attempt("openai/m", 1, "billed", "EmptyReply", 200, "empty", {"total_tokens": 3}, 0.1, "stop",
                           "", 0.0, 10, 0.5)
    error = portable(calls.LLMCallError("g: failed", error_class="EmptyReply", attempts=2, status=200, billed=billed))
    assert isinstance(error, calls.LLMCallError) and str(error) == "g: failed"
    assert (error.error_class, error.attempts, error.status, error.billed) == ("EmptyReply", 2, 200, billed)

    class Unpicklable(Exception):
        def __reduce__(self):
            raise TypeError("no")

    try:
        raise Unpicklable("a bug")
    except Unpicklable as bug:
        crossed = portable(bug)
    assert type(crossed) is RuntimeError and str(crossed) == "Unpicklable: a bug"
    assert "in the call process" in crossed.__notes__[0] and "raise Unpicklable" in crossed.__notes__[0]


def test_a_call_process_killed_mid_call_fails_only_its_calls_in_flight(data_root, cohorts_dir):
    with FakeOpenAIServer() as server:
        rt = loop_runtime(data_root, cohorts_dir, server, draft_replicates=4, cap=4)
        drafts = by_stage(rt)["draft"]
        server.hold_replies()
        run = started(rt)
        try:
            wait_until(lambda: server.in_flight == 4)
            child = run._process.process
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            server.release_replies()
            outcome = jobs(rt, drafts)
        finally:
            engine.finish(rt)
        died = {g for g, error in outcome.items() if isinstance(error, CallProcessDied)}
        assert len(died) == 4 and all(outcome[g] is None for g in set(outcome) - died), outcome
        assert all("killed by SIGKILL" in str(outcome[g]) for g in died)
        assert saved(rt, drafts) == set(outcome) - died  # the rest were made on the engine's loop
        assert server.request_count == len(drafts)  # none of them twice
        snapshot = rt.run.counters.snapshot()
        assert snapshot["calls_in_flight"] == 0 and snapshot["sources"]["called"] == len(drafts) - 4
        assert Counter(c["gen_id"] for c in jsonl(rt.paths.llm_calls_jsonl)) == {g: 1 for g in set(outcome) - died}


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_snakemake_process_takes_its_call_process_after_every_reply_that_came_back_is_saved(
        data_root, cohorts_dir, signum):
    with FakeOpenAIServer() as server:
        rt = loop_runtime(data_root, cohorts_dir, server, draft_replicates=4, cap=4)
        drafts = by_stage(rt)["draft"]
        server.hold_replies()
        parent = subprocess.Popen([sys.executable, "-c", PARENT, json.dumps(rt.config)], stdout=subprocess.PIPE,
                                  text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            child = int(parent.stdout.readline())
            wait_until(lambda: server.in_flight == 4)
            parent.send_signal(signum)  # SIGTERM: Python's default, no handler runs: the same as a kill here
            parent.wait(timeout=30)
            assert saved(rt, drafts) == set()
            server.release_replies()  # the replies come back after the Snakemake process is gone
            wait_until(lambda: not alive(child), timeout=call_process.GRACE_S + 20)  # no orphan
        finally:
            parent.kill()
            parent.wait()
        assert server.request_count == 4 and server.completed_count == 4  # no call started after the kill
        kept = saved(rt, drafts)
        assert len(kept) == 4  # every reply that came back is in the ledger
        assert jsonl(rt.paths.llm_calls_jsonl) == []  # their lines were the Snakemake process's to write

        next_run_pays_for_none_of(rt, server, drafts, kept)


def test_the_snakemake_process_never_imports_litellm_when_the_call_process_makes_its_calls(data_root, cohorts_dir):
    """litellm (seconds, about 200 MB) is the call process's alone: the Snakemake process checks
    keys from the provider's class and prices replies (a model missing from the price map here,
    so every paid reply is priced again from its usage) with the entries the call process sent."""
    with FakeOpenAIServer() as server:
        rt = loop_runtime(data_root, cohorts_dir, server, draft_replicates=3, cap=4)
        models = data_root / "1_raw" / "llm_models.csv"
        with models.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        for row in rows:  # the loop model priced by the price map (where it is missing): no prices of its own
            if row["id"] == "loop":
                row.update(input_cost_per_mtok="", output_cost_per_mtok="")
        with models.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        called = llm_documents(rt)
        done = subprocess.run([sys.executable, "-c", WHOLE_RUN, json.dumps(rt.config)], capture_output=True,
                              text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        outcome = json.loads(done.stdout.strip().splitlines()[-1])
        assert outcome == {"failed": [], "litellm": False}, done.stderr[-3000:]
        assert server.request_count == len(called)
        assert saved(rt, called) == {m.gen_id for m in called}
        lines = jsonl(rt.paths.llm_calls_jsonl)
        assert Counter(c["gen_id"] for c in lines) == {m.gen_id: 1 for m in called}


# Loaded by the call process only (its command line names it): its ledger's save fails as a bug would.
BROKEN_SAVE = """
import sys
import time
if "daydream.call_process" in sys.orig_argv:
    from daydream import ledger

    def save_first(*args, **kwargs):
        raise RuntimeError("injected: the save broke")

    ledger.save_first = save_first
"""


def test_a_reply_the_call_process_could_not_save_fails_its_job_clearly_and_is_still_counted_and_recorded(
        data_root, cohorts_dir, tmp_path, monkeypatch):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(BROKEN_SAVE, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), str(REPO)]))
    with FakeOpenAIServer() as server:
        rt = loop_runtime(data_root, cohorts_dir, server, draft_replicates=2, cap=4)
        drafts = by_stage(rt)["draft"]
        started(rt)
        try:
            outcome = jobs(rt, drafts)
        finally:
            engine.finish(rt)
        assert all(isinstance(error, ledger.ReplyNotKept) for error in outcome.values()), outcome
        assert all("could not save its reply: RuntimeError: injected" in str(error) for error in outcome.values())
        assert server.request_count == len(drafts)  # none hung, none made twice
        assert saved(rt, drafts) == set()
        assert rt.run.counters.snapshot()["calls_in_flight"] == 0
        assert Counter(c["gen_id"] for c in jsonl(rt.paths.llm_calls_jsonl)) == {m.gen_id: 1 for m in drafts}


@pytest.mark.parametrize("loop", ["stuck", "answering"])
def test_a_run_stopped_without_waiting_still_has_its_call_process_save_every_reply_in_flight(
        data_root, cohorts_dir, monkeypatch, loop):
    """`Engine.stop(wait=False)` with four calls in flight, its loop answering or stuck (held by
    a callback longer than `stop` waits for it, as under a long collection): the call process is
    told that no call follows, never killed; the replies come back after `stop` returned, are
    saved, and the next run pays for none of them again."""
    monkeypatch.setattr(engine, "LOOP_ANSWER_S", 0.2)
    with FakeOpenAIServer() as server:
        rt = loop_runtime(data_root, cohorts_dir, server, draft_replicates=4, cap=4)
        drafts = by_stage(rt)["draft"]
        server.hold_replies()
        run = started(rt)
        wait_until(lambda: server.in_flight == 4)
        child = run._process.process
        if loop == "stuck":
            run._loop.call_soon_threadsafe(time.sleep, 3)
        run.stop(wait=False)
        assert child.poll() is None  # not killed: its calls are in flight
        assert saved(rt, drafts) == set()
        server.release_replies()
        assert child.wait(timeout=call_process.GRACE_S + 20) == 0
        kept = saved(rt, drafts)
        assert len(kept) == 4 and server.request_count == 4

        next_run_pays_for_none_of(rt, server, drafts, kept)
