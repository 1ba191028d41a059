"""Figures and HTML pages of a cohort for Snakemake's HTML report (`snakemake --report`).

Built from the cohort's report tables (never the gens store, except the text of the few top
essays). Plots use matplotlib's object API (no pyplot, no global state), so they are safe in
the threads of an in-process Snakemake run. HTML pages are self-contained: inline CSS, no
script, no external resource, links only to anchors inside the page.
"""

from __future__ import annotations

import html
import io
import os
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from daydream.gens import write_bytes_atomic
from daydream.paths import Paths
from daydream.report_columns import ESSAY_COLUMNS, TOP_ESSAY_COLUMNS
from daydream.report_io import gen_dirs, read_aggregated, read_table
from daydream.report_scores import read_texts, task_scores
from daydream.reports import COHORT_FIGURES

TOP_ESSAYS = 10
ESSAY_CHARS = 20_000
DPI = 110
AGREEMENT_HEADERS = {"evaluation_template": "evaluation template", "evaluation_llm_model": "evaluation model",
                     "n_raters": "raters (n)", "n_units": "units", "n_complete_units": "complete units",
                     "krippendorff_alpha_interval": "Krippendorff's alpha", "icc_2_1": "ICC(2,1)"}
STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:80em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f2f2f2}
td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{white-space:pre-wrap;background:#fafafa;border:1px solid #ddd;padding:1em;font-size:.9em}
.muted{color:#666;font-size:.85em}"""


# -- files ------------------------------------------------------------------------------------
def save_figure(figure: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    write_bytes_atomic(path, buffer.getvalue())


def page(title: str, body: str) -> str:
    """A complete, self-contained HTML document."""
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


# -- plots ------------------------------------------------------------------------------------
def empty_figure(message: str) -> Figure:
    figure = Figure(figsize=(6, 2))
    axes = figure.add_subplot()
    axes.axis("off")
    axes.text(0.5, 0.5, message, ha="center", va="center")
    return figure


def distribution_figure(tasks: pd.DataFrame, ci: pd.DataFrame, by: str) -> Figure:
    """Per evaluation template, a box plot of task scores per value of `by`, with the mean
    essay score and its bootstrap interval (from mean_score_ci) as a black bar."""
    if tasks.empty:
        return empty_figure("no valid scores yet")
    templates = sorted(tasks["evaluation_template"].unique())
    groups = sorted(tasks[by].unique())
    figure = Figure(figsize=(max(5.0, 1.2 * len(groups) + 2) * len(templates), 4.5), layout="constrained")
    for axes, template in zip(figure.subplots(1, len(templates), squeeze=False)[0], templates, strict=True):
        draw_distribution(axes, tasks[tasks["evaluation_template"] == template], ci, by, groups)
        axes.set_title(f"evaluation template: {template}")
    figure.suptitle(f"Scores by {by.replace('_', ' ')}")
    return figure


def draw_distribution(axes, tasks: pd.DataFrame, ci: pd.DataFrame, by: str, groups: list[str]) -> None:
    template = tasks["evaluation_template"].iloc[0]
    values = [tasks.loc[tasks[by] == g, "score"].to_numpy() for g in groups]
    positions = np.arange(1, len(groups) + 1)
    axes.boxplot(values, positions=positions, widths=0.5, showfliers=True)
    rows = ci[(ci["analysis_type"] == f"by_{by}") & (ci["evaluation_template"] == template)].set_index(by)
    rows = rows.reindex(groups)
    lower = (rows["mean"] - rows["ci_low"]).fillna(0).to_numpy()
    upper = (rows["ci_high"] - rows["mean"]).fillna(0).to_numpy()
    axes.errorbar(positions + 0.32, rows["mean"], yerr=[lower, upper], fmt="D", color="black", capsize=4,
                  markersize=4, label="mean essay score, 95% bootstrap CI")
    low, high = tasks["score_min"].iloc[0], tasks["score_max"].iloc[0]
    axes.set_ylim(low - 0.5, high + 0.5)
    axes.set_xticks(positions, groups, rotation=20, ha="right")
    axes.set_ylabel(f"score ({low:g}..{high:g})")
    axes.legend(loc="lower right", fontsize="small")


def heatmap_figure(tasks: pd.DataFrame) -> Figure:
    """Mean task score per evaluation model x evaluation template; colour = share of scale."""
    if tasks.empty:
        return empty_figure("no valid scores yet")
    cells = tasks.groupby(["evaluation_llm_model", "evaluation_template"]).agg(
        mean=("score", "mean"), scaled=("scaled", "mean"), n=("score", "size"))
    shares, means, counts = (cells[c].unstack("evaluation_template") for c in ("scaled", "mean", "n"))
    figure = Figure(figsize=(2.2 * shares.shape[1] + 3, 0.9 * shares.shape[0] + 2), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shares.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for (i, j), share in np.ndenumerate(shares.to_numpy(dtype=float)):
        if not np.isnan(share):
            axes.text(j, i, f"{means.iat[i, j]:.2f}\nn={int(counts.iat[i, j])}", ha="center", va="center",
                      color="black" if share > 0.6 else "white")
    axes.set_xticks(range(shares.shape[1]), shares.columns)
    axes.set_yticks(range(shares.shape[0]), shares.index)
    axes.set_xlabel("evaluation template")
    axes.set_ylabel("evaluation model")
    figure.colorbar(image, ax=axes, label="mean score as a share of the template's scale")
    axes.set_title("Mean score per evaluator and evaluation template")
    return figure


# -- HTML pages -------------------------------------------------------------------------------
def agreement_page(agreement: pd.DataFrame, cohort_id: str) -> str:
    """The judge-agreement table as a self-contained HTML page."""
    intro = ("<p>Krippendorff's alpha (interval metric) and ICC(2,1) (two-way random, absolute agreement, "
             "single rater). Units are essays; raters are the evaluation models (per evaluation template, in "
             "score points) or the evaluation templates (per evaluation model, scores as a share of each "
             "template's scale). <em>(all)</em> pools the other axis. 1 is perfect agreement, 0 chance "
             "level. Empty cells are undefined; the note says why.</p>")
    shown = agreement.assign(raters=agreement["raters"].str.replace("|", ", ", regex=False))
    table = shown.rename(columns=AGREEMENT_HEADERS).to_html(index=False, na_rep="", border=0,
                                                            float_format=lambda v: f"{v:.3f}")
    return page(f"Judge agreement: cohort {cohort_id}", intro + table)


def top_essays(tasks: pd.DataFrame, paths: Paths, n: int = TOP_ESSAYS) -> pd.DataFrame:
    """The `n` essays with the highest mean scaled task score (ties: more tasks, then id)."""
    essays = tasks.groupby(["parent_gen_id", *ESSAY_COLUMNS], sort=False).agg(
        mean_scaled=("scaled", "mean"), n_tasks=("score", "size")).reset_index()
    essays = essays.sort_values(["mean_scaled", "n_tasks", "parent_gen_id"], ascending=[False, False, True]).head(n)
    essays = essays.rename(columns={"parent_gen_id": "gen_id"}).reset_index(drop=True)
    essays["rank"] = np.arange(1, len(essays) + 1)
    essays["essay_path"] = gen_dirs(paths, "essay", essays["gen_id"]) + os.sep + "parsed.txt"
    return essays[list(TOP_ESSAY_COLUMNS)]


def essay_section(row, scores: pd.DataFrame, text: str | None) -> str:
    lines = "".join(f"<tr><td>{html.escape(s.evaluation_template)}</td><td>{html.escape(s.evaluation_llm_model)}"
                    f"</td><td class=num>{s.score:.2f}</td><td class=num>{s.score_min:g}..{s.score_max:g}</td>"
                    f"<td class=num>{s.n_evaluations}</td></tr>" for s in scores.itertuples())
    body = "(essay text missing)" if text is None else text[:ESSAY_CHARS]
    return (f"<h2 id=\"essay-{html.escape(row.gen_id)}\">{row.rank}. {html.escape(row.gen_id)}</h2>"
            f"<p class=muted>{html.escape(row.generation_model)} · {html.escape(row.generation_template)} · draft "
            f"{html.escape(row.draft_template)} · {html.escape(row.combo_id)} · {html.escape(row.essay_path)}</p>"
            "<table><tr><th>evaluation template</th><th>evaluation model</th><th>score</th><th>scale</th>"
            f"<th>replicates</th></tr>{lines}</table><pre>{html.escape(body)}</pre>"
            "<p><a href=\"#top\">back to the list</a></p>")


def top_essays_page(top: pd.DataFrame, tasks: pd.DataFrame, cohort_id: str) -> str:
    """The ranking with a link to each essay's text further down the same page."""
    if top.empty:
        return page(f"Top essays: cohort {cohort_id}", "<p>No essay has a valid score yet.</p>")
    texts = read_texts(top["essay_path"])
    rows = "".join(f"<tr><td class=num>{r.rank}</td><td><a href=\"#essay-{html.escape(r.gen_id)}\">"
                   f"{html.escape(r.gen_id)}</a></td><td>{html.escape(r.generation_model)}</td>"
                   f"<td>{html.escape(r.generation_template)}</td><td>{html.escape(r.draft_template)}</td>"
                   f"<td class=num>{r.mean_scaled:.3f}</td><td class=num>{r.n_tasks}</td></tr>"
                   for r in top.itertuples())
    table = ("<table id=top><tr><th>rank</th><th>essay</th><th>generation model</th><th>generation template</th>"
             f"<th>draft template</th><th>mean score (share of scale)</th><th>tasks</th></tr>{rows}</table>")
    by_essay = tasks.sort_values(["evaluation_template", "evaluation_llm_model"]).groupby("parent_gen_id")
    sections = "".join(essay_section(r, by_essay.get_group(r.gen_id), t)
                       for r, t in zip(top.itertuples(), texts, strict=True))
    intro = ("<p>Essays ranked by their mean score over every evaluation template and model, each score "
             "taken as a share of its template's scale (replicates averaged first). Click an essay to read it.</p>")
    return page(f"Top essays: cohort {cohort_id}", intro + table + sections)


# -- the rule's entry point ---------------------------------------------------------------------
def write_figures(paths: Paths, cohort_id: str, scales: pd.DataFrame) -> list[Path]:
    """Every COHORT_FIGURES file of one cohort, from its report tables; returns their paths."""
    report = partial(paths.cohort_report, cohort_id)
    tasks = task_scores(read_aggregated(report("parsing/aggregated_scores.csv")), scales)
    ci = read_table(report("analysis/mean_score_ci.csv"))
    agreement = read_table(report("analysis/judge_agreement.csv"))
    figures = {
        "plots/scores_by_generation_model.png": distribution_figure(tasks, ci, "generation_model"),
        "plots/scores_by_generation_template.png": distribution_figure(tasks, ci, "generation_template"),
        "plots/evaluator_template_heatmap.png": heatmap_figure(tasks),
    }
    for name, figure in figures.items():
        save_figure(figure, report(name))
    pages = {
        "analysis/judge_agreement.html": agreement_page(agreement, cohort_id),
        "summary/top_essays.html": top_essays_page(top_essays(tasks, paths), tasks, cohort_id),
    }
    for name, text in pages.items():
        write_bytes_atomic(report(name), text.encode("utf-8"))
    return [report(name) for name in COHORT_FIGURES]
