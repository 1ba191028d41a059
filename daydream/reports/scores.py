"""Scores shared by every report: read each evaluation's score once, check it against its
template's scale, and average replicates into task scores.

A score's scale comes from `evaluation_templates.csv` (`score_min`, `score_max`, default 0..9);
`scaled` maps a score to 0..1 of its own template's scale so templates with different scales
can be compared. Everything after the file reads is vectorised pandas.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from daydream import integrity, stages, store
from daydream.columns import AGGREGATED_COLUMNS, DEFAULT_SCORE_MAX, DEFAULT_SCORE_MIN, ESSAY_COLUMNS, TASK_KEYS
from daydream.paths import Paths
from daydream.reports.concepts import ConceptNames
from daydream.reports.io import gen_dirs

log = logging.getLogger(__name__)

MISSING_SCORE = ("missing parsed.txt: the evaluation has not run or failed; see "
                 "7_reporting/llm_errors.jsonl and parse_errors.jsonl, then rerun snakemake")
REPARSE = "delete that parsed.txt and rerun snakemake to parse the response again"
READ_THREADS = 8
TOLERANCE = 1e-9
# "High" and "low" as shares of a template's scale: on 0..10 they are the original
# pipeline's >= 8 and <= 3; on 0..9, >= 7.2 and <= 2.7.
HIGH_SHARE = 0.8
LOW_SHARE = 0.3


def _read_optional(path: Path | str) -> str | None:
    """A file's UTF-8 text, None when it does not exist (raw fd reads: ~2x faster than open())."""
    try:
        data = store.read_bytes(path)
    except FileNotFoundError:
        return None
    return data.decode("utf-8", errors="replace")


def _read_chunk(files: Sequence[Path | str]) -> list[str | None]:
    return [_read_optional(f) for f in files]


def read_texts(files: Sequence[Path | str]) -> list[str | None]:
    """The text of each file in order, each read exactly once; None where a file is absent.

    Reads run in `READ_THREADS` threads over contiguous chunks (file I/O releases the GIL).
    """
    return in_chunks(_read_chunk, list(files))


