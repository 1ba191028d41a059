"""The live run: counters, the progress line, the summary, and Snakemake's terminal kept readable."""

import logging
from collections import Counter

import pytest
from snakemake.settings.enums import Quietness
from snakemake_interface_logger_plugins.common import LogEvent

from daydream import calls, documents, progress
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
    assert line.endswith("ETA 0:00:10")  # 4 made in 10 s, 4 to go


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


def record(msg, event=None, level=logging.INFO, **extra) -> logging.LogRecord:
    item = logging.LogRecord("snakemake.logging", level, __file__, 1, msg, None, None)
    if event is not None:
        item.event = event
    item.__dict__.update(extra)
    return item


def test_the_terminal_filter_drops_per_job_lines_and_repeats_of_job_errors(capsys):
    keep = progress.TerminalFilter()
    assert not keep.filter(record("Select jobs to execute..."))
    assert not keep.filter(record("Execute 3 jobs...", LogEvent.JOB_STARTED))
    assert not keep.filter(record("Finished jobid: 4 (Rule: gen_document)", LogEvent.JOB_FINISHED))
    assert not keep.filter(record("4 of 9 steps (44%) done", LogEvent.PROGRESS))
    assert keep.filter(record("Job stats:\n...", LogEvent.RUN_INFO))
    assert keep.filter(record("daydream: something", level=logging.WARNING))
    budget_error = "RuleException:\nBudgetReached in file gens.smk, line 18:\nv_1: not called"
    assert keep.filter(record(budget_error, LogEvent.ERROR, logging.ERROR, exception="RuleException"))
    assert not keep.filter(record(budget_error, LogEvent.ERROR, logging.ERROR, exception="RuleException"))
    shown = [keep.filter(record("RuleException:\nDocumentError", LogEvent.ERROR, logging.ERROR,
                                exception="RuleException")) for _ in range(progress.SHOWN_JOB_ERRORS + 3)]
    assert shown == [True] * progress.SHOWN_JOB_ERRORS + [False] * 3
    assert "more job errors are not shown here" in capsys.readouterr().err
    assert keep.filter(record("WorkflowError:\nAt least one job", LogEvent.ERROR, logging.ERROR,
                              exception="WorkflowError"))


def test_the_filter_goes_on_the_terminal_only_when_quiet_about_rules_and_not_verbose():
    logger = logging.getLogger("snakemake.logging")
    terminal, logfile = logging.StreamHandler(), logging.FileHandler("/dev/null")
    daydream_level = logging.getLogger("daydream").level
    logger.addHandler(terminal)
    logger.addHandler(logfile)
    try:
        assert not progress.shape_terminal_output({Quietness.HOST}, verbose=False)
        assert not progress.shape_terminal_output({Quietness.RULES, Quietness.HOST}, verbose=True)
        assert terminal.filters == []
        assert progress.shape_terminal_output({Quietness.RULES, Quietness.HOST}, verbose=False)
        assert progress.shape_terminal_output({Quietness.RULES}, verbose=False)
        assert [type(f) for f in terminal.filters] == [progress.TerminalFilter] and logfile.filters == []
        assert logging.getLogger("daydream").level == logging.WARNING
    finally:
        logger.removeHandler(terminal)
        logger.removeHandler(logfile)
        logfile.close()
        logging.getLogger("daydream").setLevel(daydream_level)
        progress._READABLE[0] = False


def test_a_status_line_reaches_the_terminal_when_the_info_lines_are_off(capsys, caplog):
    logger = logging.getLogger("daydream.provider_batches")
    with caplog.at_level(logging.INFO, logger="daydream"):
        progress.status(logger, "provider batch pb_1: in_progress, 2 of 5 done")
    assert "in_progress" in caplog.text and capsys.readouterr().err == ""
    caplog.clear()
    progress._READABLE[0] = True
    try:
        progress.status(logger, "provider batch pb_1: in_progress, 3 of 5 done")
    finally:
        progress._READABLE[0] = False
    assert capsys.readouterr().err == "daydream: provider batch pb_1: in_progress, 3 of 5 done\n"
    assert caplog.text == ""
