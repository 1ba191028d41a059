"""Cross-experiment tables (SPEC §9), rebuilt from the gens store itself, across all cohorts.

`cross_aggregated` lists every folder under `gens/evaluation/` (or only the evaluations of one
cohort's membership), reads each evaluation's metadata.json and parsed.txt once, then the
metadata.json of just the essays and drafts they descend from, and joins them with vectorised
merges. A gens store of the original pipeline is read as it is (`read_metadata`): its keys are
renamed by `store.normalise_metadata`, its raw_metadata.json / parsed_metadata.json are read
where metadata.json is missing or short, and an essay without combo_id takes its draft's. The result has the columns of a cohort's `parsing/aggregated_scores.csv`.
`evaluation_scores_by_template_model` pivots it: one row per essay, one column per
`<evaluation_template>__<evaluation_model>` (mean over replicates).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from daydream import integrity, stages, store
from daydream.columns import AGGREGATED_COLUMNS, CROSS_PIVOT_INDEX, CROSS_PIVOT_SEPARATOR, ESSAY_COLUMNS
from daydream.experiment import load_templates
from daydream.paths import ORIGINAL_METADATA_FILES, Paths
from daydream.reports.concepts import ConceptNames, insert_concepts
from daydream.reports.io import gen_dirs, read_aggregated, read_membership
from daydream.reports.scores import (
    GENERATION,
    SCORED,
    concepts_by_combo,
    essay_lineage,
    evaluator_mean_scaled,
    parse_scores,
    read_texts,
    scales_from_templates,
    valid_rows,
)

log = logging.getLogger(__name__)


META_KEYS = ("template_id", "model_id", "parent_gen_id", "combo_id", "replicate", "cohort_id")
# The metadata key of each membership column a stage's `lineage_columns` name.
META_OF = {"template_id": "template_id", "llm_model_id": "model_id"}


def list_gen_ids(paths: Paths, stage: str) -> list[str]:
    """Every document folder of a stage in the gens store, sorted (hidden entries skipped)."""
    root = paths.stage_dir(stage)
    if not root.is_dir():
        return []
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _metadata_record(text: str | None, path: str) -> dict | None:
    if text is None:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        log.warning("%s is not valid JSON (%s): its lineage columns are empty; regenerate the document "
                    "or fix the file", path, error)
        return None
    return record if isinstance(record, dict) else None


def read_metadata(paths: Paths, stage: str, gen_ids: list[str]) -> pd.DataFrame:
    """META_KEYS of each document's metadata indexed by gen_id, in our keys also for documents of
    the original pipeline: metadata.json is read once and the original's key names
    (`store.original_aliases`) are taken over column by column; only where metadata.json is
    missing or lacks a key that the original kept in raw_metadata.json (replicate, model, cohort)
    are its raw_metadata.json and parsed_metadata.json read too, and merged by
    `store.normalise_metadata`. Documents without any get empty cells and `has_metadata` False."""
    files = paths.gen_dir_texts(stage, gen_ids, "metadata.json")
    records = [_metadata_record(t, f) for t, f in zip(read_texts(files), files, strict=True)]
    aliases = {key: ours for key, ours in store.original_aliases(stage).items() if ours in META_KEYS}
    columns = [*META_KEYS, *aliases]
    frame = pd.DataFrame.from_records([r or {} for r in records], columns=columns).reindex(range(len(gen_ids)))
    frame = frame.astype(object)
    for original, ours in aliases.items():
        frame[ours] = frame[ours].where(frame[ours].notna(), frame[original])
    frame = frame[list(META_KEYS)]
    has_metadata = np.array([r is not None for r in records], dtype=bool)
    incomplete = np.flatnonzero(frame[["template_id", "model_id", "replicate", "cohort_id"]].isna().any(axis=1))
    side = [file for i in incomplete for name in ORIGINAL_METADATA_FILES
            for file in paths.gen_dir_texts(stage, [gen_ids[i]], name)]
    side_records = [_metadata_record(t, f) for t, f in zip(read_texts(side), side, strict=True)]
    for n, i in enumerate(incomplete):
        raw, parsed = side_records[2 * n], side_records[2 * n + 1]
        if records[i] is not None or raw is not None or parsed is not None:
            merged = store.normalise_metadata(stage, records[i], raw, parsed)
            frame.iloc[i] = [merged.get(key) for key in META_KEYS]
            has_metadata[i] = True
    frame = frame.where(frame.notna(), "").astype(str)
    frame.index = pd.Index(gen_ids, name="gen_id", dtype=str)
    frame["has_metadata"] = has_metadata
    return frame


def evaluation_template_scales(paths: Paths) -> pd.DataFrame:
    """Score scales of the evaluation templates in `1_raw/evaluation_templates.csv`."""
    problems: list[str] = []
    templates = load_templates(paths, SCORED, problems)
    for problem in problems:
        log.warning("%s (templates without a readable scale use the default)", problem)
    return scales_from_templates(templates)


def lineage(paths: Paths, parent_ids: pd.Series) -> pd.DataFrame:
    """Essay lineage (ESSAY_COLUMNS) for each essay id, from the metadata of the essay and of
    each ancestor up to the root (the stage registry's `lineage_columns`). An essay of the
    original pipeline carries no combo_id: the nearest ancestor's that has one."""
    essays = read_metadata(paths, GENERATION, sorted(set(parent_ids) - {""}))
    missing = essays.index[~essays["has_metadata"]]
    if len(missing):
        log.warning("%d essay(s) have no metadata.json (e.g. %s): their evaluations' lineage is empty; "
                    "make them again", len(missing), paths.metadata_path(GENERATION, missing[0]))
    out = pd.DataFrame(index=essays.index)
    documents = pd.Series(essays.index, index=essays.index, dtype=object)  # each essay's ancestor at this level
    combo = pd.Series("", index=essays.index, dtype=object)
    for level, stage in enumerate(stages.lineage(GENERATION)):
        meta = essays if level == 0 else read_metadata(paths, stage.name, sorted(set(documents) - {""}))
        for column, report in stage.lineage_columns:
            out[report] = documents.map(meta[META_OF[column]]).fillna("")
        combo = combo.where(combo != "", documents.map(meta["combo_id"]).fillna(""))
        documents = documents.map(meta["parent_gen_id"]).fillna("")
    out["combo_id"] = combo
    return out


def cross_aggregated(paths: Paths, scales: pd.DataFrame, gen_ids: list[str] | None = None) -> pd.DataFrame:
    """AGGREGATED_COLUMNS for `gen_ids` (default: every evaluation folder in the gens store)."""
    if not paths.gens_root.is_dir():
        raise FileNotFoundError(f"{paths.gens_root} does not exist; pass the data folder that holds gens/ "
                                "(--data-root) or run the workflow first")
    gen_ids = list_gen_ids(paths, SCORED) if gen_ids is None else sorted(gen_ids)
    evals = read_metadata(paths, SCORED, gen_ids).reset_index()
    evals["paths"] = gen_dirs(paths, SCORED, evals["gen_id"])
    texts = read_texts(paths.gen_dir_texts(SCORED, evals["gen_id"], "parsed.txt"))
    evals = evals.rename(columns={META_OF[column]: report for column, report in stages.SCORED.lineage_columns})
    evals[["score", "error"]] = parse_scores(texts, evals["evaluation_template"], scales)
    essays = lineage(paths, evals["parent_gen_id"])
    table = evals.merge(essays, left_on="parent_gen_id", right_index=True, how="left", suffixes=("", "_essay"))
    table["combo_id"] = table["combo_id"].where(table["combo_id"] != "", table["combo_id_essay"])
    table["flags"] = integrity.evaluation_flags(paths, table["gen_id"], integrity.stale_reasons(paths))
    table["concepts"] = ConceptNames(paths).column(table["combo_id"].fillna(""))
    return table.reindex(columns=list(AGGREGATED_COLUMNS)).fillna(dict.fromkeys(ESSAY_COLUMNS, ""))


def evaluation_scores_by_template_model(aggregated: pd.DataFrame, scales: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per evaluated essay (CROSS_PIVOT_INDEX, then `concepts` after `combo_id`), one
    column per `<evaluation_template>__<evaluation_model>` present in `aggregated`, holding the
    mean valid score over replicates (empty when that judge gave the essay no valid score),
    then `mean_scaled`: the mean of those columns as shares of their templates' scales (with
    `scales`; the default 0..9 scale for templates it lacks)."""
    column = (aggregated["evaluation_template"].astype(str) + CROSS_PIVOT_SEPARATOR
              + aggregated["evaluation_llm_model"].astype(str))
    columns = sorted(column.unique())
    valid = valid_rows(aggregated.assign(column=column))
    means = valid.groupby(["parent_gen_id", "column"])["score"].mean().unstack("column")
    out = essay_lineage(aggregated).join(means.reindex(columns=columns))
    scales = scales if scales is not None else scales_from_templates({})
    out["mean_scaled"] = evaluator_mean_scaled(aggregated, scales, ["parent_gen_id"], out.index)
    out = out.reset_index()[[*CROSS_PIVOT_INDEX, *columns, "mean_scaled"]]
    return insert_concepts(out, concepts_by_combo(aggregated, out["combo_id"]))


def cohort_evaluation_ids(paths: Paths, cohort_id: str) -> list[str]:
    membership = read_membership(paths, cohort_id)
    return membership.loc[membership["stage"] == SCORED, "gen_id"].tolist()


@dataclass(frozen=True)
class CrossContext:
    """The cross-experiment tables of the whole gens store, or of one cohort's evaluations;
    `aggregated` is the aggregated table the pivot reads (the report registry names it)."""

    paths: Paths
    cohort_id: str | None = None
    aggregated: Path | None = None


# -- the builders the report registry names ------------------------------------------------------
def aggregated_table(ctx: CrossContext) -> pd.DataFrame:
    """Every evaluation of the gens store (or of the cohort), rebuilt from the store itself."""
    gen_ids = cohort_evaluation_ids(ctx.paths, ctx.cohort_id) if ctx.cohort_id else None
    table = cross_aggregated(ctx.paths, evaluation_template_scales(ctx.paths), gen_ids)
    log.info("%d evaluations, %d without a score", len(table), int(table["error"].ne("").sum()))
    return table


def pivot_table(ctx: CrossContext) -> pd.DataFrame:
    """The pivot of the aggregated table written beside it."""
    return evaluation_scores_by_template_model(read_aggregated(ctx.aggregated), evaluation_template_scales(ctx.paths))
