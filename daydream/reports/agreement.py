"""Statistics researchers ask for: judge agreement and means with bootstrap intervals.

Both work on task scores (`reports.scores.task_scores`: one replicate-averaged score per
essay, evaluation template and evaluation model) and call `daydream.stats`, which is tested
against published worked examples.

* `judge_agreement`: Krippendorff's alpha (interval) and ICC(2,1) with the essays as units and
  either the evaluation models (per evaluation template, in score points) or the evaluation
  templates (per evaluation model, each score as a share 0..1 of its template's scale, since
  templates may use different scales) as raters. A "(all)" row pools the other axis: its units
  are (essay, template) or (essay, model) pairs. An undefined statistic is NaN, and `note` says why.
* `mean_score_ci`: per generation model, generation template and both, and per evaluation
  template (scales differ, so they are never pooled), the mean essay score with a 95% percentile
  bootstrap interval. The unit is the essay (its score = mean over evaluation models), so
  several judges of one essay do not count as independent samples.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from daydream.columns import JUDGE_AGREEMENT_COLUMNS, MEAN_SCORE_CI_COLUMNS
from daydream.stats import bootstrap_mean_ci, icc_2_1, krippendorff_alpha_interval

POINTS = "points"
SHARE = "share of scale"
ALL = "(all)"
CONFIDENCE = 0.95
CI_ANALYSES = {
    "by_generation_model": ("generation_model",),
    "by_generation_template": ("generation_template",),
    "by_generation_template_and_model": ("generation_template", "generation_model"),
}


def _statistic(function, ratings: np.ndarray, name: str) -> tuple[float, str]:
    """(value, "") or (NaN, the reason the statistic is undefined)."""
    try:
        return function(ratings), ""
    except ValueError as error:
        return math.nan, f"{name}: {error}"


def agreement_row(tasks: pd.DataFrame, units: list[str], raters: str, value: str) -> dict:
    """alpha and ICC(2,1) of `value` with `units` x `raters` (missing pairs are NaN)."""
    matrix = tasks.set_index([*units, raters])[value].unstack(raters).sort_index(axis=1)
    ratings = matrix.to_numpy(dtype=float)
    row = {"raters": "|".join(map(str, matrix.columns)), "n_raters": matrix.shape[1], "n_units": matrix.shape[0],
           "n_complete_units": int((~np.isnan(ratings)).all(axis=1).sum()),
           "scale": POINTS if value == "score" else SHARE}
    if matrix.shape[1] < 2:
        return {**row, "krippendorff_alpha_interval": math.nan, "icc_2_1": math.nan,
                "note": f"one rater ({row['raters']}): agreement needs at least two"}
    alpha, alpha_note = _statistic(krippendorff_alpha_interval, ratings.T, "alpha")
    icc, icc_note = _statistic(icc_2_1, ratings, "ICC")
    return {**row, "krippendorff_alpha_interval": alpha, "icc_2_1": icc,
            "note": "; ".join(n for n in (alpha_note, icc_note) if n)}


def _comparison(tasks: pd.DataFrame, fixed: str, raters: str, value: str, name: str) -> list[dict]:
    """One row per value of `fixed`, plus a pooled "(all)" row when there are several."""
    rows = [{"comparison": name, fixed: key, **agreement_row(group, ["parent_gen_id"], raters, value)}
            for key, group in tasks.groupby(fixed, sort=True)]
    if len(rows) > 1:
        rows.append({"comparison": name, fixed: ALL,
                     **agreement_row(tasks, ["parent_gen_id", fixed], raters, "scaled")})
    return rows


def judge_agreement(tasks: pd.DataFrame) -> pd.DataFrame:
    """Agreement across evaluation models and across evaluation templates (JUDGE_AGREEMENT_COLUMNS)."""
    rows = (_comparison(tasks, "evaluation_template", "evaluation_llm_model", "score", "across_evaluation_models")
            + _comparison(tasks, "evaluation_llm_model", "evaluation_template", "scaled",
                          "across_evaluation_templates"))
    out = pd.DataFrame(rows, columns=list(JUDGE_AGREEMENT_COLUMNS))
    out[["evaluation_template", "evaluation_llm_model"]] = out[["evaluation_template", "evaluation_llm_model"]].fillna("")
    return out


def essay_scores(tasks: pd.DataFrame) -> pd.DataFrame:
    """One score per essay and evaluation template: the mean over evaluation models."""
    keys = ["parent_gen_id", "generation_template", "generation_model", "evaluation_template"]
    return tasks.groupby(keys, sort=True, dropna=False)["score"].mean().reset_index()


def mean_score_ci(tasks: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Mean essay score and its percentile-bootstrap interval per `CI_ANALYSES` group and
    evaluation template (MEAN_SCORE_CI_COLUMNS); the interval is NaN below two essays."""
    essays = essay_scores(tasks)
    rows = []
    for name, keys in CI_ANALYSES.items():
        for key, group in essays.groupby([*keys, "evaluation_template"], sort=True):
            mean, low, high = bootstrap_mean_ci(group["score"].to_numpy(dtype=float), confidence=confidence)
            rows.append({"analysis_type": name, **dict(zip([*keys, "evaluation_template"], key, strict=True)),
                         "n_essays": len(group), "mean": mean, "ci_low": low, "ci_high": high,
                         "confidence": confidence})
    out = pd.DataFrame(rows, columns=list(MEAN_SCORE_CI_COLUMNS))
    out[["generation_template", "generation_model"]] = out[["generation_template", "generation_model"]].fillna("")
    return out


# -- the builders the report registry names ------------------------------------------------------
def judge_agreement_table(ctx) -> pd.DataFrame:
    return judge_agreement(ctx.tasks)


def mean_score_ci_table(ctx) -> pd.DataFrame:
    return mean_score_ci(ctx.tasks)
