import math

import jsonschema
import pytest
import yaml

from daydream import json_check, store
from daydream.paths import schema_path

SHA = "ab" * 32


def a_metadata_record():
    return {
        "stage": "essay", "gen_id": "e_1x2", "task_id": "d_1__essay-from-draft__offline_a",
        "template_id": "essay-from-draft", "model_id": "offline_a", "model": "offline/offline-a",
        "parent_gen_id": "d_1", "combo_id": "combo_1", "replicate": 1, "cohort_id": "pilot", "mode": "llm",
        "parser": "identity", "finish_reason": "stop", "truncated": False,
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cached_tokens": 0},
        "cost_usd": 0.0, "duration_s": 0.01, "attempts": 1, "temperature": 0.7, "max_tokens": 800,
        "prompt_sha256": SHA, "prompt_sources": {"parent": SHA, "template": SHA},
        "created_at": "2026-01-01T00:00:00+00:00", "parsed_sha256": SHA,
    }


ODD_VALUES = [None, "", "x", "Z" * 64, SHA, -1, 0, 1, 1.0, 2.5, -0.5, math.nan, True, False, [], ["x"], {},
              {"prompt_tokens": 1}, {"a": SHA}, {"a": "no"}]


def variants_of(record):
    """The record with each key removed, each value replaced by each odd value, and an extra
    key, and the same one level down (usage, prompt_sources)."""
    yield record
    yield {**record, "unknown_key": 1}
    for key in record:
        yield {k: v for k, v in record.items() if k != key}
        for odd in ODD_VALUES:
            yield {**record, key: odd}
    for nested in ("usage", "prompt_sources"):
        for key in record[nested]:
            yield {**record, nested: {k: v for k, v in record[nested].items() if k != key}}
            for odd in ODD_VALUES:
                yield {**record, nested: {**record[nested], key: odd}}


@pytest.fixture(scope="module")
def metadata_schema():
    return yaml.safe_load(schema_path("metadata").read_text(encoding="utf-8"))


def test_the_metadata_schema_is_inside_the_quick_subset(metadata_schema):
    assert json_check.compile_check(metadata_schema) is not None


def test_the_quick_check_never_accepts_a_record_jsonschema_refuses_and_accepts_the_usual_ones(metadata_schema):
    quick = json_check.compile_check(metadata_schema)
    validator = jsonschema.Draft202012Validator(metadata_schema)
    refused = accepted = 0
    for record in variants_of(a_metadata_record()):
        valid = validator.is_valid(record)
        if quick(record):
            assert valid, record
            accepted += 1
        elif not valid:
            refused += 1
    assert quick(a_metadata_record())
    assert accepted > 50 and refused > 50  # both verdicts are exercised


def test_where_the_quick_check_is_unsure_jsonschema_decides(metadata_schema):
    quick = json_check.compile_check(metadata_schema)
    integral_float = {**a_metadata_record(), "replicate": 1.0}  # an integer to jsonschema
    assert not quick(integral_float)
    assert store.metadata_problems(integral_float) == []


def test_a_schema_outside_the_subset_compiles_to_none():
    assert json_check.compile_check({"type": "integer", "maximum": 3}) is None
    assert json_check.compile_check({"oneOf": [{"type": "integer"}, {"type": "number"}]}) is None
    assert json_check.compile_check({"properties": {"a": {"$ref": "#/$defs/x", "minimum": 1}},
                                     "$defs": {"x": {"type": "integer"}}}) is None
    assert json_check.compile_check({"type": "object", "properties": {"a": {"type": "string"}}}) is not None


def test_a_record_that_does_not_fit_names_each_problem():
    record = {**a_metadata_record(), "replicate": 0}
    del record["mode"]
    problems = store.metadata_problems(record)
    assert any("replicate" in p and "minimum" in p for p in problems), problems
    assert any("'mode' is a required property" in p for p in problems), problems
