"""Budgets: refused before the first call with the numbers and the ways on; during a run no call
starts that could pass a budget, counting the calls in flight at their high estimate."""

import json
import math
import threading
import time

import pytest

from daydream import budget, calls, cohorts, plan, pricing
from daydream.cohort_design import DesignError
from daydream.prompts import Prompt, sha256_text
from daydream.run import BudgetReached
from daydream.runtime import Runtime
from tests.conftest import TINY_COHORT, write_cohort
from tests.test_plan import add_priced_model

PRICED = {"input_cost_per_mtok": "2", "output_cost_per_mtok": "10"}
PROMPT = Prompt("word " * 100, sha256_text("word " * 100))
HIGH = (100 * 2 + 2048 * 10) / 1e6  # an evaluation prompt of 100 words at max_tokens 2048


@pytest.fixture(autouse=True)
def words_as_tokens(monkeypatch):
    monkeypatch.setattr(pricing, "count_tokens", lambda row, settings, text, route=None: len(text.split()))


# The tests reason with these completion limits; the schema's defaults may change.
TOKENS = {"llm": {"stages": {"draft": {"max_tokens": 4096}, "essay": {"max_tokens": 6144}, "evaluation": {"max_tokens": 2048}}}}


def priced_runtime(data_root, cohorts_dir, cohort=None, **config) -> Runtime:
    add_priced_model(data_root, "priced", **PRICED)
    write_cohort(cohorts_dir, "tiny", cohort or {**TINY_COHORT, "evaluation": {
        "templates": ["novelty-judge"], "models": ["priced"]}})
    rt = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"], **TOKENS, **config})
    cohorts.build_cohort(rt.paths, "tiny", rt.paths.cohort_file("tiny"))
    return rt


def priced_member(rt):
    return next(m for m in rt.membership.members("tiny", "evaluation") if m.llm_model_id == "priced")


def completion(cost, usage=None) -> calls.Completion:
    return calls.Completion("SCORE: 5", "openai/fake-model", "stop", usage or {}, cost, 0.1, 1)


def test_budgets_come_from_the_config_and_from_each_cohort_file(data_root, cohorts_dir):
    rt = priced_runtime(data_root, cohorts_dir, cohort={**TINY_COHORT, "budget_usd": 2.5}, budget_usd=10)
    found = budget.budgets(rt)
    assert [(b.name, b.usd, b.gen_ids is None) for b in found] == [
        ("all active cohorts (tiny)", 10.0, True), ("cohort tiny", 2.5, False)]
    assert found[1].gen_ids == frozenset(m.gen_id for m in rt.membership.members("tiny"))
    assert found[1].how_to_raise(3.001) == f"budget_usd: 3.01 in {rt.paths.cohort_file('tiny')}"
    assert found[0].how_to_raise() == "--config budget_usd=<more>"


def test_an_over_budget_run_is_refused_before_its_first_call_with_the_numbers_and_the_ways_on(
        data_root, cohorts_dir):
    rt = priced_runtime(data_root, cohorts_dir, budget_usd=0.01)
    with pytest.raises(budget.BudgetRefused) as refused:
        budget.check_before_run(rt, targets=set())
    message = str(refused.value)
    # 3 drafts and 3 essays on the free offline model, 6 evaluations on the priced one at max_tokens 2048
    needed = budget.standings(rt)[0].needed
    assert needed > 6 * 2048 * 10e-6  # (and the prompts, an essay at 6144 tokens inside some)
    assert "all active cohorts (tiny), budget_usd in the config = $0.0100: spent so far $0.0000 + 12 missing" in message
    assert f"over the budget by {plan.money(needed - 0.01)}" in message
    assert f"--config budget_usd={math.ceil(needed * 100) / 100:.2f}" in message
    assert "--config budget_override=true" in message and "`snakemake plan`" in message


def test_the_plan_alone_and_an_override_are_never_refused(data_root, cohorts_dir):
    rt = priced_runtime(data_root, cohorts_dir, budget_usd=0.01)
    budget.check_before_run(rt, targets={"plan"})
    budget.check_cohort(rt, "tiny")  # the checkpoint of a plan-only run
    with pytest.raises(budget.BudgetRefused):
        budget.check_before_run(rt, targets={"all"})
    with pytest.raises(budget.BudgetRefused):
        budget.check_cohort(rt, "tiny")
    rt.config["budget_override"] = "true"
    budget.check_before_run(rt, targets=set())


def test_a_cohort_budget_counts_only_its_documents_and_names_its_file(data_root, cohorts_dir):
    rt = priced_runtime(data_root, cohorts_dir, cohort={**TINY_COHORT, "budget_usd": 0, "evaluation": {
        "templates": ["novelty-judge"], "models": ["priced"]}})
    with pytest.raises(budget.BudgetRefused, match=r"cohort tiny, budget_usd in .*tiny.yaml = \$0.0000") as refused:
        budget.check_before_run(rt)
    needed = budget.standings(rt)[0].needed
    assert f"budget_usd: {math.ceil(needed * 100) / 100:.2f} in {rt.paths.cohort_file('tiny')}" in str(refused.value)


def test_a_cohort_file_whose_budget_is_no_number_is_named_with_the_fix(data_root, cohorts_dir):
    rt = priced_runtime(data_root, cohorts_dir)
    path = rt.paths.cohort_file("tiny")
    path.write_text(path.read_text() + "budget_usd: lots\n")
    with pytest.raises(DesignError, match=f"{path}: budget_usd: 'lots' is not a number >= 0; write the budget in USD"):
        budget.budgets(rt)


