"""Column names and keys of every table and record the workflow reads or writes: the one place.

Definition tables (`data/1_raw/`), the cohort membership, the combo register, metadata.json,
the stale report and every report table. A column is renamed here or nowhere; readers check
a table's header against the known columns listed here.
"""

from __future__ import annotations

# -- experiment definitions (data/1_raw/) -------------------------------------------------------
CONCEPT_COLUMNS = ("concept_id", "name")
OPTIONAL_CONCEPT_COLUMNS = ("active",)

TEMPLATE_COLUMNS = ("template_id",)
OPTIONAL_TEMPLATE_COLUMNS = ("template_name", "description", "parser", "generator", "active")
OPTIONAL_EVALUATION_TEMPLATE_COLUMNS = ("score_min", "score_max")
# The scale of an evaluation template whose `score_min` / `score_max` cells are empty (SPEC §2).
DEFAULT_SCORE_MIN = 0.0
DEFAULT_SCORE_MAX = 9.0

MODEL_COLUMNS = ("id", "model", "provider", "display_name")
OPTIONAL_MODEL_COLUMNS = (
    "route", "api_base", "api_key_env", "max_concurrency",
    "input_cost_per_mtok", "output_cost_per_mtok", "active", "batch",
)
# Columns of the original pipeline's llm_models.csv that are accepted and not used.
LEGACY_MODEL_COLUMNS = ("specialization", "for_generation", "for_evaluation")

GENERATORS = ("llm", "copy")

# -- provider batches (daydream/provider_batches.py, scripts/batches.py list) -----------------------
PROVIDER_BATCH_LIST_COLUMNS = ("local_id", "provider", "batch_id", "stage", "model_id", "state", "status",
                               "requests", "done", "failed", "created_at")

# -- cohorts --------------------------------------------------------------------------------------
MEMBERSHIP_COLUMNS = (
    "stage", "gen_id", "cohort_id", "parent_gen_id", "combo_id",
    "template_id", "llm_model_id", "replicate",
)
COMBO_MAPPING_COLUMNS = ("combo_id", "version", "concept_id", "description_level", "k_max", "created_at")

# -- the gens store ---------------------------------------------------------------------------------
# Keys every metadata.json carries (SPEC §5); config/schema/metadata.schema.yaml gives their types.
METADATA_KEYS = (
    "stage", "gen_id", "task_id", "template_id", "model_id", "model", "parent_gen_id",
    "combo_id", "replicate", "cohort_id", "mode", "parser", "finish_reason", "truncated",
    "usage", "cost_usd", "duration_s", "attempts", "temperature", "max_tokens",
    "prompt_sha256", "prompt_sources", "created_at",
)
# Only in a metadata.json written by scripts/import_gens_store.py (daydream.original_store).
IMPORTED_METADATA_KEY = "imported_from"

# data/7_reporting/stale_generations.csv
STALE_COLUMNS = ("stage", "gen_id", "cohort_id", "template_id", "reason",
                 "stored_prompt_sha256", "current_prompt_sha256")

# data/7_reporting/plan.csv (`snakemake plan`): one row per stage and model with calls still
# missing, then a `total` row. Costs are empty where a price is unknown (never 0).
PLAN_COLUMNS = (
    "stage", "model_id", "calls", "prompt_tokens_est", "prompt_tokens_high",
    "completion_tokens_low", "completion_tokens_high", "cost_usd_low", "cost_usd_high",
    "cost_usd_batch_low", "cost_usd_batch_high", "price_source", "note",
)

# -- reports (SPEC §9) ------------------------------------------------------------------------------
# The lineage of an essay: what produced it. Shared by every per-essay table.
ESSAY_COLUMNS = ("combo_id", "draft_template", "generation_template", "generation_model")

