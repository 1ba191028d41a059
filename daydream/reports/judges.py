"""Can the judges be trusted? Five reports on the LLM judges of one cohort.

Each works on task scores (`reports.scores.task_scores`: one replicate-averaged score per essay,
evaluation template and evaluation model); the statistics are in `daydream.stats`, tested
against published and hand-computed examples. The unit is always the essay. A value that
cannot be computed (one judge, no variance, too few essays) is empty and `note` says why.

* `judge_vs_human`: each judge against the human ratings of `data/1_raw/human_scores.csv`
  (`daydream.human_scores`): Spearman's rho, Krippendorff's alpha (interval) and the mean bias
  (judge - human), each with a paired bootstrap interval; and the raters' own alpha.
* `calibrated_means`: prediction-powered means of the human score per group: the judge mean
  over every essay, corrected by the mean human - judge residual on the labelled essays.
* `length_bias`: the score against the essay's length in words; group means read at the
  cohort's median length.
* `self_preference`: each judge's mean for essays of its own model and of its provider's
  other models against the rest.
* `disagreement`: per essay the largest gap between judges, as a share of the scale.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from daydream.columns import (
    CALIBRATED_MEANS_COLUMNS,
    DISAGREEMENT_COLUMNS,
    ESSAY_COLUMNS,
    HUMAN_SCORE_COLUMNS,
    JUDGE_VS_HUMAN_COLUMNS,
    LENGTH_BIAS_COLUMNS,
    SELF_PREFERENCE_COLUMNS,
)
from daydream.stats import (
    Estimate,
    alpha_interval_rows,
    bootstrap_mean_ci,
    dense_codes,
    group_means_at,
    krippendorff_alpha_interval,
    mean_difference,
    paired_bootstrap,
    ppi_mean,
    spearman,
    spearman_rows,
)

CONFIDENCE = 0.95
PANEL = "(panel)"
JUDGE = ["evaluation_llm_model", "evaluation_template"]
NO_HUMANS = ("no human labels: data/1_raw/human_scores.csv does not exist; add it (columns "
             f"{','.join(HUMAN_SCORE_COLUMNS)}) to compare the judges with human raters")
NO_LABELLED = "no essay of this cohort is rated in data/1_raw/human_scores.csv"
GROUP_ANALYSES = {
    "by_generation_template": "generation_template",
    "by_generation_model": "generation_model",
}
CALIBRATION_ANALYSES = {"overall": None, **GROUP_ANALYSES}


# -- shared pieces ---------------------------------------------------------------------------------
def _notes(**parts: str) -> str:
    """`name: note` for every part with a note, joined by "; "."""
    return "; ".join(f"{name}: {note}" for name, note in parts.items() if note)


def _interval(estimate: Estimate, value: str, low: str, high: str) -> dict:
    return {value: estimate.value, low: estimate.low, high: estimate.high}


def mean_estimate(values, confidence: float = CONFIDENCE) -> Estimate:
    """A mean with its bootstrap interval (`stats.bootstrap_mean_ci`), noted when not computable."""
    mean, low, high = bootstrap_mean_ci(np.asarray(values, dtype=float), confidence=confidence)
    size = int(np.count_nonzero(~np.isnan(np.asarray(values, dtype=float))))
    note = "no value" if size == 0 else ("no interval from 1 essay" if size == 1 else "")
    return Estimate(mean, low, high, note)


def _frame(rows: list[dict], columns: tuple[str, ...], text: tuple[str, ...]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=list(columns))
    for column in text:
        out[column] = out[column].astype(object).where(out[column].notna(), "").astype(str)
    return out


def with_panel(tasks: pd.DataFrame) -> pd.DataFrame:
    """`tasks` plus one PANEL row per essay and evaluation template: the mean over its judges."""
    keys = ["parent_gen_id", "evaluation_template", *ESSAY_COLUMNS]
    panel = tasks.groupby(keys, sort=True, dropna=False)[["score", "scaled"]].mean().reset_index()
    panel["evaluation_llm_model"] = PANEL
    return pd.concat([tasks, panel], ignore_index=True)


# -- judge vs human ----------------------------------------------------------------------------------
def human_essay_scores(humans: pd.DataFrame) -> pd.DataFrame:
    """One human score per essay and evaluation template: the mean over its raters."""
    return (humans.groupby(["essay_gen_id", "evaluation_template"], sort=True)["score"]
            .agg(human="mean", n_raters="size").reset_index().rename(columns={"essay_gen_id": "parent_gen_id"}))


def _alpha_of_rows(*rows: np.ndarray) -> float:
    return krippendorff_alpha_interval(np.vstack(rows))


def judge_row(judge: pd.DataFrame, humans: pd.DataFrame, confidence: float) -> dict:
    """One judge's agreement with the humans on the essays both scored."""
    both = judge.merge(humans, on=["parent_gen_id", "evaluation_template"], how="inner")
    j, h = both["score"].to_numpy(float), both["human"].to_numpy(float)
    rho = paired_bootstrap(spearman, (dense_codes(j), dense_codes(h)), rows=spearman_rows, confidence=confidence)
    alpha = paired_bootstrap(_alpha_of_rows, (j, h), rows=alpha_interval_rows, confidence=confidence)
    bias = mean_estimate(j - h, confidence) if len(both) else Estimate.undefined("no essay rated by both")
    return {"n": len(both), "n_raters": int(both["n_raters"].max()) if len(both) else 0,
            **_interval(rho, "spearman", "spearman_ci_low", "spearman_ci_high"),
            **_interval(alpha, "krippendorff_alpha", "alpha_ci_low", "alpha_ci_high"),
            **_interval(bias, "mean_bias", "bias_ci_low", "bias_ci_high"),
            "note": _notes(spearman=rho.note, alpha=alpha.note, bias=bias.note)}


