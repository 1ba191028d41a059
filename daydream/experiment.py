"""Load and check the experiment definitions under `data/1_raw/` (SPEC §2).

`load_experiment` reads the concept, template and model tables once and returns plain frozen
records. The files are read strictly (`daydream.definitions`: encoding, header, field counts)
and every cell this module understands is checked (ids, generators, parsers, scales, numbers,
`active`). Every problem is collected and reported together, each naming the file, the line
and the fix, so a researcher fixes a broken experiment in one pass rather than one error per run.
"""

from __future__ import annotations

import re
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
from daydream.definitions import Row, Table, parse_bool, read_table
from daydream.errors import UserError
from daydream.paths import Paths


class ExperimentError(ValueError, UserError):
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
    line: int = 0  # its line in the template table


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
    cached_input_cost_per_mtok: float | None = None  # prompt caching: a read, and a write (Anthropic)
    cache_write_cost_per_mtok: float | None = None
    active: bool = True
    batch: bool = False  # calls go through the provider's batch API (daydream.batch)
    line: int = 0  # its line in llm_models.csv


# Keys of `Experiment.unreadable` / `.rejected`: the concept table, the model table, and each
# stage's template table by the stage's name.
CONCEPTS, MODELS = "concepts", "models"


@dataclass
class Experiment:
    concepts: dict[str, str]  # active concept_id -> name
    templates: dict[str, dict[str, Template]]  # stage -> template_id -> Template
    models: dict[str, ModelRow]
    inactive_concepts: set[str] = field(default_factory=set)
    # Tables that could not be read at all (their ids are unknown, not absent) and the ids of
    # rows left out for a problem: a cohort check names neither as "unknown".
    unreadable: set[str] = field(default_factory=set)
    rejected: dict[str, set[str]] = field(default_factory=dict)

    def was_rejected(self, table: str, item_id: str) -> bool:
        """True when `item_id` may be in `table` but its row (or the whole table) had a problem
        that is reported already."""
        return table in self.unreadable or item_id in self.rejected.get(table, set())


def read_csv_rows(path: Path, required: tuple[str, ...], optional: tuple[str, ...],
                  problems: list[str]) -> list[Row]:
    """The rows of a definition table that passed the strict checks of
    `daydream.definitions.read_table` (each with its `line`); every problem goes to `problems`."""
    return read_table(path, required, optional, problems).rows


def is_active(row: dict, where: str = "", problems: list[str] | None = None) -> bool:
    """A row is active unless its optional `active` column says false/0/no; a cell that says
    neither true nor false is a problem (with `problems`), never guessed."""
    return parse_bool(row.get("active", ""), where, "active", problems if problems is not None else [])


def _number(text: str, default: float | None, where: str, problems: list[str]) -> float | None:
    if text == "":
        return default
    try:
        return float(text)
    except ValueError:
        problems.append(f"{where}: {text!r} is not a number; write a number or leave the cell empty")
        return default


def _where(path: Path, row: Row, item_id: str) -> str:
    return f"{path} line {row.line} ({item_id})"


def _note(experiment_tables: dict[str, Table] | None, name: str, table: Table) -> None:
    if experiment_tables is not None:
        experiment_tables[name] = table


def load_concepts(paths: Paths, problems: list[str],
                  tables: dict[str, Table] | None = None) -> tuple[dict[str, str], set[str]]:
    path = paths.concepts_metadata_csv
    table = read_table(path, CONCEPT_COLUMNS, OPTIONAL_CONCEPT_COLUMNS, problems, key="concept_id")
    _note(tables, CONCEPTS, table)
    active: dict[str, str] = {}
    inactive: set[str] = set()
    for row in table.rows:
        concept_id = row["concept_id"]
        if not row.get("name"):
            problems.append(f"{_where(path, row, concept_id)}: empty name; give the concept a name")
        if is_active(row, _where(path, row, concept_id), problems):
            active[concept_id] = row["name"]
        else:
            inactive.add(concept_id)
    return active, inactive


def _template_from_row(stage: str, row: Row, where: str, problems: list[str]) -> Template:
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
                    is_active(row, where, problems), low, high, row.line)


def load_templates(paths: Paths, stage: str, problems: list[str],
                   tables: dict[str, Table] | None = None) -> dict[str, Template]:
    path = paths.templates_csv(stage)
    optional = OPTIONAL_TEMPLATE_COLUMNS + (OPTIONAL_EVALUATION_TEMPLATE_COLUMNS if stages.get(stage).scored else ())
    table = read_table(path, TEMPLATE_COLUMNS, optional, problems, key="template_id")
    _note(tables, stage, table)
    return {row["template_id"]: _template_from_row(stage, row, _where(path, row, row["template_id"]), problems)
            for row in table.rows}


def _flag(text: str, where: str, problems: list[str]) -> bool:
    """A true/false cell; empty is false."""
    value = text.lower()
    if value not in ("", "true", "false"):
        problems.append(f"{where}: {text!r} must be true or false (empty = false)")
    return value == "true"


ENV_VAR_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,63}"


