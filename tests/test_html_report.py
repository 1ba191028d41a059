"""The Snakemake HTML report: built from a tiny offline run, then opened in headless Chromium
(conftest.py's `chromium`; the tests skip, saying why, only when no Chromium binary is installed).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from matplotlib.image import imread

from daydream import reports
from daydream.paths import Paths
from tests.conftest import chromium, copy_tree, embedded_result, javascript_errors, needs_chromium, run_workflow

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("html_report")]  # one report_run per session

browser = pytest.mark.browser


def screenshot(page: Path, png: Path, profile: Path, size: str = "1400,900") -> subprocess.CompletedProcess:
    done = chromium(page, profile, f"--screenshot={png}", f"--window-size={size}")
    assert png.exists(), f"no screenshot of {page}: {done.stderr[-2000:]}"
    return done


def assert_not_blank(png: Path) -> None:
    pixels = imread(png)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels[..., :3].std() > 0.02, f"{png} is a blank image"


@pytest.fixture(scope="module")
def report_run(tmp_path_factory, finished_tiny_run):
    """A copy of the session's finished tiny run (offline model) and its HTML report (read only)."""
    root = copy_tree(finished_tiny_run, tmp_path_factory.mktemp("report_run"))
    report = root / "report.html"
    run_workflow(root / "data", root / "cohorts", ["tiny"], "--report", str(report))
    return Paths(root / "data"), report


def test_a_run_writes_every_cohort_report(report_run):
    paths, _ = report_run
    missing = [r.name for r in reports.cohort_reports() if not paths.cohort_report("tiny", r.name).exists()]
    assert missing == []


def test_the_report_is_self_contained_and_embeds_figures_and_pages(report_run):
    _, report = report_run
    text = report.read_text(encoding="utf-8")
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"https?://", text)
    for name in ("scores_by_generation_model.png", "evaluator_template_heatmap.png", "judge_agreement.html",
                 "top_essays.html", "final_results.csv"):
        assert embedded_result(text, name)
    top = embedded_result(text, "top_essays.html").decode("utf-8")
    links = re.findall(r'href="#(essay-e_[0-9a-z]+)"', top)
    assert links and all(f'id="{anchor}"' in top for anchor in links)


@browser
@needs_chromium
def test_chromium_renders_the_report_without_javascript_errors(report_run, tmp_path):
    _, report = report_run
    dom = chromium(report, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert javascript_errors(dom.stderr) == []
    for category in ("Scores", "Judges", "Essays", "Tables"):
        assert category in dom.stdout, f"category {category} missing from the rendered report"
    shot = screenshot(report, tmp_path / "report.png", tmp_path / "profile-shot")
    assert javascript_errors(shot.stderr) == []
    assert_not_blank(tmp_path / "report.png")


@browser
@needs_chromium
def test_chromium_renders_the_embedded_top_essays_page(report_run, tmp_path):
    _, report = report_run
    page = tmp_path / "top_essays.html"
    page.write_bytes(embedded_result(report.read_text(encoding="utf-8"), "top_essays.html"))
    dom = chromium(page, tmp_path / "profile-top-dom", "--dump-dom")
    assert "Top essays: cohort tiny" in dom.stdout and javascript_errors(dom.stderr) == []
    screenshot(page, tmp_path / "top_essays.png", tmp_path / "profile-top", "1200,1000")
    assert_not_blank(tmp_path / "top_essays.png")
