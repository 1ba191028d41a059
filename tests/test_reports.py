"""Tests for the cohort and cross-experiment reports (daydream.reports, report_*), with
expected values computed by hand on a small gens store built in a temp folder.

The store (`store` fixture): two drafts (template `sketch`, models gA / gB, combos C1 / C2),
one essay each (template `essay`), judged by models jA and jB with templates `novelty`
(scale 0..9) and `rigor` (scale 1..10):

    evaluation  essay  template  judge  replicate  parsed.txt
    v_1         e_1    novelty   jA     1          9
    v_2         e_1    novelty   jA     2          7        (replicate: task mean 8)
    v_3         e_1    novelty   jB     1          9.0
    v_4         e_1    rigor     jA     1          10
    v_5         e_1    rigor     jB     1          (missing: the parse failed)
    v_6         e_2    novelty   jA     1          2
    v_7         e_2    novelty   jB     1          5
    v_8         e_2    rigor     jA     1          4
    v_9         e_2    rigor     jB     1          abc      (unparsable)

Task scores (replicates averaged; scaled = share of the template's scale):
e_1: novelty/jA 8 (8/9), novelty/jB 9 (1, perfect), rigor/jA 10 (1, perfect);
e_2: novelty/jA 2 (2/9, low), novelty/jB 5 (5/9), rigor/jA 4 (3/9).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from daydream import reports
from daydream.columns import (
    AGGREGATED_COLUMNS,
    FINAL_RESULTS_COLUMNS,
    JUDGE_AGREEMENT_COLUMNS,
    MEAN_SCORE_CI_COLUMNS,
    PERFECT_SCORE_COLUMNS,
    VARIANCE_COLUMNS,
)
from daydream.experiment import Template
from daydream.paths import Paths
from daydream.reports.agreement import judge_agreement, mean_score_ci
from daydream.reports.cross import cross_aggregated, evaluation_scores_by_template_model, evaluation_template_scales
from daydream.reports.io import read_aggregated, read_membership, write_csv
from daydream.reports.pages import top_essays
from daydream.reports.scores import MISSING_SCORE, parse_scores, scales_from_templates, task_scores

REPO = Path(__file__).resolve().parent.parent
COHORT = "mini"
DRAFTS = [("d_1", "C1", "sketch", "gA"), ("d_2", "C2", "sketch", "gB")]
ESSAYS = [("e_1", "d_1", "C1", "essay", "gA"), ("e_2", "d_2", "C2", "essay", "gB")]
EVALUATIONS = [  # gen_id, essay, template, judge, replicate, parsed.txt (None = no file)
    ("v_1", "e_1", "novelty", "jA", 1, "9"),
    ("v_2", "e_1", "novelty", "jA", 2, "7"),
    ("v_3", "e_1", "novelty", "jB", 1, "9.0"),
    ("v_4", "e_1", "rigor", "jA", 1, "10"),
    ("v_5", "e_1", "rigor", "jB", 1, None),
    ("v_6", "e_2", "novelty", "jA", 1, "2"),
    ("v_7", "e_2", "novelty", "jB", 1, "5"),
    ("v_8", "e_2", "rigor", "jA", 1, "4"),
    ("v_9", "e_2", "rigor", "jB", 1, "abc"),
]
# C1 = alpha + beta, C2 = beta + gamma (gamma is retired: its name still shows)
CONCEPTS_CSV = "concept_id,name,active\nalpha,Alpha Wave,true\nbeta,Beta Test,true\ngamma,Gamma Ray,false\n"
COMBOS_CSV = ("combo_id,version,concept_id,description_level,k_max,created_at\n"
              + "".join(f"{c},v1,{k},paragraph,2,2026-01-01T00:00:00+00:00\n"
                        for c, k in (("C1", "alpha"), ("C1", "beta"), ("C2", "beta"), ("C2", "gamma"))))
TEMPLATES_CSV = "template_id,template_name,description,parser,generator,score_min,score_max\n" \
                "novelty,Novelty,,in_last_line,llm,0,9\nrigor,Rigor,,complex,llm,1,10\n"


def write_doc(paths: Paths, stage: str, gen_id: str, meta: dict, parsed: str | None) -> None:
    folder = paths.gen_dir(stage, gen_id)
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps({"stage": stage, "gen_id": gen_id, **meta}), encoding="utf-8")
    if parsed is not None:
        (folder / "parsed.txt").write_text(parsed, encoding="utf-8")


def membership_rows() -> list[dict]:
    rows = [dict(stage="draft", gen_id=g, parent_gen_id="", combo_id=c, template_id=t, llm_model_id=m, replicate=1)
            for g, c, t, m in DRAFTS]
    rows += [dict(stage="essay", gen_id=g, parent_gen_id=p, combo_id=c, template_id=t, llm_model_id=m, replicate=1)
             for g, p, c, t, m in ESSAYS]
    combo = {e: c for e, _, c, _, _ in ESSAYS}
    rows += [dict(stage="evaluation", gen_id=g, parent_gen_id=e, combo_id=combo[e], template_id=t, llm_model_id=j,
                  replicate=r) for g, e, t, j, r, _ in EVALUATIONS]
    return [{**row, "cohort_id": COHORT} for row in rows]


@pytest.fixture
def store(tmp_path) -> Paths:
    """The gens store of the module docstring, its membership and its template table."""
    paths = Paths(tmp_path / "data")
    rows = membership_rows()
    parsed = {g: text for g, *_, text in EVALUATIONS}
    for row in rows:
        meta = {"template_id": row["template_id"], "model_id": row["llm_model_id"], "cohort_id": COHORT,
                "parent_gen_id": row["parent_gen_id"], "combo_id": row["combo_id"], "replicate": row["replicate"]}
        text = parsed.get(row["gen_id"]) if row["stage"] == "evaluation" else "An essay about C."
        write_doc(paths, row["stage"], row["gen_id"], meta, text)
    columns = ["stage", "gen_id", "cohort_id", "parent_gen_id", "combo_id", "template_id", "llm_model_id", "replicate"]
    paths.membership_csv(COHORT).parent.mkdir(parents=True)
    pd.DataFrame(rows)[columns].to_csv(paths.membership_csv(COHORT), index=False)
    paths.raw_root.mkdir(parents=True)
    paths.templates_csv("evaluation").write_text(TEMPLATES_CSV, encoding="utf-8")
    paths.concepts_metadata_csv.write_text(CONCEPTS_CSV, encoding="utf-8")
    paths.combo_mappings_csv.write_text(COMBOS_CSV, encoding="utf-8")
    return paths


@pytest.fixture
def scales() -> pd.DataFrame:
    return scales_from_templates({"novelty": Template("evaluation", "novelty", "", "in_last_line", "llm", True, 0, 9),
                                  "rigor": Template("evaluation", "rigor", "", "complex", "llm", True, 1, 10)})


@pytest.fixture
def tables(store, scales) -> dict[str, pd.DataFrame]:
    return reports.build_cohort_tables(store, COHORT, scales)


def row_of(frame: pd.DataFrame, **where) -> pd.Series:
    mask = np.logical_and.reduce([frame[k] == v for k, v in where.items()])
    assert mask.sum() == 1, f"{where}: {mask.sum()} rows"
    return frame[mask].iloc[0]


# -- aggregated_scores ---------------------------------------------------------------------------
def test_aggregated_scores_has_one_row_per_evaluation_with_spec_columns(tables, store):
    aggregated = tables["parsing/aggregated_scores.csv"]
    assert tuple(aggregated.columns) == AGGREGATED_COLUMNS
    assert aggregated["gen_id"].tolist() == [e[0] for e in EVALUATIONS]
    assert aggregated["score"].tolist()[:4] == [9.0, 7.0, 9.0, 10.0]
    first = aggregated.iloc[0]
    assert (first.parent_gen_id, first.evaluation_template, first.evaluation_llm_model) == ("e_1", "novelty", "jA")
    assert (first.combo_id, first.draft_template, first.generation_template, first.generation_model) == \
        ("C1", "sketch", "essay", "gA")
    assert (first.cohort_id, str(first.replicate), first.error) == (COHORT, "1", "")
    assert first.paths == str(store.gen_dir("evaluation", "v_1"))
    # names, not hashes: the combo register's concepts by their names (a retired one too)
    assert aggregated.set_index("gen_id").loc[["v_1", "v_9"], "concepts"].tolist() == \
        ["Alpha Wave + Beta Test", "Beta Test + Gamma Ray"]
    by_essay = tables["summary/generation_scores_by_essay.csv"].set_index("gen_id")
    assert by_essay.at["e_2", "concepts"] == "Beta Test + Gamma Ray"
    assert tables["summary/generation_scores.csv"]["concepts"].tolist() == \
        ["Alpha Wave + Beta Test", "Beta Test + Gamma Ray"]


def test_a_missing_or_unparsable_score_fills_error_instead_of_crashing(tables):
    aggregated = tables["parsing/aggregated_scores.csv"].set_index("gen_id")
    assert math.isnan(aggregated.at["v_5", "score"]) and aggregated.at["v_5", "error"] == MISSING_SCORE
    assert math.isnan(aggregated.at["v_9", "score"])
    assert aggregated.at["v_9", "error"].startswith("parsed.txt is not a score: 'abc'")
    assert (aggregated["error"] != "").sum() == 2


def test_parse_scores_rejects_scores_outside_the_template_scale_and_non_finite_text(scales):
    templates = pd.Series(["rigor", "rigor", "novelty", "novelty", "unknown"])
    out = parse_scores(["0", "10", "nan", " 4.5\n", "42"], templates, scales)
    assert out["error"][0].startswith("score 0.0 is outside the scale 1.0..10.0 of rigor")
    assert out["error"][1] == "" and out["score"][1] == 10.0
    assert out["error"][2].startswith("parsed.txt is not a score")
    assert out["score"][3] == 4.5
    assert out["error"][4] == "" and out["score"][4] == 42.0  # unknown template: no range to check


# -- generation_scores ---------------------------------------------------------------------------
def test_generation_scores_by_essay_average_replicates_with_min_max_n_and_sum(tables, store):
    scores = tables["summary/generation_scores_by_essay.csv"].set_index("gen_id")
    evaluators = ["jA_novelty", "jA_rigor", "jB_novelty", "jB_rigor"]
    expected_columns = ["combo_id", "concepts", "draft_template", "generation_template", "generation_model",
                        *[f"{e}{s}" for e in evaluators for s in ("", "_min", "_max", "_n")], "sum",
                        "mean_scaled", "paths"]
    assert list(scores.columns) == expected_columns
    e1 = scores.loc["e_1"]
    assert (e1["jA_novelty"], e1["jA_novelty_min"], e1["jA_novelty_max"], e1["jA_novelty_n"]) == (8.0, 7.0, 9.0, 2)
    assert (e1["jB_novelty"], e1["jA_rigor"], e1["jB_rigor_n"]) == (9.0, 10.0, 0)
    assert math.isnan(e1["jB_rigor"]) and e1["sum"] == 27.0
    e2 = scores.loc["e_2"]
    assert (e2["jA_novelty"], e2["jB_novelty"], e2["jA_rigor"], e2["sum"]) == (2.0, 5.0, 4.0, 11.0)
    assert (e2["generation_model"], e2["combo_id"], e2["paths"]) == ("gB", "C2", str(store.gen_dir("essay", "e_2")))


def pooled_aggregated() -> pd.DataFrame:
    """Evaluations of five essays. Under one task key (C1, sketch, essay, gA): e_a and e_b are
    essays of two replicates of one draft, e_c a second essay replicate of e_a's draft. e_d has
    another combo, e_e another generation model.

        essay  judge/template  scores
        e_a    jA novelty      6, 8 (two evaluation replicates)
        e_b    jA novelty      4
        e_c    jA novelty      9
        e_a    jB novelty      5
        e_b    jB novelty      (failed parse)
        e_d    jA novelty      3
        e_e    jB rigor        7
    """
    rows = [("v1", "e_a", "novelty", "jA", 6.0, "", "C1", "gA", 1), ("v2", "e_a", "novelty", "jA", 8.0, "", "C1", "gA", 2),
            ("v3", "e_b", "novelty", "jA", 4.0, "", "C1", "gA", 1), ("v4", "e_c", "novelty", "jA", 9.0, "", "C1", "gA", 1),
            ("v5", "e_a", "novelty", "jB", 5.0, "", "C1", "gA", 1),
            ("v6", "e_b", "novelty", "jB", float("nan"), "parsed.txt is not a score", "C1", "gA", 1),
            ("v7", "e_d", "novelty", "jA", 3.0, "", "C2", "gA", 1), ("v8", "e_e", "rigor", "jB", 7.0, "", "C1", "gB", 1)]
    frame = pd.DataFrame(rows, columns=["gen_id", "parent_gen_id", "evaluation_template", "evaluation_llm_model",
                                        "score", "error", "combo_id", "generation_model", "replicate"])
    return frame.assign(draft_template="sketch", generation_template="essay", cohort_id=COHORT, paths="")


def test_generation_scores_pool_draft_essay_and_evaluation_replicates_under_the_task_key(store, scales):
    from daydream.reports.tables import generation_scores, generation_scores_by_essay

    pooled = generation_scores(pooled_aggregated(), scales)
    assert list(pooled.columns) == [
        "combo_id", "concepts", "stage", "draft_template", "generation_template", "generation_model",
        *[f"{e}{s}" for e in ("jA_novelty", "jB_novelty", "jB_rigor") for s in ("", "_min", "_max", "_n")],
        "sum", "mean_scaled", "n_generations", "gen_ids"]
    assert pooled[["combo_id", "generation_model", "stage"]].values.tolist() == \
        [["C1", "gA", "essay"], ["C1", "gB", "essay"], ["C2", "gA", "essay"]]
    c1 = pooled.iloc[0]
    # jA: (6 + 8 + 4 + 9) / 4 = 6.75 over the four evaluations of e_a, e_b, e_c
    assert (c1["jA_novelty"], c1["jA_novelty_min"], c1["jA_novelty_max"], c1["jA_novelty_n"]) == (6.75, 4, 9, 4)
    assert (c1["jB_novelty"], c1["jB_novelty_n"], c1["jB_rigor_n"]) == (5.0, 1, 0) and math.isnan(c1["jB_rigor"])
    assert (c1["sum"], c1["n_generations"], c1["gen_ids"]) == (11.75, 3, "e_a;e_b;e_c")
    # the normalised mean: jA novelty 6.75/9 and jB novelty 5/9 (0..9), averaged, never summed
    assert c1["mean_scaled"] == pytest.approx((6.75 / 9 + 5 / 9) / 2)
    other_model, other_combo = pooled.iloc[1], pooled.iloc[2]
    assert (other_model["jB_rigor"], other_model["sum"], other_model["gen_ids"]) == (7.0, 7.0, "e_e")
    assert (other_combo["jA_novelty"], other_combo["jA_novelty_n"], other_combo["sum"]) == (3.0, 1, 3.0)
    by_essay = generation_scores_by_essay(pooled_aggregated(), store, scales).set_index("gen_id")
    assert by_essay.loc[["e_a", "e_b", "e_c"], "jA_novelty"].tolist() == [7.0, 4.0, 9.0]  # not pooled
    # e_e: rigor 7 on 1..10 is (7 - 1) / 9 of its scale; its sum is the raw 7
    assert (by_essay.at["e_e", "sum"], by_essay.at["e_e", "mean_scaled"]) == (7.0, pytest.approx(6 / 9))


def test_generation_scores_of_the_cohort_pool_replicates(tables):
    pooled = tables["summary/generation_scores.csv"]
    assert pooled["gen_ids"].tolist() == ["e_1", "e_2"] and pooled["stage"].tolist() == ["essay", "essay"]
    assert pooled["jA_novelty"].tolist() == [8.0, 2.0] and pooled["jA_novelty_n"].tolist() == [2, 1]


# -- final_results -------------------------------------------------------------------------------
def test_final_results_columns_and_every_analysis_type(tables):
    final = tables["summary/final_results.csv"]
    assert tuple(final.columns) == FINAL_RESULTS_COLUMNS
    counts = final["analysis_type"].value_counts().to_dict()
    assert counts == {"by_generation_template": 1, "by_generation_model": 2, "by_draft_template": 1,
                      "by_evaluation_template": 2, "by_evaluation_model": 2, "by_combo_id": 2,
                      "by_generation_template_and_model": 2, "by_generation_vs_evaluation_model": 4,
                      "by_evaluation_model_and_template": 3, "overall": 1}


def test_final_results_by_generation_model_counts_perfect_at_the_template_maximum(tables):
    final = tables["summary/final_results.csv"]
    ga = row_of(final, analysis_type="by_generation_model", generation_model="gA")
    # tasks 8 (novelty, 8/9), 9 (novelty max), 10 (rigor max); 4 evaluations behind them
    assert (ga["count"], ga["n_evaluations"], ga["mean"], ga["std"], ga["min"], ga["max"]) == (3, 4, 9, 1, 8, 10)
    assert ga["mean_scaled"] == pytest.approx(26 / 27)
    assert (ga["perfect_count"], ga["perfect_share"]) == (2, pytest.approx(2 / 3))
    assert (ga["high_count"], ga["high_share"], ga["low_count"], ga["low_share"]) == (3, 1, 0, 0)
    gb = row_of(final, analysis_type="by_generation_model", generation_model="gB")
    assert (gb["count"], gb["mean"], gb["std"]) == (3, pytest.approx(11 / 3), pytest.approx(math.sqrt(7 / 3)))
    assert (gb["perfect_count"], gb["high_count"], gb["low_count"], gb["low_share"]) == (0, 0, 1, pytest.approx(1 / 3))


def test_final_results_overall_and_evaluation_axes(tables):
    final = tables["summary/final_results.csv"]
    overall = row_of(final, analysis_type="overall")
    assert (overall["count"], overall["n_evaluations"], overall["min"], overall["max"]) == (6, 7, 2, 10)
    assert overall["mean"] == pytest.approx(38 / 6) and overall["std"] == pytest.approx(math.sqrt(148 / 15))
    assert (overall["perfect_share"], overall["high_share"], overall["low_share"]) == \
        (pytest.approx(1 / 3), 0.5, pytest.approx(1 / 6))
    assert overall["mean_scaled"] == pytest.approx(2 / 3)
    assert overall[["generation_model", "evaluation_template", "combo_id"]].tolist() == ["", "", ""]
    novelty = row_of(final, analysis_type="by_evaluation_template", evaluation_template="novelty")
    assert (novelty["count"], novelty["mean"], novelty["perfect_count"]) == (4, 6, 1)
    cell = row_of(final, analysis_type="by_evaluation_model_and_template", evaluation_llm_model="jA",
                  evaluation_template="rigor")
    assert (cell["count"], cell["mean"], cell["perfect_count"]) == (2, 7, 1)


# -- perfect_score_paths -------------------------------------------------------------------------
def test_perfect_score_paths_lists_each_evaluation_at_its_template_maximum(tables, store):
    perfect = tables["summary/perfect_score_paths.csv"]
    assert tuple(perfect.columns) == PERFECT_SCORE_COLUMNS
    assert perfect["gen_id"].tolist() == ["v_1", "v_3", "v_4"]  # 9 of 0..9 (twice), 10 of 1..10
    assert perfect["score_max"].tolist() == [9.0, 9.0, 10.0]
    assert perfect["essay_path"].iloc[0] == str(store.parsed_path("essay", "e_1"))
    assert perfect["evaluation_path"].iloc[2] == str(store.raw_path("evaluation", "v_4"))


# -- variance_analysis ---------------------------------------------------------------------------
def test_variance_analysis_spreads_across_models_templates_replicates_and_all(tables):
    variance = tables["analysis/variance_analysis.csv"]
    assert tuple(variance.columns) == VARIANCE_COLUMNS
    assert variance["analysis_type"].value_counts().to_dict() == {
        "across_evaluation_models": 2, "across_evaluation_templates": 2, "across_replicates": 1, "across_all": 2}
    models = row_of(variance, analysis_type="across_evaluation_models", gen_id="e_2")
    assert (models["evaluation_template"], models["evaluation_llm_model"], models["n"]) == ("novelty", "", 2)
    assert (models["mean"], models["range"], models["agreement"]) == (3.5, 3, "low")
    assert models["std"] == pytest.approx(math.sqrt(4.5)) and models["range_scaled"] == pytest.approx(1 / 3)
    assert models["cv"] == pytest.approx(math.sqrt(4.5) / 3.5)
    templates = row_of(variance, analysis_type="across_evaluation_templates", gen_id="e_1")
    assert (templates["evaluation_llm_model"], templates["mean"], templates["range"]) == ("jA", 9, 2)
    assert templates["range_scaled"] == pytest.approx(1 / 9) and templates["agreement"] == "high"
    replicates = row_of(variance, analysis_type="across_replicates")
    assert (replicates["gen_id"], replicates["evaluation_template"], replicates["evaluation_llm_model"]) == \
        ("e_1", "novelty", "jA")
    assert (replicates["n"], replicates["mean"], replicates["range"], replicates["agreement"]) == (2, 8, 2, "moderate")
    everything = row_of(variance, analysis_type="across_all", gen_id="e_1")
    assert (everything["n"], everything["mean"], everything["std"], everything["agreement"]) == (3, 9, 1, "high")


# -- judge agreement and bootstrap intervals ------------------------------------------------------
def test_judge_agreement_across_models_matches_hand_computed_alpha_and_icc(tables):
    agreement = tables["analysis/judge_agreement.csv"]
    assert tuple(agreement.columns) == JUDGE_AGREEMENT_COLUMNS
    novelty = row_of(agreement, comparison="across_evaluation_models", evaluation_template="novelty")
    # units e_1 (8, 9), e_2 (2, 5): D_o = (2*1 + 2*9)/4 = 5, D_e = 240/12 = 20 -> alpha = 0.75;
    # BMS 25, JMS 4, EMS 1 -> ICC(2,1) = 24 / (25 + 1 + 2*3/2) = 24/29
    assert novelty["krippendorff_alpha_interval"] == pytest.approx(0.75)
    assert novelty["icc_2_1"] == pytest.approx(24 / 29)
    assert (novelty["raters"], novelty["n_raters"], novelty["n_units"], novelty["n_complete_units"]) == \
        ("jA|jB", 2, 2, 2)
    assert (novelty["scale"], novelty["note"]) == ("points", "")
    rigor = row_of(agreement, comparison="across_evaluation_models", evaluation_template="rigor")
    assert math.isnan(rigor["krippendorff_alpha_interval"]) and rigor["note"].startswith("one rater (jA)")
    pooled = row_of(agreement, comparison="across_evaluation_models", evaluation_template="(all)")
    # scaled scores; the rigor units have one rater only, so alpha and ICC equal the novelty ones
    assert pooled["krippendorff_alpha_interval"] == pytest.approx(0.75) and pooled["icc_2_1"] == pytest.approx(24 / 29)


def test_judge_agreement_across_templates_uses_shares_of_each_scale(tables):
    agreement = tables["analysis/judge_agreement.csv"]
    ja = row_of(agreement, comparison="across_evaluation_templates", evaluation_llm_model="jA")
    # in ninths of the scale: e_1 (8, 9), e_2 (2, 3): alpha = 1 - 1/(296/12) = 71/74; ICC = 36/37
    assert ja["krippendorff_alpha_interval"] == pytest.approx(71 / 74)
    assert ja["icc_2_1"] == pytest.approx(36 / 37)
    assert (ja["raters"], ja["scale"], ja["evaluation_template"]) == ("novelty|rigor", "share of scale", "")
    jb = row_of(agreement, comparison="across_evaluation_templates", evaluation_llm_model="jB")
    assert jb["n_raters"] == 1 and "at least two" in jb["note"]


def test_judge_agreement_notes_why_a_statistic_is_undefined(scales):
    aggregated = pd.DataFrame({"parent_gen_id": ["e_1", "e_1"], "evaluation_template": ["novelty"] * 2,
                               "evaluation_llm_model": ["jA", "jB"], "score": [5.0, 6.0], "error": ["", ""],
                               "combo_id": "C", "draft_template": "d", "generation_template": "g",
                               "generation_model": "m"})
    row = judge_agreement(task_scores(aggregated, scales)).iloc[0]
    assert math.isnan(row["krippendorff_alpha_interval"]) and math.isnan(row["icc_2_1"])
    assert "alpha: " in row["note"] and "ICC: " in row["note"]


def test_mean_score_ci_bootstraps_over_essays_per_evaluation_template(tables):
    ci = tables["analysis/mean_score_ci.csv"]
    assert tuple(ci.columns) == MEAN_SCORE_CI_COLUMNS
    assert ci["analysis_type"].value_counts().to_dict() == {
        "by_generation_model": 4, "by_generation_template": 2, "by_generation_template_and_model": 4}
    # essay scores (mean over judges): novelty e_1 8.5, e_2 3.5; resampled means of two essays
    # are 3.5, 6 or 8.5 with probabilities 1/4, 1/2, 1/4, so the 2.5% and 97.5% points are 3.5 and 8.5
    novelty = row_of(ci, analysis_type="by_generation_template", evaluation_template="novelty")
    assert (novelty["n_essays"], novelty["mean"], novelty["ci_low"], novelty["ci_high"]) == (2, 6, 3.5, 8.5)
    rigor = row_of(ci, analysis_type="by_generation_template", evaluation_template="rigor")
    assert (rigor["mean"], rigor["ci_low"], rigor["ci_high"], rigor["confidence"]) == (7, 4, 10, 0.95)
    single = row_of(ci, analysis_type="by_generation_model", generation_model="gA", evaluation_template="novelty")
    assert single["n_essays"] == 1 and single["mean"] == 8.5 and math.isnan(single["ci_low"])


def test_mean_score_ci_of_no_scores_is_an_empty_table(scales):
    empty = task_scores(pd.DataFrame(columns=list(AGGREGATED_COLUMNS)).astype({"score": float}), scales)
    assert mean_score_ci(empty).empty and list(mean_score_ci(empty).columns) == list(MEAN_SCORE_CI_COLUMNS)


# -- writing -------------------------------------------------------------------------------------
def test_write_cohort_reports_writes_every_table_that_reads_back_the_same(store, scales):
    experiment = type("E", (), {"templates": {"evaluation": {
        "novelty": Template("evaluation", "novelty", "", "in_last_line", "llm", True, 0, 9),
        "rigor": Template("evaluation", "rigor", "", "complex", "llm", True, 1, 10)}}})()
    log = store.data_root / "logs" / "cohort_reports" / "mini.log"
    written = reports.write_cohort_reports(store, COHORT, experiment, str(log))
    assert [p.relative_to(store.reports_dir(COHORT)).as_posix() for p in written] == [r.name for r in reports.in_group("tables")]
    back = read_aggregated(store.cohort_report(COHORT, "parsing/aggregated_scores.csv"))
    assert back["score"].tolist()[:4] == [9.0, 7.0, 9.0, 10.0] and back["error"].ne("").sum() == 2
    assert re.fullmatch(rf"mini: 9 evaluations, 2 without a score; wrote {len(written)} tables, "
                        r"[0-9.]+ s \([0-9.]+ s CPU\)\n", log.read_text())


def test_a_cohort_without_membership_fails_naming_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"membership.csv does not exist; build the cohort first"):
        read_membership(Paths(tmp_path), "nope")


# -- cross-experiment ----------------------------------------------------------------------------
def add_foreign_evaluations(paths: Paths) -> None:
    """An evaluation of e_2 from another cohort, and a folder whose response never came back."""
    meta = {"template_id": "novelty", "model_id": "jC", "parent_gen_id": "e_2", "combo_id": "C2",
            "replicate": 1, "cohort_id": "other"}
    write_doc(paths, "evaluation", "v_10", meta, "6")
    paths.gen_dir("evaluation", "v_11").mkdir()
    paths.prompt_path("evaluation", "v_11").write_text("prompt only", encoding="utf-8")


def test_cross_aggregated_matches_the_cohort_table_from_metadata_alone(store, tables, scales):
    cross = cross_aggregated(store, scales).set_index("gen_id")
    cohort = tables["parsing/aggregated_scores.csv"].set_index("gen_id")
    assert tuple(cross.reset_index().columns) == AGGREGATED_COLUMNS
    assert list(cross.index) == sorted(cohort.index)
    pd.testing.assert_frame_equal(cross.drop(columns="replicate"), cohort.loc[cross.index].drop(columns="replicate"))
    assert cross["replicate"].tolist() == [str(r) for r in cohort.loc[cross.index, "replicate"]]


def test_cross_aggregated_covers_every_evaluation_folder_of_every_cohort(store, scales):
    add_foreign_evaluations(store)
    cross = cross_aggregated(store, scales).set_index("gen_id")
    assert len(cross) == 11
    assert (cross.at["v_10", "score"], cross.at["v_10", "cohort_id"], cross.at["v_10", "generation_model"]) == \
        (6.0, "other", "gB")
    assert cross.at["v_11", "error"] == MISSING_SCORE and cross.at["v_11", "generation_model"] == ""


def test_pivot_has_one_row_per_essay_and_one_column_per_template_and_model(store, scales):
    pivot = evaluation_scores_by_template_model(cross_aggregated(store, scales), scales).set_index("gen_id")
    assert list(pivot.columns) == ["combo_id", "concepts", "draft_template", "generation_template",
                                   "generation_model", "novelty__jA", "novelty__jB", "rigor__jA", "rigor__jB",
                                   "mean_scaled"]
    assert pivot.at["e_1", "concepts"] == "Alpha Wave + Beta Test"
    # e_2: novelty jA 2/9, jB 5/9, rigor jA (4 - 1)/9
    assert pivot.at["e_2", "mean_scaled"] == pytest.approx((2 / 9 + 5 / 9 + 3 / 9) / 3)
    assert pivot.loc["e_1", ["novelty__jA", "novelty__jB", "rigor__jA"]].tolist() == [8.0, 9.0, 10.0]
    assert pivot.loc["e_2", ["novelty__jA", "novelty__jB", "rigor__jA"]].tolist() == [2.0, 5.0, 4.0]
    assert pivot["rigor__jB"].isna().all()


def test_cross_tables_for_one_cohort_skip_other_cohorts(store):
    add_foreign_evaluations(store)
    aggregated_path, pivot_path = reports.write_cross_experiment_tables(store, cohort_id=COHORT)
    assert aggregated_path == store.cross_table("aggregated_scores.csv", COHORT)
    assert len(read_aggregated(aggregated_path)) == 9
    assert "novelty__jC" not in pd.read_csv(pivot_path).columns


def test_template_scales_come_from_the_template_table(store):
    scales = evaluation_template_scales(store)
    assert scales.loc["rigor"].tolist() == [1.0, 10.0] and scales.loc["novelty"].tolist() == [0.0, 9.0]


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], capture_output=True, text=True,
                          timeout=120)


def test_scripts_rebuild_both_cross_experiment_tables(store):
    done = run_script("aggregate_scores.py", "--data-root", str(store.data_root))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(store.cross_experiment_dir / "aggregated_scores.csv")
    done = run_script("build_pivot_tables.py", "--data-root", str(store.data_root))
    assert done.returncode == 0, done.stderr
    pivot = pd.read_csv(done.stdout.strip())
    assert pivot.set_index("gen_id").at["e_1", "novelty__jA"] == 8.0


@pytest.mark.parametrize("name", ["aggregate_scores.py", "build_pivot_tables.py"])
def test_scripts_explain_their_options(name):
    done = run_script(name, "--help")
    assert done.returncode == 0 and "--data-root" in done.stdout and "--cohort-id" in done.stdout


def test_scripts_fail_with_the_missing_file_and_the_fix(tmp_path):
    done = run_script("build_pivot_tables.py", "--data-root", str(tmp_path))
    assert done.returncode == 1 and "aggregated_scores.csv does not exist" in done.stderr
    assert "scripts/aggregate_scores.py" in done.stderr
    done = run_script("aggregate_scores.py", "--data-root", str(tmp_path), "--cohort-id", "pilot")
    assert done.returncode == 1 and "does not exist" in done.stderr


def test_a_cohort_without_any_valid_score_still_gets_every_report(store, scales):
    for gen_id, *_ in EVALUATIONS:
        store.parsed_path("evaluation", gen_id).unlink(missing_ok=True)
    tables = reports.build_cohort_tables(store, COHORT, scales)
    assert (tables["parsing/aggregated_scores.csv"]["error"] == MISSING_SCORE).all()
    assert tables["summary/generation_scores.csv"]["jA_novelty_n"].tolist() == [0, 0]
    assert tables["summary/generation_scores_by_essay.csv"]["jA_novelty_n"].tolist() == [0, 0]
    for name in ("summary/final_results.csv", "summary/perfect_score_paths.csv", "analysis/variance_analysis.csv",
                 "analysis/judge_agreement.csv", "analysis/mean_score_ci.csv"):
        assert tables[name].empty, name
    for name, frame in tables.items():
        write_csv(store.cohort_report(COHORT, name), frame)
    written = reports.write_cohort_group(store, COHORT, scales, "figures")
    assert all(path.stat().st_size > 0 for path in written)
    assert "No essay has a valid score yet" in store.cohort_report(COHORT, "summary/top_essays.html").read_text()


def test_figures_rank_top_essays_by_mean_share_of_scale_and_link_their_text(store, tables, scales):
    for name, frame in tables.items():
        write_csv(store.cohort_report(COHORT, name), frame)
    written = reports.write_cohort_group(store, COHORT, scales, "figures")
    assert [p.relative_to(store.reports_dir(COHORT)).as_posix() for p in written] == [r.name for r in reports.in_group("figures")]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written if p.suffix == ".png")
    top = top_essays(task_scores(tables["parsing/aggregated_scores.csv"], scales), store)
    assert top["gen_id"].tolist() == ["e_1", "e_2"] and top["rank"].tolist() == [1, 2]
    assert top["mean_scaled"].tolist() == [pytest.approx(26 / 27), pytest.approx(10 / 27)]
    assert top["n_tasks"].tolist() == [3, 3]
    page = store.cohort_report(COHORT, "summary/top_essays.html").read_text(encoding="utf-8")
    assert page.count('href="#essay-e_1"') == 1 and 'id="essay-e_1"' in page and "An essay about C." in page
    agreement = store.cohort_report(COHORT, "analysis/judge_agreement.html").read_text(encoding="utf-8")
    assert "0.750" in agreement and "across_evaluation_templates" in agreement


def test_cross_tables_of_a_store_without_evaluations_are_headers_only(tmp_path):
    paths = Paths(tmp_path / "data")
    paths.gens_root.mkdir(parents=True)
    aggregated_path, pivot_path = reports.write_cross_experiment_tables(paths)
    assert aggregated_path.read_text().strip() == ",".join(AGGREGATED_COLUMNS)
    assert pd.read_csv(pivot_path).columns.tolist() == ["gen_id", "combo_id", "concepts", "draft_template",
                                                        "generation_template", "generation_model", "mean_scaled"]


def test_a_parsed_score_is_the_last_line_as_the_original_wrote_it(scales):
    out = parse_scores(["Reasoning first.\n\n7.5\n", "8\nnot a number", "SCORE: 6"],
                       pd.Series(["novelty"] * 3), scales)
    assert out["score"][0] == 7.5 and out["error"][0] == ""
    assert out["error"][1].startswith("parsed.txt is not a score: 'not a number'")
    assert out["error"][2].startswith("parsed.txt is not a score: 'SCORE: 6'")


def test_an_unknown_evaluation_template_is_scored_on_the_default_scale_with_a_warning(scales, caplog):
    out = parse_scores(["8"], pd.Series(["retired-judge"]), scales)
    assert out["score"][0] == 8.0 and out["error"][0] == ""
    assert "retired-judge not in evaluation_templates.csv" in caplog.text


def test_in_chunks_keeps_the_items_order_for_every_size(tmp_path):
    from daydream.reports.scores import READ_THREADS, in_chunks, read_texts

    for n in (0, 1, READ_THREADS - 1, READ_THREADS, 3 * READ_THREADS + 5):
        items = list(range(n))
        assert in_chunks(lambda chunk: [i * i for i in chunk], items) == [i * i for i in items]
    files = [tmp_path / f"{i}.txt" for i in range(11)]
    for i, f in enumerate(files):
        if i % 3:
            f.write_text(f"text {i}")
    assert read_texts(files) == [None if i % 3 == 0 else f"text {i}" for i in range(11)]
