"""Column names and keys of every table and record the workflow reads or writes: the one place.

Definition tables (`data/1_raw/`), the cohort membership, the combo register, metadata.json,
the stale report and every report table. A column is renamed here or nowhere; readers check
a table's header against the known columns listed here.
"""

from __future__ import annotations

from daydream import stages

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
    "input_cost_per_mtok", "output_cost_per_mtok", "cached_input_cost_per_mtok", "cache_write_cost_per_mtok",
    "active", "batch",
)
# Columns of the original pipeline's llm_models.csv that are accepted and not used.
LEGACY_MODEL_COLUMNS = ("specialization", "for_generation", "for_evaluation")

GENERATORS = ("llm", "copy")

# data/1_raw/human_scores.csv (optional; daydream.human_scores): one row per human rating of an
# essay under an evaluation template's rubric, on that template's scale. Several raters allowed.
HUMAN_SCORE_COLUMNS = ("essay_gen_id", "evaluation_template", "rater", "score")

# -- provider batches (daydream/batch/, scripts/batches.py list) -----------------------
PROVIDER_BATCH_LIST_COLUMNS = ("local_id", "provider", "batch_id", "stage", "model_id", "state", "status",
                               "requests", "done", "failed", "created_at")

# -- cohorts --------------------------------------------------------------------------------------
MEMBERSHIP_COLUMNS = (
    "stage", "gen_id", "cohort_id", "parent_gen_id", "combo_id",
    "template_id", "llm_model_id", "replicate",
)
# The original pipeline's 1_raw/replication_config.csv (replicates per stage).
REPLICATION_CONFIG_COLUMNS = ("stage", "replicates")
COMBO_MAPPING_COLUMNS = ("combo_id", "version", "concept_id", "description_level", "k_max", "created_at")

# -- the gens store ---------------------------------------------------------------------------------
# Keys every metadata.json carries (SPEC §5); config/schema/metadata.schema.yaml gives their types.
METADATA_KEYS = (
    "stage", "gen_id", "task_id", "template_id", "model_id", "model", "parent_gen_id",
    "combo_id", "replicate", "cohort_id", "mode", "parser", "finish_reason", "truncated",
    "usage", "cost_usd", "duration_s", "attempts", "temperature", "max_tokens",
    "prompt_sha256", "prompt_sources", "created_at", "parsed_sha256",
)
# Only in a metadata.json written by scripts/import_gens_store.py (daydream.original_store).
IMPORTED_METADATA_KEY = "imported_from"

# data/7_reporting/stale_generations.csv
STALE_COLUMNS = ("stage", "gen_id", "cohort_id", "template_id", "reason",
                 "stored_prompt_sha256", "current_prompt_sha256")

# data/7_reporting/plan.csv (`snakemake plan`): one row per stage, template and model with calls
# still missing, then a `total` row. Costs are empty where a price is unknown (never 0). `basis`:
# `history n=…` or `max_tokens`; cache tokens: the projected prompt-cache reads and writes.
PLAN_COLUMNS = (
    "stage", "template_id", "model_id", "calls", "basis", "prompt_tokens_est", "prompt_tokens_high",
    "completion_tokens_low", "completion_tokens_high", "cache_read_tokens", "cache_write_tokens",
    "cost_usd_low", "cost_usd_high", "cost_usd_batch_low", "cost_usd_batch_high", "cache_savings_usd",
    "price_source", "note",
)

# -- reports (SPEC §9) ------------------------------------------------------------------------------
# The lineage of an essay (a document of the stage the scored stage judges): what produced it,
# root stage first, from the stage registry's `lineage_columns` (with the built-in stages:
# combo_id, draft_template, generation_template, generation_model). Shared by every per-essay table.
ESSAY_COLUMNS = ("combo_id", *stages.lineage_columns(stages.EVALUATED.name))
# The scored stage's own columns: evaluation_template, evaluation_llm_model.
SCORED_COLUMNS = tuple(report for _, report in stages.SCORED.lineage_columns)

# parsing/aggregated_scores.csv and 7_cross_experiment/aggregated_scores.csv: one row per
# evaluation. `parent_gen_id` is the essay, `paths` the evaluation's gens folder, `error` is
# empty when `score` holds a valid score. `flags` is empty unless the score cannot be taken at
# face value: `raw.txt changed: <stage> <gen_id>, ...` names each document of its lineage whose
# raw.txt is no longer the reply that was paid for, and `stale: <stage> <gen_id> (<reason>), ...`
# each one the stale report lists (its prompt or model would differ today; `daydream.integrity`).
# `concepts` names the combo's concepts (`daydream.reports.concepts`: names joined with " + ").
AGGREGATED_COLUMNS = (
    "gen_id", "parent_gen_id", *SCORED_COLUMNS, "score", "error", "combo_id", "concepts", *ESSAY_COLUMNS[1:],
    "cohort_id",
    "replicate", "paths", "flags",
)

