"""Batch mode through the real Snakefile against the loopback server's OpenAI Batch API and
Anthropic Message Batches: batches cut by the size limit, every custom_id submitted once, a
SIGKILL mid-batch that the next run reattaches to, only failed and expired requests asked
again, the batch price in metadata, and a run that submits and exits without an error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from daydream import cohorts
from daydream.paths import Paths
from daydream.runtime import Runtime
from tests.conftest import REPO, SNAKEMAKE, add_models, run_workflow, write_cohort
from tests.openai_server import FakeOpenAIServer, bad_request, expire, server_error

pytestmark = pytest.mark.e2e

KEY = "sk-batch-loopback-KEY-1a2b3c4d"
IDS5 = ["default-mode-network", "exaptation", "weak-ties", "bisociation", "red-teaming"]


def add_batch_models(data_root: Path, rows: list[dict]) -> None:
    """Loopback models in batch mode (route openai or anthropic), key from LOOP_API_KEY, priced
    by the row (USD 2 and 8 per million tokens direct, so half that in a batch)."""
    add_models(data_root, [{"batch": "true", "input_cost_per_mtok": "2", "output_cost_per_mtok": "8", **row}
                           for row in rows])


def judged_cohort(cohorts_dir: Path, models: list[str], replicates: int, ids=IDS5) -> None:
    """Offline drafts and essays (one llm essay and one copy per draft), judged in batch mode:
    5 concepts -> 10 combos -> 20 essays -> 20 x 2 templates x replicates evaluations per model."""
    write_cohort(cohorts_dir, "judged", {
        "concepts": {"level": "paragraph", "k": 2, "ids": ids},
        "draft": {"templates": ["idea-sketch"], "models": ["offline_a"]},
        "essay": {"templates": ["essay-from-draft", "copy-draft"], "models": ["draft"]},
        "evaluation": {"templates": ["novelty-judge", "rigor-judge"], "models": models, "replicates": replicates},
    })


def batch_config(tmp_path: Path, **batch) -> str:
    path = tmp_path / "batch.yaml"
    path.write_text(yaml.safe_dump({"batch": {"poll_interval_s": 0.2, **batch}}), encoding="utf-8")
    return str(path)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def evaluations(paths: Paths) -> pd.DataFrame:
    table = pd.read_csv(paths.membership_csv("judged"), dtype=str, keep_default_na=False)
    return table[table.stage == "evaluation"]


def complete(paths: Paths, table: pd.DataFrame) -> bool:
    return all(paths.parsed_path(r.stage, r.gen_id).exists() for r in table.itertuples())


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("LOOP_API_KEY", KEY)


def test_evaluations_make_one_batch_per_size_limit_and_each_request_is_submitted_once(
        tmp_path, data_root, cohorts_dir, key):
    """80 evaluations cut at 25 requests (the size limit's arithmetic is test_provider_batches'
    in-process test; this is the whole run: 4 batches, reports, nothing to do after)."""
    with FakeOpenAIServer() as server:
        add_batch_models(data_root, [{"id": "loop_judge", "api_base": server.base_url}])
        judged_cohort(cohorts_dir, ["loop_judge"], replicates=2)
        run_workflow(data_root, cohorts_dir, ["judged"], "--configfile", batch_config(tmp_path, max_requests=25),
                     offline=False)
        paths, evals = Paths(data_root), evaluations(Paths(data_root))
        assert len(evals) == 80 and complete(paths, pd.read_csv(paths.membership_csv("judged")))
        assert server.batches_created == {"openai": 4, "anthropic": 0}  # 25 + 25 + 25 + 5
        assert server.custom_id_counts("openai") == dict.fromkeys(evals.gen_id, 1)
        assert server.request_count == 0, "no direct call"
        calls = [c for c in jsonl(paths.llm_calls_jsonl) if c["stage"] == "evaluation"]
        assert len(calls) == 80 and len({c["batch_id"] for c in calls}) == 4
        meta = json.loads(paths.metadata_path("evaluation", evals.gen_id.iloc[0]).read_text())
        usage = meta["usage"]
        batch_price = (usage["prompt_tokens"] * 1 + usage["completion_tokens"] * 4) / 1e6
        assert meta["cost_usd"] == pytest.approx(batch_price) and meta["model"] == "openai/fake-model"
        scores = pd.read_csv(paths.cohort_report("judged", "parsing/aggregated_scores.csv"))
        assert len(scores) == 80 and scores.score.notna().all()

        again = run_workflow(data_root, cohorts_dir, ["judged"], "--configfile", batch_config(tmp_path),
                             offline=False)
        assert "Nothing to be done" in again.stdout + again.stderr
        assert server.batches_created["openai"] == 4 and set(server.custom_id_counts().values()) == {1}


def judged_runtime(data_root: Path, cohorts_dir: Path) -> Runtime:
    return Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["judged"],
                    "offline": False})


def planned(data_root: Path, cohorts_dir: Path) -> pd.DataFrame:
    """The cohort's evaluations after the checkpoint alone (no document made), made in this
    process as the checkpoint makes them."""
    cohorts.write_cohort(judged_runtime(data_root, cohorts_dir), "judged")
    return evaluations(Paths(data_root))


def snakemake_command(data_root: Path, cohorts_dir: Path, config: str, *args: str) -> list[str]:
    return [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--cores", "2", *args, "--configfile", config, "--config",
            f"data_root={data_root}", f"cohorts_dir={cohorts_dir}", 'cohorts=["judged"]', "offline=false"]


POLL = "GET /v1/batches/{id}"  # the loopback server's counter of batch retrievals


def wait_for(condition, run: subprocess.Popen, timeout: float = 600) -> None:
    """Until `condition()` holds, checked every 50 ms while the run lives; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert run.poll() is None, "the run ended before the condition held"
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.05)


