"""The report registry: one entry per report file, each builder importable, outputs unique."""

import logging
import re
import subprocess
import sys

from daydream import reports
from daydream.paths import REPO_ROOT


def test_every_builder_resolves_and_every_key_is_unique_in_its_rule():
    for group in (reports.TABLES, reports.FIGURES, reports.CROSS):
        entries = reports.in_group(group)
        assert entries and len({r.key for r in entries}) == len(entries)
    for report in reports.REPORTS:
        module, _, function = report.builder.partition(":")
        assert callable(getattr(__import__(f"daydream.reports.{module}", fromlist=[function]), function))


def test_reports_shown_in_the_html_report_have_a_caption_file_and_a_category():
    for report in reports.REPORTS:
        if report.caption:
            assert (REPO_ROOT / "report" / report.caption).exists()
            assert report.category


def test_the_cohort_reports_are_the_tables_then_the_figures():
    names = [r.name for r in reports.cohort_reports()]
    assert names[0] == reports.AGGREGATED and names[-1] == "summary/top_essays.html"
    assert reports.get("summary/final_results.csv").kind == "table"


def test_a_run_with_report_jobs_imports_their_libraries_ahead_and_only_such_a_run():
    code = ("import sys\nfrom daydream import reports\n"
            "assert reports.import_ahead({'gen_document', 'stale_shard'}) is None\n"
            "assert not any(name in sys.modules for name in reports.AHEAD)\n"
            "thread = reports.import_ahead({'gen_document', 'cohort_reports'})\nthread.join()\n"
            "print(sorted(name for name in reports.AHEAD if name in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == str(sorted(reports.AHEAD))


def test_the_rules_that_import_ahead_are_the_workflows_report_rules():
    rules = {m for f in (REPO_ROOT / "rules").glob("*.smk")
             for m in re.findall(r"^rule (\w+):", f.read_text(encoding="utf-8"), re.M)}
    assert reports.REPORT_RULES <= rules


def test_an_import_ahead_that_fails_is_logged(monkeypatch, caplog):
    monkeypatch.setattr(reports, "AHEAD", ("daydream_no_such_module",))
    with caplog.at_level(logging.WARNING, logger="daydream.reports"):
        reports.import_ahead({"cohort_site"}).join()
    assert "importing daydream_no_such_module ahead of the reports failed" in caplog.text


def test_the_import_ahead_waits_for_report_jobs_and_asks_again_only_when_a_membership_changed(monkeypatch):
    started, asked = [], []
    monkeypatch.setattr(reports, "import_ahead", lambda rules: started.append(set(rules)) or "thread"
                        if "cohort_reports" in rules else None)
    rules_now = [{"cohort_membership"}]
    signature = ["before the checkpoint"]
    ahead = reports.ImportAhead(lambda: signature[0], lambda: asked.append(1) or rules_now[0])
    ahead.check()  # onstart: only the checkpoint is due
    ahead.document_started("draft")
    assert (started, len(asked), ahead.thread) == ([], 1, None)
    signature[0], rules_now[0] = "after the checkpoint", {"gen_document", "cohort_reports"}
    ahead.document_started("draft")
    ahead.document_started("essay")
    assert (len(started), len(asked), ahead.thread) == (1, 2, "thread")
