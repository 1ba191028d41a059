"""The optional human ratings of essays, `data/1_raw/human_scores.csv` (HUMAN_SCORE_COLUMNS).

A researcher rates some essays by hand under an evaluation template's rubric; the judge
reports (`daydream.reports.judges`) compare the judges with them and correct judge-based means
with them. The file is read strictly like every definition file (`daydream.definitions`:
encoding, header, field counts), and each cell is checked: every cell filled, the essay a
document of the essay stage in the gens store, the template one of `evaluation_templates.csv`,
the score a number on that template's scale, each (essay, template, rater) rated once. All
problems are collected and raised together, each with the file, the line and the fix.
"""

from __future__ import annotations

import math

import pandas as pd

from daydream import stages
from daydream.columns import HUMAN_SCORE_COLUMNS
from daydream.definitions import read_table
from daydream.experiment import ExperimentError
from daydream.paths import Paths

ESSAY_STAGE = stages.SCORED.parent


def _score(cell: str, where: str, template: str, scales: pd.DataFrame, problems: list[str]) -> float | None:
    try:
        score = float(cell)
    except ValueError:
        problems.append(f"{where}: score {cell!r} is not a number; write the rating as a number on the "
                        f"scale of {template}")
        return None
    if not math.isfinite(score):
        problems.append(f"{where}: score {cell!r} is not a finite number; write the rating as a number")
        return None
    if template in scales.index:
        low, high = scales.loc[template, "score_min"], scales.loc[template, "score_max"]
        if not low <= score <= high:
            problems.append(f"{where}: score {cell} is outside the scale {low:g}..{high:g} of {template}; "
                            "rate on the template's scale (evaluation_templates.csv score_min/score_max)")
            return None
    return score


def _row_problems(row, where: str, scales: pd.DataFrame, problems: list[str]) -> float | None:
    empty = [c for c in HUMAN_SCORE_COLUMNS if not row[c]]
    if empty:
        problems.append(f"{where}: empty {', '.join(empty)}; every rating needs an essay, a template, "
                        "a rater and a score")
        return None
    template = row["evaluation_template"]
    if template not in scales.index:
        problems.append(f"{where}: unknown evaluation template {template!r}; use one of "
                        f"{', '.join(map(str, scales.index))} (evaluation_templates.csv)")
    return _score(row["score"], where, template, scales, problems)


def read_human_scores(paths: Paths, scales: pd.DataFrame, problems: list[str]) -> pd.DataFrame | None:
    """The ratings (HUMAN_SCORE_COLUMNS, `score` float), or None when the file does not exist.
    `scales` is `score_min`, `score_max` by evaluation template; every problem goes to `problems`
    (the rows with one are left out)."""
    path = paths.human_scores_csv
    if not path.exists():
        return None
    table = read_table(path, HUMAN_SCORE_COLUMNS, (), problems)
    rows, seen = [], {}
    for row in table.rows:
        where = f"{path} line {row.line}"
        score = _row_problems(row, where, scales, problems)
        key = (row["essay_gen_id"], row["evaluation_template"], row["rater"])
        if key in seen:
            problems.append(f"{where}: rater {key[2]!r} already rated essay {key[0]} under {key[1]} on line "
                            f"{seen[key]}; keep one rating (or give the second rater another name)")
            continue
        seen[key] = row.line
        if score is not None:
            rows.append({**row, "score": score, "line": row.line})
    ratings = pd.DataFrame(rows, columns=[*HUMAN_SCORE_COLUMNS, "line"])
    for essay_id, lines in ratings.groupby("essay_gen_id", sort=True)["line"]:
        if not paths.gen_dir(ESSAY_STAGE, essay_id).is_dir():
            where = f"line {lines.iloc[0]}" if len(lines) == 1 else f"lines {', '.join(map(str, lines))}"
            problems.append(f"{path} {where}: unknown essay {essay_id!r}: "
                            f"{paths.gen_dir(ESSAY_STAGE, essay_id)} does not exist; use the gen_id of an essay "
                            "(parent_gen_id in aggregated_scores.csv)")
    return ratings[list(HUMAN_SCORE_COLUMNS)].astype({"score": float})


def load_human_scores(paths: Paths, scales: pd.DataFrame) -> pd.DataFrame | None:
    """`read_human_scores`, raising ExperimentError listing every problem of the file."""
    problems: list[str] = []
    ratings = read_human_scores(paths, scales, problems)
    if problems:
        raise ExperimentError(problems)
    return ratings
