"""The plan and the budgets against loopback OpenAI servers (one per model, each counting its
requests; the session's, `conftest.LoopbackServers`): the plan counts exactly the calls a run
then makes and brackets what they cost; an over-budget run makes no call; a run that reaches its
budget starts no more calls and loses none that were made.

Runs go through the real Snakefile; so do the refusals in the checkpoint and in `onstart`, and
`snakemake plan` without a key. The other plans and refusals are made in this process, as the
plan rule and the checkpoint make them (`plan_here`, `checkpoint_here`). The cohort run to the
end on an empty store is made once per session (`finished_loop_run`) and copied."""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from daydream import budget, cohorts, targets
from daydream.paths import Paths
from daydream.runtime import Runtime
from tests.conftest import REPO, add_models, config_file, copy_tree, jsonl, run_workflow, write_cohort
from tests.openai_server import PromptCache

pytestmark = pytest.mark.e2e

PRICES = {"input_cost_per_mtok": 2, "output_cost_per_mtok": 10, "cached_input_cost_per_mtok": 0.5}
# replies of the loopback server are ~45 words: max_tokens 100 keeps the high estimate close
SMALL = {"llm": {"max_concurrency": 6, "max_attempts": 2, "backoff_initial_s": 0.05, "backoff_max_s": 0.1,
                 "stages": {name: {"max_tokens": 100} for name in ("draft", "essay", "evaluation")}}}
COHORT = {
    "concepts": {"level": "paragraph", "k": 2, "ids": ["exaptation", "weak-ties", "bisociation"]},
    "draft": {"templates": ["links-brainstorm"], "models": ["loop_a"]},
    "essay": {"templates": ["essay-from-draft", "copy-draft"], "models": ["draft"]},
    "evaluation": {"templates": ["novelty-judge"], "models": ["loop_a", "loop_b"]},
}  # 3 drafts, 3 llm essays + 3 copies, 12 evaluations: 12 calls to loop_a, 6 to loop_b


MODELS = ("loop_a", "loop_b")
KEY = "sk-loop"


def loop_servers(servers) -> dict:
    """The session's two loopback servers of this module (0.2 s per reply)."""
    return {name: servers.get(f"plan_e2e_{name}", latency=0.2) for name in MODELS}


def add_loop_models(data_root: Path, servers: dict) -> None:
    add_models(data_root, [{"id": name, "api_base": servers[name].base_url, **PRICES} for name in MODELS])


@pytest.fixture
def loop(tmp_path, data_root, cohorts_dir, monkeypatch, loopback):
    """Two priced loopback models (the session's servers, as new) and the `loop` cohort."""
    monkeypatch.setenv("LOOP_API_KEY", KEY)
    servers = loop_servers(loopback)
    add_loop_models(data_root, servers)
    write_cohort(cohorts_dir, "loop", COHORT)
    return {**servers, "tmp_path": tmp_path}


@pytest.fixture(scope="session")
def finished_loop_run(tmp_path_factory, session_loopback) -> tuple[Path, dict[str, int]]:
    """COHORT run to the end through the Snakefile on an empty store, once per session, and the
    requests each model's server received. Read-only: a test copies it (`copy_tree`)."""
    root = tmp_path_factory.mktemp("finished_loop_run")
    data_root, cohorts_dir = root / "data", root / "cohorts"
    shutil.copytree(REPO / "data" / "1_raw", data_root / "1_raw")
    cohorts_dir.mkdir()
    servers = loop_servers(session_loopback)
    for server in servers.values():
        server.restore()
    add_loop_models(data_root, servers)
    write_cohort(cohorts_dir, "loop", COHORT)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOOP_API_KEY", KEY)
        run_workflow(data_root, cohorts_dir, ["loop"], "--cores", "8", "--configfile", config_file(root, SMALL),
                     offline=False)
    return root, {name: server.request_count for name, server in servers.items()}


def run(data_root, cohorts_dir, loop, *args, check=True, **config):
    """The workflow with SMALL and `config` (run_workflow's own --config would replace a second one)."""
    settings = config_file(loop["tmp_path"], {**SMALL, **config})
    return run_workflow(data_root, cohorts_dir, ["loop"], *args, "--cores", "8", "--configfile", settings,
                        offline=False, check=check)


def runtime(data_root: Path, cohorts_dir: Path, cohort: str = "loop", base: dict | None = None, **config) -> Runtime:
    """The Runtime the Snakefile builds for `run` (`base`: SMALL unless told)."""
    return Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": [cohort],
                    "offline": False, **(SMALL if base is None else base), **config})