def finish_after_a_new_look(server: FakeOpenAIServer, state_file: Path, last_look: str) -> None:
    deadline = time.monotonic() + 600  # a bound for a broken run only: a loaded machine is slow to start one
    while json.loads(state_file.read_text())["polled_at"] == last_look and time.monotonic() < deadline:
        time.sleep(0.05)
    server.finish_batches()


def test_a_run_killed_while_its_batch_runs_is_reattached_to_and_nothing_is_submitted_twice(
        tmp_path, data_root, cohorts_dir, key):
    with FakeOpenAIServer() as server:
        add_batch_models(data_root, [{"id": "loop_judge", "api_base": server.base_url}])
        judged_cohort(cohorts_dir, ["loop_judge"], replicates=1, ids=IDS5[:3])
        paths, config = Paths(data_root), batch_config(tmp_path)
        server.set_batch_timing(processing=600)
        command = snakemake_command(data_root, cohorts_dir, config)
        run = subprocess.Popen(command, cwd=data_root.parent, env=dict(os.environ), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        wait_for(lambda: server.endpoint_counts.get(POLL, 0) >= 2, run)  # a few polls of the batch in progress
        run.send_signal(signal.SIGKILL)
        run.wait()
        assert server.batches_created["openai"] == 1, "the run must be killed with its batch in flight"
        (record,) = json.loads(next(paths.provider_batches_dir.glob("pb_*[0-9a-f].json")).read_text()),
        assert record["state"] == "submitted" and record["batch_id"]
        evals = evaluations(paths)
        assert not any(paths.raw_path("evaluation", g).exists() for g in evals.gen_id)

        subprocess.run([*command, "--unlock"], cwd=data_root.parent, check=True, capture_output=True)
        state_file = paths.provider_batch_state(record["local_id"])
        finisher = threading.Thread(target=finish_after_a_new_look, args=(server, state_file, record["polled_at"]))
        finisher.start()  # the batch ends while the new run waits on it
        try:
            done = run_workflow(data_root, cohorts_dir, ["judged"], "--configfile", config, offline=False)
        finally:
            finisher.join()
        assert server.batches_created["openai"] == 1, "no new batch for the requests the live batch holds"
        assert server.custom_id_counts("openai") == dict.fromkeys(evals.gen_id, 1)
        assert complete(paths, pd.read_csv(paths.membership_csv("judged")))
        assert {c["batch_id"] for c in jsonl(paths.llm_calls_jsonl) if c["stage"] == "evaluation"} == {
            record["batch_id"]}
        assert "in_progress" in done.stderr, "the waiting round shows each batch's state"


def test_only_the_failed_and_expired_requests_are_submitted_again(tmp_path, data_root, cohorts_dir, key):
    with FakeOpenAIServer() as server:
        add_batch_models(data_root, [{"id": "loop_judge", "api_base": server.base_url}])
        judged_cohort(cohorts_dir, ["loop_judge"], replicates=1, ids=IDS5[:3])
        ids = sorted(planned(data_root, cohorts_dir).gen_id)
        failing, expiring, refused = set(ids[:2]), set(ids[2:4]), ids[4]
        seen: Counter = Counter()

        def first_time(chosen):
            def where(custom_id, body):
                if custom_id not in chosen:
                    return False
                seen[custom_id] += 1
                return seen[custom_id] == 1
            return where

        server.on_batch_request(server_error(503), where=first_time(failing))
        server.on_batch_request(expire(), where=first_time(expiring))
        server.on_batch_request(bad_request("prompt too long"), refused)
        done = run_workflow(data_root, cohorts_dir, ["judged"], "--configfile", batch_config(tmp_path),
                            offline=False, check=False)

        paths = Paths(data_root)
        counts = server.custom_id_counts("openai")
        assert {g for g, n in counts.items() if n == 2} == failing | expiring
        assert {g for g, n in counts.items() if n == 1} == set(ids) - failing - expiring
        assert server.batches_created["openai"] == 2 and server.request_count == 0
        assert done.returncode != 0 and f"{refused}: batch mode" in done.stderr
        errors = jsonl(paths.llm_errors_jsonl)
        assert [(e["gen_id"], e["status"], e["attempts"]) for e in errors] == [(refused, 400, 1)]
        assert all(paths.parsed_path("evaluation", g).exists() for g in ids if g != refused)
        paid = Counter(c["gen_id"] for c in jsonl(paths.llm_calls_jsonl) if c["stage"] == "evaluation")
        assert set(paid) == set(ids) - {refused} and set(paid.values()) == {1}
        again = [c["attempts"] for c in jsonl(paths.llm_calls_jsonl) if c["gen_id"] in failing | expiring]
        assert again == [2, 2, 2, 2]


def test_a_run_that_submits_and_exits_succeeds_and_a_later_run_collects(tmp_path, data_root, cohorts_dir, key):
    with FakeOpenAIServer() as server:
        add_batch_models(data_root, [{"id": "loop_judge", "api_base": server.base_url}])
        judged_cohort(cohorts_dir, ["loop_judge"], replicates=1, ids=IDS5[:3])
        paths, config = Paths(data_root), batch_config(tmp_path, wait=False)
        server.set_batch_timing(processing=600)
        first = run_workflow(data_root, cohorts_dir, ["judged"], "--configfile", config, offline=False)

        evals = evaluations(paths)
        assert server.batches_created["openai"] == 1
        assert not any(paths.raw_path("evaluation", g).exists() for g in evals.gen_id)
        assert all(paths.parsed_path("essay", g).exists() for g in set(evals.parent_gen_id))
        assert not paths.cohort_report("judged", "parsing/aggregated_scores.csv").exists()
        assert "still in flight" in first.stderr and "scripts/batches.py list" in first.stderr
        listed = subprocess.run([sys.executable, str(REPO / "scripts" / "batches.py"), "list", "--data-root",
                                 str(data_root)], capture_output=True, text=True, check=True).stdout
        assert "submitted" in listed and "loop_judge" in listed

        server.finish_batches()
        run_workflow(data_root, cohorts_dir, ["judged"], "--configfile", config, offline=False)
        assert complete(paths, pd.read_csv(paths.membership_csv("judged")))
        assert paths.cohort_report("judged", "parsing/aggregated_scores.csv").exists()
        assert server.batches_created["openai"] == 1
        assert server.custom_id_counts("openai") == dict.fromkeys(evals.gen_id, 1)


def test_anthropic_message_batches_cancel_collect_and_resubmit(tmp_path, data_root, cohorts_dir, key):
    with FakeOpenAIServer() as server:
        add_batch_models(data_root, [{"id": "loop_claude", "route": "anthropic", "model": "claude-haiku-4-5",
                                      "api_base": server.root_url}])
        judged_cohort(cohorts_dir, ["loop_claude"], replicates=1, ids=IDS5[:3])
        paths = Paths(data_root)
        server.set_batch_timing(processing=600)
        run_workflow(data_root, cohorts_dir, ["judged"], "--configfile", batch_config(tmp_path, wait=False),
                     offline=False)
        assert server.batches_created == {"openai": 0, "anthropic": 1}
        script = [sys.executable, str(REPO / "scripts" / "batches.py")]
        cancelled = subprocess.run([*script, "cancel", "--data-root", str(data_root)], capture_output=True,
                                   text=True, check=True)
        assert "pb_" in cancelled.stdout
        collected = subprocess.run([*script, "collect", "--data-root", str(data_root)], capture_output=True,
                                   text=True, check=True)
        assert "collected" in collected.stdout

        server.set_batch_timing(processing=0)
        run_workflow(data_root, cohorts_dir, ["judged"], "--configfile", batch_config(tmp_path), offline=False)
        evals = evaluations(paths)
        assert complete(paths, pd.read_csv(paths.membership_csv("judged")))
        assert server.batches_created["anthropic"] == 2
        assert server.custom_id_counts("anthropic") == dict.fromkeys(evals.gen_id, 2)
        meta = json.loads(paths.metadata_path("evaluation", evals.gen_id.iloc[0]).read_text())
        assert meta["model"] == "anthropic/claude-haiku-4-5" and meta["cost_usd"] > 0


def test_batch_mode_on_a_route_without_a_batch_api_fails_at_the_checkpoint(tmp_path, data_root, cohorts_dir):
    add_batch_models(data_root, [{"id": "router_judge", "route": "openrouter", "api_key_env": ""}])
    judged_cohort(cohorts_dir, ["router_judge"], replicates=1, ids=IDS5[:3])
    with pytest.raises(cohorts.CohortError) as refused:  # the checkpoint, in this process
        cohorts.write_cohort(judged_runtime(data_root, cohorts_dir), "judged")
    assert ("evaluation model 'router_judge' (route openrouter) is in batch mode (batch=true in "
            f"{Paths(data_root).models_csv}), but route openrouter has no batch API; batch mode works with routes "
            "openai, anthropic") in str(refused.value)
    assert not Paths(data_root).membership_csv("judged").exists()


def finish_once_made(server: FakeOpenAIServer, paths: Paths, gen_ids: list[str], timeout: float = 600) -> None:
    """Ends the batch once it is submitted and every document of `gen_ids` is parsed (or after
    `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (
            server.batches_created["openai"] and all(paths.parsed_path("evaluation", g).exists() for g in gen_ids)):
        time.sleep(0.05)
    server.finish_batches()


def test_a_waiting_round_takes_no_core_from_the_direct_calls(tmp_path, data_root, cohorts_dir, key):
    with FakeOpenAIServer() as server:
        add_batch_models(data_root, [{"id": "loop_judge", "api_base": server.base_url}])
        judged_cohort(cohorts_dir, ["loop_judge", "offline_b"], replicates=1, ids=IDS5[:3])
        direct = list(planned(data_root, cohorts_dir).query("llm_model_id == 'offline_b'").gen_id)
        server.set_batch_timing(processing=600)  # the batch ends once the direct calls are made: an event
        finisher = threading.Thread(target=finish_once_made, args=(server, Paths(data_root), direct))
        finisher.start()
        try:
            run_workflow(data_root, cohorts_dir, ["judged"], "--cores", "1", "--configfile", batch_config(tmp_path),
                         offline=False)
        finally:
            finisher.join()
        paths, evals = Paths(data_root), evaluations(Paths(data_root))
        (round_file,) = paths.reporting_dir.glob("batch_rounds/*/evaluation/*.json")
        direct = evals[evals.llm_model_id == "offline_b"].gen_id
        assert max(paths.parsed_path("evaluation", g).stat().st_mtime for g in direct) < round_file.stat().st_mtime
        assert complete(paths, pd.read_csv(paths.membership_csv("judged")))


def submitted(paths: Paths) -> bool:
    """Whether the ledger records a batch as submitted (what the round does before it sleeps)."""
    for path in paths.provider_batches_dir.glob("pb_*[0-9a-f].json"):
        try:
            if json.loads(path.read_text())["state"] == "submitted":
                return True
        except (json.JSONDecodeError, KeyError):  # being written
            continue
    return False


def test_ctrl_c_during_a_waiting_round_ends_the_run_promptly_and_keeps_the_batch(tmp_path, data_root, cohorts_dir,
                                                                                  key):
    with FakeOpenAIServer() as server:
        add_batch_models(data_root, [{"id": "loop_judge", "api_base": server.base_url}])
        judged_cohort(cohorts_dir, ["loop_judge"], replicates=1, ids=IDS5[:3])
        server.set_batch_timing(processing=6000)
        command = snakemake_command(data_root, cohorts_dir, batch_config(tmp_path, poll_interval_s=3000))
        run = subprocess.Popen(command, cwd=data_root.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
        wait_for(lambda: submitted(Paths(data_root)), run)  # the round goes to sleep now
        run.send_signal(signal.SIGINT)
        # the run ends without sleeping out its 3000 s between polls (else the timeout fails the test)
        _, stderr = run.communicate(timeout=600)
        assert "Snakemake is stopping; 12 requests stay in flight" in stderr and run.returncode != 0
        assert server.batches_created["openai"] == 1, stderr
        (state,) = [s for s in map(lambda p: json.loads(p.read_text()),
                                   Paths(data_root).provider_batches_dir.glob("pb_*[0-9a-f].json"))]
        assert state["state"] == "submitted", "the batch stays in the ledger for the next run"


def test_a_draft_whose_batch_request_fails_holds_back_only_its_own_essay(tmp_path, data_root, cohorts_dir, key):
    """The probe: in batch mode one failed draft held the next stage's batch back until the next
    run (the essays' round waited on every draft). Drafts and essays batched, one draft's request
    refused: the other essays are submitted and made in the same run."""
    with FakeOpenAIServer() as server:
        add_batch_models(data_root, [{"id": "loop_writer", "api_base": server.base_url}])
        write_cohort(cohorts_dir, "judged", {
            "concepts": {"level": "paragraph", "k": 2, "ids": IDS5[:3]},
            "draft": {"templates": ["links-brainstorm"], "models": ["loop_writer"]},
            "essay": {"templates": ["essay-from-draft"], "models": ["loop_writer"]},
            "evaluation": {"templates": ["novelty-judge"], "models": ["offline_b"]},
        })
        refused: list[str] = []

        def first_draft(custom_id, body):
            if custom_id.startswith("d_") and not refused:
                refused.append(custom_id)
                return True
            return False

        server.on_batch_request(bad_request("prompt too long"), where=first_draft)
        done = run_workflow(data_root, cohorts_dir, ["judged"], "--configfile", batch_config(tmp_path),
                            offline=False, check=False)
        paths = Paths(data_root)
        table = pd.read_csv(paths.membership_csv("judged"), dtype=str, keep_default_na=False)
        essays = table[table.stage == "essay"]
        held = set(essays[essays.parent_gen_id == refused[0]].gen_id)
        made = {g for g in essays.gen_id if paths.parsed_path("essay", g).exists()}
        assert done.returncode != 0 and f"{refused[0]}: batch mode" in done.stderr
        assert made == set(essays.gen_id) - held and len(made) == 2, done.stderr
        assert server.batches_created["openai"] == 2 and not held & set(server.custom_id_counts("openai"))