def is_variable_name(text: str) -> bool:
    """An environment variable's name, and not shaped like a key (long, mixing lower case and
    digits, as keys are; names are conventionally upper case)."""
    if not re.fullmatch(ENV_VAR_PATTERN, text):
        return False
    return not (len(text) >= 24 and re.search(r"[a-z]", text) and re.search(r"[0-9]", text))


def _model_from_row(row: Row, where: str, problems: list[str]) -> ModelRow:
    concurrency = _number(row.get("max_concurrency", ""), None, f"{where} max_concurrency", problems)
    if concurrency is not None and (concurrency < 1 or concurrency != int(concurrency)):
        problems.append(f"{where} max_concurrency: {row['max_concurrency']!r} must be a whole number of at "
                        "least 1 (or empty: the global cap)")
        concurrency = None
    costs = {}
    for column in ("input_cost_per_mtok", "output_cost_per_mtok", "cached_input_cost_per_mtok",
                   "cache_write_cost_per_mtok"):
        costs[column] = _number(row.get(column, ""), None, f"{where} {column}", problems)
        if costs[column] is not None and costs[column] < 0:
            problems.append(f"{where} {column}: {row[column]!r} is negative; a price per million tokens is >= 0")
    key_env = row.get("api_key_env", "")
    if key_env and not is_variable_name(key_env):
        # Never echoed: a key pasted here must not reach the terminal or a log.
        problems.append(f"{where} api_key_env: this cell names the environment variable that holds the key, and "
                        "what it holds is not a variable name (is it the key itself? then remove it from this file "
                        "at once and rotate the key); write a name such as OPENROUTER_API_KEY and export the key "
                        "in that variable")
        key_env = ""
    return ModelRow(
        id=row["id"], model=row["model"], provider=row.get("provider", ""),
        display_name=row.get("display_name", ""), route=row.get("route", ""),
        api_base=row.get("api_base", ""), api_key_env=key_env,
        max_concurrency=int(concurrency) if concurrency else None, **costs,
        active=is_active(row, where, problems), line=row.line,
        batch=_flag(row.get("batch", ""), f"{where} batch", problems),
    )


def load_models(paths: Paths, problems: list[str], tables: dict[str, Table] | None = None) -> dict[str, ModelRow]:
    path = paths.models_csv
    table = read_table(path, MODEL_COLUMNS, OPTIONAL_MODEL_COLUMNS + LEGACY_MODEL_COLUMNS, problems, key="id")
    _note(tables, MODELS, table)
    models = {}
    for row in table.rows:
        where = _where(path, row, row["id"])
        if not row.get("model"):
            problems.append(f"{where}: empty model; give the model name")
        models[row["id"]] = _model_from_row(row, where, problems)
    return models


def check_replication_config(paths: Paths, problems: list[str]) -> None:
    """The original pipeline's `1_raw/replication_config.csv` (`stage,replicates`) is read: here
    a cohort says its replicates, so a row of 1 (the default) is accepted, and any other count
    is refused with where it goes now, rather than silently ignored."""
    from daydream.columns import REPLICATION_CONFIG_COLUMNS

    path = paths.replication_config_csv
    if not path.exists():
        return
    for row in read_table(path, REPLICATION_CONFIG_COLUMNS, (), problems, key="stage").rows:
        stage, count, where = row["stage"], row["replicates"], f"{path} line {row.line}"
        if stage not in stages.NAMES:
            problems.append(f"{where}: unknown stage {stage!r}; the stages are {', '.join(stages.NAMES)}")
        elif not count.isdigit() or int(count) < 1:
            problems.append(f"{where}: replicates {count!r} is not a whole number of at least 1")
        elif int(count) != 1:
            levels = ", ".join(f"'{i}'" for i in range(1, int(count) + 1))
            problems.append(
                f"{where}: {stage} replicates={count}: replicates are set per cohort here, not in 1_raw: write "
                f"`{stage}: {{replicates: {count}}}` in the cohort file (config/cohorts/<id>.yaml), or an axis "
                f"`{stage}_replicate: [{levels}]` in a design spec; then set this row to 1 or delete the file")


def load_experiment(paths: Paths, problems: list[str] | None = None) -> Experiment:
    """Read every definition table strictly (`daydream.definitions`).

    Without `problems`, raise ExperimentError listing every problem found. With a list, add
    the problems to it and return what could be read: `unreadable` names the tables that
    could not be read at all and `rejected` the ids of rows left out, so a cohort check can
    go on without calling them unknown (the checkpoint reports everything in one pass)."""
    found: list[str] = []
    tables: dict[str, Table] = {}
    concepts, inactive = load_concepts(paths, found, tables)
    templates = {stage: load_templates(paths, stage, found, tables) for stage in stages.NAMES}
    models = load_models(paths, found, tables)
    check_replication_config(paths, found)
    if problems is None and found:
        raise ExperimentError(found)
    if problems is not None:
        problems.extend(found)
    return Experiment(concepts, templates, models, inactive,
                      unreadable={name for name, table in tables.items() if not table.readable},
                      rejected={name: set(table.rejected) for name, table in tables.items()})
