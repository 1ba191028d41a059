"""The cost plan: one call per missing model-call document, none for copies, finished documents
or saved replies; prompts rendered where they can be; unknown prices stay unknown."""

import csv
import json
import math

import pytest

from daydream import cohorts, documents, plan
from daydream.runtime import Runtime
from tests.conftest import TINY_COHORT, write_cohort

# The tests reason with these completion limits; the schema's defaults may change.
TOKENS = {"llm": {"stages": {"draft": {"max_tokens": 4096}, "essay": {"max_tokens": 6144}, "evaluation": {"max_tokens": 2048}}}}


def runtime(data_root, cohorts_dir, **config) -> Runtime:
    rt = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"],
                  "offline": True, **TOKENS, **config})
    cohorts.build_cohort(rt.paths, "tiny", rt.paths.cohort_file("tiny"))
    return rt


def make(rt, stage_name: str) -> None:
    for member in rt.membership.members("tiny", stage_name):
        documents.write_document(rt, member.stage, member.gen_id)


def by_stage(the_plan) -> dict:
    counts = {}
    for call in the_plan.calls:
        counts[call.stage] = counts.get(call.stage, 0) + 1
    return counts


def test_an_empty_store_plans_a_call_per_model_document_and_none_for_copies(data_root, cohorts_dir):
    rt = runtime(data_root, cohorts_dir)
    the_plan = plan.missing_calls(rt)
    # tiny: 3 drafts, 3 llm essays + 3 copies, 24 evaluations
    assert by_stage(the_plan) == {"draft": 3, "essay": 3, "evaluation": 24}
    assert the_plan.copies == {"essay": 3} and sum(the_plan.done.values()) == 0
    drafts = [c for c in the_plan.calls if c.stage == "draft"]
    assert all(c.prompt_rendered and c.prompt_tokens == c.prompt_tokens_high for c in drafts)
    assert not any(c.prompt_rendered for c in the_plan.calls if c.stage != "draft")
    assert {c.completion_high for c in the_plan.calls if c.stage == "essay"} == {6144}
    assert {c.completion_low for c in the_plan.calls} == {0}  # plan_default_completion_tokens


def test_a_rendered_prompt_counts_the_words_the_offline_model_will_see(data_root, cohorts_dir):
    rt = runtime(data_root, cohorts_dir)
    make(rt, "draft")
    the_plan = plan.missing_calls(rt)
    for call in the_plan.calls:
        member = rt.membership.member(call.gen_id)
        if call.stage == "essay":  # its draft exists: the prompt is the one the job will send
            assert call.prompt_rendered
            assert call.prompt_tokens == len(documents.document_prompt(rt, member).text.split())
    # evaluations of copy essays read the draft's text already: rendered exactly too
    copies = {m.gen_id for m in rt.membership.members("tiny", "essay") if rt.template(m).generator == "copy"}
    evaluations = [c for c in the_plan.calls if c.stage == "evaluation"]
    assert {rt.membership.member(c.gen_id).parent_gen_id in copies for c in evaluations if c.prompt_rendered} == {True}
    assert sum(c.prompt_rendered for c in evaluations) == 12


def test_an_estimated_prompt_adds_the_parent_as_often_as_the_template_shows_it(data_root, cohorts_dir):
    rt = runtime(data_root, cohorts_dir)
    history = plan.History()
    history.completion[("draft", "idea-sketch", "offline_a", "offline/daydream-offline-a")] = [100, 100, 300]
    the_plan = plan.missing_calls(rt, history)
    drafts = {c.gen_id: c for c in the_plan.calls if c.stage == "draft"}
    assert {(c.completion_low, c.completion_high, c.basis) for c in drafts.values()} == {(100, 260, "history n=3")}
    essay = next(c for c in the_plan.calls if c.stage == "essay")
    assert essay.basis == "max_tokens" and (essay.completion_low, essay.completion_high) == (0, 6144)
    template = (rt.paths.template_path("essay", essay.template_id)).read_text()
    times = template.count("draft_block") + template.count("links_block")
    assert times >= 1
    assert essay.prompt_tokens_high - essay.prompt_tokens == times * (260 - 100)
    # the budgets' bound: the parent's reply at its max_tokens
    assert essay.bound_prompt_tokens - essay.prompt_tokens == times * (4096 - 100)
    assert essay.bound_completion_tokens == 6144


