"""The per-stage parts of the config and cohort schemas come from the stage registry."""

from __future__ import annotations

import dataclasses

import jsonschema
import pytest
import yaml

from daydream import schemas, settings, stages
from tests import fourth_stage


@pytest.fixture
def four_stages(monkeypatch):
    """The registry of tests/fourth_stage.py in this process (schemas read it when loaded)."""
    monkeypatch.setattr(stages, "STAGES", fourth_stage.STAGES)
    monkeypatch.setattr(stages, "_BY_NAME", {s.name: s for s in fourth_stage.STAGES})
    monkeypatch.setattr(stages, "NAMES", tuple(s.name for s in fourth_stage.STAGES))
    monkeypatch.setattr(stages, "SCORED", fourth_stage.STAGES[-1])
    monkeypatch.setattr(stages, "EVALUATED", fourth_stage.REVISION)
    schemas.load.cache_clear()
    yield
    schemas.load.cache_clear()


def test_the_built_in_schemas_have_one_section_per_registered_stage():
    config, cohort = schemas.load("config"), schemas.load("cohort")
    assert tuple(config["properties"]["llm"]["properties"]["stages"]["properties"]) == stages.NAMES
    assert tuple(config["properties"]["batch"]["properties"]["stages"]["properties"]) == stages.NAMES
    text_stages = tuple(s.name for s in stages.STAGES if s.keeps == stages.TEXT)
    assert tuple(config["properties"]["parsing"]["properties"]["min_lines"]["properties"]) == text_stages
    assert [k for k in cohort["properties"] if k in stages.NAMES] == list(stages.NAMES)
    assert cohort["properties"]["essays"]["items"]["pattern"] == "^e_[0-9a-z]+$"
    assert not any(key.startswith("x-") for key in yaml.safe_dump(cohort).split())


def test_a_registered_stage_gets_its_config_section_with_the_schemas_defaults(four_stages):
    filled = schemas.fill_defaults({"data_root": "d", "cohorts": ["x"]}, schemas.load("config"))
    assert filled["llm"]["stages"]["revision"] == {"temperature": 0.7, "max_tokens": 20480, "timeout_s": 900}
    assert filled["llm"]["stages"]["draft"]["temperature"] == 0.9  # a stage the file spells out keeps its own
    assert filled["parsing"]["min_lines"] == {"draft": 3, "essay": 0, "revision": 0}
    assert "revision" in schemas.load("config")["properties"]["batch"]["properties"]["stages"]["properties"]


def test_a_cohort_from_concepts_must_list_every_stage_and_a_curated_one_the_judged_stages_ids(four_stages):
    validator = jsonschema.Draft202012Validator(schemas.load("cohort"))
    section = {"templates": ["t"], "models": ["m"]}
    full = {"concepts": {"level": "paragraph", "k": 2}, "draft": section, "essay": section,
            "revision": section, "evaluation": section}
    assert not list(validator.iter_errors(full))
    assert list(validator.iter_errors({k: v for k, v in full.items() if k != "revision"}))
    assert not list(validator.iter_errors({"revisions": ["r_abc"], "evaluation": section}))
    assert list(validator.iter_errors({"revisions": ["e_abc"], "evaluation": section}))
    assert list(validator.iter_errors({"essays": ["e_abc"], "evaluation": section}))


def test_a_schema_that_spells_out_a_stage_the_registry_lacks_is_refused(monkeypatch):
    monkeypatch.setattr(stages, "STAGES", stages.STAGES[:1] + stages.STAGES[2:])
    schemas.load.cache_clear()
    try:
        with pytest.raises(schemas.SchemaError, match="spells out essay.*remove the entry or register the stage"):
            schemas.load("config")
    finally:
        schemas.load.cache_clear()


def test_settings_validate_against_the_generated_schema():
    with pytest.raises(settings.ConfigError, match="revision"):
        settings.validated({"data_root": "d", "cohorts": ["x"], "llm": {"stages": {"revision": {}}}})


def test_a_registry_the_package_cannot_work_with_is_refused_with_what_to_fix():
    draft, essay, evaluation = stages.BUILT_IN
    with pytest.raises(stages.RegistryError, match="parent 'essay' must be listed before it"):
        stages.check_registry((draft, evaluation, essay), "test")
    with pytest.raises(stages.RegistryError, match="prefix 'e_' is already taken"):
        stages.check_registry((draft, essay, dataclasses.replace(evaluation, prefix="e_")), "test")
    with pytest.raises(stages.RegistryError, match="one stage must keep a score"):
        stages.check_registry((draft, essay), "test")
    with pytest.raises(stages.RegistryError, match="report column 'draft_template' is given by two stages"):
        stages.check_registry((draft, dataclasses.replace(essay, lineage_columns=draft.lineage_columns), evaluation),
                              "test")
    assert stages.check_registry(fourth_stage.STAGES, "test") == fourth_stage.STAGES
