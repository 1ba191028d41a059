"""The workflow configuration as typed settings, built from a validated config.

`validated(config)` checks a config dict against `config/schema/config.schema.yaml` and fills
in its defaults (that schema is the one place defaults live); `LLMSettings.from_config` then
reads the filled-in dict, with no defaults of its own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from daydream import stages
from daydream.paths import schema_path


def validated(config: dict) -> dict:
    """A copy of `config`, checked against the config schema, with every default filled in."""
    from snakemake.utils import validate  # the same check Snakemake documents for workflows

    filled = copy.deepcopy(dict(config))
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
