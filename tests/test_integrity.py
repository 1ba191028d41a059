"""A raw.txt that is no longer the reply that was paid for is reported (stale report, `flags`
in the cohort reports), never silently scored; the saved reply still holds the paid text."""

import hashlib
import json
import subprocess
import sys

import pandas as pd
import pytest

from daydream import cohorts, documents, integrity, stale
from daydream.runtime import Runtime
from tests.conftest import REPO, count_lines, run_workflow


@pytest.fixture
def made(data_root, cohorts_dir):
    """Every document of the tiny cohort, made in-process with the offline model."""
    rt = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"], "offline": True})
    cohorts.build_cohort(rt.paths, "tiny", rt.paths.cohort_file("tiny"))
    for member in rt.membership.members("tiny"):
        documents.write_document(rt, member.stage, member.gen_id)
    return rt


def lineage_of(rt, evaluation):
    essay = rt.membership.member(evaluation.parent_gen_id)
    return essay, rt.membership.member(essay.parent_gen_id)


def test_untouched_documents_have_no_change_and_no_flag(made):
    evaluations = made.membership.members("tiny", "evaluation")
    assert all(integrity.raw_change(made.paths, m.stage, m.gen_id) is None for m in made.membership.members("tiny"))
    assert integrity.evaluation_flags(made.paths, [m.gen_id for m in evaluations]) == [""] * len(evaluations)


def test_an_edited_raw_txt_is_named_for_itself_and_for_every_evaluation_below_it(made):
    evaluations = made.membership.members("tiny", "evaluation")
    judged = evaluations[0]
    essay, draft = lineage_of(made, evaluations[-1])
    raw = made.paths.raw_path("evaluation", judged.gen_id)
    raw.write_text(raw.read_text().replace("SCORE:", "SCORE: 9\nformerly"))
    made.paths.raw_path("draft", draft.gen_id).write_text("A hand-written draft.")
    change = integrity.raw_change(made.paths, "evaluation", judged.gen_id)
    reply = made.paths.reply_path("evaluation", judged.gen_id,
                                  json.loads(made.paths.metadata_path("evaluation", judged.gen_id).read_text())["prompt_sha256"])
    assert change == (f"raw.txt differs from the reply that was paid for ({reply}): delete {raw} and rerun snakemake "
                      "to restore it, no call is made")
    flags = dict(zip([m.gen_id for m in evaluations],
                     integrity.evaluation_flags(made.paths, [m.gen_id for m in evaluations]), strict=True))
    assert flags[judged.gen_id].startswith(f"raw.txt changed: evaluation {judged.gen_id}")
    below_draft = [m.gen_id for m in evaluations if lineage_of(made, m)[1].gen_id == draft.gen_id]
    assert len(below_draft) == 8
    assert all(flags[g].endswith(f"draft {draft.gen_id}") for g in below_draft)
    untouched = set(flags) - set(below_draft) - {judged.gen_id}
    assert untouched and all(flags[g] == "" for g in untouched)


def test_a_stale_document_is_named_in_the_flags_of_every_evaluation_below_it(made):
    evaluations = made.membership.members("tiny", "evaluation")
    edited = evaluations[-1]
    made.paths.raw_path("evaluation", edited.gen_id).write_text("SCORE: 1")
    concept = made.paths.raw_root / "concepts" / "descriptions-paragraph" / "weak-ties.txt"
    concept.write_text(concept.read_text() + "\nA sentence added later.\n")
    stale.write_stale_report(made)
    reasons = integrity.stale_reasons(made.paths)
    drafts = made.membership.members("tiny", "draft")
    combos = pd.read_csv(made.paths.combo_mappings_csv)
    weak_ties_combos = set(combos[combos.concept_id == "weak-ties"].combo_id)
    with_weak_ties = {d.gen_id for d in drafts if d.combo_id in weak_ties_combos}
    assert set(reasons) == with_weak_ties and 0 < len(with_weak_ties) < len(drafts)
    assert set(reasons.values()) == {"concepts changed"}, "a changed raw.txt is flagged as such, not as stale"
    ids = [m.gen_id for m in evaluations]
    flags = dict(zip(ids, integrity.evaluation_flags(made.paths, ids, reasons), strict=True))
    for evaluation in evaluations:
        draft = lineage_of(made, evaluation)[1].gen_id
        expected = [f"raw.txt changed: evaluation {edited.gen_id}"] if evaluation == edited else []
        if draft in with_weak_ties:
            expected.append(f"stale: draft {draft} (concepts changed)")
        assert flags[evaluation.gen_id] == "; ".join(expected)


def test_without_a_stale_report_no_document_is_stale(made):
    assert integrity.stale_reasons(made.paths) == {}


