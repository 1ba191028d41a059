"""The cohort report tables (SPEC §9), built with vectorised pandas from one table of scores,
`scores.aggregated_scores` (each evaluation's parsed.txt read exactly once, the lineage
evaluation -> essay -> draft joined from the membership). Replicates of
one evaluation task (same essay, evaluation template and evaluation model) are averaged
before any summary (`scores.task_scores`); `generation_scores` pools every replicate of a
generation task key, as the seeds describe it. Every builder takes a `CohortContext`; the report
registry (`daydream.reports`) says which file each one makes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from daydream.columns import (
    ESSAY_COLUMNS,
    FINAL_RESULTS_COLUMNS,
    FINAL_RESULTS_KEYS,
    GENERATION_IDS_SEPARATOR,
    GENERATION_SCORES_BY_ESSAY_INDEX,
    GENERATION_SCORES_BY_ESSAY_TAIL,
    GENERATION_SCORES_TAIL,
    GENERATION_STAT_SUFFIXES,
    GENERATION_TASK_KEYS,
    PERFECT_SCORE_COLUMNS,
    VARIANCE_COLUMNS,
)
from daydream.paths import Paths
from daydream.reports.concepts import insert_concepts
from daydream.reports.io import gen_dirs
from daydream.reports.scores import (
    GENERATION,
    SCORED,
    TOLERANCE,
    attach_scales,
    concepts_by_combo,
    essay_lineage,
    evaluator_mean_scaled,
    valid_rows,
)

if TYPE_CHECKING:
    from daydream.reports.context import CohortContext

log = logging.getLogger(__name__)

# final_results.csv: analysis type -> the columns it groups by (() = every task).
ANALYSES = {
    "by_generation_template": ("generation_template",),
    "by_generation_model": ("generation_model",),
    "by_draft_template": ("draft_template",),
    "by_evaluation_template": ("evaluation_template",),
    "by_evaluation_model": ("evaluation_llm_model",),
    "by_combo_id": ("combo_id",),
    "by_generation_template_and_model": ("generation_template", "generation_model"),
    "by_generation_vs_evaluation_model": ("generation_model", "evaluation_llm_model"),
    "by_evaluation_model_and_template": ("evaluation_llm_model", "evaluation_template"),
    "overall": (),
}
# variance_analysis.csv: analysis type -> (what is held fixed besides the essay, on replicates?)
SPREADS = {
    "across_evaluation_models": (("evaluation_template",), False),
    "across_evaluation_templates": (("evaluation_llm_model",), False),
    "across_replicates": (("evaluation_template", "evaluation_llm_model"), True),
    "across_all": ((), False),
}
# Agreement label of a spread, from its range as a share of the scale (1/8, 2/8, 3/8): on a
# 0..10 or 1..10 scale a range of 1 point is "high", 2 "moderate", 3 "low", more "poor".
AGREEMENT_LIMITS = ((0.125, "high"), (0.25, "moderate"), (0.375, "low"))


# -- summaries --------------------------------------------------------------------------------
_STATS = ("mean", "min", "max", "count")


def _evaluators(aggregated: pd.DataFrame) -> pd.Series:
    return aggregated["evaluation_llm_model"].astype(str) + "_" + aggregated["evaluation_template"].astype(str)


def _evaluator_columns(valid: pd.DataFrame, keys: list[str], index: pd.Index, evaluators: list[str]) -> dict:
    """`<evaluator>`, `_min`, `_max`, `_n` of the valid scores per group of `keys`, on `index`."""
    if not evaluators:
        return {}
    stats = valid.groupby([*keys, "evaluator"])["score"].agg(list(_STATS))
    wide = stats.unstack("evaluator").reindex(index=index,
                                              columns=pd.MultiIndex.from_product([list(_STATS), evaluators]))
    wide["count"] = wide["count"].fillna(0).astype(int)
    stat_of = dict(zip(GENERATION_STAT_SUFFIXES, _STATS, strict=True))
    return {f"{name}{suffix}": wide[(stat, name)] for name in evaluators for suffix, stat in stat_of.items()}


def _sum_of_means(columns: dict, evaluators: list[str], index: pd.Index) -> pd.Series:
    means = pd.DataFrame({name: columns[name] for name in evaluators}, index=index)
    return means.sum(axis=1, min_count=1)


def generation_scores(aggregated: pd.DataFrame, scales: pd.DataFrame) -> pd.DataFrame:
    """The seeds' pivot: one row per generation task key (GENERATION_TASK_KEYS: combo, the
    evaluated stage, draft template, generation template and model), pooling every replicate of
    drafts, essays and evaluations behind it; per evaluator `<evaluation_model>_<evaluation_template>`
    the mean, `_min`, `_max` and `_n` over all their valid scores (n = 0, others empty, when there is
    none); then `sum` of the evaluator means, `mean_scaled` (their mean as shares of each scale),
    `n_generations` and `gen_ids`, the essays pooled; `concepts` follows `combo_id`."""
    keys = list(GENERATION_TASK_KEYS)
    frame = aggregated.assign(stage=GENERATION, evaluator=_evaluators(aggregated))
    frame[list(ESSAY_COLUMNS)] = frame[list(ESSAY_COLUMNS)].fillna("").astype(str)
    evaluators = sorted(frame["evaluator"].unique())
    essays = (frame.groupby(keys, sort=True)["parent_gen_id"]
              .agg(n_generations="nunique", gen_ids=lambda g: GENERATION_IDS_SEPARATOR.join(sorted(set(g)))))
    columns = _evaluator_columns(valid_rows(frame), keys, essays.index, evaluators)
    out = pd.DataFrame(columns, index=essays.index)
    out["sum"] = _sum_of_means(columns, evaluators, essays.index)
    out["mean_scaled"] = evaluator_mean_scaled(frame, scales, keys, essays.index)
    out = out.join(essays).reset_index()
    out = out[[*keys, *columns, *GENERATION_SCORES_TAIL]]
    return insert_concepts(out, concepts_by_combo(aggregated, out["combo_id"]))


def generation_scores_by_essay(aggregated: pd.DataFrame, paths: Paths, scales: pd.DataFrame) -> pd.DataFrame:
    """One row per essay; per evaluator `<evaluation_model>_<evaluation_template>` the mean,
    `_min`, `_max` and `_n` of its valid scores over replicates (n = 0, others empty, when it
    has none), then `sum` of the evaluator means, `mean_scaled` (their mean as shares of each
    scale) and `paths`, the essay's gens folder; `concepts` follows `combo_id`."""
    essays = essay_lineage(aggregated)
    frame = aggregated.assign(evaluator=_evaluators(aggregated))
    evaluators = sorted(frame["evaluator"].unique())
    columns = _evaluator_columns(valid_rows(frame), ["parent_gen_id"], essays.index, evaluators)
    out = pd.concat([essays, pd.DataFrame(columns, index=essays.index)], axis=1)
    out["sum"] = _sum_of_means(columns, evaluators, essays.index)
    out["mean_scaled"] = evaluator_mean_scaled(aggregated, scales, ["parent_gen_id"], essays.index)
    out = out.reset_index()
    out["paths"] = gen_dirs(paths, GENERATION, out["gen_id"])
    out = out[[*GENERATION_SCORES_BY_ESSAY_INDEX, *columns, *GENERATION_SCORES_BY_ESSAY_TAIL]]
    return insert_concepts(out, concepts_by_combo(aggregated, out["combo_id"]))


