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

# -- provider batches (daydream/batch/, scripts/batches.py list) -----------------------
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
AGGREGATED_COLUMNS = (
    "gen_id", "parent_gen_id", "evaluation_template", "evaluation_llm_model", "score", "error",
    "combo_id", "draft_template", "generation_template", "generation_model", "cohort_id",
    "replicate", "paths", "flags",
)

# The key of one evaluation task: evaluations sharing it are replicates and are averaged.
TASK_KEYS = ("parent_gen_id", "evaluation_template", "evaluation_llm_model")

# summary/generation_scores.csv (the seeds' pivot): one row per generation task key (replicates of
# drafts, essays and evaluations pooled; gen_id and replicate are not keys), then per evaluator
# `<evaluation_model>_<evaluation_template>` four columns (mean, then these suffixes), then `sum`
# (of the evaluator means), `n_generations` (essays pooled) and `gen_ids` (them, `;`-separated).
# `stage` is the stage of the evaluated documents.
GENERATION_TASK_KEYS = ("combo_id", "stage", "draft_template", "generation_template", "generation_model")
GENERATION_STAT_SUFFIXES = ("", "_min", "_max", "_n")
GENERATION_SCORES_TAIL = ("sum", "n_generations", "gen_ids")
GENERATION_IDS_SEPARATOR = ";"

# summary/generation_scores_by_essay.csv: the same per essay (`gen_id`, evaluation replicates
# averaged), then `sum` and `paths` (the essay's gens folder).
GENERATION_SCORES_BY_ESSAY_INDEX = ("gen_id", *ESSAY_COLUMNS)
GENERATION_SCORES_BY_ESSAY_TAIL = ("sum", "paths")

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
# column per `<evaluation_template>__<evaluation_model>` (mean over replicates).
CROSS_PIVOT_INDEX = ("gen_id", *ESSAY_COLUMNS)
CROSS_PIVOT_SEPARATOR = "__"

# summary/top_essays.html is built from this table (best essays first).
TOP_ESSAY_COLUMNS = ("rank", "gen_id", *ESSAY_COLUMNS, "mean_scaled", "n_tasks", "essay_path")
