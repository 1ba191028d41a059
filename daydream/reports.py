"""Cohort reports (SPEC §9), built with pandas from one read of the membership and scores.

`aggregated_scores` reads each evaluation's parsed score once and joins the lineage
(evaluation -> essay -> draft) from membership with vectorised merges; a missing or
unparsable score becomes a row with `error` filled, never a crash.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from daydream import gens
from daydream.experiment import Experiment
from daydream.membership import MembershipIndex
from daydream.paths import Paths

COHORT_REPORTS = ("parsing/aggregated_scores.csv", "summary/generation_scores.csv")
AGGREGATED_COLUMNS = [
    "gen_id", "parent_gen_id", "evaluation_template", "evaluation_llm_model", "score", "error",
    "combo_id", "draft_template", "generation_template", "generation_model", "cohort_id",
    "replicate", "paths",
]
ESSAY_KEYS = ["parent_gen_id", "combo_id", "draft_template", "generation_template", "generation_model"]


def read_score(path: Path) -> tuple[float | None, str]:
    """(score, error) from an evaluation's parsed.txt."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None, "missing parsed.txt"
    try:
        return float(text), ""
    except ValueError:
        return None, f"not a score: {text[:40]!r}"


def aggregated_scores(paths: Paths, membership: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluation of the membership, with its score and its essay's lineage."""
    evals = membership[membership["stage"] == "evaluation"]
    essays = membership[membership["stage"] == "essay"][["gen_id", "parent_gen_id", "template_id", "llm_model_id"]]
    drafts = membership[membership["stage"] == "draft"][["gen_id", "template_id"]]
    essays = essays.rename(columns={"gen_id": "essay_id", "parent_gen_id": "draft_id",
                                    "template_id": "generation_template", "llm_model_id": "generation_model"})
    drafts = drafts.rename(columns={"gen_id": "draft_id", "template_id": "draft_template"})
    table = (evals.rename(columns={"template_id": "evaluation_template", "llm_model_id": "evaluation_llm_model"})
             .merge(essays, left_on="parent_gen_id", right_on="essay_id", how="left")
             .merge(drafts, on="draft_id", how="left"))
    folders = [paths.gen_dir("evaluation", g) for g in table["gen_id"]]
    scores = [read_score(folder / "parsed.txt") for folder in folders]
    table["score"] = [s for s, _ in scores]
    table["error"] = [e for _, e in scores]
    table["paths"] = [str(f) for f in folders]
    return table[AGGREGATED_COLUMNS].reset_index(drop=True)


def generation_scores(aggregated: pd.DataFrame) -> pd.DataFrame:
    """One row per essay; per `<evaluation_model>_<evaluation_template>`: mean, min, max, n
    over replicates, plus `sum` of the means."""
    scored = aggregated.dropna(subset=["score"]).copy()
    scored["evaluator"] = scored["evaluation_llm_model"] + "_" + scored["evaluation_template"]
    stats = scored.pivot_table(index=ESSAY_KEYS, columns="evaluator", values="score",
                               aggfunc=["mean", "min", "max", "count"])
    means = stats["mean"]
    wide = pd.concat({"": means, "_min": stats["min"], "_max": stats["max"], "_n": stats["count"]}, axis=1)
    wide.columns = [f"{evaluator}{suffix}" for suffix, evaluator in wide.columns]
    ordered = [f"{e}{s}" for e in means.columns for s in ("", "_min", "_max", "_n")]
    wide = wide[ordered]
    wide["sum"] = means.sum(axis=1)
    return wide.reset_index().rename(columns={"parent_gen_id": "gen_id"})


def write_cohort_reports(paths: Paths, cohort_id: str, experiment: Experiment,
                         log_path: str | None = None) -> list[Path]:
    """Every report of one cohort, from its membership and the gens store."""
    membership = pd.read_csv(paths.membership_csv(cohort_id), dtype=str, keep_default_na=False)
    aggregated = aggregated_scores(paths, membership)
    outputs = {
        paths.cohort_report(cohort_id, "parsing/aggregated_scores.csv"): aggregated,
        paths.cohort_report(cohort_id, "summary/generation_scores.csv"): generation_scores(aggregated),
    }
    for path, frame in outputs.items():
        gens.write_text_atomic(path, frame.to_csv(index=False))
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text(f"{cohort_id}: {len(aggregated)} evaluations, "
                                  f"{aggregated['error'].ne('').sum()} without a score\n", encoding="utf-8")
    return list(outputs)


def cohort_report_inputs(paths: Paths, membership: MembershipIndex, cohort_id: str) -> dict[str, object]:
    """What a cohort's reports are built from: every evaluation's score. (The membership file
    is read, not declared: a declared checkpoint output would make Snakemake 9 re-plan this
    job and drop the needrun of its missing inputs; see rules/common.smk.)"""
    evaluations = membership.members(cohort_id, "evaluation")
    return {"evaluations": [str(paths.parsed_path("evaluation", m.gen_id)) for m in evaluations]}
