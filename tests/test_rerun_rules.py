"""SPEC §8: nothing paid for is re-requested, overwritten or lost; stale work is reported and
regenerated only on purpose; a killed run resumes without paying twice."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pandas as pd
import pytest

from daydream.paths import GEN_FILES, Paths
from daydream.prompts import sha256_text
from tests.conftest import (
    PER_JOB_OUTPUT,
    REPO,
    SNAKEMAKE,
    TINY_COHORT,
    count_lines,
    planned_by_stage,
    run_workflow,
    write_cohort,
)

pytestmark = pytest.mark.e2e


def calls(paths: Paths) -> list[dict]:
    if not paths.llm_calls_jsonl.exists():
        return []
    return [json.loads(line) for line in paths.llm_calls_jsonl.read_text().splitlines()]


def members(paths: Paths, cohort_id: str) -> pd.DataFrame:
    return pd.read_csv(paths.membership_csv(cohort_id), dtype=str, keep_default_na=False)


def raw_mtimes(paths: Paths) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in paths.gens_root.glob("*/*/raw.txt")}


def test_metadata_holds_the_sha256_of_the_prompt_sent(finished_run):
    _, _, paths = finished_run
    for meta_path in paths.gens_root.glob("*/*/metadata.json"):
        meta = json.loads(meta_path.read_text())
        assert meta["prompt_sha256"] == sha256_text((meta_path.parent / "prompt.txt").read_text())


def test_an_edited_template_makes_no_call_and_is_reported_stale_then_regenerated_on_purpose(finished_run):
    data_root, cohorts_dir, paths = finished_run
    before_calls, before_raw = len(calls(paths)), raw_mtimes(paths)
    template = data_root / "1_raw" / "templates" / "draft" / "idea-sketch.txt"
    template.write_text(template.read_text() + "\nKeep every idea under fifty words.\n")

    run_workflow(data_root, cohorts_dir, ["tiny"])
    assert len(calls(paths)) == before_calls
    assert raw_mtimes(paths) == before_raw
    stale = pd.read_csv(paths.stale_generations_csv)
    drafts = set(members(paths, "tiny").query("stage == 'draft'").gen_id)
    assert set(stale.gen_id) == drafts and set(stale.stage) == {"draft"}
    assert set(stale.reason) == {"template changed"}
    assert (stale.stored_prompt_sha256 != stale.current_prompt_sha256).all()

    done = subprocess.run([sys.executable, str(REPO / "scripts" / "regenerate.py"), "--stale",
                           "--data-root", str(data_root)], capture_output=True, text=True, check=True)
    assert "archived" in done.stdout
    run_workflow(data_root, cohorts_dir, ["tiny"])
    new_calls = calls(paths)[before_calls:]
    table = members(paths, "tiny")
    essays = table[table.parent_gen_id.isin(drafts)]
    evaluations = table[table.parent_gen_id.isin(essays.gen_id)]
    llm_essays = essays[essays.template_id != "copy-draft"]
    expected = drafts | set(llm_essays.gen_id) | set(evaluations.gen_id)
    assert sorted(c["gen_id"] for c in new_calls) == sorted(expected)
    assert pd.read_csv(paths.stale_generations_csv).empty
    archived = list(paths.gens_root.glob("draft/*/.history/*/raw.txt"))
    assert len(archived) == len(drafts)  # the old paid replies are kept


def test_a_changed_concept_text_is_reported_and_deleted_gens_files_of_each_name_are_made_again_without_a_call(
        finished_run):
    # one rerun for two edits: one gens file of each name deleted, in each stage, and a concept's text (its 2
    # combos' drafts become stale; the membership is rebuilt first, then the default target is worked out
    # again). Snakemake never remakes a missing file whose consumers (here the stale report's shards) are up
    # to date: the default target asks for them (daydream.targets.document_targets).
    data_root, cohorts_dir, paths = finished_run
    before = len(calls(paths))
    table = members(paths, "tiny")
    draft = table.query("stage == 'draft'").gen_id.iloc[0]
    essay = table.query("stage == 'essay' and template_id != 'copy-draft'").gen_id.iloc[0]
    evaluations = table.query("stage == 'evaluation'").gen_id
    deleted = {("draft", draft, "raw.txt"), ("essay", essay, "metadata.json"),
               ("evaluation", evaluations.iloc[3], "prompt.txt"), ("evaluation", evaluations.iloc[7], "parsed.txt")}
    assert {name for _, _, name in deleted} == set(GEN_FILES)
    original = {(stage, gen_id): {name: (paths.gen_dir(stage, gen_id) / name).read_text() for name in GEN_FILES}
                for stage, gen_id, _ in deleted}
    for stage, gen_id, name in deleted:
        (paths.gen_dir(stage, gen_id) / name).unlink()

    dry = run_workflow(data_root, cohorts_dir, ["tiny"], "-n", *PER_JOB_OUTPUT)
    assert planned_by_stage(dry.stdout + dry.stderr) == {("gen_document", "draft"): 1, ("gen_document", "essay"): 1,
                                                         ("gen_document", "evaluation"): 2}
    concept = data_root / "1_raw" / "concepts" / "descriptions-paragraph" / "weak-ties.txt"
    concept.write_text(concept.read_text() + " Granovetter measured this in job searches.")
    run_workflow(data_root, cohorts_dir, ["tiny"])
    stale = pd.read_csv(paths.stale_generations_csv)
    assert len(stale) == 2 and set(stale.reason) == {"concepts changed"}  # the 2 combos with weak-ties
    assert len(calls(paths)) == before, "each file made again from its saved reply, no call paid twice"
    for (stage, gen_id), files in original.items():
        made = {name: (paths.gen_dir(stage, gen_id) / name).read_text() for name in GEN_FILES}
        assert {n: made[n] for n in ("prompt.txt", "raw.txt", "parsed.txt")} == \
            {n: files[n] for n in ("prompt.txt", "raw.txt", "parsed.txt")}, (stage, gen_id)
        assert json.loads(made["metadata.json"])["prompt_sha256"] == json.loads(files["metadata.json"])["prompt_sha256"]
    assert not list((paths.reporting_dir / "documents_due").glob("*")), "the default target's stand-ins are removed"


def test_a_changed_prompt_never_pays_again_and_keeps_the_paid_record_of_a_deleted_document(finished_run):
    data_root, cohorts_dir, paths = finished_run
    draft = members(paths, "tiny").query("stage == 'draft' and template_id == 'idea-sketch'").gen_id.iloc[0]
    paid = {name: (paths.gen_dir("draft", draft) / name).read_text() for name in ("prompt.txt", "raw.txt")}
    for name in ("prompt.txt", "raw.txt", "metadata.json"):
        (paths.gen_dir("draft", draft) / name).unlink()
    template = data_root / "1_raw" / "templates" / "draft" / "idea-sketch.txt"
    template.write_text(template.read_text() + "\nA changed instruction.\n")
    before = len(calls(paths))
    done = run_workflow(data_root, cohorts_dir, ["tiny"])
    assert len(calls(paths)) == before
    assert {name: (paths.gen_dir("draft", draft) / name).read_text() for name in paid} == paid
    assert json.loads(paths.metadata_path("draft", draft).read_text())["prompt_sha256"] == sha256_text(paid["prompt.txt"])
    stale = pd.read_csv(paths.stale_generations_csv)
    assert draft in set(stale.gen_id) and "template changed" in set(stale.reason)
    assert "prompt changed since it was paid for" in done.stderr
    scores = pd.read_csv(paths.cohort_report("tiny", "parsing/aggregated_scores.csv"), dtype=str,
                         keep_default_na=False).set_index("gen_id")
    table = members(paths, "tiny").set_index("gen_id")
    below = [g for g in scores.index if table.parent_gen_id[table.parent_gen_id[g]] == draft]
    assert below and (scores["flags"][below] == f"stale: draft {draft} (template changed)").all()
    for gen_id, flag in scores["flags"].items():  # every draft of the edited template is stale
        assert flag == f"stale: draft {table.parent_gen_id[table.parent_gen_id[gen_id]]} (template changed)"


def test_a_second_cohort_sharing_drafts_makes_no_call_for_them(finished_run):
    data_root, cohorts_dir, paths = finished_run
    first_calls = {c["gen_id"] for c in calls(paths)}
    write_cohort(cohorts_dir, "second", {**TINY_COHORT, "evaluation": {
        "templates": ["novelty-judge"], "models": ["offline_b"], "replicates": 2}})
    run_workflow(data_root, cohorts_dir, ["second"])
    second = members(paths, "second")
    shared = set(second.query("stage != 'evaluation'").gen_id)
    assert shared <= first_calls | set(second.query("template_id == 'copy-draft'").gen_id)
    new = [c["gen_id"] for c in calls(paths) if c["gen_id"] not in first_calls]
    assert not shared & set(new)
    # 6 essays x novelty-judge x offline_b x 2 replicates; replicate 1 exists from `tiny`
    assert Counter(c["gen_id"][:2] for c in calls(paths)[len(first_calls):]) == {"v_": 6}


def test_a_curated_cohort_reuses_existing_essays_and_adds_only_missing_evaluations(finished_run):
    data_root, cohorts_dir, paths = finished_run
    table = members(paths, "tiny")
    essays = list(table.query("stage == 'essay'").gen_id[:2])
    before = len(calls(paths))
    write_cohort(cohorts_dir, "rejudge", {"essays": essays, "evaluation": {
        "templates": ["novelty-judge", "rigor-judge"], "models": ["offline_a"], "replicates": 2}})
    run_workflow(data_root, cohorts_dir, ["rejudge"])
    new = calls(paths)[before:]
    # replicate 1 of each (essay, template, offline_a) exists from the tiny cohort
    assert [c["gen_id"][:2] for c in new] == ["v_"] * 4
    scores = pd.read_csv(paths.cohort_report("rejudge", "parsing/aggregated_scores.csv"))
    assert len(scores) == 8 and scores.score.notna().all()


def test_a_killed_run_resumes_without_paying_twice_or_leaving_partial_files(data_root, cohorts_dir):
    paths = Paths(data_root)
    ids = ["default-mode-network", "exaptation", "weak-ties", "bisociation", "incubation-effect", "adjacent-possible"]
    spec = {**TINY_COHORT, "concepts": {"level": "paragraph", "k": 2, "ids": ids}}
    write_cohort(cohorts_dir, "big", spec)  # 15 drafts, 30 essays (15 copies), 120 evaluations: 150 calls
    command = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--cores", "8", "--config", f"data_root={data_root}",
               f"cohorts_dir={cohorts_dir}", "cohorts=big", "offline=true"]
    env = {**os.environ, "DAYDREAM_OFFLINE_LATENCY_S": "0.05"}
    run = subprocess.Popen(command, cwd=data_root.parent, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while count_lines(paths.llm_calls_jsonl) < 30 and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    killed_at = count_lines(paths.llm_calls_jsonl)
    assert 30 <= killed_at < 120, "the run must be killed with calls still to make"

    subprocess.run([*command, "--unlock"], cwd=data_root.parent, check=True,
                   capture_output=True)
    run_workflow(data_root, cohorts_dir, ["big"])
    table = members(paths, "big")
    for row in table.itertuples():
        folder = paths.gen_dir(row.stage, row.gen_id)
        assert (folder / "raw.txt").read_text().strip()
        assert (folder / "parsed.txt").read_text().strip()
        json.loads((folder / "metadata.json").read_text())
        assert not list(folder.glob(".*.tmp"))
    paid = Counter(c["gen_id"] for c in calls(paths))
    llm_documents = table[table.template_id != "copy-draft"]
    assert set(paid) == set(llm_documents.gen_id)
    saved_replies = list(paths.gens_root.glob("*/*/.replies/*.json"))
    assert len(saved_replies) == len(llm_documents)
    assert max(paid.values()) == 1, "a completed document was paid twice"


def test_documents_made_by_the_offline_rehearsal_are_stale_for_a_real_run(finished_run, monkeypatch):
    data_root, cohorts_dir, paths = finished_run
    models = data_root / "1_raw" / "llm_models.csv"
    text = models.read_text().replace("Daydream Offline B,offline,", "Daydream Offline B,openai,")
    assert text != models.read_text()
    models.write_text(text)  # offline_b now names a real (keyed) route
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-used")
    run_workflow(data_root, cohorts_dir, ["tiny"], offline=False)
    stale = pd.read_csv(paths.stale_generations_csv)
    judged_by_b = members(paths, "tiny").query("llm_model_id == 'offline_b'")
    assert set(stale.gen_id) == set(judged_by_b.gen_id)
    assert stale.reason.str.startswith("model changed (made by offline/daydream-offline-b").all()


def test_touched_checkpoint_inputs_never_wedge_a_run_and_edits_still_rebuild_the_cohort(finished_run):
    data_root, cohorts_dir, paths = finished_run
    table = members(paths, "tiny")
    draft = table.query("stage == 'draft'").gen_id.iloc[0]
    evaluation = table.query("stage == 'evaluation'").gen_id.iloc[0]
    for stage, gen_id in (("draft", draft), ("evaluation", evaluation)):
        for name in ("raw.txt", "parsed.txt", "metadata.json", "prompt.txt"):
            (paths.gen_dir(stage, gen_id) / name).unlink()  # the saved replies stay
    time.sleep(0.05)
    touched = [cohorts_dir / "tiny.yaml", paths.concepts_metadata_csv, paths.models_csv,
               *(paths.templates_csv(s) for s in ("draft", "essay", "evaluation")), *paths.template_files(),
               *paths.description_files()]
    for path in touched:  # touch, git checkout, a reverted edit: a newer time, the same content
        os.utime(path)  # now: newer than the membership
    before = len(calls(paths))

    plan = run_workflow(data_root, cohorts_dir, ["tiny"], "-n")
    assert "Nothing to be done" not in plan.stdout + plan.stderr
    run_workflow(data_root, cohorts_dir, ["tiny"])
    for stage, gen_id in (("draft", draft), ("evaluation", evaluation)):
        assert paths.parsed_path(stage, gen_id).exists()
    assert len(calls(paths)) == before  # restored from their saved replies
    assert members(paths, "tiny").equals(table)

    # an edit still rebuilds the membership, even for a run that targets only the membership (it
    # once said "Nothing to be done": daydream.targets.cohort_inputs), and makes no document then
    cohort = cohorts_dir / "tiny.yaml"
    original, old_time = cohort.read_text(), cohort.stat().st_mtime
    write_cohort(cohorts_dir, "tiny", {**TINY_COHORT, "evaluation": {**TINY_COHORT["evaluation"], "replicates": 2}})
    done = run_workflow(data_root, cohorts_dir, ["tiny"], str(paths.membership_csv("tiny")))
    assert "Nothing to be done" not in done.stdout + done.stderr
    rebuilt = members(paths, "tiny")
    new = rebuilt[~rebuilt.gen_id.isin(table.gen_id)]
    assert len(rebuilt) == len(table) + 24 and set(new.stage) == {"evaluation"}
    assert len(calls(paths)) == before and not any(paths.gen_dir(r.stage, r.gen_id).exists() for r in new.itertuples())
    # going back to the old content with an older time: the default target rebuilds it
    cohort.write_text(original)
    os.utime(cohort, (old_time - 3600, old_time - 3600))
    run_workflow(data_root, cohorts_dir, ["tiny"])
    assert members(paths, "tiny").equals(table)