# parsing/aggregated_scores.csv and 7_cross_experiment/aggregated_scores.csv: one row per
# evaluation. `parent_gen_id` is the essay, `paths` the evaluation's gens folder, `error` is
# empty when `score` holds a valid score. `flags` is empty unless the score cannot be taken at
# face value: `raw.txt changed: <stage> <gen_id>, ...` names each document of its lineage whose
# raw.txt is no longer the reply that was paid for, and `stale: <stage> <gen_id> (<reason>), ...`
# each one the stale report lists (its prompt or model would differ today; `daydream.integrity`).
# `concepts` names the combo's concepts (`daydream.reports.concepts`: names joined with " + ").
AGGREGATED_COLUMNS = (
    "gen_id", "parent_gen_id", "evaluation_template", "evaluation_llm_model", "score", "error",
    "combo_id", "concepts", "draft_template", "generation_template", "generation_model", "cohort_id",
    "replicate", "paths", "flags",
)

# The key of one evaluation task: evaluations sharing it are replicates and are averaged.
TASK_KEYS = ("parent_gen_id", "evaluation_template", "evaluation_llm_model")

# summary/generation_scores.csv (the seeds' pivot): one row per generation task key (replicates of
# drafts, essays and evaluations pooled; gen_id and replicate are not keys), then per evaluator
# `<evaluation_model>_<evaluation_template>` four columns (mean, then these suffixes), then `sum`
# (of the evaluator means, on different scales: the original pipeline's), `mean_scaled` (the
# mean over evaluators of each mean as a share of its template's scale: what rankings use),
# `n_generations` (essays pooled) and `gen_ids` (them, `;`-separated). `stage` is the stage of
# the evaluated documents; `concepts` (after `combo_id`) names the combo's concepts.
GENERATION_TASK_KEYS = ("combo_id", "stage", "draft_template", "generation_template", "generation_model")
GENERATION_STAT_SUFFIXES = ("", "_min", "_max", "_n")
GENERATION_SCORES_TAIL = ("sum", "mean_scaled", "n_generations", "gen_ids")
GENERATION_IDS_SEPARATOR = ";"

# summary/generation_scores_by_essay.csv: the same per essay (`gen_id`, evaluation replicates
# averaged), then `sum`, `mean_scaled` and `paths` (the essay's gens folder); `concepts` after
# `combo_id`.
GENERATION_SCORES_BY_ESSAY_INDEX = ("gen_id", *ESSAY_COLUMNS)
GENERATION_SCORES_BY_ESSAY_TAIL = ("sum", "mean_scaled", "paths")

# summary/final_results.csv: one row per group of one analysis type; key columns that the
# analysis type does not group by are empty.
FINAL_RESULTS_KEYS = (
    "generation_template", "generation_model", "draft_template", "evaluation_template",
    "evaluation_llm_model", "combo_id",
)
FINAL_RESULTS_COLUMNS = (
    "analysis_type", *FINAL_RESULTS_KEYS, "count", "n_evaluations", "mean", "std", "min", "max",
    "mean_scaled", "perfect_count", "perfect_share", "high_count", "high_share", "low_count",
    "low_share",
)

# summary/perfect_score_paths.csv: one row per evaluation that gave its template's maximum.
PERFECT_SCORE_COLUMNS = (
    "gen_id", "parent_gen_id", *ESSAY_COLUMNS, "evaluation_template", "evaluation_llm_model",
    "replicate", "score", "score_max", "essay_path", "evaluation_path",
)

# analysis/variance_analysis.csv: one row per essay and comparison with at least two values;
# `evaluation_template` / `evaluation_llm_model` are empty when they are what varies.
VARIANCE_COLUMNS = (
    "analysis_type", "gen_id", *ESSAY_COLUMNS, "evaluation_template", "evaluation_llm_model",
    "n", "mean", "std", "min", "max", "range", "range_scaled", "cv", "agreement",
)