def between_humans_row(ratings: pd.DataFrame, confidence: float) -> dict:
    """The raters' own alpha under one template (essays rated by at least two)."""
    matrix = ratings.pivot(index="rater", columns="essay_gen_id", values="score")
    matrix = matrix.loc[:, matrix.notna().sum(axis=0) >= 2]
    matrix = matrix.loc[matrix.notna().any(axis=1)]  # the raters of those essays
    row = {"n": matrix.shape[1], "n_raters": matrix.shape[0]}
    if matrix.shape[1] == 0:
        return {**row, "note": "alpha: no essay has two raters"}
    ratings = matrix.to_numpy(float)
    complete = not np.isnan(ratings).any()  # every rater rated every essay: the row-wise alpha applies
    alpha = paired_bootstrap(_alpha_of_rows, tuple(ratings), rows=alpha_interval_rows if complete else None,
                             confidence=confidence)
    return {**row, **_interval(alpha, "krippendorff_alpha", "alpha_ci_low", "alpha_ci_high"),
            "note": _notes(alpha=alpha.note)}


def cohort_humans(tasks: pd.DataFrame, humans: pd.DataFrame | None) -> pd.DataFrame | None:
    """The ratings of this cohort's essays (None without a human file)."""
    if humans is None:
        return None
    return humans[humans["essay_gen_id"].isin(set(tasks["parent_gen_id"]))]


