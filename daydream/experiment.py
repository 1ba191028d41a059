"""Load and check the experiment definitions under `data/1_raw/` (SPEC §2).

`load_experiment` reads the concept, template and model tables once and returns plain frozen
records. Every problem is collected and reported together, each naming the file, the row and
the fix, so a researcher fixes a broken experiment in one pass rather than one error per run.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from daydream import parsers, stages
from daydream.columns import (
    CONCEPT_COLUMNS,
    DEFAULT_SCORE_MAX,
    DEFAULT_SCORE_MIN,
    GENERATORS,
    LEGACY_MODEL_COLUMNS,
    MODEL_COLUMNS,
    OPTIONAL_CONCEPT_COLUMNS,
    OPTIONAL_EVALUATION_TEMPLATE_COLUMNS,
    OPTIONAL_MODEL_COLUMNS,
    OPTIONAL_TEMPLATE_COLUMNS,
    TEMPLATE_COLUMNS,
)
from daydream.paths import Paths


class ExperimentError(ValueError):
    """Bad experiment input; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(f"- {p}" for p in self.problems))


@dataclass(frozen=True)
class Template:
    stage: str
    template_id: str
    name: str
    parser: str
    generator: str
    active: bool = True
    score_min: float = DEFAULT_SCORE_MIN
    score_max: float = DEFAULT_SCORE_MAX


@dataclass(frozen=True)
class ModelRow:
    id: str
    model: str
    provider: str
    display_name: str
    route: str = ""
    api_base: str = ""
    api_key_env: str = ""
    max_concurrency: int | None = None
    input_cost_per_mtok: float | None = None
    output_cost_per_mtok: float | None = None
    batch: bool = False  # calls go through the provider's batch API (daydream.provider_batches)


@dataclass
class Experiment:
    concepts: dict[str, str]  # active concept_id -> name
    templates: dict[str, dict[str, Template]]  # stage -> template_id -> Template
    models: dict[str, ModelRow]
    inactive_concepts: set[str] = field(default_factory=set)


def read_csv_rows(path: Path, required: tuple[str, ...], optional: tuple[str, ...],
                  problems: list[str]) -> list[dict]:
    """Rows of a CSV as dicts of stripped strings. A missing file, a missing required column or
    a column that is neither required nor optional (a typo such as `max_concurency`) goes to
    `problems`, naming the file and the known columns."""
    if not path.exists():
        problems.append(f"{path}: file not found; create it with columns {', '.join(required)}")
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        missing = [c for c in required if c not in header]
        unknown = [c for c in header if c not in required and c not in optional]
        if missing:
            problems.append(f"{path}: missing column(s) {', '.join(missing)}; "
                            f"the header must include {', '.join(required)}")
        if unknown:
            problems.append(f"{path}: unknown column(s) {', '.join(map(repr, unknown))}; "
                            f"known columns: {', '.join((*required, *optional))}")
        if missing or unknown:
            return []
        return [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]


def is_active(row: dict) -> bool:
    """A row is active unless its optional `active` column says false/0/no."""
    return row.get("active", "").lower() not in ("false", "0", "no", "n", "f")


def _number(text: str, default: float | None, where: str, problems: list[str]) -> float | None:
    if text == "":
        return default
    try:
        return float(text)
    except ValueError:
        problems.append(f"{where}: {text!r} is not a number")
        return default


def _check_unique(rows: list[dict], key: str, path: Path, problems: list[str]) -> None:
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        if not row.get(key):
            problems.append(f"{path}: row {line} has an empty {key}")
        elif row[key] in seen:
            problems.append(f"{path}: row {line} repeats {key} {row[key]!r}; ids must be unique")
        seen.add(row.get(key, ""))


def load_concepts(paths: Paths, problems: list[str]) -> tuple[dict[str, str], set[str]]:
    path = paths.concepts_metadata_csv
    rows = read_csv_rows(path, CONCEPT_COLUMNS, OPTIONAL_CONCEPT_COLUMNS, problems)
    _check_unique(rows, "concept_id", path, problems)
    active = {r["concept_id"]: r["name"] for r in rows if is_active(r)}
    return active, {r["concept_id"] for r in rows if not is_active(r)}


