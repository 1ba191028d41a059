"""`snakemake plan` and the budgets through the real Snakefile against loopback OpenAI servers
(one per model, each counting its requests): the plan counts exactly the calls a run then makes
and brackets what they cost; an over-budget run makes no call; a run that reaches its budget
starts no more calls and loses none that were made."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from daydream.paths import Paths
from tests.conftest import add_models, config_file, jsonl, run_workflow, write_cohort
from tests.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.e2e

PRICES = {"input_cost_per_mtok": 2, "output_cost_per_mtok": 10}
# replies of the loopback server are ~45 words: max_tokens 100 keeps the high estimate close
SMALL = {"llm": {"max_concurrency": 6, "max_attempts": 2, "backoff_initial_s": 0.05, "backoff_max_s": 0.1,
                 "stages": {name: {"max_tokens": 100} for name in ("draft", "essay", "evaluation")}}}
COHORT = {
    "concepts": {"level": "paragraph", "k": 2, "ids": ["exaptation", "weak-ties", "bisociation"]},
    "draft": {"templates": ["links-brainstorm"], "models": ["loop_a"]},
    "essay": {"templates": ["essay-from-draft", "copy-draft"], "models": ["draft"]},
    "evaluation": {"templates": ["novelty-judge"], "models": ["loop_a", "loop_b"]},
}  # 3 drafts, 3 llm essays + 3 copies, 12 evaluations: 12 calls to loop_a, 6 to loop_b


@pytest.fixture
def loop(tmp_path, data_root, cohorts_dir, monkeypatch):
    """Two priced loopback models and the `loop` cohort."""
    monkeypatch.setenv("LOOP_API_KEY", "sk-loop")
    with FakeOpenAIServer(latency=0.2) as a, FakeOpenAIServer(latency=0.2) as b:
        add_models(data_root, [{"id": "loop_a", "api_base": a.base_url, **PRICES},
                               {"id": "loop_b", "api_base": b.base_url, **PRICES}])
        write_cohort(cohorts_dir, "loop", COHORT)
        yield {"loop_a": a, "loop_b": b, "tmp_path": tmp_path}


def run(data_root, cohorts_dir, loop, *args, check=True, **config):
    """The workflow with SMALL and `config` (run_workflow's own --config would replace a second one)."""
    settings = config_file(loop["tmp_path"], {**SMALL, **config})
    return run_workflow(data_root, cohorts_dir, ["loop"], *args, "--cores", "8", "--configfile", settings,
                        offline=False, check=check)


def plan_rows(data_root: Path) -> dict[tuple[str, str], dict]:
    with Paths(data_root).plan_csv.open(newline="", encoding="utf-8") as handle:
        return {(row["stage"], row["model_id"]): row for row in csv.DictReader(handle)}


def planned_calls(rows) -> Counter:
    return Counter({key: int(row["calls"]) for key, row in rows.items() if key[0] != "total"})


def requests(loop) -> dict[str, int]:
    return {name: loop[name].request_count for name in ("loop_a", "loop_b")}


def made_calls(paths: Paths) -> Counter:
    return Counter((c["stage"], c["model_id"]) for c in jsonl(paths.llm_calls_jsonl))


def recorded_costs(paths: Paths) -> Counter:
    """USD per (stage, model) from each document's metadata.json."""
    costs: Counter = Counter()
    for meta_path in paths.gens_root.glob("*/*/metadata.json"):
        meta = json.loads(meta_path.read_text())
        if meta["mode"] == "llm":
            costs[(meta["stage"], meta["model_id"])] += meta["cost_usd"]
    return costs


def test_on_an_empty_store_the_plan_counts_the_calls_the_run_makes_and_brackets_their_cost(
        data_root, cohorts_dir, loop):
    paths = Paths(data_root)
    shown = run(data_root, cohorts_dir, loop, "plan")
    assert requests(loop) == {"loop_a": 0, "loop_b": 0} and not paths.gens_root.exists()
    rows = plan_rows(data_root)
    assert planned_calls(rows) == {("draft", "loop_a"): 3, ("essay", "loop_a"): 3, ("evaluation", "loop_a"): 6,
                                   ("evaluation", "loop_b"): 6}
    assert rows[("total", "")]["calls"] == "18" and rows[("total", "")]["note"] == ""
    assert "Cost plan of cohorts loop: 18 calls still to make" in shown.stdout
    assert "3 copies" in shown.stdout

    run(data_root, cohorts_dir, loop)

    assert made_calls(paths) == planned_calls(rows)
    assert requests(loop) == {"loop_a": 12, "loop_b": 6}
    costs = recorded_costs(paths)
    for key, row in rows.items():
        cost = sum(costs.values()) if key[0] == "total" else costs[key]
        assert float(row["cost_usd_low"]) <= cost <= float(row["cost_usd_high"]), (key, row, cost)
        assert float(row["cost_usd_batch_high"]) == pytest.approx(float(row["cost_usd_high"]) / 2, rel=1e-6)


def test_on_a_half_finished_store_the_plan_counts_only_what_is_missing(data_root, cohorts_dir, loop):
    paths = Paths(data_root)
    write_cohort(cohorts_dir, "loop", {**COHORT, "evaluation": {"templates": ["novelty-judge"], "models": ["loop_a"]}})
    run(data_root, cohorts_dir, loop)
    assert requests(loop) == {"loop_a": 12, "loop_b": 0}
    membership = list(csv.DictReader(paths.membership_csv("loop").open()))
    draft = next(r["gen_id"] for r in membership if r["stage"] == "draft")
    evaluation = next(r["gen_id"] for r in membership if r["stage"] == "evaluation")
    paths.raw_path("draft", draft).unlink()  # its reply is saved in the ledger: no call
    for path in sorted(paths.gen_dir("evaluation", evaluation).rglob("*"), reverse=True):  # gone entirely
        path.unlink() if path.is_file() else path.rmdir()
    write_cohort(cohorts_dir, "loop", COHORT)  # and a second judge for every essay

    shown = run(data_root, cohorts_dir, loop, "plan")

    rows = plan_rows(data_root)
    assert planned_calls(rows) == {("evaluation", "loop_a"): 1, ("evaluation", "loop_b"): 6}
    assert "1 with a paid reply in the ledger" in shown.stdout
    # medians of the finished calls now give the low estimate
    assert int(rows[("evaluation", "loop_a")]["completion_tokens_low"]) > 0
    before = requests(loop)
    run(data_root, cohorts_dir, loop)
    assert {m: requests(loop)[m] - before[m] for m in before} == {"loop_a": 1, "loop_b": 6}


def test_an_over_budget_run_stops_before_the_first_call_with_the_numbers_and_the_override(
        data_root, cohorts_dir, loop):
    paths = Paths(data_root)
    new_cohort = run(data_root, cohorts_dir, loop, check=False, budget_usd=0.005)
    out = new_cohort.stdout + new_cohort.stderr
    assert new_cohort.returncode != 0 and requests(loop) == {"loop_a": 0, "loop_b": 0}
    assert "the missing calls could exceed a budget, so none of them is started" in out
    assert "all active cohorts (loop), budget_usd in the config = $0.0050: spent so far $0.0000 + 18 missing" in out
    assert "--config budget_usd=0.0" in out and "--config budget_override=true" in out
    assert not paths.gens_root.exists()

    planned = run(data_root, cohorts_dir, loop, "plan", budget_usd=0.005)  # the plan is never refused
    assert "over: a run is refused: all active cohorts (loop)" in planned.stdout
    current = run(data_root, cohorts_dir, loop, check=False, budget_usd=0.005)
    out = current.stdout + current.stderr
    assert current.returncode != 0 and requests(loop) == {"loop_a": 0, "loop_b": 0}
    assert "BudgetRefused" in out and "spent so far $0.0000 + 18 missing call(s)" in out
    assert not paths.gens_root.exists(), "refused in onstart: before any job"

    spec = {**COHORT, "budget_usd": 0.001}
    write_cohort(cohorts_dir, "loop", spec)
    cohort = run(data_root, cohorts_dir, loop, check=False)
    out = cohort.stdout + cohort.stderr
    assert cohort.returncode != 0 and requests(loop) == {"loop_a": 0, "loop_b": 0}
    assert f"cohort loop, budget_usd in {cohorts_dir / 'loop.yaml'} = $0.0010" in out
    assert f"in {cohorts_dir / 'loop.yaml'}" in out


def test_a_run_that_reaches_its_budget_starts_no_more_calls_and_loses_none(data_root, cohorts_dir, loop):
    paths = Paths(data_root)
    budget = 0.008
    done = run(data_root, cohorts_dir, loop, check=False, budget_usd=budget, budget_override=True)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    replied = sum(requests(loop).values())
    calls = jsonl(paths.llm_calls_jsonl)
    saved = sorted(paths.gens_root.glob("*/*/.replies/*.json"))
    assert 0 < replied < 18 and len(calls) == replied == len(saved), "every reply that came back is saved"
    sent = sorted(r["body"]["messages"][0]["content"] for m in ("loop_a", "loop_b") for r in loop[m].requests)
    assert sorted(json.loads(p.read_text())["prompt"] for p in saved) == sent
    assert {c["gen_id"] for c in calls} == {p.parent.parent.name for p in saved}
    assert all(paths.raw_path(c["stage"], c["gen_id"]).exists() for c in calls)
    assert sum(c["cost_usd"] for c in calls) <= budget
    assert "is reached" in out and "no new call starts, calls in flight finish and are saved" in out
    assert out.count("BudgetReached in file") == 1, "one budget stop is shown, the rest are counted"
    assert "not started (budget)" in out

    rest = run(data_root, cohorts_dir, loop, budget_usd=1)
    calls = jsonl(paths.llm_calls_jsonl)
    assert sum(requests(loop).values()) == len(calls) == 18
    assert max(Counter(c["gen_id"] for c in calls).values()) == 1, "no document was paid twice"
    assert "run finished" in rest.stderr

