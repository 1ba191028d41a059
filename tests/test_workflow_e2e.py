"""The real Snakefile, end to end, through Snakemake's CLI in a temp folder (offline model)."""

import re
import shutil

import pandas as pd
import pytest

from daydream.paths import Paths
from tests.conftest import (
    PER_JOB_OUTPUT,
    REPO,
    TINY_COHORT,
    checkpoint,
    count_lines,
    planned_by_stage,
    run_workflow,
    write_cohort,
)

pytestmark = pytest.mark.e2e


def jobs_planned(dry_run_output: str) -> dict[str, int]:
    """The `Job stats` table of a dry run as {rule: count}."""
    lines = dry_run_output.splitlines()
    if not any(line.startswith("Job stats:") for line in lines):
        return {}
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats:")) + 3
    table = {}
    for line in lines[start:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        table[parts[0]] = int(parts[1])
    return table


def test_a_run_fills_the_gens_store_and_the_reports(finished_run):
    data_root, _, _ = finished_run
    paths = Paths(data_root)
    membership = pd.read_csv(paths.membership_csv("tiny"), dtype=str, keep_default_na=False)
    for row in membership.itertuples():
        for name in ("prompt.txt", "raw.txt", "parsed.txt", "metadata.json"):
            assert (paths.gen_dir(row.stage, row.gen_id) / name).stat().st_size > 0
    scores = pd.read_csv(paths.cohort_report("tiny", "parsing/aggregated_scores.csv"))
    evaluations = membership[membership.stage == "evaluation"]
    assert len(scores) == len(evaluations) == 24
    assert scores["score"].notna().all() and scores["score"].between(0, 10).all()
    per_pair = scores.groupby(["parent_gen_id", "evaluation_template", "evaluation_llm_model"]).size()
    assert len(per_pair) == 24
    # copy essays make no model call: 3 drafts + 3 llm essays + 24 evaluations
    assert count_lines(paths.llm_calls_jsonl) == 30
    for row in membership.itertuples():  # each document's log says what its job did (jobs run in threads)
        text = paths.log_path("gen_document", row.stage, row.gen_id).read_text()
        # (the run was made once per session in another folder, then copied for this test)
        assert re.search(rf"; saved \S*/data/gens/{row.stage}/{row.gen_id}$", text, re.M), text
        assert (f"call gen_id={row.gen_id} " in text) == (row.template_id != "copy-draft"), text


def test_a_second_run_has_nothing_to_do_and_makes_no_call(finished_run):
    data_root, cohorts_dir, _ = finished_run
    dry = run_workflow(data_root, cohorts_dir, ["tiny"], "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    assert "daydream: nothing to do" not in dry.stderr  # a dry run says only Snakemake's line
    calls = count_lines(Paths(data_root).llm_calls_jsonl)
    again = run_workflow(data_root, cohorts_dir, ["tiny"])
    assert count_lines(Paths(data_root).llm_calls_jsonl) == calls
    assert "daydream: nothing to do: every document and report of tiny is up to date" in again.stderr
    assert f"tiny: reports in {Paths(data_root).reports_dir('tiny')}" in again.stderr
    assert f"stale report: {Paths(data_root).stale_generations_csv} (0 stale document(s))" in again.stderr


def test_deleting_one_parsed_evaluation_remakes_only_that_document_without_a_call(finished_run):
    data_root, cohorts_dir, _ = finished_run
    paths = Paths(data_root)
    calls = count_lines(paths.llm_calls_jsonl)
    membership = pd.read_csv(paths.membership_csv("tiny"), dtype=str)
    victim = membership[membership.stage == "evaluation"].gen_id.iloc[5]
    paths.parsed_path("evaluation", victim).unlink()
    dry = run_workflow(data_root, cohorts_dir, ["tiny"], "-n", *PER_JOB_OUTPUT)
    planned = jobs_planned(dry.stdout + dry.stderr)
    gens_jobs = {rule: n for rule, n in planned.items() if not rule.startswith(("cohort_report", "cohort_site"))}
    # its shard only, and the default target's stand-in for its missing file (daydream.targets.document_targets)
    assert gens_jobs == {"gen_document": 1, "documents_due": 1, "stale_shard": 1, "stale_generations": 1, "all": 1}
    assert planned_by_stage(dry.stdout + dry.stderr) == {("gen_document", "evaluation"): 1}
    assert planned["cohort_reports"] == 1 and planned["cohort_site"] == 1
    assert victim in dry.stdout + dry.stderr
    raw = paths.raw_path("evaluation", victim).read_text()
    run_workflow(data_root, cohorts_dir, ["tiny"])
    assert paths.parsed_path("evaluation", victim).exists()
    assert paths.raw_path("evaluation", victim).read_text() == raw
    assert count_lines(paths.llm_calls_jsonl) == calls, "the saved reply is parsed again, never re-paid"


def test_a_reply_that_fails_to_parse_stays_readable_gets_its_error_in_the_reports_and_the_rerun_pays_nothing(
        data_root, cohorts_dir):
    templates = data_root / "1_raw" / "evaluation_templates.csv"
    lines = templates.read_text().splitlines()
    lines = [line.replace(",0,9", ",0,4") if line.startswith("novelty-judge") else line for line in lines]
    assert "in_last_line,llm,True,0,4" in "\n".join(lines)
    templates.write_text("\n".join(lines) + "\n")  # offline judges score 1..9: some now out of range
    done = run_workflow(data_root, cohorts_dir, ["tiny"], check=False)
    assert done.returncode != 0
    paths = Paths(data_root)
    novelty = pd.read_csv(paths.membership_csv("tiny")).query("template_id == 'novelty-judge'").gen_id
    unparsed = [g for g in novelty if not paths.parsed_path("evaluation", g).exists()]
    assert unparsed, "offline judges score 1..9: some are outside 0..4"
    for gen_id in unparsed:
        assert paths.raw_path("evaluation", gen_id).read_text().splitlines()[-1].startswith("SCORE: ")
        assert paths.metadata_path("evaluation", gen_id).exists() and paths.prompt_path("evaluation", gen_id).exists()
    # the failed evaluations still get reports, with the error filled
    scores = pd.read_csv(paths.cohort_report("tiny", "parsing/aggregated_scores.csv"), keep_default_na=False)
    failed = scores[scores.error != ""]
    assert len(scores) == 24 and 0 < len(failed) < 24
    assert set(failed.evaluation_template) == {"novelty-judge"}
    assert sorted(failed.gen_id) == sorted(unparsed)
    assert (pd.to_numeric(scores[scores.error == ""].score) <= 10).all()
    calls = count_lines(paths.llm_calls_jsonl)
    run_workflow(data_root, cohorts_dir, ["tiny"], check=False)
    assert count_lines(paths.llm_calls_jsonl) == calls


def test_editing_the_cohort_file_makes_only_the_new_documents(finished_run):
    data_root, cohorts_dir, _ = finished_run
    paths = Paths(data_root)
    calls = count_lines(paths.llm_calls_jsonl)
    spec = {**TINY_COHORT, "evaluation": {**TINY_COHORT["evaluation"], "replicates": 2}}
    write_cohort(cohorts_dir, "tiny", spec)
    run_workflow(data_root, cohorts_dir, ["tiny"])
    assert count_lines(paths.llm_calls_jsonl) == calls + 24  # one new replicate per evaluation
    scores = pd.read_csv(paths.cohort_report("tiny", "parsing/aggregated_scores.csv"))
    assert len(scores) == 48


def test_dry_run_lists_every_model_call_before_anything_runs(data_root, cohorts_dir):
    checkpoint(data_root, cohorts_dir, "tiny")
    dry = run_workflow(data_root, cohorts_dir, ["tiny"], "-n", *PER_JOB_OUTPUT)
    planned = planned_by_stage(dry.stdout + dry.stderr)
    assert planned[("gen_document", "draft")] == 3 and planned[("gen_document", "essay")] == 6
    assert planned[("gen_document", "evaluation")] == 24
    assert not (data_root / "gens").exists()


def test_an_experiment_in_the_original_layout_runs_unchanged(tmp_path, cohorts_dir):
    data_root = tmp_path / "legacy"
    shutil.copytree(REPO / "tests" / "fixtures" / "legacy_1_raw", data_root / "1_raw")
    write_cohort(cohorts_dir, "legacy", {
        "concepts": {"level": "paragraph", "k": 2, "ids": "all"},
        "draft": {"templates": ["creative-synthesis-v10"], "models": ["deepseek_r1_f"]},
        "essay": {"templates": ["creative-synthesis-v10", "parsed-from-links-v1"], "models": ["draft"]},
        "evaluation": {"templates": ["daydreaming-verification-v2", "gemini-prior-art-eval"],
                       "models": ["gemini_25_pro", "sonnet-4"]},
    })
    run_workflow(data_root, cohorts_dir, ["legacy"])
    paths = Paths(data_root)
    scores = pd.read_csv(paths.cohort_report("legacy", "parsing/aggregated_scores.csv"))
    assert len(scores) == 3 * 2 * 4 and scores["score"].notna().all()  # 3 active concepts -> 3 pairs
    draft = pd.read_csv(paths.membership_csv("legacy")).query("stage == 'draft'").gen_id.iloc[0]
    metadata = paths.metadata_path("draft", draft).read_text()
    assert '"model": "offline/deepseek/deepseek-r1:free"' in metadata