def _template_from_row(stage: str, row: dict, where: str, problems: list[str]) -> Template:
    generator = row.get("generator") or "llm"
    if generator not in GENERATORS:
        problems.append(f"{where}: generator {generator!r} must be one of {', '.join(GENERATORS)}")
    elif generator == "copy" and not stages.get(stage).allows_copy:
        problems.append(f"{where}: a {stage} cannot be a copy (generator `copy`); use `llm`")
    parser = row.get("parser") or stages.get(stage).default_parser or ""
    try:
        parsers.check_parser(stage, parser)
    except ValueError as error:
        problems.append(f"{where}: {error}")
    low = _number(row.get("score_min", ""), DEFAULT_SCORE_MIN, f"{where} score_min", problems)
    high = _number(row.get("score_max", ""), DEFAULT_SCORE_MAX, f"{where} score_max", problems)
    if low is not None and high is not None and low >= high:
        problems.append(f"{where}: score_min {low} must be below score_max {high}")
    return Template(stage, row["template_id"], row.get("template_name", ""), parser, generator,
                    is_active(row), low, high)


def load_templates(paths: Paths, stage: str, problems: list[str]) -> dict[str, Template]:
    path = paths.templates_csv(stage)
    optional = OPTIONAL_TEMPLATE_COLUMNS + (OPTIONAL_EVALUATION_TEMPLATE_COLUMNS if stages.get(stage).scored else ())
    rows = read_csv_rows(path, TEMPLATE_COLUMNS, optional, problems)
    _check_unique(rows, "template_id", path, problems)
    return {
        row["template_id"]: _template_from_row(stage, row, f"{path} row {line} ({row['template_id']})", problems)
        for line, row in enumerate(rows, start=2) if row.get("template_id")
    }


def _flag(text: str, where: str, problems: list[str]) -> bool:
    """A true/false cell; empty is false."""
    value = text.lower()
    if value not in ("", "true", "false"):
        problems.append(f"{where}: {text!r} must be true or false (empty = false)")
    return value == "true"


def _model_from_row(row: dict, where: str, problems: list[str]) -> ModelRow:
    concurrency = _number(row.get("max_concurrency", ""), None, f"{where} max_concurrency", problems)
    return ModelRow(
        id=row["id"], model=row["model"], provider=row.get("provider", ""),
        display_name=row.get("display_name", ""), route=row.get("route", ""),
        api_base=row.get("api_base", ""), api_key_env=row.get("api_key_env", ""),
        max_concurrency=int(concurrency) if concurrency else None,
        input_cost_per_mtok=_number(row.get("input_cost_per_mtok", ""), None, f"{where} input_cost_per_mtok", problems),
        output_cost_per_mtok=_number(row.get("output_cost_per_mtok", ""), None, f"{where} output_cost_per_mtok", problems),
        batch=_flag(row.get("batch", ""), f"{where} batch", problems),
    )


def load_models(paths: Paths, problems: list[str]) -> dict[str, ModelRow]:
    path = paths.models_csv
    rows = read_csv_rows(path, MODEL_COLUMNS, OPTIONAL_MODEL_COLUMNS + LEGACY_MODEL_COLUMNS, problems)
    _check_unique(rows, "id", path, problems)
    models = {}
    for line, row in enumerate(rows, start=2):
        if row.get("id"):
            if not row.get("model"):
                problems.append(f"{path} row {line} ({row['id']}): empty model; give the model name")
            models[row["id"]] = _model_from_row(row, f"{path} row {line} ({row['id']})", problems)
    return models


def load_experiment(paths: Paths) -> Experiment:
    """Read every definition table; raise ExperimentError listing all problems found."""
    problems: list[str] = []
    concepts, inactive = load_concepts(paths, problems)
    templates = {stage: load_templates(paths, stage, problems) for stage in stages.NAMES}
    models = load_models(paths, problems)
    if problems:
        raise ExperimentError(problems)
    return Experiment(concepts, templates, models, inactive)