# analysis/judge_agreement.csv: one row per comparison (raters = evaluation models or
# evaluation templates) and what is held fixed ("(all)" = pooled).
JUDGE_AGREEMENT_COLUMNS = (
    "comparison", "evaluation_template", "evaluation_llm_model", "raters", "n_raters", "n_units",
    "n_complete_units", "krippendorff_alpha_interval", "icc_2_1", "scale", "note",
)

# analysis/mean_score_ci.csv: per generation model / template (and both) and evaluation
# template, the mean essay score with a percentile-bootstrap confidence interval.
MEAN_SCORE_CI_COLUMNS = (
    "analysis_type", "generation_template", "generation_model", "evaluation_template", "n_essays",
    "mean", "ci_low", "ci_high", "confidence",
)

# 7_cross_experiment/evaluation_scores_by_template_model.csv: one row per essay, then one
# column per `<evaluation_template>__<evaluation_model>` (mean over replicates), then
# `mean_scaled` (the mean of those columns as shares of their scales); `concepts` after `combo_id`.
CROSS_PIVOT_INDEX = ("gen_id", *ESSAY_COLUMNS)
CROSS_PIVOT_SEPARATOR = "__"

# summary/top_essays.html is built from this table (best essays first).
TOP_ESSAY_COLUMNS = ("rank", "gen_id", *ESSAY_COLUMNS, "mean_scaled", "n_tasks", "essay_path")