def test_finished_calls_give_the_low_estimate_and_finished_documents_are_not_calls(data_root, cohorts_dir):
    rt = runtime(data_root, cohorts_dir)
    make(rt, "draft")
    history = plan.read_history(rt.paths)
    used = [json.loads(rt.paths.metadata_path("draft", m.gen_id).read_text())["usage"]["completion_tokens"]
            for m in rt.membership.members("tiny", "draft")]
    key = ("draft", "idea-sketch", "offline_a", "offline/daydream-offline-a")
    assert sorted(history.completion[key]) == sorted(used) and set(history.completion) == {key}
    spread = history.completion_spread(key)
    assert spread.n == 3 and min(used) <= spread.low <= spread.high <= max(used)
    assert history.factor(rt, "offline_a", key[3], "offline", key[:2]) == plan.Spread(3, 1.0, 1.0), \
        "the offline model counts words, as the plan does"
    the_plan = plan.missing_calls(rt)
    assert the_plan.done == {"draft": 3} and "draft" not in by_stage(the_plan)


def test_a_document_with_a_saved_reply_is_not_a_call(data_root, cohorts_dir):
    rt = runtime(data_root, cohorts_dir)
    make(rt, "draft")
    draft = rt.membership.members("tiny", "draft")[0]
    rt.paths.raw_path("draft", draft.gen_id).unlink()  # the reply stays in .replies/
    the_plan = plan.missing_calls(rt)
    assert the_plan.paid == {"draft": 1} and "draft" not in by_stage(the_plan)
    # its essay reads the parsed text the saved reply gives: rendered, not estimated
    essays = [c for c in the_plan.calls if rt.membership.member(c.gen_id).parent_gen_id == draft.gen_id]
    assert essays and all(c.prompt_rendered for c in essays)


def test_a_shared_document_is_planned_once(data_root, cohorts_dir):
    write_cohort(cohorts_dir, "twin", TINY_COHORT)
    rt = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny", "twin"],
                  "offline": True, **TOKENS})
    for cohort_id in ("tiny", "twin"):
        cohorts.build_cohort(rt.paths, cohort_id, rt.paths.cohort_file(cohort_id))
    the_plan = plan.missing_calls(rt)
    assert len(the_plan.calls) == 30 and the_plan.cohort_gen_ids["tiny"] == the_plan.cohort_gen_ids["twin"]


def add_priced_model(data_root, model_id, **prices):
    path = data_root / "1_raw" / "llm_models.csv"
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns, rows = reader.fieldnames, list(reader)
    rows.append({c: "" for c in columns} | {"id": model_id, "model": "fake-model", "provider": "test",
                                             "display_name": model_id, "route": "openai",
                                             "api_base": "http://127.0.0.1:9/v1", **prices})
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def test_rows_sum_per_stage_template_and_model_and_unpriced_calls_are_counted_not_hidden(data_root, cohorts_dir,
                                                                                         monkeypatch):
    add_priced_model(data_root, "priced", input_cost_per_mtok="2", output_cost_per_mtok="10")
    add_priced_model(data_root, "unpriced")
    write_cohort(cohorts_dir, "tiny", {**TINY_COHORT, "evaluation": {"templates": ["novelty-judge"],
                                                                      "models": ["priced", "unpriced"]}})
    monkeypatch.setattr(plan, "count_tokens", lambda rt, model_id, text, route=None: len(text.split()))
    rt = runtime(data_root, cohorts_dir, offline=False)
    rows = plan.plan_rows(rt, plan.missing_calls(rt))
    by_key = {(r["stage"], r["model_id"]): r for r in rows}
    priced, unpriced, total = by_key[("evaluation", "priced")], by_key[("evaluation", "unpriced")], rows[-1]
    assert priced["calls"] == unpriced["calls"] == 6 and priced["price_source"] == "row"
    assert priced["template_id"] == "novelty-judge" and priced["basis"] == "max_tokens"
    assert priced["cost_usd_low"] == pytest.approx(priced["prompt_tokens_est"] * 2e-6)
    assert priced["cost_usd_high"] == pytest.approx(priced["prompt_tokens_high"] * 2e-6 + 6 * 2048 * 10e-6)
    assert priced["cost_usd_batch_high"] == pytest.approx(priced["cost_usd_high"] / 2)
    assert unpriced["cost_usd_low"] is None and unpriced["price_source"] == "unknown"
    assert "input_cost_per_mtok" in unpriced["note"] and str(rt.paths.models_csv) in unpriced["note"]
    assert total["stage"] == plan.TOTAL and total["calls"] == sum(r["calls"] for r in rows[:-1])
    assert total["cost_usd_high"] == pytest.approx(math.fsum(r["cost_usd_high"] for r in rows[:-1]
                                                             if r["cost_usd_high"] is not None))
    assert plan.unpriced_calls(rows) == {"unpriced": 6}
    assert total["note"].startswith("unknown for 6 calls: no price for unpriced (6 calls)")
    table = plan.format_table(rows)
    assert "at least" not in table and table.splitlines()[-1].endswith("+ unknown for 6 calls")


