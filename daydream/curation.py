"""Curation as the original pipeline did it: rank essays by their judges' scores, pick some by
hand, and evaluate the picked ones as a curated cohort.

Step 1, `rank_essays` (`scripts/select_essays.py`): from an aggregated scores table (SPEC §9:
the cross-experiment `aggregated_scores.csv`, or one cohort's), take the evaluations of one
evaluation template by a set of judge models; per essay and judge the highest score over the
replicates ("max per model"), then per essay `avg_score` (the mean of those over the judges
that scored it), `max_score` (the highest of them) and `models_covered`. Essays are ranked by
`avg_score` (by `max_score` with `max_only`), ties by the other score, then by gen_id. Which are
`selected`: the first `top_n`, or those whose ranking score lies in `span` (low, high), or with
`max_only` alone those reaching the highest `max_score`. The candidate CSV lists every ranked
essay (CANDIDATE_COLUMNS, then `score__<model>` per judge), so `selected` can be edited by hand.

Step 2, `curated_cohort` (`scripts/curated_cohort.py`): the selected rows become a cohort file
with an `essays:` list (in rank order) and an `evaluation:` block of the same template and
judges. Its evaluations have the ids of the existing ones (SPEC §4), so those are reused and
only missing ones are made.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from daydream.errors import UserError

CANDIDATE_COLUMNS = ("selection_rank", "selected", "essay_gen_id", "avg_score", "max_score", "models_covered")
SCORE_PREFIX = "score__"
_TRUE, _FALSE = ("true", "1", "yes", "x", "y"), ("false", "0", "no", "", "n")


class CurationError(ValueError, UserError):
    """A selection that cannot be made: the message names the file or option and the fix."""


@dataclass(frozen=True)
class Selection:
    """How to pick: one of `top_n`, `span` (low, high), or `max_only` (which may combine with
    either to rank by max_score)."""

    top_n: int | None = None
    span: tuple[float, float] | None = None
    max_only: bool = False


def _scores(table: Path, template: str, models: list[str] | None) -> dict[str, dict[str, float]]:
    """essay gen_id -> judge model -> highest score over its replicates."""
    if not table.exists():
        raise CurationError(f"{table} not found: build it with `snakemake cross_experiment_tables` (or a cohort's "
                            "reports), or give another table")
    best: dict[str, dict[str, float]] = {}
    with table.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["evaluation_template"] != template or (models and row["evaluation_llm_model"] not in models):
                continue
            try:
                score = float(row["score"])
            except ValueError:
                continue  # a failed evaluation (its `error` says why) has no score
            if math.isnan(score) or row.get("error"):
                continue
            judges = best.setdefault(row["parent_gen_id"], {})
            judges[row["evaluation_llm_model"]] = max(score, judges.get(row["evaluation_llm_model"], score))
    return best


def rank_essays(table: Path, template: str, models: list[str] | None, selection: Selection) -> list[dict]:
    """The candidate rows (module docstring), ranked, `selected` set by `selection`."""
    best = _scores(table, template, models)
    if not best:
        raise CurationError(f"{table}: no scored evaluation of template {template!r}"
                            + (f" by {', '.join(models)}" if models else "") + "; check the template and model ids")
    judges = list(models) if models else sorted({m for scores in best.values() for m in scores})
    rows = []
    for essay, scores in best.items():
        values = list(scores.values())
        rows.append({"essay_gen_id": essay, "avg_score": round(sum(values) / len(values), 4),
                     "max_score": max(values), "models_covered": len(values),
                     **{SCORE_PREFIX + m: scores.get(m, "") for m in judges}})
    first, second = ("max_score", "avg_score") if selection.max_only else ("avg_score", "max_score")
    rows.sort(key=lambda r: (-r[first], -r[second], r["essay_gen_id"]))
    top = rows[0]["max_score"]
    for rank, row in enumerate(rows, start=1):
        row["selection_rank"] = rank
        row["selected"] = _selected(rank, row[first], selection, top)
    return [{**{c: row[c] for c in CANDIDATE_COLUMNS}, **{k: v for k, v in row.items() if k.startswith(SCORE_PREFIX)}}
            for row in rows]


def _selected(rank: int, score: float, selection: Selection, top: float) -> bool:
    if selection.top_n is not None:
        return rank <= selection.top_n
    if selection.span is not None:
        low, high = selection.span
        return low <= score <= high
    return score == top  # max_only alone: the essays some judge gave the highest score


def write_candidates(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({**row, "selected": str(row["selected"]).lower()} for row in rows)
    return path


def selected_essays(path: Path) -> tuple[list[str], list[str]]:
    """The selected essay gen_ids of an (edited) candidate CSV, in selection_rank order, and
    the judge models its `score__<model>` columns name."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("selection_rank", "selected", "essay_gen_id") if c not in (reader.fieldnames or [])]
        if missing:
            raise CurationError(f"{path}: missing column(s) {', '.join(missing)}; the candidate CSV starts with "
                                f"{', '.join(CANDIDATE_COLUMNS)}")
        models = [c.removeprefix(SCORE_PREFIX) for c in reader.fieldnames if c.startswith(SCORE_PREFIX)]
        chosen = []
        for line, row in enumerate(reader, start=2):
            flag = row["selected"].strip().lower()
            if flag not in _TRUE + _FALSE:
                raise CurationError(f"{path} line {line}: selected is {row['selected']!r}; write true or false")
            if flag in _TRUE:
                rank = row["selection_rank"].strip()
                chosen.append((float(rank) if rank else math.inf, line, row["essay_gen_id"].strip()))
    essays = list(dict.fromkeys(essay for _, _, essay in sorted(chosen)))
    if not essays:
        raise CurationError(f"{path}: no row is selected; set selected to true on the essays to keep")
    return essays, models


def curated_cohort(candidates: Path, template: str, models: list[str] | None = None, replicates: int = 1) -> dict:
    """The cohort definition of the selected essays: `essays:` and one `evaluation:` block."""
    essays, judges = selected_essays(candidates)
    judges = list(models) if models else judges
    if not judges:
        raise CurationError(f"{candidates}: no score__<model> column; name the judge models")
    return {"essays": essays, "evaluation": {"templates": [template], "models": judges, "replicates": replicates}}


def write_cohort_file(cohort: dict, path: Path, source: Path, *, overwrite: bool = False) -> Path:
    if path.exists() and not overwrite:
        raise CurationError(f"{path} exists; choose another cohort id, or replace it on purpose (--force)")
    header = f"# Curated from {source} (daydream.curation): the selected essays, judged again as before.\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(cohort, sort_keys=False), encoding="utf-8")
    return path