def summarise(tasks: pd.DataFrame, keys: tuple[str, ...]) -> pd.DataFrame:
    """count, n_evaluations, mean, std, min, max, mean_scaled, perfect/high/low counts and
    shares of the task scores, per group of `keys` (one row when `keys` is empty)."""
    grouper = list(keys) if keys else np.zeros(len(tasks), dtype=int)
    out = tasks.groupby(grouper, sort=True).agg(
        count=("score", "size"), n_evaluations=("n_evaluations", "sum"), mean=("score", "mean"),
        std=("score", "std"), min=("score", "min"), max=("score", "max"), mean_scaled=("scaled", "mean"),
        perfect_count=("is_perfect", "sum"), high_count=("is_high", "sum"), low_count=("is_low", "sum"))
    for kind in ("perfect", "high", "low"):
        out[f"{kind}_share"] = out[f"{kind}_count"] / out["count"]
    return out.reset_index(drop=not keys)


def final_results(tasks: pd.DataFrame) -> pd.DataFrame:
    """Every analysis type of `ANALYSES` stacked (FINAL_RESULTS_COLUMNS). `count` counts tasks
    (replicates averaged), `n_evaluations` the evaluations behind them; "perfect" is a task
    score equal to its template's score_max, "high"/"low" are shares of the scale
    (`scores.HIGH_SHARE`, `LOW_SHARE`); `mean_scaled` averages the shares."""
    if tasks.empty:
        return pd.DataFrame(columns=list(FINAL_RESULTS_COLUMNS))
    out = pd.concat([summarise(tasks, keys).assign(analysis_type=name) for name, keys in ANALYSES.items()],
                    ignore_index=True)
    out[list(FINAL_RESULTS_KEYS)] = out.reindex(columns=list(FINAL_RESULTS_KEYS)).fillna("")
    return out[list(FINAL_RESULTS_COLUMNS)]


