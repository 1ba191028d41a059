"""Batches of model calls (cluster runs), checked without a cluster: the cut, the inputs, and a
local run with `reply_batch_size` > 0 that must equal a run without batches."""

import json

import pandas as pd
import pytest

from daydream import batches, cohorts, targets
from daydream.paths import Paths
from daydream.runtime import Runtime
from tests.conftest import count_lines, run_workflow


def runtime(data_root, batch_size: int) -> Runtime:
    return Runtime({"data_root": str(data_root), "cohorts": ["tiny"], "offline": True,
                          "reply_batch_size": batch_size})


@pytest.fixture
def planned(data_root, cohorts_dir):
    """The tiny cohort's membership (the checkpoint only, in-process; no document made yet)."""
    rt = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"], "offline": True})
    cohorts.write_cohort(rt, "tiny")
    return data_root


def test_batches_cut_the_model_call_documents_in_membership_order(planned):
    cut, batch_of = batches.reply_batches(runtime(planned, 4), "evaluation")
    assert [len(ids) for ids in cut.values()] == [4] * 6
    members = pd.read_csv(Paths(planned).membership_csv("tiny"))
    assert sum(cut.values(), []) == members[members.stage == "evaluation"].gen_id.tolist()
    assert all(batch_of[g] == b for b, ids in cut.items() for g in ids)
    assert batches.reply_batches(runtime(planned, 4), "evaluation")[0] == cut, "ids are stable"


def test_copy_essays_are_in_no_batch(planned):
    cut, _ = batches.reply_batches(runtime(planned, 25), "essay")
    assert [len(ids) for ids in cut.values()] == [3]


def test_a_response_waits_for_its_batch_only_in_cluster_runs_and_while_raw_is_missing(planned):
    draft = next(iter(batches.reply_batches(runtime(planned, 2), "draft")[1]))
    assert "replies" not in targets.document_inputs(runtime(planned, 0), "draft", draft)
    assert "replies" in targets.document_inputs(runtime(planned, 2), "draft", draft)
    raw = Paths(planned).raw_path("draft", draft)
    raw.parent.mkdir(parents=True)
    raw.write_text("done")
    assert "replies" not in targets.document_inputs(runtime(planned, 2), "draft", draft)


def test_an_unknown_batch_fails_naming_the_setting(planned):
    with pytest.raises(batches.BatchError, match="reply_batch_size=2"):
        batches.pending_in_batch(runtime(planned, 2), "draft", "0009_0123456789")


@pytest.mark.e2e
def test_a_batched_run_equals_an_unbatched_one_and_pays_each_call_once(tmp_path, data_root, cohorts_dir,
                                                                      finished_tiny_run):
    batching = tmp_path / "batching.yaml"
    batching.write_text("reply_batch_size: 5\n")
    run_workflow(data_root, cohorts_dir, ["tiny"], "--configfile", str(batching))
    paths = Paths(data_root)
    assert count_lines(paths.llm_calls_jsonl) == 30
    records = sorted(paths.reporting_dir.glob("reply_batches/*/*.json"))
    assert len(records) == 1 + 1 + 5  # 3 drafts, 3 llm essays, 24 evaluations in batches of 5
    outcome = {g: r for f in records for g, r in json.loads(f.read_text())["documents"].items()}
    assert len(outcome) == 30 and set(outcome.values()) == {"called"}

    other = finished_tiny_run / "data"  # the same cohort run without batches (read only)
    assert len(list((other / "gens").glob("*/*/parsed.txt"))) == len(list((data_root / "gens").glob("*/*/parsed.txt")))
    for stage_dir in (data_root / "gens").iterdir():
        for doc in stage_dir.iterdir():
            twin = other / "gens" / stage_dir.name / doc.name
            assert (doc / "raw.txt").read_text() == (twin / "raw.txt").read_text()
            assert (doc / "parsed.txt").read_text() == (twin / "parsed.txt").read_text()