def judge_vs_human(tasks: pd.DataFrame, humans: pd.DataFrame | None, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """JUDGE_VS_HUMAN_COLUMNS: one row per judge, then the raters' own alpha per template."""
    text = ("comparison", "evaluation_llm_model", "evaluation_template", "note")
    ratings = cohort_humans(tasks, humans)
    if ratings is None or ratings.empty:
        note = NO_HUMANS if ratings is None else NO_LABELLED
        return _frame([{"comparison": "judge_vs_humans", "note": note}], JUDGE_VS_HUMAN_COLUMNS, text)
    per_essay = human_essay_scores(ratings)
    rows = [{"comparison": "judge_vs_humans", **dict(zip(JUDGE, key, strict=True)),
             **judge_row(group, per_essay, confidence), "confidence": confidence}
            for key, group in tasks.groupby(JUDGE, sort=True)]
    rows += [{"comparison": "between_humans", "evaluation_template": template,
              **between_humans_row(group, confidence), "confidence": confidence}
             for template, group in ratings.groupby("evaluation_template", sort=True)]
    return _frame(rows, JUDGE_VS_HUMAN_COLUMNS, text)


# -- calibrated means ----------------------------------------------------------------------------------
def calibrated_row(predictions: pd.DataFrame, humans: pd.DataFrame, confidence: float) -> dict:
    """Judge mean, humans-only mean and the prediction-powered mean of one group of essays."""
    data = predictions.merge(humans, on=["parent_gen_id", "evaluation_template"], how="left")
    labelled = data["human"].notna()
    judge = mean_estimate(data["score"], confidence)
    human = mean_estimate(data.loc[labelled, "human"], confidence)
    calibrated = ppi_mean(data.loc[~labelled, "score"].to_numpy(float), data.loc[labelled, "score"].to_numpy(float),
                          data.loc[labelled, "human"].to_numpy(float), confidence=confidence)
    return {"n_essays": len(data), "n_labelled": int(labelled.sum()),
            **_interval(judge, "judge_mean", "judge_ci_low", "judge_ci_high"),
            **_interval(human, "human_mean", "human_ci_low", "human_ci_high"),
            **_interval(calibrated, "calibrated_mean", "calibrated_ci_low", "calibrated_ci_high"),
            "confidence": confidence,
            "note": _notes(judge=judge.note, humans=human.note, calibrated=calibrated.note)}


def calibrated_means(tasks: pd.DataFrame, humans: pd.DataFrame | None, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """CALIBRATED_MEANS_COLUMNS: per analysis type, group, evaluation template and judge (and
    the panel), the three means of the human score side by side."""
    text = ("analysis_type", "generation_template", "generation_model", "evaluation_template",
            "evaluation_llm_model", "note")
    ratings = cohort_humans(tasks, humans)
    if ratings is None or ratings.empty:
        note = NO_HUMANS if ratings is None else NO_LABELLED
        return _frame([{"analysis_type": "overall", "note": note}], CALIBRATED_MEANS_COLUMNS, text)
    per_essay = human_essay_scores(ratings)
    scored = with_panel(tasks)
    rows = []
    for analysis, column in CALIBRATION_ANALYSES.items():
        keys = [*([column] if column else []), *JUDGE]
        for key, group in scored.groupby(keys, sort=True):
            rows.append({"analysis_type": analysis, **dict(zip(keys, key, strict=True)),
                         **calibrated_row(group, per_essay, confidence)})
    return _frame(rows, CALIBRATED_MEANS_COLUMNS, text)


# -- length bias -----------------------------------------------------------------------------------------
def with_words(tasks: pd.DataFrame, words: pd.Series) -> pd.DataFrame:
    """`tasks` of the essays whose length is known, with `words` and `log2_words` (>= 1 word)."""
    out = tasks.assign(words=tasks["parent_gen_id"].map(words)).dropna(subset=["words"])
    out = out[out["words"] >= 1]
    return out.assign(log2_words=np.log2(out["words"].astype(float)))


def length_row(judge: pd.DataFrame, confidence: float) -> dict:
    """One judge's scores against essay length."""
    rho = paired_bootstrap(spearman, (dense_codes(judge["score"]), dense_codes(judge["words"])),
                           rows=spearman_rows, confidence=confidence)
    median = float(np.median(judge["words"])) if len(judge) else float("nan")
    means, slope = group_means_at(judge["score"].to_numpy(float), judge["log2_words"].to_numpy(float),
                                  np.zeros(len(judge)), np.log2(median) if len(judge) else 0.0,
                                  confidence=confidence)
    controlled = means.get(0.0, Estimate.undefined("no essay"))
    raw = mean_estimate(judge["score"], confidence)
    return {"n": len(judge), "median_words": median,
            **_interval(rho, "spearman", "spearman_ci_low", "spearman_ci_high"),
            **_interval(slope, "slope_per_doubling", "slope_ci_low", "slope_ci_high"),
            **_interval(raw, "raw_mean", "raw_ci_low", "raw_ci_high"),
            **_interval(controlled, "length_controlled_mean", "controlled_ci_low", "controlled_ci_high"),
            "note": _notes(spearman=rho.note, slope=slope.note, raw=raw.note)}


def controlled_rows(panel: pd.DataFrame, column: str, confidence: float) -> list[dict]:
    """One evaluation template's panel means per `column` group, raw and at the median length."""
    median = float(np.median(panel["words"]))
    means, slope = group_means_at(panel["score"].to_numpy(float), panel["log2_words"].to_numpy(float),
                                  panel[column].to_numpy(object), np.log2(median), confidence=confidence)
    rows = []
    for group, essays in panel.groupby(column, sort=True):
        raw = mean_estimate(essays["score"], confidence)
        controlled = means[group]
        rows.append({column: group, "n": len(essays), "median_words": median,
                     **_interval(slope, "slope_per_doubling", "slope_ci_low", "slope_ci_high"),
                     **_interval(raw, "raw_mean", "raw_ci_low", "raw_ci_high"),
                     **_interval(controlled, "length_controlled_mean", "controlled_ci_low", "controlled_ci_high"),
                     "note": _notes(raw=raw.note, controlled=controlled.note)})
    return rows


def length_bias(tasks: pd.DataFrame, words: pd.Series, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """LENGTH_BIAS_COLUMNS: score vs length per judge, then length-controlled group means."""
    text = ("analysis_type", "evaluation_llm_model", "evaluation_template", "generation_template",
            "generation_model", "note")
    scored = with_words(with_panel(tasks), words)
    judges = scored[scored["evaluation_llm_model"] != PANEL]
    rows = [{"analysis_type": "score_vs_length", **dict(zip(JUDGE, key, strict=True)),
             **length_row(group, confidence), "confidence": confidence}
            for key, group in judges.groupby(JUDGE, sort=True)]
    panel = scored[scored["evaluation_llm_model"] == PANEL]
    for analysis, column in GROUP_ANALYSES.items():
        for template, group in panel.groupby("evaluation_template", sort=True):
            rows += [{"analysis_type": analysis, "evaluation_llm_model": PANEL, "evaluation_template": template,
                      **row, "confidence": confidence} for row in controlled_rows(group, column, confidence)]
    return _frame(rows, LENGTH_BIAS_COLUMNS, text)


# -- self-preference ---------------------------------------------------------------------------------------
def self_preference_rows(judge: pd.DataFrame, model: str, providers: dict[str, str],
                         confidence: float) -> list[dict]:
    """A judge's same-model and same-provider comparisons against other providers' essays."""
    provider = providers.get(model, "")
    authors = judge["generation_model"].astype(str)
    author_providers = authors.map(lambda m: providers.get(m, ""))
    same_model = authors == model
    same_provider = ~same_model & (author_providers == provider) & (provider != "")
    other = ~same_model & ~same_provider
    unknown = sorted(set(authors[author_providers == ""]) - {model})
    base_note = (f"provider unknown for {', '.join(unknown)} (not in llm_models.csv): counted as other"
                 if unknown else "")
    rows = []
    for comparison, chosen in (("same_model", same_model), ("same_provider", same_provider)):
        if comparison == "same_provider" and provider == "":
            estimate = Estimate.undefined(f"the judge {model} is not in llm_models.csv: its provider is unknown")
        else:
            estimate = mean_difference(judge.loc[chosen, "score"], judge.loc[other, "score"], confidence=confidence)
        excludes_zero = bool(estimate.low > 0 or estimate.high < 0)
        rows.append({"judge_provider": provider, "comparison": comparison, "n_essays": int(chosen.sum()),
                     "mean": judge.loc[chosen, "score"].mean() if chosen.any() else np.nan,
                     "n_other": int(other.sum()),
                     "mean_other": judge.loc[other, "score"].mean() if other.any() else np.nan,
                     **_interval(estimate, "difference", "ci_low", "ci_high"),
                     "flagged": "" if np.isnan(estimate.low) else str(excludes_zero).lower(),
                     "note": "; ".join(n for n in (estimate.note, base_note) if n)})
    return rows


def self_preference(tasks: pd.DataFrame, providers: dict[str, str], confidence: float = CONFIDENCE) -> pd.DataFrame:
    """SELF_PREFERENCE_COLUMNS: per judge and evaluation template, its own essays against the rest."""
    text = ("evaluation_llm_model", "evaluation_template", "judge_provider", "comparison", "flagged", "note")
    rows = [{**dict(zip(JUDGE, key, strict=True)), **row, "confidence": confidence}
            for key, group in tasks.groupby(JUDGE, sort=True)
            for row in self_preference_rows(group, key[0], providers, confidence)]
    return _frame(rows, SELF_PREFERENCE_COLUMNS, text)


# -- disagreement --------------------------------------------------------------------------------------------
def _template_spreads(tasks: pd.DataFrame) -> pd.DataFrame:
    """Per essay and evaluation template: the judges' range of scaled scores and who gave the ends."""
    keys = ["parent_gen_id", "evaluation_template"]
    ordered = tasks.sort_values([*keys, "scaled", "evaluation_llm_model"])
    grouped = ordered.groupby(keys, sort=True)
    spreads = grouped["scaled"].agg(low="min", high="max", n="size")
    spreads["lowest_judge"] = grouped["evaluation_llm_model"].first()
    spreads["highest_judge"] = grouped["evaluation_llm_model"].last()
    spreads["spread"] = spreads["high"] - spreads["low"]
    return spreads[spreads["n"] >= 2].reset_index()


def disagreement(tasks: pd.DataFrame) -> pd.DataFrame:
    """DISAGREEMENT_COLUMNS: every essay, the largest disagreement between judges first."""
    text = ("gen_id", *ESSAY_COLUMNS, "spread_template", "lowest_judge", "highest_judge", "note")
    if tasks.empty:
        return _frame([], DISAGREEMENT_COLUMNS, text)
    essays = tasks.groupby(["parent_gen_id", *ESSAY_COLUMNS], sort=True, dropna=False).agg(
        n_judges=("evaluation_llm_model", "nunique"), n_templates=("evaluation_template", "nunique"),
        mean_scaled=("scaled", "mean")).reset_index()
    spreads = _template_spreads(tasks)
    widest = spreads.sort_values(["parent_gen_id", "spread", "evaluation_template"], ascending=[True, False, True])
    widest = widest.drop_duplicates("parent_gen_id").set_index("parent_gen_id")
    out = essays.rename(columns={"parent_gen_id": "gen_id"})
    out["spread"] = out["gen_id"].map(widest["spread"])
    out["spread_template"] = out["gen_id"].map(widest["evaluation_template"])
    out["lowest_judge"] = out["gen_id"].map(widest["lowest_judge"])
    out["highest_judge"] = out["gen_id"].map(widest["highest_judge"])
    out["mean_spread"] = out["gen_id"].map(spreads.groupby("parent_gen_id")["spread"].mean())
    out["note"] = np.where(out["spread"].isna(), "one judge per evaluation template: no spread", "")
    out = out.sort_values(["spread", "gen_id"], ascending=[False, True], na_position="last").reset_index(drop=True)
    computable = out["spread"].notna()
    out["rank"] = pd.Series(np.arange(1, len(out) + 1), dtype="Int64").where(computable)
    return _frame(out.to_dict("records"), DISAGREEMENT_COLUMNS, text)


# -- the builders the report registry names --------------------------------------------------------------------
def judge_vs_human_table(ctx) -> pd.DataFrame:
    return judge_vs_human(ctx.tasks, ctx.human_scores)


def calibrated_means_table(ctx) -> pd.DataFrame:
    return calibrated_means(ctx.tasks, ctx.human_scores)


def length_bias_table(ctx) -> pd.DataFrame:
    return length_bias(ctx.tasks, ctx.essay_words)


def self_preference_table(ctx) -> pd.DataFrame:
    return self_preference(ctx.tasks, ctx.model_providers)


def disagreement_table(ctx) -> pd.DataFrame:
    return disagreement(ctx.tasks)
