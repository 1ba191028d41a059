"""The Judges page's sentences (daydream.site.findings), from judge tables of known content."""

from __future__ import annotations

import math

import pandas as pd

from daydream.site import findings
from daydream.site.pages import essay_page

NAN = math.nan


def length_rows(**row) -> pd.DataFrame:
    base = {"analysis_type": "score_vs_length", "evaluation_llm_model": "judge_a", "evaluation_template": "novelty",
            "spearman": 0.2, "spearman_ci_low": -0.1, "spearman_ci_high": 0.5, "slope_per_doubling": 0.4, "note": NAN}
    return pd.DataFrame([{**base, **row}, {**base, "analysis_type": "by_generation_template"}])


def test_a_length_correlation_whose_interval_excludes_zero_is_a_warning_and_one_holding_zero_is_not():
    (line,) = findings.length_bias(length_rows()).lines
    assert not line["warn"] and "ρ = +0.20 (-0.10 to 0.50)" in line["text"] and "+0.40 points per doubling" in line["text"]
    (line,) = findings.length_bias(length_rows(spearman=0.6, spearman_ci_low=0.3, spearman_ci_high=0.8)).lines
    assert line["warn"] and line["text"].endswith("this judge favours length.")
    (line,) = findings.length_bias(length_rows(spearman=NAN, note="fewer than 3 essays")).lines
    assert "not computable (fewer than 3 essays)" in line["text"]


def self_rows(*rows) -> pd.DataFrame:
    base = {"evaluation_llm_model": "judge_a", "evaluation_template": "novelty", "judge_provider": "acme",
            "comparison": "same_model", "difference": NAN, "ci_low": NAN, "ci_high": NAN, "flagged": NAN, "note": NAN}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_self_preference_names_a_flagged_judge_says_when_none_is_and_when_it_cannot_be_measured():
    flagged = self_rows({"difference": 1.2, "ci_low": 0.4, "ci_high": 2.0, "flagged": True},
                        {"comparison": "same_provider", "difference": 0.1, "ci_low": -0.5, "ci_high": 0.7,
                         "flagged": False})
    (line,) = findings.self_preference(flagged).lines
    assert line["warn"] and line["text"] == ("judge_a on novelty gives its own model's essays +1.20 points more "
                                             "than other providers' (0.40 to 2.00).")
    (line,) = findings.self_preference(self_rows({"difference": 0.1, "ci_low": -0.5, "ci_high": 0.7,
                                                  "flagged": False})).lines
    assert not line["warn"] and line["text"].startswith("No judge favours its own beyond chance (1 comparison(s)")
    (line,) = findings.self_preference(self_rows({}, {"comparison": "same_provider"})).lines
    assert "Not computable" in line["text"] and "(acme)" in line["text"]


def test_without_human_ratings_the_human_findings_say_why():
    note = "no human labels: data/1_raw/human_scores.csv does not exist"
    frame = pd.DataFrame([{"comparison": "judge_vs_humans", "evaluation_llm_model": NAN, "evaluation_template": NAN,
                           "n": NAN, "note": note}])
    assert [line["text"] for line in findings.judge_vs_human(frame).lines] == [note]
    calibrated = pd.DataFrame([{"analysis_type": "overall", "calibrated_mean": NAN, "note": note}])
    assert [line["text"] for line in findings.calibrated_means(calibrated).lines] == [note]


def test_a_judge_biased_against_the_humans_is_a_warning():
    frame = pd.DataFrame([{"comparison": "judge_vs_humans", "evaluation_llm_model": "judge_a",
                           "evaluation_template": "novelty", "n": 12, "spearman": 0.7, "spearman_ci_low": 0.3,
                           "spearman_ci_high": 0.9, "krippendorff_alpha": 0.5, "mean_bias": 1.1, "bias_ci_low": 0.4,
                           "bias_ci_high": 1.8, "note": NAN}])
    (line,) = findings.judge_vs_human(frame).lines
    assert line["warn"] and "12 essays" in line["text"] and "+1.10 points against the humans (0.40 to 1.80)" in line["text"]


def test_the_most_disputed_essays_link_to_their_pages_five_at_most():
    frame = pd.DataFrame([{"rank": i + 1, "gen_id": f"e_{i}", "lowest_judge": "a", "highest_judge": "b",
                           "spread": 0.5, "spread_template": "novelty", "note": NAN} for i in range(7)])
    lines = findings.disagreement(frame, essay_page).lines
    assert [line["href"] for line in lines] == [f"essays/e_{i}.html" for i in range(5)]
    assert lines[0]["text"] == "e_0: a and b are 50% of the novelty scale apart."
