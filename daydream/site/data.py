"""What the results site of one cohort shows, read once: the membership, the scores as
`parsing/aggregated_scores.csv` has them (so the site and the CSV never disagree), every
member's metadata and the texts the pages print, the names of concepts, templates and models.

Reads are bulk (`reports.scores.read_texts`: threads over contiguous chunks); nothing here
renders HTML.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from daydream import integrity, stages
from daydream.experiment import Experiment
from daydream.paths import Paths
from daydream.reports import AGGREGATED
from daydream.reports.concepts import ConceptNames
from daydream.reports.io import read_aggregated, read_membership
from daydream.reports.scores import attach_scales, evaluator_mean_scaled, in_chunks, read_texts, valid_rows

log = logging.getLogger(__name__)

SCORED = stages.SCORED.name
GENERATION = stages.SCORED.parent
ROOT = stages.get(GENERATION).parent
# The texts each stage's pages print: drafts and essays their prompt and parsed text, an
# evaluation the judge's full answer (raw.txt); the other files are linked.
TEXTS = {ROOT: ("prompt.txt", "parsed.txt"), GENERATION: ("prompt.txt", "parsed.txt"), SCORED: ("raw.txt",)}
# The files of a document a page links to, in the order it lists them.
FILES = ("prompt.txt", "raw.txt", "parsed.txt", "metadata.json")


def _exist_chunk(files: list[str]) -> list[bool]:
    return [os.path.exists(f) for f in files]


def existing(files: list[str]) -> list[bool]:
    """Whether each file exists, in order, asked in threads as `read_texts` reads (`in_chunks`)."""
    return in_chunks(_exist_chunk, files)


def _json(text: str | None, path: str) -> dict:
    if text is None:
        return {}
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        log.warning("%s is not valid JSON (%s): the site shows no tokens, cost or time for it", path, error)
        return {}
    return record if isinstance(record, dict) else {}


def row_dicts(frame: pd.DataFrame) -> list[dict]:
    """Each row of `frame` as a dict of plain Python values, as `frame.to_dict("records")`
    gives them (numpy scalars as int, float, bool), built from each column's `tolist()`: pandas'
    own walks every cell (10,000 members by 30 columns in the site)."""
    names = list(frame.columns)
    if len(set(names)) != len(names):
        raise ValueError(f"row_dicts needs unique column names, not {names}")
    if not names:
        return [{} for _ in range(len(frame))]
    return [dict(zip(names, row, strict=True)) for row in zip(*(frame[c].tolist() for c in names), strict=True)]


def judge_key(model: str, template: str) -> str:
    """A judge column of the site: `<evaluation model> · <evaluation template>`."""
    return f"{model} · {template}"


@dataclass
class SiteData:
    paths: Paths
    cohort_id: str
    experiment: Experiment
    scales: pd.DataFrame

    @cached_property
    def scale_bounds(self) -> dict[str, tuple[float, float]]:
        """Evaluation template id -> (score_min, score_max) of `scales` (read per page)."""
        return {str(t): (float(low), float(high)) for t, low, high in
                zip(self.scales.index, self.scales["score_min"], self.scales["score_max"], strict=True)}

    @cached_property
    def membership(self) -> pd.DataFrame:
        return read_membership(self.paths, self.cohort_id)

    @cached_property
    def aggregated(self) -> pd.DataFrame:
        """The cohort's aggregated_scores.csv as written (one row per evaluation)."""
        return read_aggregated(self.paths.cohort_report(self.cohort_id, AGGREGATED))

    @cached_property
    def names(self) -> ConceptNames:
        return ConceptNames(self.paths)

    @cached_property
    def documents(self) -> pd.DataFrame:
        """One row per member, indexed by gen_id: its membership cells, `folder`, `files` (the
        names of `FILES` it has), `made` (its parsed.txt exists), metadata (`mode`, `model`,
        tokens, `cost_usd`, `duration_s`, `created_at`, `finish_reason`) and the texts of `TEXTS`
        (None where a file is missing)."""
        docs = self.membership.drop_duplicates("gen_id").set_index("gen_id", drop=False).copy()
        # plain lists: a pandas string column walked cell by cell costs a Python call per cell
        stage_of, folders = docs["stage"].tolist(), [str(self.paths.gen_dir(s, g)) for s, g in
                                                     zip(docs["stage"].tolist(), docs["gen_id"].tolist(), strict=True)]
        docs["folder"] = folders
        meta_files = [f + os.sep + "metadata.json" for f in folders]
        metas = [_json(t, f) for t, f in zip(read_texts(meta_files), meta_files, strict=True)]
        usage = [m.get("usage") if isinstance(m.get("usage"), dict) else {} for m in metas]
        docs["has_metadata"] = [bool(m) for m in metas]
        for key in ("mode", "model", "created_at", "finish_reason"):
            docs[key] = [str(m.get(key) or "") for m in metas]
        for key in ("cost_usd", "duration_s"):
            docs[key] = pd.to_numeric(pd.Series([m.get(key) for m in metas], index=docs.index), errors="coerce")
        for key in ("prompt_tokens", "completion_tokens"):
            docs[key] = pd.to_numeric(pd.Series([u.get(key) for u in usage], index=docs.index), errors="coerce")
        for name in {n for files in TEXTS.values() for n in files}:
            wanted = [name in TEXTS.get(stage, ()) for stage in stage_of]
            files = [f + os.sep + name for f, w in zip(folders, wanted, strict=True) if w]
            texts = iter(read_texts(files))
            docs[name] = [next(texts) if w else None for w in wanted]
        found = iter(existing([f + os.sep + name for f in folders for name in FILES]))
        present = [tuple(name for name in FILES if next(found)) for _ in folders]
        docs["files"] = present
        docs["made"] = ["parsed.txt" in files for files in present]
        return docs

    @cached_property
    def stale(self) -> dict[str, str]:
        """gen_id -> reason, for the members the last stale report lists (changed raw.txt aside)."""
        members = set(self.membership["gen_id"])
        return {g: r for g, r in integrity.stale_reasons(self.paths).items() if g in members}

    @cached_property
    def _descriptions(self) -> dict[tuple[str, str], str]:
        return {}

    @cached_property
    def table_cells(self) -> dict[str, tuple[pd.DataFrame, list[list[dict]], int]]:
        """A report table's path -> (the table, its first rows as page cells, how many rows were
        asked): filled by `pages.table`, so the folder and the bundle read each table once."""
        return {}

    def description(self, level: str, concept_id: str) -> str:
        """A concept's description at a level ("" when the file is gone), each file read once."""
        key = (level, concept_id)
        if key not in self._descriptions:
            path = self.paths.description_path(level, concept_id)
            self._descriptions[key] = path.read_text(encoding="utf-8") if path.exists() else ""
        return self._descriptions[key]

    @cached_property
    def parse_errors(self) -> dict[str, str]:
        """gen_id -> why its last reply did not parse (`7_reporting/parse_errors.jsonl`), for the
        members that still have no parsed.txt."""
        path = self.paths.parse_errors_jsonl
        if not path.exists():
            return {}
        missing = set(self.documents.index[~self.documents["made"]])
        found = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s line %d is not JSON: the site skips it", path, number)
                continue
            if isinstance(record, dict) and record.get("gen_id") in missing:
                found[record["gen_id"]] = f"parser {record.get('parser', '?')}: {record.get('reason', '')}"
        return found

    @cached_property
    def raw_changed(self) -> set[str]:
        """Members whose raw.txt is no longer the reply paid for (named in a score's flags)."""
        found: set[str] = set()
        for flags in self.aggregated["flags"].fillna("").astype(str):
            for part in flags.split("; "):
                if part.startswith("raw.txt changed: "):
                    found.update(item.split(" ")[-1] for item in part.removeprefix("raw.txt changed: ").split(", "))
        return found

    @cached_property
    def judges(self) -> list[tuple[str, str]]:
        """(evaluation model, evaluation template) of every judge of the cohort, sorted."""
        evals = self.membership[self.membership["stage"] == SCORED]
        return sorted(set(zip(evals["llm_model_id"], evals["template_id"], strict=True)))

    @cached_property
    def essays(self) -> pd.DataFrame:
        """One row per essay of the membership (index gen_id): its lineage, `concepts`, a
        column per judge (`judge_key`: mean valid score over replicates, on the template's own
        scale), `overall` (mean over judges of those means as shares of each scale: the
        ranking), `n_evaluations`, `n_errors` and `flags` (the distinct flags of its scores)."""
        members = self.membership
        essays = members[members["stage"] == GENERATION].drop_duplicates("gen_id").set_index("gen_id")
        drafts = members[members["stage"] == ROOT].drop_duplicates("gen_id").set_index("gen_id")
        out = pd.DataFrame(index=essays.index.rename("gen_id"))
        out["draft_id"] = essays["parent_gen_id"]
        out["combo_id"] = essays["combo_id"]
        out["concepts"] = self.names.column(essays["combo_id"]).to_numpy()
        out["draft_template"] = essays["parent_gen_id"].map(drafts["template_id"]).fillna("")
        out["generation_template"] = essays["template_id"]
        out["generation_model"] = essays["llm_model_id"]
        out["replicate"] = essays["replicate"]
        agg = self.aggregated
        valid = valid_rows(agg)
        means = valid.groupby(["parent_gen_id", "evaluation_llm_model", "evaluation_template"])["score"].mean()
        wide = means.unstack(["evaluation_llm_model", "evaluation_template"]) if len(means) else pd.DataFrame()
        for judge in self.judges:
            column = wide[judge] if judge in wide.columns else pd.Series(dtype=float)
            out[judge_key(*judge)] = column.reindex(out.index)
        out["overall"] = evaluator_mean_scaled(agg, self.scales, ["parent_gen_id"], out.index)
        counts = agg.assign(_error=agg["error"].fillna("").ne("")).groupby("parent_gen_id").agg(
            n_evaluations=("gen_id", "size"), n_errors=("_error", "sum"))
        out = out.join(counts)
        out[["n_evaluations", "n_errors"]] = out[["n_evaluations", "n_errors"]].fillna(0).astype(int)
        flags = agg.assign(flags=agg["flags"].fillna("").astype(str))
        flags = flags[flags["flags"] != ""].groupby("parent_gen_id")["flags"].agg(lambda f: "; ".join(sorted(set(f))))
        out["flags"] = flags.reindex(out.index).fillna("")
        return out.sort_values(["concepts", "draft_template", "generation_template", "generation_model", "replicate"])

    def evaluations_of(self, essay_id: str) -> list[dict]:
        """The aggregated rows of one essay with their scales, by judge model, template, replicate."""
        return self.evaluations_by_essay.get(essay_id, [])

    @cached_property
    def evaluations_by_essay(self) -> dict[str, list[dict]]:
        scaled = attach_scales(self.aggregated, self.scales)
        scaled["error"] = scaled["error"].fillna("").astype(str)
        scaled["flags"] = scaled["flags"].fillna("").astype(str)
        scaled["replicate_n"] = pd.to_numeric(scaled["replicate"], errors="coerce")
        scaled = scaled.sort_values(["evaluation_llm_model", "evaluation_template", "replicate_n", "gen_id"])
        found: dict[str, list[dict]] = {}
        for record in row_dicts(scaled):
            found.setdefault(record["parent_gen_id"], []).append(record)
        return found

    @cached_property
    def records(self) -> dict[str, dict]:
        """`documents` as plain dicts by gen_id (page building reads them one by one)."""
        return dict(zip(self.documents.index, row_dicts(self.documents), strict=True))

    @cached_property
    def essay_records(self) -> dict[str, dict]:
        """`essays` as plain dicts by gen_id."""
        return dict(zip(self.essays.index, row_dicts(self.essays), strict=True))

    def stage_counts(self) -> list[dict]:
        """Per stage: members, made, missing, calls (documents answered by a model), tokens,
        cost (None when a made document has no known cost) and the stale documents."""
        docs = self.documents
        rows = []
        for stage in stages.NAMES:
            of = docs[docs["stage"] == stage]
            if of.empty:
                continue
            made = of[of["made"]]
            called = made[made["mode"] != "copy"]
            cost = called["cost_usd"]
            rows.append({"stage": stage, "members": len(of), "made": len(made), "missing": len(of) - len(made),
                         "calls": len(called), "prompt_tokens": int(np.nansum(called["prompt_tokens"])),
                         "completion_tokens": int(np.nansum(called["completion_tokens"])),
                         "cost_usd": float(cost.sum()) if cost.notna().all() else None,
                         "cost_unknown": int(cost.isna().sum()),
                         "stale": sum(g in self.stale for g in of.index),
                         "raw_changed": sum(g in self.raw_changed for g in of.index)})
        return rows
