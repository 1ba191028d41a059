"""A user error is printed once, as its message, without Snakemake's frames and wrappers."""

from __future__ import annotations

import subprocess

from daydream import budget, cohort_design, errors, writer_lock  # noqa: F401  (their error classes)
from daydream.cohorts import CohortError
from daydream.settings import ConfigError
from tests.conftest import REPO, SNAKEMAKE, write_cohort

RUN_BLOCK = ('RuleException:\nCohortError in file "/w/rules/cohort.smk", line 30:\n'
             "- c.yaml: concepts: unknown concept 'x'; use an active concept_id\n"
             '  File "/w/rules/cohort.smk", line 30, in __rule_cohort_membership\n'
             '  File "/w/daydream/cohorts.py", line 441, in write_cohort')
INPUT_FUNCTION = ('InputFunctionException in rule all in file "/w/Snakefile", line 60:\nError:\n'
                  "  ExperimentError: llm_models.csv line 3: unknown route\nWildcards:\n\nTraceback:\n"
                  '  File "/w/rules/common.smk", line 44, in final_targets')
BUG = ('RuleException:\nKeyError in file "/w/rules/gens.smk", line 12:\n\'x\'\n'
       '  File "/w/daydream/documents.py", line 80, in _write_document')


def test_every_input_error_class_is_a_user_error():
    assert issubclass(CohortError, errors.UserError) and issubclass(ConfigError, errors.UserError)
    assert {"CohortError", "ConfigError", "DesignError", "BudgetRefused", "DataRootBusy"} <= errors.user_error_names()


def test_snakemakes_report_of_a_user_error_becomes_its_message():
    assert errors.short_user_error(RUN_BLOCK) == "CohortError:\n- c.yaml: concepts: unknown concept 'x'; use an active concept_id"
    assert errors.short_user_error(INPUT_FUNCTION) == "ExperimentError: llm_models.csv line 3: unknown route"


def test_a_bug_keeps_its_frames():
    assert errors.short_user_error(BUG) is None
    assert errors.short_user_error("WorkflowError:\nAt least one job did not complete successfully.") is None


def run(tmp_path, *config):
    return subprocess.run([*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--cores", "1", "--config",
                           f"data_root={tmp_path / 'data'}", f"cohorts_dir={tmp_path / 'cohorts'}", *config],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_a_run_failing_on_a_bad_cohort_prints_the_message_once_without_frames(data_root, cohorts_dir, tmp_path):
    write_cohort(cohorts_dir, "bad", {"concepts": {"level": "paragraph", "k": 2, "ids": ["exaptation", "no-such-concept"]},
                                      "draft": {"templates": ["idea-sketch"], "models": ["offline_a"]},
                                      "essay": {"templates": ["essay-from-draft"], "models": ["draft"]},
                                      "evaluation": {"templates": ["novelty-judge"], "models": ["offline_a"]}})
    done = run(tmp_path, "cohorts=bad", "offline=true")
    assert done.returncode != 0
    assert done.stderr.count("unknown concept 'no-such-concept'") == 1, done.stderr
    assert "CohortError:\n- " in done.stderr
    for noise in ("RuleException", '  File "', "in file "):
        assert noise not in done.stderr, done.stderr
    assert "run ended with failures before any document was made" in done.stderr


def test_a_bad_config_value_prints_the_message_once_without_frames(data_root, cohorts_dir, tmp_path):
    done = run(tmp_path, "cohorts=tiny", "llm={max_concurrency: x}")
    assert done.returncode != 0
    assert done.stderr.count("config llm/max_concurrency: 'x' is not of type 'integer'") == 1, done.stderr
    assert '  File "' not in done.stderr and "in file " not in done.stderr
