"""Snakemake's terminal output goes through daydream's logger plugin, kept readable under the
profile's quiet choices."""

import io
import logging
import subprocess
import sys
from types import SimpleNamespace

import pytest
from snakemake.settings.enums import Quietness
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.registry import LoggerPluginRegistry

from daydream import runtime, terminal
from tests.conftest import REPO


def record(msg, event=None, level=logging.INFO, **extra) -> logging.LogRecord:
    item = logging.LogRecord("snakemake.logging", level, __file__, 1, msg, None, None)
    if event is not None:
        item.event = event
    item.__dict__.update(extra)
    return item


def test_the_terminal_filter_drops_per_job_lines_and_repeats_of_job_errors():
    note = io.StringIO()
    keep = terminal.TerminalFilter(note)
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
                                exception="RuleException")) for _ in range(terminal.SHOWN_JOB_ERRORS + 3)]
    assert shown == [True] * terminal.SHOWN_JOB_ERRORS + [False] * 3
    assert "more job errors are not shown here" in note.getvalue()
    assert keep.filter(record("WorkflowError:\nAt least one job", LogEvent.ERROR, logging.ERROR,
                              exception="WorkflowError"))


def output_settings(quiet, verbose=False):
    return SimpleNamespace(quiet=quiet, verbose=verbose, nocolor=True, stdout=False, printshellcmds=False,
                           debug_dag=False, show_failed_logs=False, dryrun=False)


@pytest.fixture
def daydream_logger():
    """The `daydream` logger as it was, restored after the plugin has configured it."""
    logger = logging.getLogger("daydream")
    state = (logger.level, list(logger.handlers), logger.propagate)
    logger.handlers.clear()
    yield logger
    logger.setLevel(state[0])
    logger.handlers[:] = state[1]
    logger.propagate = state[2]


def handler_writing_to(stream, quiet, verbose=False) -> terminal.LogHandler:
    handler = terminal.LogHandler(output_settings(quiet, verbose), None)
    handler.terminal.setStream(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def test_the_readable_run_is_on_only_when_quiet_about_rules_and_not_verbose():
    assert terminal.readable({Quietness.RULES, Quietness.HOST}, verbose=False)
    assert terminal.readable({Quietness.RULES}, verbose=False)
    assert not terminal.readable({Quietness.HOST}, verbose=False)
    assert not terminal.readable({Quietness.RULES, Quietness.HOST}, verbose=True)
    assert not terminal.readable(None, verbose=False)


def test_the_plugin_prints_snakemakes_lines_without_the_per_job_ones_and_daydreams_warnings_only(daydream_logger):
    out = io.StringIO()
    handler = handler_writing_to(out, {Quietness.RULES, Quietness.HOST})
    assert handler.writes_to_stream and not handler.writes_to_file and not handler.has_filter
    handler.handle(record("Finished jobid: 4 (Rule: gen_document)", LogEvent.JOB_FINISHED))
    handler.handle(record("Job stats: 3 jobs", LogEvent.RUN_INFO))
    assert out.getvalue() == "Job stats: 3 jobs\n"
    # daydream's terminal lines are warnings only; the logger keeps INFO for each job's own log
    (shown,) = daydream_logger.handlers
    assert shown.level == logging.WARNING and daydream_logger.level == logging.INFO
    assert not runtime.terminal_shows_info()


def test_without_the_quiet_choices_the_plugin_prints_what_snakemake_would(daydream_logger):
    out = io.StringIO()
    handler = handler_writing_to(out, {Quietness.HOST})
    handler.handle(record("Finished jobid: 4 (Rule: gen_document)", LogEvent.JOB_FINISHED))
    assert out.getvalue() == "Finished jobid: 4 (Rule: gen_document)\n"
    assert daydream_logger.handlers[0].level == logging.INFO and runtime.terminal_shows_info()


def test_a_user_errors_report_is_shown_once_without_frames_and_others_keep_theirs(daydream_logger):
    out = io.StringIO()
    handler = handler_writing_to(out, {Quietness.RULES, Quietness.HOST})
    report = ('RuleException:\nCohortError in file "/w/rules/cohort.smk", line 20:\n- pilot.yaml: unknown concept'
              '\n  File "/w/rules/cohort.smk", line 20, in __rule_cohort_membership')
    handler.handle(record(report, LogEvent.ERROR, logging.ERROR))
    bug = 'RuleException:\nKeyError in file "/w/rules/gens.smk", line 9:\n\'x\'\n  File "/w/x.py", line 1'
    handler.handle(record(bug, LogEvent.ERROR, logging.ERROR))
    assert out.getvalue() == "CohortError:\n- pilot.yaml: unknown concept\n" + bug + "\n"


def test_snakemake_finds_the_plugin_the_profile_selects():
    assert LoggerPluginRegistry().get_plugin("daydream").log_handler is terminal.LogHandler
    assert "logger: [daydream]" in (REPO / "profiles" / "default" / "config.yaml").read_text()


def test_parsing_the_snakefile_installs_no_signal_handler(data_root, cohorts_dir):
    """Parsing (here: a dry run's, in a fresh process) builds the Runtime and nothing else; the
    Ctrl-C handler for batch rounds is installed when a real run starts (`onstart:`)."""
    arguments = ["-s", str(REPO / "Snakefile"), "-n", "--cores", "1", "--config", f"data_root={data_root}",
                 f"cohorts_dir={cohorts_dir}", 'cohorts=["tiny"]', "offline=true"]
    probe = (
        "import signal\n"
        "from snakemake.cli import main\n"
        "try:\n"
        f"    main({arguments!r})\n"
        "except SystemExit as stop:\n"
        "    print('exit', stop.code)\n"
        "print('SIGINT handler of daydream:', getattr(signal.getsignal(signal.SIGINT), 'daydream', False))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                          cwd=data_root.parent)
    assert "exit 0" in done.stdout and "SIGINT handler of daydream: False" in done.stdout, done.stdout + done.stderr
