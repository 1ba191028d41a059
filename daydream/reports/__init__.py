"""The reports (SPEC §9): one registry says, for each report, its file, the rule that makes it,
its builder, its columns and where it shows in Snakemake's HTML report.

- group `tables`: the cohort tables, built by rule `cohort_reports` from the gens store;
- group `figures`: plots and pages, built by rule `cohort_report_figures` from those tables;
- group `cross`: the cross-experiment tables of the whole gens store (`7_cross_experiment/`).

`rules/reports.smk` takes every rule's outputs from here, so a new report is one `Report`
entry plus one builder function. A builder takes the context of its group (`CohortContext`,
`CrossContext`) and returns a DataFrame (written as CSV), a matplotlib Figure (PNG) or an HTML
string; it is named `module:function` and imported only when the report is built, so neither
matplotlib nor scipy is imported while Snakemake parses the workflow.
"""

from __future__ import annotations

import gc
import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from daydream import columns, stages, store
from daydream.experiment import Experiment
from daydream.paths import Paths

log = logging.getLogger(__name__)

TABLES, FIGURES, CROSS = "tables", "figures", "cross"
AGGREGATED = "parsing/aggregated_scores.csv"
CROSS_AGGREGATED = "aggregated_scores.csv"
CROSS_PIVOT = "evaluation_scores_by_template_model.csv"
JUDGES = "Judges"  # the HTML report's category of the judge-reliability reports (reports/judges.py)
_KINDS = {".csv": "table", ".png": "figure", ".html": "page"}


@dataclass(frozen=True)
class Report:
    """One report file. `caption` (a file under `report/`) and `category` place it in the HTML
    report (`snakemake --report`); a report without a caption is not shown there."""

    name: str
    group: str
    builder: str
    title: str
    columns: tuple[str, ...] | None = None
    caption: str | None = None
    category: str | None = None

    @property
    def key(self) -> str:
        """The output's name in its rule (unique per group)."""
        return Path(self.name).stem

    @property
    def kind(self) -> str:
        return _KINDS[Path(self.name).suffix]

    def build(self, context: object) -> object:
        module, _, function = self.builder.partition(":")
        return getattr(importlib.import_module(f"daydream.reports.{module}"), function)(context)


def _table(name: str, builder: str, title: str, cols: tuple[str, ...] | None, shown: bool = True) -> Report:
    return Report(name, TABLES, builder, title, cols, "tables.rst" if shown else None, "Tables" if shown else None)


REPORTS: tuple[Report, ...] = (
    _table(AGGREGATED, "tables:aggregated_table", "aggregated scores", columns.AGGREGATED_COLUMNS, shown=False),
    _table("summary/generation_scores.csv", "tables:generation_scores_table", "generation scores", None),
    _table("summary/generation_scores_by_essay.csv", "tables:generation_scores_by_essay_table",
           "generation scores by essay", None),
    _table("summary/final_results.csv", "tables:final_results_table", "final results", columns.FINAL_RESULTS_COLUMNS),
    _table("summary/perfect_score_paths.csv", "tables:perfect_score_paths_table", "perfect score paths",
           columns.PERFECT_SCORE_COLUMNS),
    _table("analysis/variance_analysis.csv", "tables:variance_analysis_table", "variance analysis",
           columns.VARIANCE_COLUMNS),
    _table("analysis/judge_agreement.csv", "agreement:judge_agreement_table", "judge agreement",
           columns.JUDGE_AGREEMENT_COLUMNS, shown=False),
    _table("analysis/mean_score_ci.csv", "agreement:mean_score_ci_table", "mean score CI",
           columns.MEAN_SCORE_CI_COLUMNS),
    *(Report(name, TABLES, builder, title, cols, caption, JUDGES) for name, builder, title, cols, caption in (
        ("analysis/judge_vs_human.csv", "judges:judge_vs_human_table", "judges vs human raters",
         columns.JUDGE_VS_HUMAN_COLUMNS, "judge_vs_human.rst"),
        ("analysis/calibrated_means.csv", "judges:calibrated_means_table", "calibrated means",
         columns.CALIBRATED_MEANS_COLUMNS, "calibrated_means.rst"),
        ("analysis/length_bias.csv", "judges:length_bias_table", "length bias", columns.LENGTH_BIAS_COLUMNS,
         "length_bias.rst"),
        ("analysis/self_preference.csv", "judges:self_preference_table", "self-preference",
         columns.SELF_PREFERENCE_COLUMNS, "self_preference.rst"),
        ("analysis/disagreement.csv", "judges:disagreement_table", "panel disagreement",
         columns.DISAGREEMENT_COLUMNS, "disagreement.rst"),
    )),
    Report("plots/scores_by_generation_model.png", FIGURES, "figures:scores_by_generation_model",
           "scores by generation model", None, "scores_by_generation_model.rst", "Scores"),
    Report("plots/scores_by_generation_template.png", FIGURES, "figures:scores_by_generation_template",
           "scores by generation template", None, "scores_by_generation_template.rst", "Scores"),
    Report("plots/evaluator_template_heatmap.png", FIGURES, "figures:evaluator_template_heatmap",
           "evaluator x template heat map", None, "evaluator_template_heatmap.rst", "Scores"),
    Report("analysis/judge_agreement.html", FIGURES, "pages:judge_agreement_page", "judge agreement",
           None, "judge_agreement.rst", "Judges"),
    Report("summary/top_essays.html", FIGURES, "pages:top_essays_html", "top essays", None, "top_essays.rst",
           "Essays"),
    Report(CROSS_AGGREGATED, CROSS, "cross:aggregated_table", "cross-experiment scores", columns.AGGREGATED_COLUMNS),
    Report(CROSS_PIVOT, CROSS, "cross:pivot_table", "scores by evaluation template and model", None),
)


