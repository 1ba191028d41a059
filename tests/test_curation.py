"""Curation: rank essays into an editable candidate CSV, then a curated cohort of the selected
ones that reuses their evaluations (daydream/curation.py, scripts/select_essays.py,
scripts/curated_cohort.py)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import yaml

from daydream import cohorts, curation
from daydream.columns import AGGREGATED_COLUMNS
from daydream.paths import Paths
from tests.conftest import REPO, run_workflow

#             essay  judge  replicate scores           (per judge: max over replicates)
SCORES = [("e_a", "j1", 6.0), ("e_a", "j1", 8.0), ("e_a", "j2", 7.0),   # j1 8, j2 7 -> avg 7.5, max 8
          ("e_b", "j1", 9.0), ("e_b", "j2", 3.0),                       # avg 6.0, max 9
          ("e_c", "j1", 7.0), ("e_c", "j2", 7.0),                       # avg 7.0, max 7
          ("e_d", "j2", 5.0)]                                           # avg 5.0, max 5, 1 judge


def scores_table(tmp_path, extra=()):
    path = tmp_path / "aggregated_scores.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=AGGREGATED_COLUMNS)
        writer.writeheader()
        for i, (essay, judge, score) in enumerate([*SCORES, *extra]):
            writer.writerow({"gen_id": f"v_{i}", "parent_gen_id": essay, "evaluation_template": "judge-t",
                             "evaluation_llm_model": judge, "score": score, "error": ""})
        writer.writerow({"gen_id": "v_other", "parent_gen_id": "e_a", "evaluation_template": "other-t",
                         "evaluation_llm_model": "j1", "score": 1.0, "error": ""})
        writer.writerow({"gen_id": "v_failed", "parent_gen_id": "e_d", "evaluation_template": "judge-t",
                         "evaluation_llm_model": "j1", "score": "", "error": "parse failed"})
    return path


def test_max_per_model_then_averaged_ranks_the_essays(tmp_path):
    rows = curation.rank_essays(scores_table(tmp_path), "judge-t", ["j1", "j2"], curation.Selection(top_n=2))
    assert list(rows[0]) == [*curation.CANDIDATE_COLUMNS, "score__j1", "score__j2"]
    assert [(r["essay_gen_id"], r["avg_score"], r["max_score"], r["models_covered"]) for r in rows] == [
        ("e_a", 7.5, 8.0, 2), ("e_c", 7.0, 7.0, 2), ("e_b", 6.0, 9.0, 2), ("e_d", 5.0, 5.0, 1)]
    assert [r["selected"] for r in rows] == [True, True, False, False] and rows[3]["score__j1"] == ""
    assert [r["selection_rank"] for r in rows] == [1, 2, 3, 4]


def test_a_score_span_and_max_only_select_as_documented(tmp_path):
    table = scores_table(tmp_path)
    span = curation.rank_essays(table, "judge-t", None, curation.Selection(span=(6.0, 7.0)))
    assert {r["essay_gen_id"] for r in span if r["selected"]} == {"e_b", "e_c"}
    top = curation.rank_essays(table, "judge-t", None, curation.Selection(max_only=True))
    assert top[0]["essay_gen_id"] == "e_b" and [r["essay_gen_id"] for r in top if r["selected"]] == ["e_b"]
    one_judge = curation.rank_essays(table, "judge-t", ["j2"], curation.Selection(top_n=1))
    assert [(r["essay_gen_id"], r["models_covered"]) for r in one_judge][:2] == [("e_a", 1), ("e_c", 1)]


def test_edited_selection_becomes_a_cohort_file_in_rank_order(tmp_path):
    rows = curation.rank_essays(scores_table(tmp_path), "judge-t", ["j1", "j2"], curation.Selection(top_n=1))
    path = curation.write_candidates(rows, tmp_path / "cand.csv")
    text = path.read_text().replace("4,false,e_d", "4,TRUE,e_d")  # a hand edit
    path.write_text(text)
    cohort = curation.curated_cohort(path, "judge-t")
    assert cohort == {"essays": ["e_a", "e_d"], "evaluation": {"templates": ["judge-t"], "models": ["j1", "j2"],
                                                              "replicates": 1}}
    path.write_text(text.replace("4,TRUE,e_d", "4,maybe,e_d"))
    with pytest.raises(curation.CurationError, match="line 5: selected is 'maybe'; write true or false"):
        curation.curated_cohort(path, "judge-t")


def test_the_two_commands_curate_a_run_cohort_and_its_evaluations_are_reused(data_root, cohorts_dir, tmp_path):
    run_workflow(data_root, cohorts_dir, ["tiny"])
    paths = Paths(data_root, cohorts_dir)
    env_root = ["--data-root", str(data_root)]
    out = tmp_path / "cand.csv"
    select = subprocess.run([sys.executable, str(REPO / "scripts" / "select_essays.py"), "--template", "novelty-judge",
                             "--models", "offline_a", "offline_b", "--top", "2", "--cohort-id", "tiny",
                             "--out", str(out), *env_root], capture_output=True, text=True, timeout=120)
    assert select.returncode == 0, select.stderr
    assert "2 of 6 essays selected" in select.stdout
    (tmp_path / "daydream.yaml").write_text(yaml.safe_dump({"cohorts_dir": str(cohorts_dir)}))
    made = subprocess.run([sys.executable, str(REPO / "scripts" / "curated_cohort.py"), str(out),
                           "--template", "novelty-judge", "--cohort-id", "best"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "DAYDREAM_DATA_ROOT": str(tmp_path)})  # its daydream.yaml
    assert made.returncode == 0, made.stderr
    spec = yaml.safe_load(paths.cohort_file("best").read_text())
    assert len(spec["essays"]) == 2 and spec["evaluation"]["models"] == ["offline_a", "offline_b"]
    rows = cohorts.build_cohort(paths, "best", paths.cohort_file("best"))
    evaluations = [r["gen_id"] for r in rows if r["stage"] == "evaluation"]
    assert len(evaluations) == 4 and all(paths.parsed_path("evaluation", g).exists() for g in evaluations)
