"""The report registry: one entry per report file, each builder importable, outputs unique."""

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