def test_a_model_without_a_price_cannot_run_under_a_budget(data_root, cohorts_dir):
    add_priced_model(data_root, "unpriced")
    rt = priced_runtime(data_root, cohorts_dir, cohort={**TINY_COHORT, "evaluation": {
        "templates": ["novelty-judge"], "models": ["unpriced"]}}, budget_usd=1000)
    with pytest.raises(budget.BudgetRefused, match="no known price for unpriced"):
        budget.check_before_run(rt)
    with pytest.raises(BudgetReached, match="model unpriced has no known price"):
        member = next(m for m in rt.membership.members("tiny", "evaluation"))
        rt.run.guard.admit(member, PROMPT)


def test_spend_so_far_is_what_the_recorded_calls_cost(data_root, cohorts_dir):
    rt = priced_runtime(data_root, cohorts_dir, budget_usd=1)
    member = priced_member(rt)
    rt.paths.reporting_dir.mkdir(parents=True)
    records = [{"gen_id": member.gen_id, "model_id": "priced", "cost_usd": 0.25, "usage": {}},
               {"gen_id": member.gen_id, "model_id": "priced", "cost_usd": None,  # priced from its usage
                "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 0}},
               {"gen_id": member.gen_id, "model_id": "gone", "cost_usd": None, "usage": {}},
               {"gen_id": "d_elsewhere", "model_id": "priced", "cost_usd": 7.0, "usage": {}}]
    rt.paths.llm_calls_jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    standing = budget.standings(rt)[0]
    assert standing.spent == pytest.approx(2.25) and standing.unknown_calls == 1
    assert "1 earlier call(s) of unknown cost" in standing.line()


def test_the_guard_never_lets_spend_and_calls_in_flight_pass_the_budget(data_root, cohorts_dir):
    rt = priced_runtime(data_root, cohorts_dir, budget_usd=3.5 * HIGH)
    member = priced_member(rt)
    lock, in_flight, peak, outcomes = threading.Lock(), [0], [0], []

    def one_call():
        try:
            with rt.run.spend(member, PROMPT) as ticket:
                with lock:
                    in_flight[0] += 1
                    peak[0] = max(peak[0], in_flight[0])
                time.sleep(0.05)
                with lock:
                    in_flight[0] -= 1
                rt.run.paid(ticket, completion(HIGH / 4))
            outcomes.append("called")
        except BudgetReached as error:
            outcomes.append(str(error))

    threads = [threading.Thread(target=one_call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    made = outcomes.count("called")
    assert peak[0] == 3, "three high estimates fit in 3.5, a fourth waits"
    assert made * HIGH / 4 <= 3.5 * HIGH and made == 11  # the 11th fits exactly: 10/4 + 1 = 3.5
    refused = [o for o in outcomes if o != "called"]
    assert len(refused) == 9 and all("is reached" in o and "no new call starts" in o for o in refused)
    snap = rt.run.counters.snapshot()
    assert snap["calls_made"] == 11 and snap["calls_refused"] == 9 and snap["budget_stop"]
    assert "(reached)" in rt.run.guard.status()


def test_a_failed_call_frees_its_reservation_and_costs_nothing(data_root, cohorts_dir):
    rt = priced_runtime(data_root, cohorts_dir, budget_usd=1.5 * HIGH)
    member = priced_member(rt)
    with pytest.raises(calls.LLMCallError):
        with rt.run.spend(member, PROMPT):
            raise calls.LLMCallError("boom", error_class="X", attempts=1)
    with rt.run.spend(member, PROMPT) as ticket:  # the whole budget is free again
        rt.run.paid(ticket, completion(None, {"prompt_tokens": 100, "completion_tokens": 10}))
    assert rt.run.guard.status() == f"budget {plan.money(300 / 1e6)} of {plan.money(1.5 * HIGH)}"


def test_without_a_budget_a_call_is_admitted_without_an_estimate(data_root, cohorts_dir, monkeypatch):
    rt = priced_runtime(data_root, cohorts_dir)
    monkeypatch.setattr(pricing, "count_tokens", lambda *args: pytest.fail("no estimate without a budget"))
    with rt.run.spend(priced_member(rt), PROMPT) as ticket:
        assert ticket.budgets == () and ticket.high == 0.0
    assert rt.run.guard.status() is None

def test_a_run_that_only_plans_needs_no_key_and_a_real_run_is_refused_before_any_call_without_one(
        data_root, cohorts_dir, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    add_priced_model(data_root, "claude", route="anthropic", api_base="", **PRICED)
    write_cohort(cohorts_dir, "tiny", {**TINY_COHORT, "evaluation": {"templates": ["novelty-judge"],
                                                                      "models": ["claude"]}})
    rt = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"], **TOKENS})
    with pytest.raises(cohorts.CohortError, match="export ANTHROPIC_API_KEY="):
        cohorts.write_cohort(rt, "tiny")  # a real run's checkpoint checks the keys
    budget.check_before_run(rt, ["plan"])
    assert rt.run.planning_only
    cohorts.write_cohort(rt, "tiny")  # a plan's checkpoint does not
    with pytest.raises(budget.MissingKeys, match="model 'claude' .* export ANTHROPIC_API_KEY="):
        budget.check_before_run(rt, [])
    assert budget.missing_run_keys(rt) and not rt.run.planning_only