def in_chunks(per_chunk, items: list) -> list:
    """`per_chunk` over `READ_THREADS` contiguous chunks of `items` in as many threads (file I/O
    and stats release the GIL), its results joined in the items' order."""
    size = max(1, -(-len(items) // READ_THREADS))
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        return [result for chunk in pool.map(per_chunk, chunks) for result in chunk]


def scales_from_templates(templates: Mapping[str, object]) -> pd.DataFrame:
    """`score_min`, `score_max` indexed by evaluation template id, from Template records."""
    rows = {tid: (float(t.score_min), float(t.score_max)) for tid, t in templates.items()}
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=["score_min", "score_max"])
    return frame.rename_axis("evaluation_template").astype(float)


def attach_scales(frame: pd.DataFrame, scales: pd.DataFrame, *, warn: bool = False) -> pd.DataFrame:
    """`frame` plus `score_min`, `score_max`, `scale_known` and `scaled` (0..1 of the scale).

    A template missing from `scales` gets the default 0..9 scale and `scale_known` False; with
    `warn`, one warning names those templates and the file to fix.
    """
    out = frame.copy()
    templates = out["evaluation_template"]
    known = templates.isin(scales.index)
    unknown = sorted(set(templates[~known].dropna().astype(str)) - {""})
    if unknown and warn:
        log.warning("evaluation template(s) %s not in evaluation_templates.csv: scored on the default "
                    "%g..%g scale; add them with score_min,score_max to fix", ", ".join(unknown),
                    DEFAULT_SCORE_MIN, DEFAULT_SCORE_MAX)
    out["score_min"] = templates.map(scales["score_min"]).fillna(DEFAULT_SCORE_MIN).astype(float)
    out["score_max"] = templates.map(scales["score_max"]).fillna(DEFAULT_SCORE_MAX).astype(float)
    out["scale_known"] = known.to_numpy()
    out["scaled"] = (out["score"] - out["score_min"]) / (out["score_max"] - out["score_min"])
    return out


def parse_scores(texts: Sequence[str | None], templates: pd.Series, scales: pd.DataFrame) -> pd.DataFrame:
    """`score` (float or NaN) and `error` ("" when valid) for each parsed.txt text.

    The score is the text's last non-empty line (a parsed.txt of the original pipeline may have
    other lines before it). Errors: a missing file, a last line that is not a finite number, or a
    score outside its (known) template's scale. Vectorised: no per-row Python; messages are built for the
    failing rows only.
    """
    text = pd.Series(list(texts), index=templates.index, dtype=object)
    missing = text.isna()
    # the score is the last non-empty line: ours hold only it; the original pipeline's may hold
    # other text before it (its reports read the last line too)
    stripped = text.fillna("").astype(str).str.strip().str.rsplit("\n", n=1).str[-1].str.strip()
    score = pd.to_numeric(stripped, errors="coerce").astype(float)
    score[~np.isfinite(score)] = np.nan
    scaled = attach_scales(pd.DataFrame({"evaluation_template": templates, "score": score}), scales, warn=True)
    outside = scaled["scale_known"] & ((score < scaled["score_min"] - TOLERANCE)
                                       | (score > scaled["score_max"] + TOLERANCE))
    error = pd.Series("", index=templates.index, dtype=object)
    error[missing] = MISSING_SCORE
    unparsable = score.isna() & ~missing
    error[unparsable] = "parsed.txt is not a score: '" + stripped[unparsable].str.slice(0, 40) + "'; " + REPARSE
    bad = scaled[outside]
    error[outside] = ("score " + bad["score"].astype(str) + " is outside the scale " + bad["score_min"].astype(str)
                      + ".." + bad["score_max"].astype(str) + " of " + bad["evaluation_template"].astype(str)
                      + "; fix score_min/score_max in evaluation_templates.csv, or " + REPARSE)
    score[error != ""] = np.nan
    return pd.DataFrame({"score": score, "error": error.astype(str)}, index=templates.index)


def valid_rows(aggregated: pd.DataFrame) -> pd.DataFrame:
    """The evaluations that have a valid score (empty `error`, non-NaN `score`)."""
    ok = aggregated["score"].notna() & aggregated["error"].fillna("").astype(str).eq("")
    return aggregated[ok]


def essay_lineage(aggregated: pd.DataFrame) -> pd.DataFrame:
    """One row per essay evaluated in `aggregated`, indexed by essay id, with its lineage."""
    essays = aggregated.drop_duplicates("parent_gen_id").set_index("parent_gen_id")
    return essays[list(ESSAY_COLUMNS)].fillna("").rename_axis("gen_id").sort_index()


def task_scores(aggregated: pd.DataFrame, scales: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluation task (essay, evaluation template, evaluation model) with a valid
    score: `score` = mean over its replicates, `n_evaluations`, the essay's lineage, the scale
    columns of `attach_scales`, and flags `is_perfect` (= the template's maximum), `is_high`
    (scaled >= `HIGH_SHARE`) and `is_low` (scaled <= `LOW_SHARE`)."""
    keys = [*TASK_KEYS, *ESSAY_COLUMNS]
    valid = valid_rows(aggregated)[[*keys, "score"]].copy()
    valid[list(ESSAY_COLUMNS)] = valid[list(ESSAY_COLUMNS)].fillna("")
    tasks = (valid.groupby(keys, sort=True, dropna=False)["score"]
             .agg(score="mean", n_evaluations="size").reset_index())
    tasks = attach_scales(tasks, scales)
    tasks["is_perfect"] = np.isclose(tasks["score"], tasks["score_max"], rtol=0, atol=TOLERANCE)
    tasks["is_high"] = tasks["scaled"] >= HIGH_SHARE - TOLERANCE
    tasks["is_low"] = tasks["scaled"] <= LOW_SHARE + TOLERANCE
    return tasks


# -- one row per evaluation ----------------------------------------------------------------------
# The scored stage (the reports' "evaluation") and the stage it judges (their "essay").
SCORED, GENERATION = stages.SCORED.name, stages.EVALUATED.name


def membership_lineage(membership: pd.DataFrame) -> pd.DataFrame:
    """The membership's evaluations with the lineage columns of every ancestor (the stage
    registry's `lineage_columns`), joined up the chain evaluation -> essay -> ... -> root."""
    stage = membership["stage"]
    chain = stages.lineage(SCORED)
    table = membership[stage == SCORED].rename(columns=dict(chain[0].lineage_columns))
    link = "parent_gen_id"
    for ancestor in chain[1:]:
        columns = dict(ancestor.lineage_columns)
        own, up = f"_{ancestor.name}_gen_id", f"_{ancestor.name}_parent_gen_id"
        part = membership.loc[stage == ancestor.name, ["gen_id", "parent_gen_id", *columns]]
        part = part.rename(columns={"gen_id": own, "parent_gen_id": up, **columns})
        table, link = table.merge(part, left_on=link, right_on=own, how="left"), up
    return table.reset_index(drop=True)


def aggregated_scores(paths: Paths, membership: pd.DataFrame, scales: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluation of `membership` (AGGREGATED_COLUMNS): its score, or an `error`
    naming why there is none, and its essay's lineage. Each parsed.txt is read once."""
    table = membership_lineage(membership)
    table["paths"] = gen_dirs(paths, SCORED, table["gen_id"])
    texts = read_texts(paths.gen_dir_texts(SCORED, table["gen_id"], "parsed.txt"))
    table[["score", "error"]] = parse_scores(texts, table["evaluation_template"], scales)
    table["flags"] = integrity.evaluation_flags(paths, table["gen_id"], integrity.stale_reasons(paths))
    table["concepts"] = ConceptNames(paths).column(table["combo_id"])
    return table[list(AGGREGATED_COLUMNS)]


def concepts_by_combo(aggregated: pd.DataFrame, combo_ids: pd.Series) -> pd.Series:
    """The `concepts` cell of each of `combo_ids`, as the aggregated table has it ("" where it
    has none)."""
    known: dict[str, str] = {}
    if "concepts" in aggregated:
        pairs = aggregated[["combo_id", "concepts"]].fillna("").astype(str).drop_duplicates("combo_id")
        known = dict(zip(pairs["combo_id"], pairs["concepts"], strict=True))
    return pd.Series([known.get(str(c), "") for c in combo_ids], index=combo_ids.index, dtype=object)


def evaluator_mean_scaled(aggregated: pd.DataFrame, scales: pd.DataFrame, keys: list[str],
                          index: pd.Index) -> pd.Series:
    """Per group of `keys` (on `index`): the mean over evaluators (evaluation model x template)
    of each evaluator's mean valid score as a share of its template's scale (0..1). Unlike a sum
    of means it never adds scores on different scales; NaN where a group has no valid score."""
    valid = attach_scales(valid_rows(aggregated), scales)
    if valid.empty:
        return pd.Series(np.nan, index=index, dtype=float)
    per_evaluator = valid.groupby([*keys, "evaluation_llm_model", "evaluation_template"])["scaled"].mean()
    means = per_evaluator.groupby(level=list(range(len(keys)))).mean()
    return means.reindex(index)