def checkpoint_here(rt: Runtime) -> None:
    """The cohort checkpoint of a real run, for each active cohort whose membership is not
    current: the membership, then the budget check at its end (rules/cohort.smk)."""
    for cohort_id in rt.cohort_ids:
        if not targets.cohort_is_current(rt, cohort_id):
            cohorts.write_cohort(rt, cohort_id)
            budget.check_cohort(rt, cohort_id)


def plan_here(capsys, data_root: Path, cohorts_dir: Path, cohort: str = "loop", base: dict | None = None,
              **config) -> str:
    """`snakemake plan` in this process: the checkpoint of a run that only plans (no key, no
    budget check), then the plan rule; returns what it printed."""
    rt = runtime(data_root, cohorts_dir, cohort, base, **config)
    rt.run.planning_only = budget.planning_only([budget.PLAN_RULE])
    checkpoint_here(rt)
    capsys.readouterr()
    budget.write_plan(rt)
    return capsys.readouterr().out


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
        data_root, cohorts_dir, loop, finished_loop_run, capsys):
    paths = Paths(data_root)
    shown = plan_here(capsys, data_root, cohorts_dir)
    assert requests(loop) == {"loop_a": 0, "loop_b": 0} and not paths.gens_root.exists()
    rows = plan_rows(data_root)
    assert planned_calls(rows) == {("draft", "loop_a"): 3, ("essay", "loop_a"): 3, ("evaluation", "loop_a"): 6,
                                   ("evaluation", "loop_b"): 6}
    assert rows[("total", "")]["calls"] == "18" and rows[("total", "")]["note"] == ""
    assert "Cost plan of cohorts loop: 18 calls still to make" in shown
    assert "3 copies" in shown

    # the run: the same cohort on another empty store, through the Snakefile (once per session)
    run_root, run_requests = finished_loop_run
    paths = Paths(run_root / "data")
    assert made_calls(paths) == planned_calls(rows)
    assert run_requests == {"loop_a": 12, "loop_b": 6}
    costs = recorded_costs(paths)
    for key, row in rows.items():
        cost = sum(costs.values()) if key[0] == "total" else costs[key]
        assert float(row["cost_usd_low"]) <= cost <= float(row["cost_usd_high"]), (key, row, cost)
        assert float(row["cost_usd_batch_high"]) == pytest.approx(float(row["cost_usd_high"]) / 2, rel=1e-6)


def test_on_a_half_finished_store_the_plan_counts_only_what_is_missing(data_root, cohorts_dir, loop, capsys):
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

    shown = plan_here(capsys, data_root, cohorts_dir)

    rows = plan_rows(data_root)
    assert planned_calls(rows) == {("evaluation", "loop_a"): 1, ("evaluation", "loop_b"): 6}
    assert "1 with a paid reply in the ledger" in shown
    # medians of the finished calls now give the low estimate
    assert int(rows[("evaluation", "loop_a")]["completion_tokens_low"]) > 0
    before = requests(loop)
    run(data_root, cohorts_dir, loop)
    assert {m: requests(loop)[m] - before[m] for m in before} == {"loop_a": 1, "loop_b": 6}