# -- what each report column means, in words (the results site's Tables page) ------------------------
# A column is looked up first in its table's entry of TABLE_COLUMN_DESCRIPTIONS, then here; the
# evaluator columns of the wide tables are described by EVALUATOR_COLUMN_DESCRIPTIONS.
COLUMN_DESCRIPTIONS = {
    "gen_id": "The document this row is about (its folder under data/gens/<stage>/).",
    "parent_gen_id": "The essay the evaluation judged.",
    "evaluation_template": "The rubric the judge was given (evaluation_templates.csv).",
    "evaluation_llm_model": "The judge: the model that wrote the evaluation (llm_models.csv id).",
    "score": "The score the judge gave, on the rubric's own scale (score_min..score_max).",
    "error": "Why there is no valid score (empty when the score is valid).",
    "combo_id": "The concept combination the draft was written from (data/combo_mappings.csv).",
    "concepts": "The names of the combination's concepts, joined with ' + '.",
    "draft_template": "The template that prompted the draft.",
    "generation_template": "The template that turned the draft into the essay (a copy template copies it).",
    "generation_model": "The model that wrote the essay ('draft' style rows: the draft's model).",
    "cohort_id": "The cohort the document was made for first (a document shared by cohorts is made once).",
    "replicate": "Which repetition of the same prompt this is (1, 2, ...).",
    "paths": "The document's folder in the gens store.",
    "flags": "Why the score cannot be taken at face value: a raw.txt changed since it was paid for, or a "
             "stale document in its lineage (prompt or model would differ today). Empty when all is well.",
    "stage": "The stage of the evaluated documents.",
    "sum": "The sum of the judges' mean scores (the original pipeline's column: it adds different scales; "
           "rank by mean_scaled instead).",
    "mean_scaled": "The mean score as a share of each rubric's scale (0 = lowest, 1 = highest), averaged over "
                   "judges: comparable across rubrics, and what every ranking uses.",
    "n_generations": "How many essays are pooled in the row.",
    "gen_ids": "The essays pooled in the row, ';'-separated.",
    "analysis_type": "What the row groups by (or what varies, in the variance table).",
    "count": "Evaluation tasks in the group (one per essay, rubric and judge; replicates averaged first).",
    "n_evaluations": "Single evaluations behind those tasks (replicates counted).",
    "mean": "Mean score in points of the rubric's scale.",
    "std": "Standard deviation of the scores.",
    "min": "Lowest score.",
    "max": "Highest score.",
    "perfect_count": "Tasks that got the rubric's maximum.",
    "perfect_share": "perfect_count as a share of count.",
    "high_count": "Tasks at 80% of the scale or above.",
    "high_share": "high_count as a share of count.",
    "low_count": "Tasks at 30% of the scale or below.",
    "low_share": "low_count as a share of count.",
    "score_max": "The rubric's maximum score.",
    "essay_path": "The essay's text (parsed.txt).",
    "evaluation_path": "The judge's full answer (raw.txt).",
    "n": "How many scores are compared.",
    "range": "Highest minus lowest score, in points.",
    "range_scaled": "The range as a share of the scale.",
    "cv": "Coefficient of variation: std / mean.",
    "agreement": "The range as a label: high (within 1/8 of the scale), moderate (1/4), low (3/8) or poor.",
    "comparison": "Who the raters are: the judges (per rubric) or the rubrics (per judge).",
    "raters": "The raters compared, '|'-separated.",
    "n_raters": "How many raters.",
    "n_units": "Essays (or essay-rubric / essay-judge pairs when pooled) rated.",
    "n_complete_units": "Units that every rater scored.",
    "krippendorff_alpha_interval": "Krippendorff's alpha (interval): 1 = perfect agreement, 0 = chance.",
    "icc_2_1": "ICC(2,1): two-way random, absolute agreement, single rater.",
    "scale": "points: raw scores; share of scale: each score as a share of its rubric's scale.",
    "note": "Why a statistic is undefined, when it is.",
    "n_essays": "Essays in the group (the unit of the bootstrap).",
    "ci_low": "Lower end of the bootstrap confidence interval of the mean.",
    "ci_high": "Upper end of the bootstrap confidence interval of the mean.",
    "confidence": "The confidence level of the interval.",
}
TABLE_COLUMN_DESCRIPTIONS = {
    "parsing/aggregated_scores.csv": {"gen_id": "The evaluation (one row per single evaluation)."},
    "summary/generation_scores_by_essay.csv": {"gen_id": "The essay.", "paths": "The essay's folder."},
    "summary/perfect_score_paths.csv": {"gen_id": "The evaluation that gave the maximum."},
    "summary/final_results.csv": {"mean_scaled": "Mean task score as a share of its rubric's scale."},
    "analysis/variance_analysis.csv": {"gen_id": "The essay.", "mean": "Mean of the compared scores."},
    "analysis/mean_score_ci.csv": {"mean": "Mean essay score (each essay: its mean over judges) in points."},
}
# Wide tables: one group of columns per judge. `{judge}` is `<evaluation model>_<evaluation template>`
# (generation scores) or `<evaluation template>__<evaluation model>` (the cross pivot).
EVALUATOR_COLUMN_DESCRIPTIONS = {
    "": "Mean score of judge {judge} (model and rubric) over the row's valid evaluations, on the rubric's scale.",
    "_min": "Lowest score of judge {judge}.",
    "_max": "Highest score of judge {judge}.",
    "_n": "Valid scores of judge {judge} behind the mean (0: none).",
}
# A sentence per report table, for the Tables page.
TABLE_DESCRIPTIONS = {
    "parsing/aggregated_scores.csv": "Every single evaluation of the cohort with its score (or why it has none) "
                                     "and the lineage of the essay it judged.",
    "summary/generation_scores.csv": "One row per concept combination, draft template, essay template and model, "
                                     "every replicate pooled; each judge's mean, min, max and count.",
    "summary/generation_scores_by_essay.csv": "One row per essay; each judge's mean over replicates.",
    "summary/final_results.csv": "Summaries of the task scores grouped many ways (by template, model, judge, ...).",
    "summary/perfect_score_paths.csv": "Every evaluation that gave its rubric's maximum, with the files to read.",
    "analysis/variance_analysis.csv": "How much the scores of one essay spread across judges, rubrics and "
                                      "replicates.",
    "analysis/judge_agreement.csv": "Agreement between judges (and between rubrics): Krippendorff's alpha and ICC.",
    "analysis/mean_score_ci.csv": "Mean essay score per generation model / template with a bootstrap interval.",
}
