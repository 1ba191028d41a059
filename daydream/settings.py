"""The workflow configuration as typed settings, built from a validated config.

`validated(config)` reads command-line strings as the schema's types, checks a config dict
against `config/schema/config.schema.yaml` and fills in its defaults (that schema is the one
place defaults live); `LLMSettings.from_config` then reads the filled-in dict, with no
defaults of its own.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import jsonschema
import yaml

from daydream import stages
from daydream.paths import schema_path


class ConfigError(ValueError):
    """A config that does not fit the schema; one line per problem: the key, why, the fix."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("the configuration is not valid:\n" + "\n".join(f"- {p}" for p in self.problems))


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    return yaml.safe_load(schema_path("config").read_text(encoding="utf-8"))


def _resolve(node: dict, schema: dict) -> dict:
    ref = node.get("$ref", "")
    if ref.startswith("#/$defs/"):
        return {**schema["$defs"][ref.removeprefix("#/$defs/")], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


_SCALARS = {"integer": int, "number": float}


def _from_command_line(value: object, node: dict, schema: dict) -> object:
    """`value` with the strings the command line gives read as the schema's types.

    `--config` parses nested values as text: `--config 'llm={max_concurrency: 4}'` arrives as
    {"max_concurrency": "4"}, and a whole value that is not YAML arrives as one string. A
    string where the schema wants an object is read as YAML; a string where it wants an
    integer, a number or a boolean is converted when it spells one exactly; a plain string for
    a key that takes a list of strings (`cohorts=pilot`) is a list of one, so it gets the same
    checks. Anything else is left for the schema to report."""
    node = _resolve(node, schema)
    kind = node.get("type")
    if kind == "object" and isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        value = parsed if isinstance(parsed, dict) else value
    if kind == "object" and isinstance(value, dict):
        properties = node.get("properties", {})
        return {key: _from_command_line(item, properties[key], schema) if key in properties else item
                for key, item in value.items()}
    if isinstance(value, str) and kind in _SCALARS:
        try:
            return _SCALARS[kind](value)
        except ValueError:
            return value
    if isinstance(value, str) and kind == "boolean":
        try:
            return as_bool(value)
        except ValueError:
            return value
    if isinstance(value, str) and any(alt.get("type") == "array" for alt in node.get("oneOf", [])):
        return [value]
    return value


def _problem(error: jsonschema.ValidationError, schema: dict) -> str:
    if error.validator == "oneOf" and error.context:  # the alternative that came closest says why
        deepest = max(error.context, key=lambda e: len(e.absolute_path))
        return _problem(deepest, schema)
    key = "/".join(map(str, error.absolute_path)) or "(top level)"
    hint = ""
    if error.validator == "additionalProperties":
        node = schema
        for part in error.absolute_path:
            node = _resolve(node, schema).get("properties", {}).get(part, {})
        known = ", ".join(_resolve(node, schema).get("properties", {}))
        hint = f"; known keys here: {known}"
        if any(":" in str(name) for name in error.instance):
            hint += "; on the command line put a space after each colon: --config 'llm={max_concurrency: 8}'"
    elif error.validator == "type" and "object" in str(error.validator_value):
        hint = (f"; give {key} as a YAML mapping, quoted for the shell, with a space after each colon, "
                f"e.g. --config '{key.split('/')[0]}={{max_concurrency: 8}}'")
    elif error.validator == "pattern" and key.startswith("cohorts"):
        hint = ("; a cohort id is a file name of cohorts_dir without .yaml (letters, digits, _ . -); list "
                "several as --config 'cohorts=[\"a\",\"b\"]'")
    return f"config {key}: {error.message}{hint} (see {schema_path('config')})"


def validated(config: dict) -> dict:
    """A copy of `config`, checked against the config schema, with every default filled in.

    Values from `--config` are first read as the schema's types (`_from_command_line`), so any
    key, nested ones included, can be given on the command line as config.yaml says. Every
    problem is reported at once (ConfigError), each with its key and the fix."""
    from snakemake.utils import validate  # the same check Snakemake documents for workflows

    schema = _schema()
    filled = _from_command_line(copy.deepcopy(dict(config)), schema, schema)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(filled), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError([_problem(e, schema) for e in errors])
    validate(filled, schema=str(schema_path("config")), set_default=True)
    return filled


def as_bool(value: object) -> bool:
    """`--config offline=true` arrives as the string 'true': accept bools and their spellings."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"offline={value!r}: use true or false")


def cohort_list(value: object) -> list[str]:
    """`cohorts` from config or `--config cohorts=pilot` / `'cohorts=["a","b"]'`."""
    items = [value] if isinstance(value, str) else list(value or [])
    return [str(item).strip() for item in items if str(item).strip()]


@dataclass(frozen=True)
class StageSettings:
    temperature: float
    max_tokens: int
    timeout_s: float


@dataclass(frozen=True)
class LLMSettings:
    """`llm:` of the config plus `offline`; one StageSettings per stage of the registry."""

    default_route: str
    offline: bool
    max_concurrency: int
    max_attempts: int
    max_total_wait_s: float
    backoff_initial_s: float
    backoff_max_s: float
    stages: dict[str, StageSettings]

    @classmethod
    def from_config(cls, config: dict) -> LLMSettings:
        """From a config that `validated` has filled in."""
        llm = dict(config["llm"])
        per_stage = llm.pop("stages")
        return cls(offline=as_bool(config["offline"]), **llm,
                   stages={name: StageSettings(**per_stage[name]) for name in stages.NAMES})

    def stage(self, stage: str) -> StageSettings:
        return self.stages[stages.get(stage).config_section]


@dataclass(frozen=True)
class BatchSettings:
    """`batch:` of the config (batch mode, `daydream.batch`)."""

    wait: bool
    poll_interval_s: float
    max_requests: int
    max_bytes: int
    max_submissions: int
    resubmit: str
    stages: dict[str, bool]

    @classmethod
    def from_config(cls, config: dict) -> BatchSettings:
        section = dict(config["batch"])
        return cls(wait=as_bool(section.pop("wait")), stages=dict(section.pop("stages")), **section)