def perfect_score_paths(aggregated: pd.DataFrame, scales: pd.DataFrame, paths: Paths) -> pd.DataFrame:
    """Each single evaluation (replicates apart) whose score is its template's score_max, with
    the essay's parsed.txt and the judge's full answer (raw.txt)."""
    valid = attach_scales(valid_rows(aggregated), scales)
    perfect = valid[np.isclose(valid["score"], valid["score_max"], rtol=0, atol=TOLERANCE)].copy()
    perfect["essay_path"] = gen_dirs(paths, GENERATION, perfect["parent_gen_id"], "parsed.txt")
    perfect["evaluation_path"] = gen_dirs(paths, SCORED, perfect["gen_id"], "raw.txt")
    return perfect[list(PERFECT_SCORE_COLUMNS)].sort_values(["parent_gen_id", "gen_id"]).reset_index(drop=True)


def agreement_label(range_scaled: pd.Series) -> np.ndarray:
    """"high", "moderate", "low" or "poor" from a range as a share of the scale."""
    conditions = [range_scaled <= limit + TOLERANCE for limit, _ in AGREEMENT_LIMITS]
    return np.select(conditions, [label for _, label in AGREEMENT_LIMITS], default="poor")


def spread(scores: pd.DataFrame, fixed: tuple[str, ...]) -> pd.DataFrame:
    """Per essay and `fixed` columns with at least two scores: n, mean, std, min, max, range,
    range_scaled (on each score's own scale), cv (std / mean) and the agreement label."""
    keys = ["parent_gen_id", *ESSAY_COLUMNS, *fixed]
    out = scores.groupby(keys, sort=True, dropna=False).agg(
        n=("score", "size"), mean=("score", "mean"), std=("score", "std"), min=("score", "min"),
        max=("score", "max"), low=("scaled", "min"), high=("scaled", "max")).reset_index()
    out = out[out["n"] >= 2].copy()
    out["range"] = out["max"] - out["min"]
    out["range_scaled"] = out["high"] - out["low"]
    out["cv"] = out["std"] / out["mean"].where(out["mean"] != 0)
    out["agreement"] = agreement_label(out["range_scaled"])
    return out.rename(columns={"parent_gen_id": "gen_id"})


def variance_analysis(aggregated: pd.DataFrame, tasks: pd.DataFrame, scales: pd.DataFrame) -> pd.DataFrame:
    """Spread of scores per essay across evaluation models, templates, replicates and all of
    them (`SPREADS`); replicates are averaged except in `across_replicates`."""
    evaluations = attach_scales(valid_rows(aggregated), scales)
    evaluations[list(ESSAY_COLUMNS)] = evaluations[list(ESSAY_COLUMNS)].fillna("")
    parts = [spread(evaluations if raw else tasks, fixed).assign(analysis_type=name)
             for name, (fixed, raw) in SPREADS.items()]
    out = pd.concat(parts, ignore_index=True)
    out[["evaluation_template", "evaluation_llm_model"]] = (
        out.reindex(columns=["evaluation_template", "evaluation_llm_model"]).fillna(""))
    return out[list(VARIANCE_COLUMNS)]


# -- the builders the report registry names ------------------------------------------------------
def aggregated_table(ctx: CohortContext) -> pd.DataFrame:
    return ctx.aggregated


def generation_scores_table(ctx: CohortContext) -> pd.DataFrame:
    return generation_scores(ctx.aggregated, ctx.scales)


def generation_scores_by_essay_table(ctx: CohortContext) -> pd.DataFrame:
    return generation_scores_by_essay(ctx.aggregated, ctx.paths, ctx.scales)


def final_results_table(ctx: CohortContext) -> pd.DataFrame:
    return final_results(ctx.tasks)


def perfect_score_paths_table(ctx: CohortContext) -> pd.DataFrame:
    return perfect_score_paths(ctx.aggregated, ctx.scales, ctx.paths)


def variance_analysis_table(ctx: CohortContext) -> pd.DataFrame:
    return variance_analysis(ctx.aggregated, ctx.tasks, ctx.scales)
