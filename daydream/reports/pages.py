"""HTML pages of a cohort for Snakemake's HTML report, rendered from the Jinja2 templates in
`daydream/reports/templates/` (autoescaped). Pages are self-contained: inline CSS, no script,
no external resource, links only to anchors inside the page."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jinja2
import numpy as np
import pandas as pd

from daydream import stages
from daydream.columns import ESSAY_COLUMNS, TOP_ESSAY_COLUMNS
from daydream.paths import Paths
from daydream.reports.io import gen_dirs
from daydream.reports.scores import read_texts

if TYPE_CHECKING:
    from daydream.reports.context import CohortContext

TOP_ESSAYS = 10
ESSAY_CHARS = 20_000
JUDGE_AGREEMENT = "analysis/judge_agreement.csv"
AGREEMENT_HEADERS = {"evaluation_template": "evaluation template", "evaluation_llm_model": "evaluation model",
                     "n_raters": "raters (n)", "n_units": "units", "n_complete_units": "complete units",
                     "krippendorff_alpha_interval": "Krippendorff's alpha", "icc_2_1": "ICC(2,1)"}
_ENV = jinja2.Environment(loader=jinja2.PackageLoader("daydream.reports", "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render_page(template: str, **variables: object) -> str:
    return _ENV.get_template(template).render(**variables)


def _cell(value: object) -> dict:
    """A table cell: numbers to three decimals (empty when undefined), text as it is."""
    if isinstance(value, float | np.floating):
        return {"text": "" if math.isnan(value) else f"{value:.3f}", "number": True}
    return {"text": str(value), "number": isinstance(value, int | np.integer)}


def agreement_page(agreement: pd.DataFrame, cohort_id: str) -> str:
    """The judge-agreement table as a self-contained HTML page."""
    shown = agreement.assign(raters=agreement["raters"].str.replace("|", ", ", regex=False))
    rows = [[_cell(v) for v in row] for row in shown.itertuples(index=False)]
    headers = [AGREEMENT_HEADERS.get(c, c) for c in shown.columns]
    return render_page("judge_agreement.html", title=f"Judge agreement: cohort {cohort_id}", headers=headers, rows=rows)


def top_essays(tasks: pd.DataFrame, paths: Paths, n: int = TOP_ESSAYS) -> pd.DataFrame:
    """The `n` essays with the highest mean scaled task score (ties: more tasks, then id)."""
    essays = tasks.groupby(["parent_gen_id", *ESSAY_COLUMNS], sort=False).agg(
        mean_scaled=("scaled", "mean"), n_tasks=("score", "size")).reset_index()
    essays = essays.sort_values(["mean_scaled", "n_tasks", "parent_gen_id"], ascending=[False, False, True]).head(n)
    essays = essays.rename(columns={"parent_gen_id": "gen_id"}).reset_index(drop=True)
    essays["rank"] = np.arange(1, len(essays) + 1)
    essays["essay_path"] = gen_dirs(paths, stages.EVALUATED.name, essays["gen_id"], "parsed.txt")
    return essays[list(TOP_ESSAY_COLUMNS)]


def top_essays_page(top: pd.DataFrame, tasks: pd.DataFrame, cohort_id: str) -> str:
    """The ranking with a link to each essay's text further down the same page."""
    by_essay = tasks.sort_values(["evaluation_template", "evaluation_llm_model"]).groupby("parent_gen_id")
    texts = read_texts(top["essay_path"]) if not top.empty else []
    essays = [{**row._asdict(), "scores": list(by_essay.get_group(row.gen_id).itertuples()),
               "text": "(essay text missing)" if text is None else text[:ESSAY_CHARS]}
              for row, text in zip(top.itertuples(index=False), texts, strict=True)]
    return render_page("top_essays.html", title=f"Top essays: cohort {cohort_id}", essays=essays)


# -- the builders the report registry names ------------------------------------------------------
def judge_agreement_page(ctx: CohortContext) -> str:
    return agreement_page(ctx.table(JUDGE_AGREEMENT), ctx.cohort_id)


def top_essays_html(ctx: CohortContext) -> str:
    return top_essays_page(top_essays(ctx.tasks, ctx.paths), ctx.tasks, ctx.cohort_id)