def test_a_copys_raw_txt_is_checked_against_the_text_it_copied(made):
    copy = next(m for m in made.membership.members("tiny", "essay") if m.template_id == "copy-draft")
    assert integrity.raw_change(made.paths, "essay", copy.gen_id) is None
    made.paths.raw_path("essay", copy.gen_id).write_text("Not the draft.")
    assert integrity.raw_change(made.paths, "essay", copy.gen_id).startswith("raw.txt differs from the text it copied")


def test_a_store_without_saved_replies_cannot_be_checked_and_is_not_flagged(made):
    draft = made.membership.members("tiny", "draft")[0]
    for reply in made.paths.replies_dir("draft", draft.gen_id).glob("*.json"):
        reply.unlink()
    made.paths.raw_path("draft", draft.gen_id).write_text("edited")
    assert integrity.raw_change(made.paths, "draft", draft.gen_id) is None


def test_the_stale_report_gives_the_reason_and_regenerate_leaves_those_documents_alone(made):
    evaluation = made.membership.members("tiny", "evaluation")[0]
    made.paths.raw_path("evaluation", evaluation.gen_id).write_text("SCORE: 1")
    row = stale.check_member(made, evaluation)
    assert row["reason"].startswith("raw.txt differs from the reply that was paid for")
    stale.write_stale_report(made)
    from daydream.regenerate import raw_changed_gen_ids, stale_gen_ids

    assert raw_changed_gen_ids(made.paths) == [evaluation.gen_id] and stale_gen_ids(made.paths) == []


def snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob(".replies/*.json"))}


@pytest.mark.e2e
def test_an_edited_raw_txt_is_flagged_in_the_reports_never_silently_scored_and_restored_for_free(finished_run):
    data_root, cohorts_dir, paths = finished_run
    scores_csv = paths.cohort_report("tiny", "parsing/aggregated_scores.csv")
    before = pd.read_csv(scores_csv, dtype=str, keep_default_na=False)
    assert (before["flags"] == "").all()
    replies, calls = snapshot(paths.gens_root), count_lines(paths.llm_calls_jsonl)
    judged = before.gen_id.iloc[0]
    raw = paths.raw_path("evaluation", judged)
    original = raw.read_text()
    old_score = float(before.set_index("gen_id").score[judged])
    new_score = 1 if old_score != 1 else 2
    raw.write_text(original.rsplit("SCORE:", 1)[0] + f"SCORE: {new_score}\n")  # a hand edit of the paid reply
    lineage = pd.read_csv(paths.membership_csv("tiny"), dtype=str, keep_default_na=False).set_index("gen_id")
    judged_draft = lineage.parent_gen_id[lineage.parent_gen_id[judged]]
    draft = next(d for d in lineage.index[lineage.stage == "draft"] if d != judged_draft)
    draft_raw = paths.raw_path("draft", draft)
    draft_original = draft_raw.read_text()
    draft_raw.write_text(draft_original.replace("<essay>", "<essay>An edited opening. ", 1))
    below = [g for g in before.gen_id if lineage.parent_gen_id[lineage.parent_gen_id[g]] == draft]

    run_workflow(data_root, cohorts_dir, ["tiny"])

    after = pd.read_csv(scores_csv, dtype=str, keep_default_na=False).set_index("gen_id")
    assert float(after.score[judged]) == old_score  # raw.txt is no job's input: the paid reply's score stays
    assert after["flags"][judged] == f"raw.txt changed: evaluation {judged}"
    assert len(below) == 8 and (after["flags"][below] == f"raw.txt changed: draft {draft}").all()
    assert (after.drop(index=[judged, *below])["flags"] == "").all()
    report = pd.read_csv(paths.stale_generations_csv, dtype=str, keep_default_na=False).set_index("gen_id")
    assert report.reason[judged].startswith("raw.txt differs from the reply that was paid for")
    assert count_lines(paths.llm_calls_jsonl) == calls and snapshot(paths.gens_root) == replies
    dry = subprocess.run([sys.executable, str(REPO / "scripts" / "regenerate.py"), "--stale", "--dry-run",
                          "--data-root", str(data_root)], capture_output=True, text=True)
    assert "not regenerated: 2 document(s) whose only problem is a changed raw.txt" in dry.stdout
    assert judged in dry.stdout and draft in dry.stdout.splitlines()[0]

    raw.unlink()  # the fix the report names: the paid reply comes back without a call
    draft_raw.unlink()
    run_workflow(data_root, cohorts_dir, ["tiny"])
    assert raw.read_text() == original and draft_raw.read_text() == draft_original
    assert count_lines(paths.llm_calls_jsonl) == calls
    restored = pd.read_csv(scores_csv, dtype=str, keep_default_na=False).set_index("gen_id")
    assert float(restored.score[judged]) == old_score and (restored["flags"] == "").all()
    assert pd.read_csv(paths.stale_generations_csv).empty