# The results site of each cohort (`daydream.site.write_site`, rule `cohort_site`; not in REPORTS:
# it has no builder here). Its one-file bundle `site.html` is what Snakemake's HTML report shows.
SITE = Report("site.html", "site", "daydream.site:write_site", "results site", None, "site.rst", "Results")


# The rules whose jobs import the builders' libraries (matplotlib, scipy.stats) on first use.
REPORT_RULES = frozenset({"cohort_reports", "cohort_report_figures", "cohort_site", "cross_experiment_tables"})
# What those jobs import besides the builder modules: scipy.stats (the bootstrap intervals of the
# tables and the site's comparisons) and matplotlib's Agg canvas (savefig's PNG).
AHEAD = ("scipy.stats", "matplotlib.figure", "matplotlib.backends.backend_agg")


def import_ahead(rules: Iterable[str]) -> threading.Thread | None:
    """When a run will build reports (a job of `REPORT_RULES` among `rules`, the rules of the
    jobs it needs), import the builders and their libraries in a daemon thread now, while the
    documents run, instead of in the first report job after the last document: about 1.3 CPU
    seconds (1.5-2 s of wall) that the tail would otherwise wait for, read here while the run's
    process has the GIL to spare. Not for a dry run or a run with nothing to report. An import
    that fails here is logged and raised again by the job that needs it. Their objects are then
    frozen (`gc.freeze`)."""
    if REPORT_RULES.isdisjoint(rules):
        return None

    def run() -> None:
        for name in (*AHEAD, *sorted({f"daydream.reports.{r.builder.partition(':')[0]}" for r in REPORTS})):
            try:
                importlib.import_module(name)
            except ImportError as error:
                log.warning("importing %s ahead of the reports failed (%s); the report job will say why", name, error)
        # The modules live until the process ends: out of the cyclic collector's scans, as
        # `runtime.settle_heap` leaves the rest (without a collection, which the jobs would wait on).
        gc.freeze()

    thread = threading.Thread(target=run, name="reports-import-ahead", daemon=True)
    thread.start()
    return thread


class ImportAhead:
    """`import_ahead` once a run has report jobs: asked at `onstart` (`check`) and, as an
    observer of the run (`Run.observe`), when a document job starts after the memberships
    changed (a run that builds its cohort's membership first has its report jobs in Snakemake's
    DAG only after that checkpoint). `rules_of_run` gives the rules of the jobs the run needs;
    `signature` changes when a membership does. Nothing is asked once the import started."""

    def __init__(self, signature: Callable[[], object], rules_of_run: Callable[[], Iterable[str]]):
        self._signature_of, self._rules_of_run = signature, rules_of_run
        self._lock = threading.Lock()
        self._seen: object = None
        self.thread: threading.Thread | None = None

    def check(self) -> None:
        if self.thread is not None:
            return
        with self._lock:
            signature = self._signature_of()
            if self.thread is None and signature != self._seen:
                self._seen = signature
                self.thread = import_ahead(self._rules_of_run())

    def document_started(self, stage: str) -> None:
        self.check()


def in_group(group: str) -> list[Report]:
    return [r for r in REPORTS if r.group == group]


def cohort_reports() -> list[Report]:
    """Every report made per cohort (tables, then figures and pages)."""
    return in_group(TABLES) + in_group(FIGURES)


def get(name: str) -> Report:
    for report in REPORTS:
        if report.name == name:
            return report
    raise KeyError(f"{name!r} is no report; known: {', '.join(r.name for r in REPORTS)}")