def test_the_plan_rule_writes_the_csv_and_prints_the_table(data_root, cohorts_dir, capsys):
    rt = runtime(data_root, cohorts_dir)
    plan.write_plan(rt)
    printed = capsys.readouterr().out
    with rt.paths.plan_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted({(r["stage"], r["model_id"]) for r in rows[:-1]}) == [
        ("draft", "offline_a"), ("essay", "offline_a"), ("evaluation", "offline_a"), ("evaluation", "offline_b")]
    assert rows[-1]["stage"] == plan.TOTAL and len({r["template_id"] for r in rows if r["stage"] == "evaluation"}) > 1
    assert {r["basis"] for r in rows[:-1]} == {"max_tokens"}
    assert rows[-1]["calls"] == "30"
    assert "30 calls still to make" in printed and printed.count("\n") < 25
    assert rows[0]["cost_usd_low"] == "0.0"  # the offline model is free: 0, a known price


def test_money_says_unknown_never_zero():
    assert plan.money(None) == "unknown" and plan.money(0.0) == "$0.0000" and plan.money(1234.5) == "$1,234.50"


def test_the_cache_projection_writes_a_templates_prefix_once_and_reads_it_for_every_later_call():
    def call(gen_id, prefix, writes):
        return plan.MissingCall("evaluation", gen_id, "judge", "m", 1500, 1500, 10, 20, True, cache_prefix=prefix,
                                cache_writes=writes)

    assert plan.cache_tokens([call(f"v_{i}", 1200, True) for i in range(40)]) == (39 * 1200, 1200)
    assert plan.cache_tokens([call(f"v_{i}", 1200, False) for i in range(40)]) == (39 * 1200, 0), "OpenAI"
    assert plan.cache_tokens([call("v_1", 0, True)]) == (0, 0)
    prices = plan.Prices(2e-6, 10e-6, "row", 0.2e-6, 2.5e-6)
    group = [call(f"v_{i}", 1200, True) for i in range(3)]
    full = plan._group_cost(group, prices, high=False, reads=0, writes=0)
    cached = plan._group_cost(group, prices, high=False, reads=2400, writes=1200)
    assert full - cached == pytest.approx(2400 * 1.8e-6 - 1200 * 0.5e-6)


def test_the_plan_counts_stale_documents_and_prices_regenerating_them(data_root, cohorts_dir):
    rt = runtime(data_root, cohorts_dir)
    make(rt, "draft")
    template = rt.paths.template_path("draft", "idea-sketch")
    template.write_text(template.read_text() + "\nOne more instruction.\n")
    lines = plan.stale_summary(rt, plan.read_history(rt.paths))
    assert len(lines) == 1 and lines[0].startswith("stale: 3 documents")
    assert "regenerate.py --stale` would pay for 3 calls" in lines[0] and "$0.0000" in lines[0]
