"""Column names and table shapes: the one place that says what each CSV and JSON holds."""

from __future__ import annotations

MEMBERSHIP_COLUMNS = (
    "stage", "gen_id", "cohort_id", "parent_gen_id", "combo_id",
    "template_id", "llm_model_id", "replicate",
)
COMBO_MAPPING_COLUMNS = ("combo_id", "version", "concept_id", "description_level", "k_max", "created_at")

TEMPLATE_COLUMNS = ("template_id",)  # template_name, description, parser, generator, active: optional
CONCEPT_COLUMNS = ("concept_id", "name")
MODEL_COLUMNS = ("id", "model", "provider", "display_name")
OPTIONAL_MODEL_COLUMNS = (
    "route", "api_base", "api_key_env", "max_concurrency",
    "input_cost_per_mtok", "output_cost_per_mtok",
)

DESCRIPTION_LEVELS = ("sentence", "paragraph", "article")
GENERATORS = ("llm", "copy")
DEFAULT_SCORE_MIN = 0.0
DEFAULT_SCORE_MAX = 9.0

# Keys every metadata.json carries (SPEC §5). Never an API key.
METADATA_KEYS = (
    "stage", "gen_id", "task_id", "template_id", "model_id", "model", "parent_gen_id",
    "combo_id", "replicate", "cohort_id", "mode", "parser", "finish_reason", "truncated",
    "usage", "cost_usd", "duration_s", "attempts", "temperature", "max_tokens",
    "prompt_sha256", "prompt_sources", "created_at",
)
