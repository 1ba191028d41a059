"""Real model calls through the real Snakefile (Snakemake's CLI, rules in threads) against
loopback OpenAI-protocol servers: faults per document, keep-going, reruns, the concurrency caps
with --cores 64, and no API key anywhere under data/."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from daydream.paths import Paths
from tests.conftest import add_models, config_file, jsonl, run_workflow, write_cohort
from tests.openai_server import FakeOpenAIServer, bad_request, length, rate_limit, reply

pytestmark = pytest.mark.e2e

KEY = "sk-e2e-loopback-KEY-9f8e7d6c5b4a"
OK_DRAFT = "<essay>Tide pools borrow weak ties.\nEach pool keeps a few strangers.\nThey carry news between pools.</essay>"
FAST_RETRIES = {"llm": {"max_concurrency": 6, "max_attempts": 4, "backoff_initial_s": 0.05,
                        "backoff_max_s": 0.2, "max_total_wait_s": 10}}


def drafts_by_model(data_root: Path, cohort_id: str) -> dict[str, str]:
    membership = pd.read_csv(Paths(data_root).membership_csv(cohort_id), dtype=str, keep_default_na=False)
    drafts = membership[membership.stage == "draft"]
    return dict(zip(drafts.llm_model_id, drafts.gen_id, strict=True))


def files_containing(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.fixture
def servers():
    with FakeOpenAIServer() as ok, FakeOpenAIServer() as bad, FakeOpenAIServer() as cut:
        yield {"loop_ok": ok, "loop_bad": bad, "loop_cut": cut}


def test_faults_fail_only_their_own_documents_and_a_rerun_pays_only_for_the_failed_call(
        tmp_path, data_root, cohorts_dir, servers, monkeypatch):
    monkeypatch.setenv("LOOP_API_KEY", KEY)
    add_models(data_root, [{"id": name, "api_base": server.base_url} for name, server in servers.items()])
    write_cohort(cohorts_dir, "faults", {
        "concepts": {"level": "paragraph", "k": 2, "combos": [["exaptation", "weak-ties"]]},
        "draft": {"templates": ["links-brainstorm"], "models": list(servers)},
        "essay": {"templates": ["copy-draft"], "models": ["draft"]},
        "evaluation": {"templates": ["novelty-judge"], "models": ["offline_a"]},
    })
    servers["loop_ok"].enqueue(rate_limit(), rate_limit(), reply(OK_DRAFT))
    servers["loop_bad"].enqueue(bad_request(f"Incorrect API key provided: {KEY}"))
    servers["loop_cut"].enqueue(length("<essay>Tide pools are where the"))
    settings = config_file(tmp_path, FAST_RETRIES)

    first = run_workflow(data_root, cohorts_dir, ["faults"], "--configfile", settings, offline=False, check=False)

    paths, drafts = Paths(data_root), drafts_by_model(data_root, "faults")
    log = first.stdout + first.stderr
    assert first.returncode != 0
    # 2 x 429 then 200: three requests, one raw.txt, attempts 3, and the rest of its chain done
    assert servers["loop_ok"].request_count == 3
    ok_meta = json.loads(paths.metadata_path("draft", drafts["loop_ok"]).read_text())
    assert ok_meta["attempts"] == 3 and ok_meta["truncated"] is False and ok_meta["model"] == "openai/fake-model"
    assert paths.raw_path("draft", drafts["loop_ok"]).read_text() == OK_DRAFT
    assert list((paths.gen_dir("draft", drafts["loop_ok"]) / ".replies").glob("*.json"))
    essays = pd.read_csv(paths.membership_csv("faults")).query("stage == 'evaluation'")
    assert sum(paths.parsed_path("evaluation", e).exists() for e in essays.gen_id) == 1
    # 400: one request, no raw.txt, one llm_errors.jsonl record, a one-line reason in the log
    assert servers["loop_bad"].request_count == 1
    assert not paths.raw_path("draft", drafts["loop_bad"]).exists()
    errors = jsonl(paths.llm_errors_jsonl)
    assert [(e["gen_id"], e["error_class"], e["status"], e["attempts"]) for e in errors] == [
        (drafts["loop_bad"], "BadRequestError", 400, 1)]
    assert (f"{drafts['loop_bad']}: model openai/fake-model (loop_bad) failed after 1 attempt(s): "
            "BadRequestError (HTTP 400)") in log
    # finish_reason length: raw.txt kept, metadata says truncated, the parse step fails saying why
    assert servers["loop_cut"].request_count == 1
    assert paths.raw_path("draft", drafts["loop_cut"]).read_text() == "<essay>Tide pools are where the"
    assert json.loads(paths.metadata_path("draft", drafts["loop_cut"]).read_text())["truncated"] is True
    assert not paths.parsed_path("draft", drafts["loop_cut"]).exists()
    assert "the reply was truncated (finish_reason=length" in log
    assert [e["gen_id"] for e in jsonl(paths.parse_errors_jsonl)] == [drafts["loop_cut"]]
    # the key was sent, and is nowhere under data/ (not even in the echoed 400 message) nor in the log
    assert {r["authorization"] for s in servers.values() for r in s.requests} == {f"Bearer {KEY}"}
    assert files_containing(data_root, KEY) == [] and KEY not in log

    second = run_workflow(data_root, cohorts_dir, ["faults"], "--configfile", settings, offline=False, check=False)

    # only the failed call is asked again; the paid ones (ok, truncated) are never re-requested
    counts = {name: server.request_count for name, server in servers.items()}
    assert counts == {"loop_ok": 3, "loop_bad": 2, "loop_cut": 1}
    assert paths.parsed_path("draft", drafts["loop_bad"]).exists()
    assert second.returncode != 0 and "the reply was truncated" in second.stdout + second.stderr
    assert files_containing(data_root, KEY) == []


def test_with_64_cores_neither_the_global_nor_a_models_cap_is_exceeded(tmp_path, data_root, cohorts_dir,
                                                                         monkeypatch):
    monkeypatch.setenv("LOOP_API_KEY", KEY)
    with FakeOpenAIServer(latency=0.1) as capped, FakeOpenAIServer(latency=0.1) as free:
        add_models(data_root, [{"id": "loop_capped", "api_base": capped.base_url, "max_concurrency": 2},
                               {"id": "loop_free", "api_base": free.base_url}])
        write_cohort(cohorts_dir, "busy", {
            "concepts": {"level": "paragraph", "k": 2,
                         "ids": ["exaptation", "weak-ties", "bisociation"]},
            "draft": {"templates": ["links-brainstorm"], "models": ["loop_capped", "loop_free"]},
            "essay": {"templates": ["copy-draft"], "models": ["draft"]},
            "evaluation": {"templates": ["novelty-judge", "rigor-judge"], "models": ["loop_capped", "loop_free"]},
        })
        peak_total, stop = [0], threading.Event()

        def watch():
            while not stop.is_set():
                peak_total[0] = max(peak_total[0], capped.in_flight + free.in_flight)
                time.sleep(0.002)

        watcher = threading.Thread(target=watch)
        watcher.start()
        scores_csv = Paths(data_root).cohort_report("busy", "parsing/aggregated_scores.csv")
        try:  # every document and the score table (not the figures and site, which make no call)
            run_workflow(data_root, cohorts_dir, ["busy"], str(scores_csv), "--cores", "64", "--configfile",
                         config_file(tmp_path, FAST_RETRIES), offline=False)
        finally:
            stop.set()
            watcher.join()
    # 3 combos: 6 drafts (copy essays make no call) and 24 evaluations, half per model: more calls
    # ready at once than either cap lets through
    assert capped.request_count == free.request_count == 15
    assert capped.peak_in_flight == 2
    assert free.peak_in_flight <= 6 and peak_total[0] <= 6
    scores = pd.read_csv(scores_csv)
    assert len(scores) == 24 and scores["score"].notna().all()
