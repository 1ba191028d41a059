"""The workflow configuration as typed settings, built from a validated config.

`validated(config)` reads command-line strings as the schema's types, checks a config dict
against `config/schema/config.schema.yaml` and fills in its defaults (that schema is the one
place defaults live); `LLMSettings.from_config` then reads the filled-in dict, with no
defaults of its own.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import jsonschema
import yaml

from daydream import schemas, stages
from daydream.errors import UserError
from daydream.paths import CONFIG_DIR, schema_path


class ConfigError(ValueError, UserError):
    """A config that does not fit the schema; one line per problem: the key, why, the fix."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("the configuration is not valid:\n" + "\n".join(f"- {p}" for p in self.problems))


def _schema() -> dict:
    """The config schema, its per-stage sections from the stage registry (`daydream.schemas`)."""
    return schemas.load("config")


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
    schema = _schema()
    filled = _from_command_line(copy.deepcopy(dict(config)), schema, schema)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(filled), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError([_problem(e, schema) for e in errors])
    return schemas.fill_defaults(filled, schema)


DATA_ROOT_ENV = "DAYDREAM_DATA_ROOT"
DATA_ROOT_CONFIG = "daydream.yaml"  # config keys kept beside the data: <data_root>/daydream.yaml


def data_root(explicit: str | None = None, default: str | None = None, env: dict | None = None) -> str:
    """The one answer to "where does this experiment live": `explicit` (`--config data_root=`,
    a script's `--data-root`) if given, else `$DAYDREAM_DATA_ROOT` if set, else `default`
    (config/config.yaml's `data_root`), else the schema's default."""
    env = os.environ if env is None else env
    if default is None:
        default = _checkout_config().get("data_root")
    for value in (explicit, env.get(DATA_ROOT_ENV), default):
        if value is not None and str(value).strip():
            return str(value).strip()
    return _schema()["properties"]["data_root"]["default"]


def _checkout_config() -> dict:
    """config/config.yaml of this checkout, as written."""
    return yaml.safe_load((CONFIG_DIR / "config.yaml").read_text(encoding="utf-8")) or {}


def _merged(base: dict, update: dict) -> dict:
    """`base` updated by `update`, nested mappings merged key by key (as `--config` does)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _merged(merged[key], value)
        merged[key] = value
    return merged


def data_root_config(root: str) -> dict:
    """The keys of `<root>/daydream.yaml` (none when it does not exist): cohorts, budgets, llm
    settings kept beside the data they belong to. It cannot move the data root itself."""
    path = os.path.join(root, DATA_ROOT_CONFIG)
    if not os.path.isfile(path):
        return {}
    try:
        loaded = yaml.safe_load(open(path, encoding="utf-8").read())
    except yaml.YAMLError as error:
        raise ConfigError([f"{path}: not valid YAML ({error}); fix the file"]) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError([f"{path}: must be a mapping of config keys (e.g. `cohorts: [my_cohort]`)"])
    if "data_root" in loaded:
        raise ConfigError([f"{path}: data_root cannot be set in the file that lives in the data root; "
                           f"remove it (set {DATA_ROOT_ENV} or --config data_root=... instead)"])
    return loaded


def resolved_config(config: dict, overrides: dict | None = None, env: dict | None = None) -> dict:
    """The run's config before validation: `config` (config/config.yaml, with `--config` merged
    in by Snakemake), then `<data_root>/daydream.yaml`, then `overrides` (the `--config` values)
    again so the command line wins. The data root is `data_root(overrides, $DAYDREAM_DATA_ROOT,
    config.yaml)`."""
    overrides = dict(overrides or {})
    root = data_root(overrides.get("data_root"), config.get("data_root"), env)
    resolved = _merged(_merged(dict(config), data_root_config(root)), overrides)
    resolved["data_root"] = root
    return resolved


def command_config(explicit_root: str | None = None, env: dict | None = None) -> dict:
    """The config a script outside Snakemake works with: config/config.yaml, the data root
    resolved as the workflow does, and that root's daydream.yaml."""
    base = _checkout_config()
    overrides = {"data_root": explicit_root} if explicit_root else {}
    return resolved_config(base, overrides, env)


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