def test_an_over_budget_run_stops_before_the_first_call_with_the_numbers_and_the_override(
        data_root, cohorts_dir, loop, capsys):
    paths = Paths(data_root)
    new_cohort = run(data_root, cohorts_dir, loop, check=False, budget_usd=0.005)
    out = new_cohort.stdout + new_cohort.stderr
    assert new_cohort.returncode != 0 and requests(loop) == {"loop_a": 0, "loop_b": 0}
    assert "the missing calls could exceed a budget, so none of them is started" in out
    assert "all active cohorts (loop), budget_usd in the config = $0.0050: spent so far $0.0000 + 18 missing" in out
    assert "--config budget_usd=0.0" in out and "--config budget_override=true" in out
    assert not paths.gens_root.exists()

    planned = plan_here(capsys, data_root, cohorts_dir, budget_usd=0.005)  # the plan is never refused
    assert "over: a run is refused: all active cohorts (loop)" in planned
    current = run(data_root, cohorts_dir, loop, check=False, budget_usd=0.005)
    out = current.stdout + current.stderr
    assert current.returncode != 0 and requests(loop) == {"loop_a": 0, "loop_b": 0}
    assert "BudgetRefused" in out and "spent so far $0.0000 + 18 missing call(s)" in out
    assert not paths.gens_root.exists(), "refused in onstart: before any job"

    spec = {**COHORT, "budget_usd": 0.001}  # a cohort's own budget (its checkpoint, in this process)
    write_cohort(cohorts_dir, "loop", spec)
    with pytest.raises(budget.BudgetRefused) as refused:
        checkpoint_here(runtime(data_root, cohorts_dir))
    out = str(refused.value)
    assert requests(loop) == {"loop_a": 0, "loop_b": 0} and not paths.gens_root.exists()
    assert f"cohort loop, budget_usd in {cohorts_dir / 'loop.yaml'} = $0.0010" in out
    assert "--config budget_override=true" in out


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
    # shown as the user error it is (`BudgetReached: <message>`, no frames), once; the rest are counted
    assert len(re.findall(r"^BudgetReached: ", out, re.M)) == 1, out
    assert "not started (budget)" in out

    rest = run(data_root, cohorts_dir, loop, budget_usd=1)
    calls = jsonl(paths.llm_calls_jsonl)
    assert sum(requests(loop).values()) == len(calls) == 18
    assert max(Counter(c["gen_id"] for c in calls).values()) == 1, "no document was paid twice"
    assert "run finished" in rest.stderr



NEW_CONCEPTS = ["default-mode-network", "generator-verifier-gap", "adjacent-possible", "incubation-effect",
                "analogical-transfer"]


def test_after_one_cohort_the_plan_of_the_next_brackets_its_cost_within_a_factor_of_two(
        data_root, cohorts_dir, loop, finished_loop_run, capsys):
    paths = Paths(data_root)
    copy_tree(finished_loop_run[0] / "data", data_root)  # cohort A, run to the end: the history
    copy_tree(finished_loop_run[0] / "cohorts", cohorts_dir)
    before = len(jsonl(paths.llm_calls_jsonl))
    assert before == 18
    write_cohort(cohorts_dir, "loop", {**COHORT, "concepts": {**COHORT["concepts"], "ids": NEW_CONCEPTS[:4]}})

    shown = plan_here(capsys, data_root, cohorts_dir)

    rows = plan_rows(data_root)
    total = rows.pop(("total", ""))
    assert {row["basis"] for row in rows.values()} == {"history n=3", "history n=6"}, rows
    assert "basis" in shown and "history n=6" in shown
    low, high = float(total["cost_usd_low"]), float(total["cost_usd_high"])
    assert 0 < low and high / low <= 2, (low, high)
    run(data_root, cohorts_dir, loop)  # cohort B: 6 new combos
    made = jsonl(paths.llm_calls_jsonl)[before:]
    assert len(made) == int(total["calls"]) == 36
    assert low <= sum(c["cost_usd"] for c in made) <= high


def test_a_budget_with_an_unpriced_model_is_refused_before_any_call_naming_the_model(data_root, cohorts_dir, loop,
                                                                                      capsys):
    add_models(data_root, [{"id": "loop_free", "api_base": loop["loop_b"].base_url}])  # no price: fake-model
    write_cohort(cohorts_dir, "loop", {**COHORT, "evaluation": {"templates": ["novelty-judge"],
                                                                  "models": ["loop_a", "loop_free"]}})
    with pytest.raises(budget.BudgetRefused) as refused:  # the new cohort's checkpoint, in this process
        checkpoint_here(runtime(data_root, cohorts_dir, budget_usd=10))
    out = str(refused.value)
    assert requests(loop) == {"loop_a": 0, "loop_b": 0}
    assert "no known price for loop_free" in out and "input_cost_per_mtok" in out
    assert not Paths(data_root).gens_root.exists()

    planned = plan_here(capsys, data_root, cohorts_dir)
    assert "unknown for 6 calls: no price for loop_free (6 calls)" in planned


