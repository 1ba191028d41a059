"""Figures of a cohort for Snakemake's HTML report (`snakemake --report`).

Built from the cohort's report tables (never the gens store). Plots use matplotlib's object
API (no pyplot, no global state), so they are safe in the threads of an in-process Snakemake
run. The builders at the end are the ones the report registry names.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from daydream.store import write_bytes_atomic

if TYPE_CHECKING:
    from pathlib import Path

    from daydream.reports.context import CohortContext

DPI = 110
MEAN_SCORE_CI = "analysis/mean_score_ci.csv"


def save_figure(figure: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    write_bytes_atomic(path, buffer.getvalue())


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


# -- the builders the report registry names ------------------------------------------------------
def scores_by_generation_model(ctx: CohortContext) -> Figure:
    return distribution_figure(ctx.tasks, ctx.table(MEAN_SCORE_CI), "generation_model")


def scores_by_generation_template(ctx: CohortContext) -> Figure:
    return distribution_figure(ctx.tasks, ctx.table(MEAN_SCORE_CI), "generation_template")


def evaluator_template_heatmap(ctx: CohortContext) -> Figure:
    return heatmap_figure(ctx.tasks)