# The key of one evaluation task: evaluations sharing it are replicates and are averaged.
TASK_KEYS = ("parent_gen_id", *SCORED_COLUMNS)

# summary/generation_scores.csv (the seeds' pivot): one row per generation task key (replicates of
# drafts, essays and evaluations pooled; gen_id and replicate are not keys), then per evaluator
# `<evaluation_model>_<evaluation_template>` four columns (mean, then these suffixes), then `sum`
# (of the evaluator means, on different scales: the original pipeline's), `mean_scaled` (the
# mean over evaluators of each mean as a share of its template's scale: what rankings use),
# `n_generations` (essays pooled) and `gen_ids` (them, `;`-separated). `stage` is the stage of
# the evaluated documents; `concepts` (after `combo_id`) names the combo's concepts.
GENERATION_TASK_KEYS = ("combo_id", "stage", *ESSAY_COLUMNS[1:])
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

# The judge-reliability reports (daydream.reports.judges; README "Can the judges be trusted?").
# Each statistic comes with `*_ci_low`, `*_ci_high` (at `confidence`); a value or interval that
# cannot be computed is empty and `note` says why. `evaluation_llm_model` "(panel)" is the mean
# over the evaluation models of one essay under one evaluation template.
# analysis/judge_vs_human.csv: per judge (comparison `judge_vs_humans`) the judge's essay
# score (mean over replicates) against the humans' (mean over raters), on the essays both
# scored; `mean_bias` = judge - human in score points; `n_raters` the most raters of one essay.
# Comparison `between_humans`: the raters' own alpha per evaluation template over the essays
# with >= 2 raters (`n`), `n_raters` the raters of those essays.
JUDGE_VS_HUMAN_COLUMNS = (
    "comparison", "evaluation_llm_model", "evaluation_template", "n", "n_raters",
    "spearman", "spearman_ci_low", "spearman_ci_high",
    "krippendorff_alpha", "alpha_ci_low", "alpha_ci_high",
    "mean_bias", "bias_ci_low", "bias_ci_high", "confidence", "note",
)
# analysis/calibrated_means.csv: per analysis type (overall, by generation template, by
# generation model), evaluation template and judge (or the panel): the judge mean over every
# essay, the humans-only mean over the labelled essays, and the prediction-powered estimate
# of the mean human score (judge mean + mean human - judge residual over the labelled essays).
CALIBRATED_MEANS_COLUMNS = (
    "analysis_type", "generation_template", "generation_model", "evaluation_template",
    "evaluation_llm_model", "n_essays", "n_labelled",
    "judge_mean", "judge_ci_low", "judge_ci_high",
    "human_mean", "human_ci_low", "human_ci_high",
    "calibrated_mean", "calibrated_ci_low", "calibrated_ci_high", "confidence", "note",
)
# analysis/length_bias.csv: analysis type `score_vs_length`: per judge and evaluation template,
# Spearman's rho of the score with the essay's length in words and the OLS slope of the score
# per doubling of length (log2 words). Analysis types `by_generation_template` and
# `by_generation_model`: per evaluation template, the panel's mean per group, raw and
# length-controlled (OLS of the score on group intercepts and log2 words, each group read at
# the cohort's median length `median_words`); `slope_per_doubling` is then the within-group slope.
LENGTH_BIAS_COLUMNS = (
    "analysis_type", "evaluation_llm_model", "evaluation_template", "generation_template",
    "generation_model", "n", "median_words", "spearman", "spearman_ci_low", "spearman_ci_high",
    "slope_per_doubling", "slope_ci_low", "slope_ci_high", "raw_mean", "raw_ci_low", "raw_ci_high",
    "length_controlled_mean", "controlled_ci_low", "controlled_ci_high", "confidence", "note",
)
# analysis/self_preference.csv: per judge and evaluation template, two comparisons: its mean
# score for essays generated by the same model (`same_model`) or by other models of its
# provider (`same_provider`, the `provider` column of llm_models.csv) against essays of other
# providers' models (`mean_other`); `difference` = mean - mean_other; `flagged` is true when
# the interval excludes 0.
SELF_PREFERENCE_COLUMNS = (
    "evaluation_llm_model", "evaluation_template", "judge_provider", "comparison", "n_essays", "mean",
    "n_other", "mean_other", "difference", "ci_low", "ci_high", "flagged", "confidence", "note",
)
# analysis/disagreement.csv: one row per essay, the essays where the judges disagree most first.
# `spread` is the largest gap between two evaluation models' scores of the essay under one
# evaluation template (`spread_template`), as a share of that template's scale;
# `mean_spread` averages the gaps over the templates; `lowest_judge` / `highest_judge` gave the
# extremes. `rank` is empty where no template has two judges (`note`).
DISAGREEMENT_COLUMNS = (
    "rank", "gen_id", *ESSAY_COLUMNS, "n_judges", "n_templates", "spread", "spread_template",
    "lowest_judge", "highest_judge", "mean_spread", "mean_scaled", "note",
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
    # the judge-reliability tables (analysis/judge_vs_human.csv ... disagreement.csv)
    "spearman": "Spearman's rank correlation (-1..1): do the two sides order the essays alike?",
    "spearman_ci_low": "Lower end of the bootstrap interval of spearman.",
    "spearman_ci_high": "Upper end of the bootstrap interval of spearman.",
    "krippendorff_alpha": "Krippendorff's alpha (interval): agreement on the scale itself, 1 = identical, 0 = chance.",
    "alpha_ci_low": "Lower end of the bootstrap interval of alpha.",
    "alpha_ci_high": "Upper end of the bootstrap interval of alpha.",
    "mean_bias": "Judge minus human, in points of the rubric's scale (above 0: the judge is more generous).",
    "bias_ci_low": "Lower end of the bootstrap interval of mean_bias.",
    "bias_ci_high": "Upper end of the bootstrap interval of mean_bias.",
    "n_labelled": "Essays with human ratings in the group.",
    "judge_mean": "The judge's mean over every essay of the group.",
    "judge_ci_low": "Lower end of the interval of judge_mean.",
    "judge_ci_high": "Upper end of the interval of judge_mean.",
    "human_mean": "The humans' mean over the rated essays only.",
    "human_ci_low": "Lower end of the interval of human_mean.",
    "human_ci_high": "Upper end of the interval of human_mean.",
    "calibrated_mean": "The mean a human would give, estimated from every essay: judge mean plus the mean "
                       "human-minus-judge gap on the rated essays (prediction-powered inference).",
    "calibrated_ci_low": "Lower end of the interval of calibrated_mean.",
    "calibrated_ci_high": "Upper end of the interval of calibrated_mean.",
    "median_words": "The cohort's median essay length in words (where length-controlled means are read).",
    "slope_per_doubling": "Points of score gained when an essay is twice as long.",
    "slope_ci_low": "Lower end of the interval of slope_per_doubling.",
    "slope_ci_high": "Upper end of the interval of slope_per_doubling.",
    "raw_mean": "The group's mean score as it is.",
    "raw_ci_low": "Lower end of the interval of raw_mean.",
    "raw_ci_high": "Upper end of the interval of raw_mean.",
    "length_controlled_mean": "The group's mean score had its essays been of the median length.",
    "controlled_ci_low": "Lower end of the interval of length_controlled_mean.",
    "controlled_ci_high": "Upper end of the interval of length_controlled_mean.",
    "judge_provider": "The judge's provider (the provider column of llm_models.csv).",
    "n_other": "Essays of other providers' models the judge scored.",
    "mean_other": "The judge's mean for essays of other providers' models.",
    "difference": "mean minus mean_other: how much more the judge gives its own (model's or provider's) essays.",
    "flagged": "true when the interval of the difference excludes 0: the judge likely favours its own.",
    "rank": "Order of the row (1 first).",
    "n_judges": "Judges that scored the essay.",
    "n_templates": "Rubrics under which two or more judges scored the essay.",
    "spread": "The largest gap between two judges' scores of the essay, as a share of the rubric's scale.",
    "spread_template": "The rubric of that largest gap.",
    "lowest_judge": "The judge that gave the lowest score in that gap.",
    "highest_judge": "The judge that gave the highest score in that gap.",
    "mean_spread": "The gaps averaged over the rubrics.",
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
    "analysis/judge_vs_human.csv": "How each judge agrees with the human ratings (human_scores.csv): ranking, "
                                   "scale agreement and bias, with intervals; and the raters' own agreement.",
    "analysis/calibrated_means.csv": "The mean score a human would give per template and model, from the judges "
                                     "corrected by the human ratings, beside the raw judge and human means.",
    "analysis/length_bias.csv": "Do judges reward length? Score against essay length per judge, and means per "
                                "template and model with length held at the median.",
    "analysis/self_preference.csv": "Does a judge favour essays of its own model or provider over others'?",
    "analysis/disagreement.csv": "Essays where the judges disagree most first: the ones worth a human rating next.",
}