def test_a_plan_needs_no_key_and_a_run_without_keys_is_refused_before_any_call(data_root, cohorts_dir, monkeypatch,
                                                                                capsys):
    for variable in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    add_models(data_root, [{"id": "claude", "model": "claude-sonnet-4-5", "route": "anthropic", "api_key_env": ""},
                           {"id": "mini", "model": "gpt-4o-mini", "route": "openai", "api_key_env": ""}])
    write_cohort(cohorts_dir, "keyless", {**COHORT, "draft": {"templates": ["links-brainstorm"], "models": ["claude"]},
                                          "evaluation": {"templates": ["novelty-judge"], "models": ["mini"]}})
    paths = Paths(data_root)

    offline = plan_here(capsys, data_root, cohorts_dir, "keyless", base={}, offline=True)
    assert "This run costs $0 (offline=true" in offline
    shown = run_workflow(data_root, cohorts_dir, ["keyless"], "plan", offline=False)  # `plan` as the target

    rows = plan_rows(data_root)
    assert {r["price_source"] for k, r in rows.items() if k[0] != "total"} == {"litellm"}
    assert float(rows[("total", "")]["cost_usd_low"]) > 0 and rows[("total", "")]["note"] == ""
    assert "This run costs $0" not in shown.stdout
    with pytest.raises(budget.MissingKeys) as refused:  # a run's onstart, in this process
        budget.check_before_run(runtime(data_root, cohorts_dir, "keyless", base={}), targets=())
    out = str(refused.value)
    assert "export ANTHROPIC_API_KEY=" in out and "export OPENAI_API_KEY=" in out
    assert not list(paths.gens_root.glob("*/*/raw.txt")), "no call was made"


RUBRIC = " ".join(f"Criterion {i} asks whether the essay gives careful reasons for its claim number {i} and "
                  "whether an expert would accept them." for i in range(1, 81))  # 1,440 words


def add_rubric_template(data_root: Path) -> None:
    raw = data_root / "1_raw"
    with (raw / "evaluation_templates.csv").open("a", encoding="utf-8") as handle:
        handle.write("rubric-judge,Rubric Judge,One long rubric then the essay,in_last_line,llm,True,0,9\n")
    (raw / "templates" / "evaluation" / "rubric-judge.txt").write_text(
        f"{RUBRIC}\n\nEssay:\n{{{{ response }}}}\n\nEnd with the line SCORE: <0-9>\n", encoding="utf-8")


def test_the_plans_cache_projection_for_forty_evaluations_sharing_a_rubric_is_within_ten_percent(
        data_root, cohorts_dir, loop, capsys):
    paths = Paths(data_root)
    add_rubric_template(data_root)
    rubric = {**COHORT, "evaluation": {"templates": ["rubric-judge"], "models": ["loop_a", "loop_b"]}}
    write_cohort(cohorts_dir, "loop", rubric)
    run(data_root, cohorts_dir, loop)  # a first cohort: the history (12 evaluations)
    before = len(jsonl(paths.llm_calls_jsonl))
    for name in ("loop_a", "loop_b"):  # what a provider's cache holds after its lifetime has passed
        loop[name].prompt_cache = PromptCache()
    write_cohort(cohorts_dir, "loop", {**rubric, "concepts": {**COHORT["concepts"], "ids": NEW_CONCEPTS}})

    plan_here(capsys, data_root, cohorts_dir)
    rows = plan_rows(data_root)
    projected = sum(int(rows[("evaluation", m)]["cache_read_tokens"]) for m in ("loop_a", "loop_b"))
    assert all(int(rows[("evaluation", m)]["calls"]) == 20 for m in ("loop_a", "loop_b"))
    assert int(rows[("total", "")]["cache_write_tokens"]) == 0, "OpenAI bills no cache write"
    done = run(data_root, cohorts_dir, loop)
    assert "prompt cache: " in done.stderr and "input tokens read from the providers' caches, saving $" in done.stderr

    made = jsonl(paths.llm_calls_jsonl)[before:]
    evaluations = [c for c in made if c["stage"] == "evaluation"]
    recorded = sum(c["usage"]["cached_tokens"] for c in evaluations)
    assert len(evaluations) == 40 and recorded > 0
    assert abs(projected - recorded) <= 0.1 * recorded, (projected, recorded)
    for call in made:  # the cost of each call is its usage at the cached rate
        usage = call["usage"]
        expected = ((usage["prompt_tokens"] - usage["cached_tokens"]) * 2 + usage["cached_tokens"] * 0.5
                    + usage["completion_tokens"] * 10) / 1e6
        assert call["cost_usd"] == pytest.approx(expected, rel=1e-9)
        meta = json.loads(paths.metadata_path(call["stage"], call["gen_id"]).read_text())
        assert meta["cost_usd"] == call["cost_usd"] and meta["usage"] == usage
    assert "prompt cache so far: " in plan_here(capsys, data_root, cohorts_dir)
