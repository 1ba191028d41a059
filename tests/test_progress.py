"""The live run: counters, the progress line and the summary (the terminal filter: test_terminal.py)."""

import logging
from collections import Counter

import pytest

from daydream import calls, documents, progress, runtime
from daydream import run as run_module
from daydream.run import BudgetReached
from daydream.runtime import Runtime


@pytest.fixture
def run(data_root, cohorts_dir):
    """The run of a fresh Runtime: its counters count what the tests do."""
    return Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"]}).run


def test_documents_are_counted_running_then_made_or_failed(run):
    with run.document("draft", "d_1") as counted:
        assert run.counters.snapshot()["running"]["draft"] == 1
        counted.source = "called"
    with pytest.raises(documents.DocumentError):
        with run.document("essay", "e_1"):
            raise documents.DocumentError("e_1: parser 'essay_block' failed")
    with pytest.raises(BudgetReached):
        with run.document("essay", "e_2"):
            raise BudgetReached("e_2: not called")
    snap = run.counters.snapshot()
    assert snap["made"] == Counter(draft=1) and snap["failed"] == Counter(essay=2) and snap["sources"]["called"] == 1
    assert sum(snap["running"].values()) == 0
    assert snap["failure_kinds"] == Counter({run_module.PARSE: 1, run_module.BUDGET: 1})
    assert [f.gen_id for f in snap["failures"]] == ["e_1"], "budget stops are counted, not listed"


def test_the_progress_line_has_stages_calls_tokens_spend_and_an_eta(run):
    run.counters.started -= 10
    for _ in range(4):
        with run.document("draft", "d") as counted:
            counted.source = "called"
            run.counters.call_started("draft")
            run.counters.call_paid("draft", calls.Completion("x", "m", "stop", {"prompt_tokens": 100, "completion_tokens": 50},
                                                    0.01, 0.1, 1))
            run.counters.call_ended("draft", True)
    run.counters.document_started("essay")
    line = progress.progress_line(run.counters.snapshot(), Counter(draft=4, essay=4), "budget $0.04 of $1.00")
    assert line.startswith("daydream 0:00:10 | draft 4/4 | essay 0/4 (1 running) | calls 4 (")
    assert "tokens 400 in + 200 out" in line and "spent $0.0400, budget $0.04 of $1.00" in line
    assert line.endswith("spent $0.0400, budget $0.04 of $1.00")  # 4 made in 10 s: too little for an ETA
    run.counters.started -= 50
    for _ in range(20):
        with run.document("essay", "e") as counted:
            counted.source = "called"
    line = progress.progress_line(run.counters.snapshot(), Counter(draft=4, essay=40), None)
    assert line.endswith("| ETA 0:00:50")  # 24 made in 60 s, 20 to go


def test_no_eta_until_enough_documents_and_seconds_have_passed():
    assert progress.eta(4, 4, 11.0) is None  # the first line of an 11 s run
    assert progress.eta(19, 500, 120.0) is None and progress.eta(200, 500, 29.0) is None
    assert progress.eta(30, 10_000, 120.0) is None  # under 5 % of the run
    assert progress.eta(500, 500, 60.0) == "0:01:00" and progress.eta(10, 0, 1.0) == "0:00:00"


def test_the_summary_says_what_failed_and_where_to_look(run, data_root, cohorts_dir):
    rt = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"]})
    with pytest.raises(calls.LLMCallError):
        with run.document("draft", "d_9"):
            raise calls.LLMCallError("d_9: model openai/x failed after 5 attempt(s): RateLimitError (HTTP 429)",
                                     error_class="RateLimitError", attempts=5)
    text = progress.summary(rt, run.counters.snapshot(), ok=False, budget_status=None)
    assert text.splitlines()[0].startswith("daydream: run ended with failures after ")
    assert "  documents: 0 made, 1 failed" in text and "1 call failed" in text
    assert "draft d_9: call failed: d_9: model openai/x failed after 5 attempt(s)" in text
    assert str(rt.paths.llm_errors_jsonl) in text and str(rt.paths.parse_errors_jsonl) in text
    assert "provider batches" not in text  # a run that used none says nothing of them
    assert text.splitlines()[-2:] == ["  results:", f"    tiny: reports in {rt.paths.reports_dir('tiny')}"]


def test_the_summary_ends_with_the_viewer_and_the_stale_report_when_they_exist(run, data_root, cohorts_dir, capsys):
    rt = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"]})
    viewer = rt.paths.cohort_site("tiny") / "index.html"
    viewer.parent.mkdir(parents=True)
    viewer.write_text("<html></html>")
    rt.paths.stale_generations_csv.parent.mkdir(parents=True)
    rt.paths.stale_generations_csv.write_text("gen_id,stage,reason\nd_1,draft,template changed\n")
    with run.document("draft", "d_1") as counted:
        counted.source = "called"
    tail = progress.summary(rt, run.counters.snapshot(), ok=True, budget_status=None).splitlines()[-2:]
    assert tail[0] == f"    tiny: open {viewer} in a browser"
    assert tail[1] == f"    stale report: {rt.paths.stale_generations_csv} (1 stale document(s); " \
                      "python scripts/regenerate.py --stale --dry-run lists them)"
    run.counters.reset()
    progress.finish(rt, ok=True)  # a run that made nothing still says where the results are
    err = capsys.readouterr().err
    assert "no document needed making" in err and f"tiny: open {viewer}" in err


def test_a_status_line_reaches_the_terminal_when_the_info_lines_are_off(capsys, caplog):
    logger = logging.getLogger("daydream.batch.rounds")
    with caplog.at_level(logging.INFO, logger="daydream"):
        progress.status(logger, "provider batch pb_1: in_progress, 2 of 5 done")
    assert "in_progress" in caplog.text and capsys.readouterr().err == ""
    caplog.clear()
    daydream = logging.getLogger("daydream")
    handlers, level, propagate = list(daydream.handlers), daydream.level, daydream.propagate
    runtime.configure_logging(logging.WARNING)  # as the logger plugin sets it in a readable run
    try:
        progress.status(logger, "provider batch pb_1: in_progress, 3 of 5 done")
    finally:
        daydream.handlers[:] = handlers
        daydream.setLevel(level)
        daydream.propagate = propagate
    assert capsys.readouterr().err == "daydream: provider batch pb_1: in_progress, 3 of 5 done\n"
    assert caplog.text == ""
