"""The config and cohort JSON Schemas, with their per-stage parts generated from the stage registry.

`config/schema/<name>.schema.yaml` holds everything but the list of stages. Where a schema
has one property per stage, its object carries `x-per-stage`: the schema of one stage's
entry (its `description` may say `{stage}`), and `x-stages: text` when only the stages that
keep text get one. `load` gives such an object one property per registered stage: the entry
the file spells out for that stage (for its own defaults), else `x-per-stage`. An entry the
file spells out for a stage the registry does not have is a SchemaError, so the file and
`daydream/stages.py` cannot drift apart.

The cohort schema's top level carries `x-cohort-stages`: `load` makes its stage sections, the
curated key (`essays`: ids of the judged stage, `^e_...$`), `required` (the scored stage) and
the two shapes of a cohort (every stage from concepts, or the curated key) from the registry.

`fill_defaults` checks a document against a loaded schema and fills in its defaults, as
`snakemake.utils.validate(..., set_default=True)` does for a schema file.
"""

from __future__ import annotations

import copy
import functools

import jsonschema
import yaml
from jsonschema import validators

from daydream import stages
from daydream.paths import schema_path

PER_STAGE, ONLY, COHORT = "x-per-stage", "x-stages", "x-cohort-stages"


class SchemaError(ValueError):
    """A schema file that does not agree with the stage registry."""


@functools.cache
def load(name: str) -> dict:
    """`config/schema/<name>.schema.yaml` with its per-stage parts generated (do not mutate)."""
    path = schema_path(name)
    schema = yaml.safe_load(path.read_text(encoding="utf-8"))
    if COHORT in schema:
        _cohort_shape(schema)
    _expand(schema, str(path), "")
    return schema


def _selected(only: str | None) -> list[stages.Stage]:
    return [s for s in stages.STAGES if only is None or s.keeps == only]


def _expand(node: object, where: str, key: str) -> None:
    if isinstance(node, list):
        for item in node:
            _expand(item, where, key)
        return
    if not isinstance(node, dict):
        return
    if PER_STAGE in node:
        template, chosen = node.pop(PER_STAGE), _selected(node.pop(ONLY, None))
        given = node.get("properties", {})
        names = [s.config_section for s in chosen]
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise SchemaError(f"{where}: {key or '(top level)'} spells out {', '.join(unknown)}, which "
                              f"daydream/stages.py does not register here (it has {', '.join(names)}); remove "
                              "the entry or register the stage")
        node["properties"] = {name: given.get(name) or _for_stage(template, name) for name in names}
    for child_key, child in node.items():
        _expand(child, where, f"{key}/{child_key}" if key else str(child_key))


def _for_stage(template: dict, name: str) -> dict:
    entry = copy.deepcopy(template)
    if isinstance(entry.get("description"), str):
        entry["description"] = entry["description"].replace("{stage}", name)
    return entry


def _cohort_shape(schema: dict) -> None:
    """Stage sections, the curated key and the two shapes of a cohort, from the registry."""
    shape = schema.pop(COHORT)
    judged, sections = stages.EVALUATED, [s.config_section for s in stages.STAGES]
    made = [s.config_section for s in stages.STAGES if not s.scored]  # what a cohort from concepts lists
    properties = schema.setdefault("properties", {})
    for name in sections:
        properties[name] = copy.deepcopy(shape["stage"])
    curated = copy.deepcopy(shape["curated"])
    curated["description"] = curated["description"].replace("{stage}", judged.name)
    curated["items"] = {"type": "string", "pattern": judged.id_pattern}
    properties[judged.curated_key] = curated
    schema["required"] = [stages.SCORED.config_section]
    schema["oneOf"] = [
        {"required": [shape["root_input"], *made], "not": {"required": [judged.curated_key]}},
        {"required": [judged.curated_key],
         "not": {"anyOf": [{"required": [key]} for key in (shape["root_input"], *made)]}},
    ]


def _with_defaults(validator_class):
    """A validator class that fills in each property's `default` before checking it."""
    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, declared, instance, schema):
        if isinstance(instance, dict):
            for key, sub in declared.items():
                if "default" in sub:
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from check_properties(validator, declared, instance, schema)

    return validators.extend(validator_class, {"properties": properties})


def fill_defaults(document: dict, schema: dict) -> dict:
    """`document` (changed in place) with every default of `schema` filled in; raises
    jsonschema.ValidationError when it does not fit."""
    _with_defaults(jsonschema.Draft202012Validator)(schema).validate(document)
    return document