def write_report(report: Report, path: Path, context: object) -> Path:
    """Build one report and write it atomically as its kind says."""
    built = report.build(context)
    if report.columns is not None and tuple(built.columns) != report.columns:
        raise ValueError(f"report {report.name}: columns {list(built.columns)} are not those of the registry "
                         f"{list(report.columns)} (daydream/columns.py)")
    if report.kind == "table":
        from daydream.reports.io import write_csv

        write_csv(path, built)
    elif report.kind == "figure":
        from daydream.reports.figures import save_figure

        save_figure(built, path)
    else:
        store.write_text_atomic(path, built)
    return path


def evaluation_scales(experiment: Experiment):
    """The score scale of each template of the scored stage."""
    from daydream.reports.scores import scales_from_templates

    return scales_from_templates(experiment.templates.get(stages.SCORED.name, {}))


def _context(paths: Paths, cohort_id: str, scales, group: str):
    from daydream.reports.context import CohortContext

    return CohortContext(paths, cohort_id, scales, from_written_tables=group == FIGURES)


def build_cohort_tables(paths: Paths, cohort_id: str, scales) -> dict[str, object]:
    """Every `tables` report of one cohort as DataFrames, by report name (nothing written)."""
    context = _context(paths, cohort_id, scales, TABLES)
    return {r.name: r.build(context) for r in in_group(TABLES)}


def write_cohort_group(paths: Paths, cohort_id: str, scales, group: str) -> list[Path]:
    """Build and write every report of one group (`tables` or `figures`) of one cohort."""
    context = _context(paths, cohort_id, scales, group)
    return [write_report(r, paths.cohort_report(cohort_id, r.name), context) for r in in_group(group)]


def write_cohort_reports(paths: Paths, cohort_id: str, experiment: Experiment, log_path: str | None = None) -> list[Path]:
    """Every `tables` report of one cohort, from its membership and the gens store."""
    started, cpu = time.perf_counter(), time.process_time()
    written = write_cohort_group(paths, cohort_id, evaluation_scales(experiment), TABLES)
    from daydream.reports.io import read_aggregated

    aggregated = read_aggregated(paths.cohort_report(cohort_id, AGGREGATED))
    store.write_job_log(log_path, f"{cohort_id}: {len(aggregated)} evaluations, "
                                  f"{int(aggregated['error'].ne('').sum())} without a score; wrote {len(written)} tables, "
                                  f"{time.perf_counter() - started:.2f} s "
                                  f"({time.process_time() - cpu:.2f} s CPU)")
    return written


def write_cohort_figures(paths: Paths, cohort_id: str, experiment: Experiment, log_path: str | None = None) -> list[Path]:
    """Every `figures` report of one cohort (plots and HTML pages), from its report tables."""
    started, cpu = time.perf_counter(), time.process_time()
    written = write_cohort_group(paths, cohort_id, evaluation_scales(experiment), FIGURES)
    store.write_job_log(log_path, f"{cohort_id}: wrote {len(written)} figures and pages, "
                                  f"{time.perf_counter() - started:.2f} s "
                                  f"({time.process_time() - cpu:.2f} s CPU)")
    return written


def write_reports_despite_failures(paths: Paths, cohort_ids: list[str], experiment: Experiment) -> list[str]:
    """After a run with failed documents (the `onerror` hook): the report tables of every
    cohort whose membership exists, with `error` filled for the missing or failed scores.
    The next run remakes them once the failed documents are fixed."""
    built = []
    for cohort_id in cohort_ids:
        if paths.membership_csv(cohort_id).exists():
            write_cohort_reports(paths, cohort_id, experiment)
            built.append(cohort_id)
    return built


def write_cross_table(paths: Paths, name: str, cohort_id: str | None = None) -> Path:
    """One cross-experiment table, of the whole store or of one cohort's evaluations
    (`7_cross_experiment/by_cohort/<cohort_id>/`)."""
    from daydream.reports.cross import CrossContext

    report = get(name)
    if report.group != CROSS:
        raise KeyError(f"{name!r} is not a cross-experiment table; use {CROSS_AGGREGATED} or {CROSS_PIVOT}")
    context = CrossContext(paths, cohort_id, paths.cross_table(CROSS_AGGREGATED, cohort_id))
    return write_report(report, paths.cross_table(name, cohort_id), context)


def write_cross_experiment_tables(paths: Paths, log_path: str | None = None,
                                  cohort_id: str | None = None) -> list[Path]:
    """Every cross-experiment table, in registry order (the pivot reads the aggregated table)."""
    written = [write_cross_table(paths, r.name, cohort_id) for r in in_group(CROSS)]
    store.write_job_log(log_path, f"cross-experiment tables: {', '.join(str(p) for p in written)}")
    return written
