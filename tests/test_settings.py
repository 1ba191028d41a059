"""Settings come from the config schema's defaults plus the config; nothing else holds a default."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from daydream import settings, stages
from daydream.paths import CONFIG_DIR, Paths, schema_path
from tests.conftest import REPO, SNAKEMAKE


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
    with pytest.raises(settings.ConfigError, match="max_concurency"):
        settings.validated({"data_root": "d", "cohorts": ["x"], "llm": {"max_concurency": 3}})


def test_cohorts_and_offline_accept_their_command_line_spellings():
    assert settings.cohort_list("pilot") == ["pilot"] and settings.cohort_list([" a ", "", "b"]) == ["a", "b"]
    assert settings.as_bool("true") is True and settings.as_bool("0") is False
    with pytest.raises(ValueError, match="use true or false"):
        settings.as_bool("maybe")


def test_nested_keys_from_the_command_line_are_read_as_the_schemas_types():
    # `--config 'llm={max_concurrency: 4, stages: {essay: {temperature: 0.1}}}'` arrives as text leaves
    from_cli = {"data_root": "d", "cohorts": "pilot", "offline": "true", "reply_batch_size": "5",
                "llm": {"max_concurrency": "4", "backoff_initial_s": "0.5",
                        "stages": {"essay": {"temperature": "0.1", "max_tokens": "100"}}}}
    filled = settings.validated(from_cli)
    llm = settings.LLMSettings.from_config(filled)
    assert (llm.max_concurrency, llm.backoff_initial_s, llm.offline) == (4, 0.5, True)
    assert (llm.stage("essay").temperature, llm.stage("essay").max_tokens) == (0.1, 100)
    assert filled["reply_batch_size"] == 5 and filled["cohorts"] == ["pilot"]
    assert settings.validated({"data_root": "d", "cohorts": ["x"], "llm": "{max_attempts: 2}"})["llm"]["max_attempts"] == 2


def test_a_cohort_given_as_a_plain_string_gets_the_id_check_of_a_list():
    for bad in ("../elsewhere/pilot", "a,b", "pilot.yaml x"):
        with pytest.raises(settings.ConfigError) as error:
            settings.validated({"data_root": "d", "cohorts": bad})
        assert f"config cohorts/0: {bad!r} does not match" in str(error.value)
        assert "list several as --config 'cohorts=[\"a\",\"b\"]'" in str(error.value)


def test_every_config_problem_is_named_with_its_key_and_the_fix():
    with pytest.raises(settings.ConfigError) as error:
        settings.validated({"data_root": "d", "cohorts": ["x"], "offline": "maybe",
                            "llm": {"max_concurrency": "4x", "max_concurency": 3, "stages": {"essay": "hot"}}})
    problems = error.value.problems
    assert len(problems) == 4
    assert any(p.startswith("config llm: Additional properties are not allowed ('max_concurency' was unexpected); "
                            "known keys here: default_route, max_concurrency,") for p in problems)
    assert any(p.startswith("config llm/max_concurrency: '4x' is not of type 'integer'") for p in problems)
    assert any(p.startswith("config llm/stages/essay: 'hot' is not of type 'object'; give llm/stages/essay as a "
                            "YAML mapping") for p in problems)
    assert any(p.startswith("config offline: 'maybe' is not") for p in problems)
    with pytest.raises(settings.ConfigError, match="put a space after each colon"):
        settings.validated({"data_root": "d", "cohorts": ["x"], "llm": {"max_concurrency:4": None}})


@pytest.mark.e2e
def test_config_overrides_on_the_command_line_reach_the_run_and_bad_ones_stop_it_before_any_job(data_root,
                                                                                              cohorts_dir):
    from tests.conftest import REPO, SNAKEMAKE, count_lines

    paths = Paths(data_root, cohorts_dir)
    command = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--cores", "2", "--config", f"data_root={data_root}",
               f"cohorts_dir={cohorts_dir}", "offline=true"]
    nested = "llm={max_concurrency: 2, stages: {draft: {temperature: 0.25, max_tokens: 999}}}"
    done = subprocess.run([*command, "cohorts=tiny", nested], cwd=data_root.parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    drafts = list(paths.stage_dir("draft").glob("*/metadata.json"))
    assert drafts and all((json.loads(p.read_text())["temperature"], json.loads(p.read_text())["max_tokens"])
                          == (0.25, 999) for p in drafts)
    calls = count_lines(paths.llm_calls_jsonl)

    bad = subprocess.run([*command, "cohorts=../tiny", "llm={max_concurrency: lots}"], cwd=data_root.parent,
                         capture_output=True, text=True)
    assert bad.returncode != 0
    assert "config cohorts/0: '../tiny' does not match" in bad.stderr
    assert "config llm/max_concurrency: 'lots' is not of type 'integer'" in bad.stderr
    assert count_lines(paths.llm_calls_jsonl) == calls and "Building DAG" not in bad.stderr


# One data root without repeating it (README "Running it") ----------------------------------

def test_the_data_root_is_the_explicit_one_then_the_environment_then_config_yaml():
    env = {settings.DATA_ROOT_ENV: "/exp/a"}
    assert settings.data_root("/cli", "data", env) == "/cli"
    assert settings.data_root(None, "data", env) == "/exp/a"
    assert settings.data_root(None, "elsewhere", {}) == "elsewhere"
    assert settings.data_root(None, None, {}) == yaml.safe_load((CONFIG_DIR / "config.yaml").read_text())["data_root"]
    assert settings.data_root(None, "data", {settings.DATA_ROOT_ENV: "  "}) == "data"


def test_a_config_file_beside_the_data_sits_between_config_yaml_and_the_command_line(tmp_path):
    root = tmp_path / "exp"
    root.mkdir()
    (root / settings.DATA_ROOT_CONFIG).write_text("cohorts: [mine]\nllm: {max_attempts: 2}\n", encoding="utf-8")
    base = {"data_root": "data", "cohorts": ["pilot"], "llm": {"max_concurrency": 4}}
    resolved = settings.resolved_config(base, {}, {settings.DATA_ROOT_ENV: str(root)})
    assert resolved["data_root"] == str(root) and resolved["cohorts"] == ["mine"]
    assert resolved["llm"] == {"max_concurrency": 4, "max_attempts": 2}
    overridden = settings.resolved_config({**base, "cohorts": "theirs"}, {"cohorts": "theirs"},
                                          {settings.DATA_ROOT_ENV: str(root)})
    assert overridden["cohorts"] == "theirs"  # --config wins over the file beside the data
    assert settings.validated(resolved)["cohorts"] == ["mine"]


def test_a_config_file_beside_the_data_cannot_move_the_data_root(tmp_path):
    (tmp_path / settings.DATA_ROOT_CONFIG).write_text("data_root: /elsewhere\n", encoding="utf-8")
    with pytest.raises(settings.ConfigError, match="data_root cannot be set"):
        settings.resolved_config({"data_root": str(tmp_path)}, {}, {})


def test_scripts_find_the_data_root_in_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(settings.DATA_ROOT_ENV, str(tmp_path))
    assert settings.command_config()["data_root"] == str(tmp_path)
    assert settings.command_config("/given")["data_root"] == "/given"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "data_root_lock.py"), "status"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0 and str(tmp_path) in done.stdout, done.stderr


def test_cross_experiment_tables_need_no_cohort_and_take_the_data_root_from_the_environment(data_root, tmp_path):
    """The default cohort `pilot` is never built nor checked against another data root's 1_raw."""
    (data_root / "1_raw" / "concepts" / "concepts_metadata.csv").write_text("concept_id,name,active\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != settings.DATA_ROOT_ENV}
    done = subprocess.run([*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--cores", "1", "-n", "cross_experiment_tables"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**env, settings.DATA_ROOT_ENV: str(data_root)})
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "cohort_membership" not in output and "cross_experiment_tables" in output
