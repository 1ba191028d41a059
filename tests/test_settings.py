"""Settings come from the config schema's defaults plus the config; nothing else holds a default."""

import pytest
import yaml
from snakemake.exceptions import WorkflowError

from daydream import settings, stages
from daydream.paths import CONFIG_DIR, schema_path


def test_an_empty_config_gets_every_default_from_the_schema():
    filled = settings.validated({"data_root": "data", "cohorts": ["pilot"]})
    llm = settings.LLMSettings.from_config(filled)
    assert llm.max_concurrency == 16 and llm.default_route == "openrouter" and llm.offline is False
    assert set(llm.stages) == set(stages.NAMES)
    assert llm.stage("draft").temperature == 0.9 and llm.stage("essay").max_tokens == 20480
    assert {llm.stage(name).max_tokens for name in stages.NAMES} == {20480}  # the original's, for reasoning models
    assert filled["parsing"] == {"min_lines": {"draft": 3, "essay": 0}}


def test_a_partial_stage_keeps_the_other_defaults_of_that_stage():
    filled = settings.validated({"data_root": "d", "cohorts": "x", "llm": {"stages": {"essay": {"temperature": 0.1}}}})
    essay = settings.LLMSettings.from_config(filled).stage("essay")
    assert (essay.temperature, essay.max_tokens, essay.timeout_s) == (0.1, 20480, 900)


def test_the_schema_gives_every_stage_of_the_registry_its_settings():
    schema = yaml.safe_load(schema_path("config").read_text())
    assert set(schema["properties"]["llm"]["properties"]["stages"]["properties"]) == set(stages.NAMES)


def test_the_shipped_config_is_valid_and_sets_no_llm_value():
    shipped = yaml.safe_load((CONFIG_DIR / "config.yaml").read_text())
    assert "llm" not in shipped, "llm defaults live in the schema; config.yaml shows them as comments"
    settings.validated(shipped)


def test_an_unknown_key_is_refused():
    with pytest.raises(WorkflowError, match="max_concurency"):
        settings.validated({"data_root": "d", "cohorts": ["x"], "llm": {"max_concurency": 3}})


def test_cohorts_and_offline_accept_their_command_line_spellings():
    assert settings.cohort_list("pilot") == ["pilot"] and settings.cohort_list([" a ", "", "b"]) == ["a", "b"]
    assert settings.as_bool("true") is True and settings.as_bool("0") is False
    with pytest.raises(ValueError, match="use true or false"):
        settings.as_bool("maybe")
