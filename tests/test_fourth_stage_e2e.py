"""A fourth stage is its registry entry, its templates and its offline reply, nothing else: a
registry with "revision" between essay and evaluation (tests/fourth_stage.py, named by
DAYDREAM_STAGES) runs a cohort offline through the real Snakefile to the reports."""

from __future__ import annotations

import pandas as pd
import pytest

from daydream.paths import Paths
from tests.conftest import REPO, TINY_COHORT, run_workflow, write_cohort
from tests.fourth_stage import REPLY_MARK

pytestmark = pytest.mark.e2e

REVISION_TEMPLATE = "Revise the essay below: keep its central idea, make each claim precise.\n\n{{ essay }}\n"


@pytest.fixture
def revision_experiment(data_root, cohorts_dir, monkeypatch):
    """The sample experiment plus the revision stage's template table and template, a cohort
    that lists the stage, and the environment that registers it for the Snakemake process."""
    (data_root / "1_raw" / "revision_templates.csv").write_text(
        "template_id,template_name,description,parser,generator,active\n"
        "tighten,Tighten,Makes each claim of the essay precise,identity,llm,True\n", encoding="utf-8")
    (data_root / "1_raw" / "templates" / "revision").mkdir()
    (data_root / "1_raw" / "templates" / "revision" / "tighten.txt").write_text(REVISION_TEMPLATE, encoding="utf-8")
    cohort = {**TINY_COHORT, "revision": {"templates": ["tighten"], "models": ["offline_b"], "replicates": 1}}
    write_cohort(cohorts_dir, "revised", cohort)
    monkeypatch.setenv("DAYDREAM_STAGES", "tests.fourth_stage:STAGES")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    return data_root, cohorts_dir


def test_a_cohort_runs_through_a_registered_fourth_stage_to_the_reports(revision_experiment):
    data_root, cohorts_dir = revision_experiment
    run_workflow(data_root, cohorts_dir, ["revised"])
    paths = Paths(data_root)
    membership = pd.read_csv(paths.membership_csv("revised"), dtype=str, keep_default_na=False)
    # 3 drafts, 6 essays (one llm, one copy each), 6 revisions, 6 x 2 templates x 2 judges
    assert membership["stage"].value_counts().to_dict() == {"draft": 3, "essay": 6, "revision": 6, "evaluation": 24}
    revisions = membership[membership["stage"] == "revision"]
    assert revisions["gen_id"].str.startswith("r_").all()
    for gen_id in revisions["gen_id"]:
        assert paths.parsed_path("revision", gen_id).read_text(encoding="utf-8").startswith(REPLY_MARK)
        assert "Revise the essay below" in paths.prompt_path("revision", gen_id).read_text(encoding="utf-8")
    scores = pd.read_csv(paths.cohort_report("revised", "parsing/aggregated_scores.csv"), dtype=str,
                         keep_default_na=False)
    assert list(scores.columns) == [
        "gen_id", "parent_gen_id", "evaluation_template", "evaluation_llm_model", "score", "error", "combo_id", "concepts",
        "draft_template", "generation_template", "generation_model", "revision_template", "revision_model",
        "cohort_id", "replicate", "paths", "flags"]
    assert len(scores) == 24 and (scores["error"] == "").all()
    assert scores["parent_gen_id"].str.startswith("r_").all()
    assert set(scores["revision_template"]) == {"tighten"} and set(scores["revision_model"]) == {"offline_b"}
    assert set(scores["draft_template"]) == {"idea-sketch"} and (scores["generation_template"] != "").all()
    by_essay = pd.read_csv(paths.cohort_report("revised", "summary/generation_scores_by_essay.csv"), dtype=str,
                           keep_default_na=False)
    assert by_essay["gen_id"].str.startswith("r_").all() and "revision_template" in by_essay.columns
    assert paths.stale_generations_csv.exists()
