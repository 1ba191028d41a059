"""The results site (daydream.site): built by the real workflow from an offline run of a cohort
with 2 judges x 2 rubrics x 2 replicates, checked against the report CSVs, rendered in headless
Chromium (the essays table's script sorts and filters by the URL hash), and embedded in
`snakemake --report report.html`.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
from pathlib import Path

import jinja2
import markupsafe
import pandas as pd
import pytest

from daydream import reports, site
from daydream.experiment import load_experiment
from daydream.paths import Paths
from daydream.reports.io import read_aggregated, read_table
from daydream.reports.scores import scales_from_templates, task_scores
from daydream.site import build_site, pages
from daydream.site.compare import ALL_JUDGES, paired_comparisons
from daydream.site.data import row_dicts
from tests.conftest import (
    TINY_COHORT,
    chromium,
    copy_tree,
    count_lines,
    embedded_result,
    javascript_errors,
    needs_chromium,
    run_workflow,
    write_cohort,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("site")]  # one `run` per session

COHORT = "judged"
SPEC = {**TINY_COHORT, "evaluation": {**TINY_COHORT["evaluation"], "replicates": 2}}  # 2 judges x 2 rubrics x 2
NAMES = {"default-mode-network": "Default Mode Network", "exaptation": "Exaptation", "weak-ties": "Strength of Weak Ties"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, finished_tiny_run):
    """A finished offline run of the cohort, its run output and its HTML report. It starts from a
    copy of the session's finished tiny run, whose drafts, essays and first-replicate evaluations
    the cohort shares (ids follow the content), so this run pays only the 24 second replicates."""
    root = copy_tree(finished_tiny_run, tmp_path_factory.mktemp("site_run"))
    write_cohort(root / "cohorts", COHORT, SPEC)
    calls_before = count_lines(Paths(root / "data").llm_calls_jsonl)
    done = run_workflow(root / "data", root / "cohorts", [COHORT])
    assert count_lines(Paths(root / "data").llm_calls_jsonl) - calls_before == 24, "only the second replicates"
    report = root / "report.html"
    run_workflow(root / "data", root / "cohorts", [COHORT], "--report", str(report))
    return Paths(root / "data"), done, report


def site_of(paths: Paths) -> Path:
    return paths.cohort_site(COHORT)


def essay_ids(paths: Paths) -> list[str]:
    membership = pd.read_csv(paths.membership_csv(COHORT), dtype=str)
    return sorted(membership.loc[membership["stage"] == "essay", "gen_id"])


def evaluation_block(page: str, gen_id: str) -> tuple[str, str]:
    """(score text, full answer) of one evaluation on an essay page."""
    found = re.search(rf'<div class="eval" id="{gen_id}">\s*<h3>.*?<span class="score">(.*?)</span></h3>.*?'
                      r"<pre>(.*?)</pre>", page, re.S)
    assert found, f"evaluation {gen_id} is not on its essay's page"
    return re.sub(r"<[^>]+>", " ", found.group(1)).split()[0], html.unescape(found.group(2))


# -- what the workflow writes ---------------------------------------------------------------------
def test_the_run_builds_the_site_and_its_summary_names_it(run):
    paths, done, _ = run
    index = site_of(paths) / "index.html"
    assert index.exists() and paths.cohort_site_bundle(COHORT).exists()
    assert f"{COHORT}: open {index} in a browser" in done.stderr


def test_every_evaluation_of_every_essay_is_on_its_page_with_the_score_of_aggregated_scores(run):
    paths, _, _ = run
    aggregated = read_aggregated(paths.cohort_report(COHORT, reports.AGGREGATED))
    assert len(aggregated) == 6 * 2 * 2 * 2  # 6 essays x 2 judges x 2 rubrics x 2 replicates
    for essay_id, evaluations in aggregated.groupby("parent_gen_id"):
        page = (site_of(paths) / "essays" / f"{essay_id}.html").read_text(encoding="utf-8")
        assert page.count('<div class="eval" id=') == len(evaluations) == 8
        for row in evaluations.itertuples():
            score, answer = evaluation_block(page, row.gen_id)
            assert float(score) == row.score
            assert answer == paths.raw_path("evaluation", row.gen_id).read_text(encoding="utf-8")


def test_the_table_shows_each_judges_mean_and_the_overall_of_the_report_csv(run):
    paths, _, _ = run
    table = (site_of(paths) / "essays.html").read_text(encoding="utf-8")
    by_essay = read_table(paths.cohort_report(COHORT, "summary/generation_scores_by_essay.csv")).set_index("gen_id")
    for essay_id in essay_ids(paths):
        row = re.search(rf'<tr [^>]*data-id="{essay_id}">(.*?)(?=<tr |</tbody>)', table, re.S).group(1)
        values = [float(v) for v in re.findall(r'data-v="([0-9.e-]+)"', row)]
        judges = [by_essay.at[essay_id, f"{m}_{t}"] for m in ("offline_a", "offline_b")
                  for t in ("novelty-judge", "rigor-judge")]
        assert values[:4] == pytest.approx(judges)
        assert values[4] == pytest.approx(by_essay.at[essay_id, "mean_scaled"])
        assert by_essay.at[essay_id, "concepts"] in html.unescape(row)


def test_the_csvs_name_the_concepts(run):
    paths, _, _ = run
    aggregated = read_aggregated(paths.cohort_report(COHORT, reports.AGGREGATED))
    labels = set(aggregated["concepts"])
    assert labels == {" + ".join(sorted([NAMES[a], NAMES[b]], key=list(NAMES.values()).index))
                      for a, b in (("default-mode-network", "exaptation"), ("default-mode-network", "weak-ties"),
                                   ("exaptation", "weak-ties"))}


def test_every_column_of_every_report_table_is_explained(run):
    paths, _, _ = run
    tables = (site_of(paths) / "tables").glob("*.html")
    undescribed = {p.name: re.findall(r"<code>(\w[^<]*)</code></th><td>\(not described yet", p.read_text())
                   for p in tables}
    assert {name: cols for name, cols in undescribed.items() if cols} == {}
    assert len(list((site_of(paths) / "tables").glob("*.html"))) >= 8


def test_pages_link_to_the_gens_store_files_relatively(run):
    paths, _, _ = run
    essay_id = essay_ids(paths)[0]
    page = site_of(paths) / "essays" / f"{essay_id}.html"
    hrefs = re.findall(r'href="(\.\./[^"#]+)"', page.read_text(encoding="utf-8"))
    files = [(page.parent / h).resolve() for h in hrefs if "gens" in h]
    assert paths.raw_path("essay", essay_id).resolve() in files
    assert all(f.exists() for f in files)
    links = re.findall(r'href="([^"#:]+\.html)"', (site_of(paths) / "index.html").read_text(encoding="utf-8"))
    assert {f"essays/{e}.html" for e in essay_ids(paths)} <= set(links)  # every essay one click away
    assert all((site_of(paths) / link).exists() for link in links)


def test_pages_stay_small(run):
    paths, _, _ = run
    sizes = {p.name: p.stat().st_size for p in site_of(paths).rglob("*.html")}
    assert max(sizes.values()) < 2_000_000


def test_snakemake_report_contains_the_site_and_opens_on_it(run):
    paths, _, report = run
    text = report.read_text(encoding="utf-8")
    bundle = embedded_result(text, "site.html").decode("utf-8")
    for essay_id in essay_ids(paths):
        assert f'data-page="essays/{essay_id}.html"' in bundle
    assert 'data-page="index.html"' in bundle and 'data-page="compare.html"' in bundle
    assert "Open the results of cohort" in text and "var metadata = {" in text
    assert re.search(r'var metadata = \{"[^"]+": 3', text), "the landing page metadata is missing"


# -- the builder on its own ---------------------------------------------------------------------------
def test_rebuilding_the_site_drops_pages_of_essays_no_longer_in_the_cohort(run, tmp_path):
    paths = Paths(shutil.copytree(run[0].data_root, tmp_path / "data"))  # the module's run stays as built
    stray = site_of(paths) / "essays" / "e_gone.html"
    stray.write_text("old", encoding="utf-8")
    built = build_site(paths, COHORT, load_experiment(paths))
    assert not stray.exists() and built["essays"] == 6
    assert built["pages"] == 6 + 5 + len(list((site_of(paths) / "tables").glob("*.html")))


def test_an_evaluation_that_did_not_parse_shows_the_answer_and_why(run, tmp_path):
    paths = Paths(shutil.copytree(run[0].data_root, tmp_path / "data"))
    aggregated = read_aggregated(paths.cohort_report(COHORT, reports.AGGREGATED))
    victim, essay_id = aggregated.loc[0, "gen_id"], aggregated.loc[0, "parent_gen_id"]
    paths.parsed_path("evaluation", victim).unlink()
    paths.parse_errors_jsonl.parent.mkdir(parents=True, exist_ok=True)
    with paths.parse_errors_jsonl.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"gen_id": victim, "stage": "evaluation", "parser": "complex",
                                 "reason": "no SCORE line"}) + "\n")
    experiment = load_experiment(paths)
    reports.write_cohort_reports(paths, COHORT, experiment)
    build_site(paths, COHORT, experiment)
    page = html.unescape((paths.cohort_site(COHORT) / "essays" / f"{essay_id}.html").read_text(encoding="utf-8"))
    block = page[page.index(f'id="{victim}"'):]
    block = block[:block.index('<div class="eval"') if '<div class="eval"' in block else len(block)]
    assert "no score" in block and "missing parsed.txt" in block
    assert "the reply did not parse (parser complex: no SCORE line)" in block
    assert paths.raw_path("evaluation", victim).read_text(encoding="utf-8").strip() in block
    assert "1 unscored" in (paths.cohort_site(COHORT) / "essays.html").read_text(encoding="utf-8")


def test_a_changed_raw_reply_is_marked_on_the_essay_page_and_in_the_table(run, tmp_path):
    paths = Paths(shutil.copytree(run[0].data_root, tmp_path / "data"))
    membership = pd.read_csv(paths.membership_csv(COHORT), dtype=str).set_index("gen_id")
    essay_id = essay_ids(paths)[0]
    draft_id = membership.at[essay_id, "parent_gen_id"]
    raw = paths.raw_path("draft", draft_id)
    raw.write_text(raw.read_text(encoding="utf-8") + "\nedited by hand\n", encoding="utf-8")
    experiment = load_experiment(paths)
    reports.write_cohort_reports(paths, COHORT, experiment)
    build_site(paths, COHORT, experiment)
    page = html.unescape((paths.cohort_site(COHORT) / "essays" / f"{essay_id}.html").read_text(encoding="utf-8"))
    assert f"raw.txt changed: draft {draft_id}" in page
    assert "This document's raw.txt is no longer the reply that was paid for" in page
    table = (paths.cohort_site(COHORT) / "essays.html").read_text(encoding="utf-8")
    row = re.search(rf'<tr [^>]*data-id="{essay_id}">(.*?)(?=<tr |</tbody>)', table, re.S).group(0)
    assert 'data-flag="flagged"' in row and "raw changed" in row


def test_paired_comparison_differences_are_over_shared_combos_only():
    # combo C1: A 8, B 6; C2: A 5, B 2; C3: only A (not shared) -> differences 2 and 3
    rows = [("C1", "A", 8.0), ("C1", "B", 6.0), ("C2", "A", 5.0), ("C2", "B", 2.0), ("C3", "A", 9.0)]
    aggregated = pd.DataFrame([{"gen_id": f"v{i}", "parent_gen_id": f"e{i}", "evaluation_template": "rubric",
                                "evaluation_llm_model": "judge", "score": s, "error": "", "combo_id": c,
                                "draft_template": "d", "generation_template": t, "generation_model": "m"}
                               for i, (c, t, s) in enumerate(rows)])
    scales = scales_from_templates({})  # default 0..9
    found = paired_comparisons(task_scores(aggregated, scales))
    assert [(c["axis"], c["a"], c["b"]) for c in found] == [("generation_template", "A", "B")]
    judge, pooled = found[0]["rows"]
    assert (judge["judge"], judge["n_combos"], judge["diff"]) == ("judge · rubric", 2, 2.5)
    assert (judge["mean_a"], judge["mean_b"]) == (6.5, 4.0)
    assert judge["ci_low"] == pytest.approx(2.0) and judge["ci_high"] == pytest.approx(3.0)
    assert judge["verdict"] == "A higher"
    assert pooled["judge"] == ALL_JUDGES and pooled["diff"] == pytest.approx(2.5 / 9)


def test_a_column_is_described_by_its_table_then_shared_then_as_a_judge():
    judges = {"jA_novelty", "novelty__jA"}
    assert "evaluation" in pages.describe_column("parsing/aggregated_scores.csv", "gen_id", judges)
    assert pages.describe_column("x.csv", "mean_scaled", judges).startswith("The mean score as a share")
    assert pages.describe_column("x.csv", "jA_novelty_min", judges).startswith("Lowest score of judge jA_novelty")
    assert pages.describe_column("x.csv", "jA_novelty", judges).startswith("Mean score of judge jA_novelty")
    assert "novelty__jA" in pages.describe_column("x.csv", "novelty__jA", judges)
    assert pages.describe_column("x.csv", "mystery", judges).startswith("(not described yet")


def test_numbers_are_formatted_for_reading():
    assert (pages.points(7.0), pages.points(6.5), pages.points(math.nan)) == ("7", "6.50", "")
    assert (pages.share(0.6666), pages.money(None), pages.money(0.5)) == ("0.667", "unknown", "$0.5000")
    assert (pages.mean_points(5.0), pages.mean_points(16 / 3), pages.raw(math.nan)) == ("5.00", "5.33", "")



def test_an_output_is_escaped_byte_for_byte_as_markupsafe_escapes_it():
    values = ["", "plain text", "a & b < c > d 'e' \"f\"", "&amp; already", "<script>x</script>" * 50,
              "é ü 日本 \u2028", markupsafe.Markup("<b>kept</b>"), 7, 6.5, None, True]
    for value in values:
        assert str(site.escape_output(value)) == str(markupsafe.escape(value)), value


def test_the_site_templates_render_as_plain_jinja_renders_them():
    """The site's environment (its code generator and dict lookups) writes the same bytes as
    Jinja's own with the same settings, special characters, includes and `|safe` included."""
    plain = jinja2.Environment(loader=jinja2.PackageLoader("daydream.site", "templates"), autoescape=True,
                               undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    plain.globals.update(site._ENV.globals)
    odd = "<i>a & 'b' \"c\"</i>"
    doc = {"gen_id": "g&1", "made": False, "model": odd, "tokens": "1 in + 2 out", "cost": "$0.1000", "duration": "",
           "created_at": odd, "stale": odd, "raw_changed": True, "parse_error": odd,
           "files": [{"name": "raw.txt", "href": "../a b/<raw>.txt"}, {"name": "parsed.txt", "href": None}]}
    variables = {"d": doc, "cohort_id": odd, "link": lambda target: "#/" + target, "layout": "fragment.html",
                 "sections": [{"path": "index.html", "html": markupsafe.Markup("<p>kept</p>"), "wide": True}],
                 "title": odd, "wide": False}
    for template in ("doc_meta.html", "nav.html", "bundle.html"):
        assert site._ENV.get_template(template).render(**variables) == plain.get_template(template).render(**variables)


def test_rows_as_dicts_are_those_of_pandas():
    frame = pd.DataFrame({"s": pd.Series(["a", "b", None], dtype="str"), "f": [1.5, math.nan, 2.0], "i": [1, 2, 3],
                          "b": [True, False, True], "o": [("x",), None, "z"]}, index=["g1", "g2", "g3"])
    # repr: NaN is not equal to itself, and numpy's scalars show as np.float64(...)
    assert [repr(r) for r in row_dicts(frame)] == [repr(r) for r in frame.to_dict("records")]
    assert [list(map(type, r.values())) for r in row_dicts(frame)] == \
        [list(map(type, r.values())) for r in frame.to_dict("records")]
    assert row_dicts(frame.iloc[:, :0]) == [{}, {}, {}]


def test_file_links_are_the_relative_paths_os_path_gives(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gens = ["data/gens/essay/e1", "data/gens/draft/d1", "data/cohorts/c/reports/site", "data/cohorts/c/reports",
            str(tmp_path / "data/gens/essay/e2")]
    for root in (Path("data/cohorts/c/reports/site"), tmp_path / "data/cohorts/c/reports/site",
                 Path("data/gens/essay/e1/site")):  # the last inside a document's folder
        renderer = site.Renderer(root, "c", bundle=False)
        for page in ("index.html", "essays/e1.html", "tables/t.html"):
            for folder in gens:
                for _ in range(2):  # worked out, then remembered
                    want = Path(os.path.relpath(Path(folder) / "raw.txt", root / (os.path.dirname(page) or "."))).as_posix()
                    assert renderer.file_href(page, Path(folder) / "raw.txt") == want, (root, page, folder)
            for target in ("index.html", "essays.html", "tables/t.html"):
                assert renderer.link(page, target) == os.path.relpath(target, os.path.dirname(page) or ".")


# -- in a browser ------------------------------------------------------------------------------------------
def dom(url: str, profile: Path) -> str:
    done = chromium(url, profile, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert javascript_errors(done.stderr) == []
    return done.stdout


def table_rows(page: str) -> list[dict]:
    """The essays table's rows in DOM order: id, template, hidden, overall."""
    rows = []
    for attrs, body in re.findall(r'<tr ([^>]*data-id="[^"]+"[^>]*)>(.*?)(?=<tr |</tbody>)', page, re.S):
        overall = re.search(r'white-space:nowrap" data-v="([^"]*)"', body).group(1)
        rows.append({"id": re.search(r'data-id="([^"]+)"', attrs).group(1),
                     "template": re.search(r'data-template="([^"]+)"', attrs).group(1),
                     "concepts": html.unescape(re.search(r'data-concept="([^"]*)"', attrs).group(1)),
                     "hidden": " hidden" in attrs, "overall": float(overall) if overall else None})
    return rows


@pytest.mark.browser
@needs_chromium
def test_chromium_shows_the_overview(run, tmp_path):
    paths, _, _ = run
    page = dom((site_of(paths) / "index.html").as_uri(), tmp_path / "p")
    assert f"Cohort {COHORT}" in page
    assert all(name in page for name in NAMES.values())
    assert len(re.findall(r'href="essays/e_\w+\.html"', page)) >= 6
    agreement = page[page.index("Judge agreement"):page.index("Judges page")]
    assert "nan" not in agreement and "Krippendorff" in agreement


@pytest.mark.browser
@needs_chromium
def test_chromium_sorts_and_filters_the_table_from_the_url_hash(run, tmp_path):
    paths, _, _ = run
    url = (site_of(paths) / "essays.html").as_uri()
    rows = table_rows(dom(url + "#template=copy-draft&sort=overall&dir=asc", tmp_path / "p1"))
    shown = [r for r in rows if not r["hidden"]]
    assert len(rows) == 6 and {r["template"] for r in shown} == {"copy-draft"} and len(shown) == 3
    assert [r["overall"] for r in shown] == sorted(r["overall"] for r in shown)
    assert all(r["hidden"] for r in rows if r["template"] != "copy-draft")
    descending = [r["overall"] for r in table_rows(dom(url + "#sort=overall&dir=desc", tmp_path / "p2"))]
    assert descending == sorted(descending, reverse=True)
    by_concept = table_rows(dom(url + "#concept=Exaptation", tmp_path / "p3"))
    assert {r["hidden"] for r in by_concept if "Exaptation" in r["concepts"].split(" + ")} == {False}
    assert {r["hidden"] for r in by_concept if "Exaptation" not in r["concepts"].split(" + ")} == {True}


@pytest.mark.browser
@needs_chromium
def test_chromium_shows_an_essay_with_its_lineage_and_every_judges_answer(run, tmp_path):
    paths, _, _ = run
    aggregated = read_aggregated(paths.cohort_report(COHORT, reports.AGGREGATED))
    essay_id = sorted(aggregated["parent_gen_id"])[0]
    page = html.unescape(dom((site_of(paths) / "essays" / f"{essay_id}.html").as_uri(), tmp_path / "p"))
    membership = pd.read_csv(paths.membership_csv(COHORT), dtype=str).set_index("gen_id")
    draft_id = membership.at[essay_id, "parent_gen_id"]
    for concept in aggregated.loc[aggregated["parent_gen_id"] == essay_id, "concepts"].iloc[0].split(" + "):
        assert concept in page
    assert paths.parsed_path("draft", draft_id).read_text(encoding="utf-8").strip() in page
    assert paths.parsed_path("essay", essay_id).read_text(encoding="utf-8").strip() in page
    assert paths.prompt_path("essay", essay_id).read_text(encoding="utf-8").strip() in page
    for gen_id in aggregated.loc[aggregated["parent_gen_id"] == essay_id, "gen_id"]:
        assert paths.raw_path("evaluation", gen_id).read_text(encoding="utf-8").strip() in page


@pytest.mark.browser
@needs_chromium
def test_chromium_routes_the_one_file_bundle_by_its_hash(run, tmp_path):
    paths, _, _ = run
    url = paths.cohort_site_bundle(COHORT).as_uri() + "#/essays.html?template=copy-draft"
    page = dom(url, tmp_path / "p")
    sections = dict(re.findall(r'<main class="page[^"]*" data-page="([^"]+)"( hidden="")?', page))
    assert sections["essays.html"] == "" and sections["index.html"] == " hidden=\"\""
    shown = [r for r in table_rows(page) if not r["hidden"]]
    assert len(shown) == 3 and {r["template"] for r in shown} == {"copy-draft"}
