"""Paired comparisons for the site's Compare page: is generation template (or model, or draft
template) A better than B on the same concept combinations?

For one axis and one pair (A, B), per judge (evaluation model x template) the unit is a combo
that has essays under both: its score under A is the mean task score (replicates averaged) of
its essays made with A, likewise B, and the paired difference is A - B. The mean difference
comes with a percentile bootstrap interval over combos (`daydream.stats.bootstrap_mean_ci`).
A last row per pair pools the judges, each task score as a share of its template's scale.
"""

from __future__ import annotations

import itertools
import math

import pandas as pd

AXES = {"generation_template": "essay template", "generation_model": "generation model",
        "draft_template": "draft template"}
ALL_JUDGES = "all judges (share of scale)"
CONFIDENCE = 0.95


def _pair_row(per_combo: pd.DataFrame, a: str, b: str, judge: str, scale: str) -> dict:
    # scipy (daydream.stats) only when a site is built: imported at the top, it cost every
    # Snakemake start (rules/common.smk imports daydream.site) most of its import time and ~40 MB
    from daydream.stats import bootstrap_mean_ci

    shared = per_combo[[a, b]].dropna()
    diff = (shared[a] - shared[b]).to_numpy(dtype=float)
    mean, low, high = bootstrap_mean_ci(diff, confidence=CONFIDENCE) if len(diff) else (math.nan,) * 3
    return {"judge": judge, "scale": scale, "n_combos": len(shared), "mean_a": shared[a].mean(),
            "mean_b": shared[b].mean(), "diff": mean, "ci_low": low, "ci_high": high,
            "verdict": _verdict(len(diff), low, high)}


def _verdict(n: int, low: float, high: float) -> str:
    if n < 2 or math.isnan(low):
        return "too few shared combos"
    if low > 0:
        return "A higher"
    if high < 0:
        return "B higher"
    return "no clear difference"


def paired_comparisons(tasks: pd.DataFrame) -> list[dict]:
    """Per axis of `AXES` with at least two values, per pair of values: the rows of
    `_pair_row` for each judge and for all judges pooled (share of scale). `tasks` has the
    columns of `reports.scores.task_scores`."""
    out = []
    for axis, label in AXES.items():
        values = sorted(set(tasks[axis].astype(str)) - {""})
        if len(values) < 2:
            continue
        judges = tasks["evaluation_llm_model"].astype(str) + " · " + tasks["evaluation_template"].astype(str)
        by_judge = (tasks.assign(judge=judges).groupby(["judge", "combo_id", axis])["score"].mean()
                    .unstack(axis))
        pooled = tasks.groupby(["combo_id", axis])["scaled"].mean().unstack(axis)
        for a, b in itertools.combinations(values, 2):
            rows = [_pair_row(group.droplevel("judge"), a, b, judge, "points")
                    for judge, group in by_judge.groupby(level="judge", sort=True)
                    if a in group.columns and b in group.columns]
            rows.append(_pair_row(pooled, a, b, ALL_JUDGES, "share"))
            out.append({"axis": axis, "label": label, "a": a, "b": b, "rows": rows})
    return out
