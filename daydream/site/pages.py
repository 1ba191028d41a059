"""The variables of each page of the results site, from a `SiteData`: plain dicts and
strings, formatted for reading (the templates in `daydream/site/templates/` only lay them out).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from daydream import reports
from daydream.columns import (
    COLUMN_DESCRIPTIONS,
    EVALUATOR_COLUMN_DESCRIPTIONS,
    TABLE_COLUMN_DESCRIPTIONS,
    TABLE_DESCRIPTIONS,
)
from daydream.reports.io import read_table
from daydream.reports.scores import task_scores
from daydream.site.compare import CONFIDENCE, paired_comparisons
from daydream.site.data import FILES, GENERATION, ROOT, SCORED, SiteData, judge_key
from daydream.site.findings import judge_findings

BEST = 10
JUDGE_AGREEMENT = "analysis/judge_agreement.csv"
SITE_DIR = "site"


# -- formatting -----------------------------------------------------------------------------------
def _nan(value: object) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def points(value: object) -> str:
    """A score or mean in points: whole numbers bare, else two decimals; "" when undefined."""
    if _nan(value):
        return ""
    value = float(value)
    return f"{value:.0f}" if value.is_integer() else f"{value:.2f}"


def mean_points(value: object) -> str:
    """A mean in points, always two decimals (so a column of means lines up); "" when undefined."""
    return "" if _nan(value) else f"{float(value):.2f}"


def raw(value: object) -> str:
    """A number as the page's script sorts it ("" when undefined)."""
    return "" if _nan(value) else repr(float(value))


def share(value: object) -> str:
    return "" if _nan(value) else f"{float(value):.3f}"


def money(value: object) -> str:
    return "unknown" if _nan(value) else f"${float(value):,.4f}"


def scale_text(low: float, high: float) -> str:
    return f"{low:g}–{high:g}"


def cell(value: object) -> dict:
    """A table cell: floats to at most four decimals, text as it is."""
    if isinstance(value, float | np.floating):
        text = "" if math.isnan(value) else (f"{value:.0f}" if float(value).is_integer()
                                             else f"{value:.4f}".rstrip("0"))
        return {"text": text, "num": True}
    return {"text": str(value), "num": isinstance(value, int | np.integer)}


def essay_page(gen_id: str) -> str:
    return f"essays/{gen_id}.html"


def table_page(name: str) -> str:
    return "tables/" + name.removesuffix(".csv").replace("/", "__") + ".html"


# -- shared pieces ------------------------------------------------------------------------------------
def template_name(data: SiteData, stage: str, template_id: str) -> str:
    template = data.experiment.templates.get(stage, {}).get(template_id)
    return template.name if template is not None and template.name else template_id


def is_copy(data: SiteData, stage: str, template_id: str) -> bool:
    template = data.experiment.templates.get(stage, {}).get(template_id)
    return template is not None and template.generator == "copy"


def model_name(data: SiteData, model_id: str) -> str:
    model = data.experiment.models.get(model_id)
    return model.display_name if model is not None and model.display_name else model_id


def scale_of(data: SiteData, template_id: str) -> tuple[float, float]:
    found = data.scale_bounds.get(template_id)
    if found is not None:
        return found
    from daydream.columns import DEFAULT_SCORE_MAX, DEFAULT_SCORE_MIN

    return DEFAULT_SCORE_MIN, DEFAULT_SCORE_MAX


def tags(row: pd.Series, copy: bool) -> list[dict]:
    """The small labels of an essay: copy, flags, evaluations without a score."""
    out = [{"text": "copy", "kind": "", "title": "a copy of its draft"}] if copy else []
    flags = str(row["flags"])
    if "raw.txt changed" in flags:
        out.append({"text": "raw changed", "kind": "bad", "title": flags})
    if "stale:" in flags:
        out.append({"text": "stale", "kind": "warn", "title": flags})
    if row["n_errors"]:
        out.append({"text": f"{row['n_errors']} unscored", "kind": "bad", "title": "evaluations without a score"})
    if not row["n_evaluations"]:
        out.append({"text": "not judged", "kind": "warn", "title": "no evaluation of this essay yet"})
    return out


def essay_rows(data: SiteData) -> list[dict]:
    """One dict per essay for the table, the overview and the index."""
    essays = data.essays
    rows = []
    for gen_id, row in essays.iterrows():
        copy = is_copy(data, GENERATION, row["generation_template"])
        overall = row["overall"]
        rows.append({"gen_id": gen_id, "page": essay_page(gen_id), "concepts": row["concepts"],
                     "combo_id": row["combo_id"], "draft_template": row["draft_template"],
                     "generation_template": row["generation_template"], "generation_model": row["generation_model"],
                     "replicate": str(row["replicate"]),
                     "judges": [{"text": mean_points(row[judge_key(*j)]), "v": raw(row[judge_key(*j)])}
                                for j in data.judges],
                     "overall": share(overall), "overall_v": raw(overall),
                     "bar": 0 if _nan(overall) else round(float(overall) * 3, 2),
                     "n_evaluations": int(row["n_evaluations"]), "flagged": bool(row["flags"]),
                     "tags": tags(row, copy)})
    return rows


def agreement_rows(data: SiteData) -> list[dict]:
    path = data.paths.cohort_report(data.cohort_id, JUDGE_AGREEMENT)
    if not path.exists():
        return []
    table = read_table(path)
    rows = []
    for r in table.to_dict("records"):
        fixed = r["evaluation_template"] or r["evaluation_llm_model"]
        what = "rubric" if r["comparison"] == "across_evaluation_models" else "judge"
        rows.append({"raters": str(r["raters"]).replace("|", ", "), "fixed": f"{what}: {fixed}",
                     "alpha": share(r["krippendorff_alpha_interval"]), "icc": share(r["icc_2_1"]),
                     "n_units": r["n_units"], "scale": r["scale"], "note": "" if _nan(r["note"]) else r["note"]})
    return rows


# -- the pages -------------------------------------------------------------------------------------------
def cohort_description(data: SiteData) -> str:
    path = data.paths.cohort_file(data.cohort_id)
    if not path.exists():
        return ""
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    return str(spec.get("description") or "").strip() if isinstance(spec, dict) else ""


def stage_rows(data: SiteData) -> list[dict]:
    members = data.membership
    rows = []
    for counts in data.stage_counts():
        of = members[members["stage"] == counts["stage"]]
        templates = [{"id": t, "name": template_name(data, counts["stage"], t),
                      "is_copy": is_copy(data, counts["stage"], t)} for t in sorted(set(of["template_id"]))]
        models = [{"id": m, "name": model_name(data, m)} for m in sorted(set(of["llm_model_id"]))]
        replicates = pd.to_numeric(of["replicate"], errors="coerce").max()
        rows.append({**counts, "templates": templates, "models": models,
                     "replicates": "" if _nan(replicates) else int(replicates)})
    return rows


def concept_rows(data: SiteData) -> list[dict]:
    essays = data.essays
    counts = essays["combo_id"].value_counts()
    found: dict[str, dict] = {}
    for combo_id, n in counts.items():
        for concept in data.names.concepts_of(combo_id):
            entry = found.setdefault(concept["concept_id"], {**concept, "essays": 0})
            entry["essays"] += int(n)
    return sorted(found.values(), key=lambda c: c["name"].lower())


def overview(data: SiteData, rows: list[dict], plots: list[dict]) -> dict:
    stages = stage_rows(data)
    total = {key: sum(s[key] for s in stages) for key in ("calls", "prompt_tokens", "completion_tokens", "missing",
                                                          "stale", "raw_changed", "cost_unknown")}
    costs = [s["cost_usd"] for s in stages]
    total["cost_usd"] = None if any(c is None for c in costs) else sum(costs)
    ranked = sorted((r for r in rows if r["overall_v"]), key=lambda r: (-float(r["overall_v"]), r["gen_id"]))
    agg = data.aggregated
    return {"title": "Overview", "description": cohort_description(data), "essays": rows, "best": ranked[:BEST],
            "n_evaluations": len(agg), "n_errors": int(agg["error"].fillna("").ne("").sum()), "total": total,
            "stages": stages, "concepts": concept_rows(data), "plots": plots, "agreement": agreement_rows(data)}


def essays_table(data: SiteData, rows: list[dict]) -> dict:
    judges = []
    for model, template in data.judges:
        low, high = scale_of(data, template)
        judges.append({"model": model, "template": template, "scale": scale_text(low, high),
                       "title": f"{model_name(data, model)}, rubric {template_name(data, SCORED, template)}"})
    concepts = sorted({n for r in rows for n in r["concepts"].split(" + ") if n})
    choices = {"concept": concepts, "draft": sorted({r["draft_template"] for r in rows}),
               "template": sorted({r["generation_template"] for r in rows}),
               "model": sorted({r["generation_model"] for r in rows})}
    return {"title": "Essays", "rows": rows, "judges": judges, "choices": choices, "wide": True}


def _document(data: SiteData, gen_id: str, files: list[tuple[str, str]]) -> dict:
    """What a page shows of one document: model, tokens, cost, time, flags and its files."""
    doc = data.records.get(gen_id)
    if doc is None:
        return {"gen_id": gen_id, "made": False, "files": [], "model": "", "tokens": "", "cost": "",
                "duration": "", "created_at": "", "stale": "", "raw_changed": False, "parse_error": ""}
    tokens = "" if _nan(doc["prompt_tokens"]) else f"{int(doc['prompt_tokens']):,} in + " \
                                                   f"{int(np.nan_to_num(doc['completion_tokens'])):,} out"
    return {"gen_id": gen_id, "made": bool(doc["made"]), "model": doc["model"], "tokens": tokens,
            "cost": "" if doc["mode"] == "copy" else money(doc["cost_usd"]),
            "duration": "" if _nan(doc["duration_s"]) else f"{float(doc['duration_s']):.1f} s",
            "created_at": doc["created_at"].replace("T", " ").replace("+00:00", " UTC"),
            "stale": data.stale.get(gen_id, ""), "raw_changed": gen_id in data.raw_changed,
            "parse_error": data.parse_errors.get(gen_id, ""),
            "files": [{"name": name, "path": path} for name, path in files]}


def _gens_files(data: SiteData, stage: str, gen_id: str, names: tuple[str, ...]) -> list[tuple[str, str]]:
    prefix = data.paths.gen_dir_texts(stage, [gen_id])[0] + os.sep
    doc = data.records.get(gen_id)
    if doc is not None and doc["stage"] == stage and set(names) <= set(FILES):  # asked when it was read
        return [(name, prefix + name) for name in names if name in doc["files"]]
    return [(name, prefix + name) for name in names if os.path.exists(prefix + name)]


ALL_FILES = FILES


def _judge_summary(data: SiteData, evals: list[dict]) -> list[dict]:
    """Per judge and rubric of one essay: its scores, their mean and the mean as a share of the scale."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for v in evals:
        groups.setdefault((v["evaluation_llm_model"], v["evaluation_template"]), []).append(v)
    summary = []
    for (model, template), group in sorted(groups.items()):
        low, high = scale_of(data, template)
        valid = [v["score"] for v in group if v["error"] == ""]
        mean = sum(valid) / len(valid) if valid else math.nan
        summary.append({"model": model_name(data, model), "template": template_name(data, SCORED, template),
                        "scale": scale_text(low, high), "mean": mean_points(mean),
                        "share": share((mean - low) / (high - low)) if not _nan(mean) else "",
                        "scores": ", ".join(points(v["score"]) if v["error"] == "" else "no score" for v in group)})
    return summary


def essay(data: SiteData, gen_id: str) -> dict:
    row = data.essay_records[gen_id]
    docs = data.records
    draft_id = row["draft_id"]

    def document(stage: str, doc_id: str, template_id: str, model_id: str) -> dict:
        doc = docs.get(doc_id, {})
        text, prompt = doc.get("parsed.txt"), doc.get("prompt.txt")
        return {**_document(data, doc_id, _gens_files(data, stage, doc_id, ALL_FILES)),
                "template_id": template_id, "template_name": template_name(data, stage, template_id),
                "is_copy": is_copy(data, stage, template_id), "model_name": model_name(data, model_id),
                "replicate": row["replicate"] if stage == GENERATION else "",
                "prompt": prompt if prompt is not None else "(no prompt.txt)",
                "text": text if text is not None else "(no parsed.txt: not made yet, or failed)"}

    draft_model = docs.get(draft_id, {}).get("llm_model_id", "")
    essay_doc = document(GENERATION, gen_id, row["generation_template"], row["generation_model"])
    draft_doc = document(ROOT, draft_id, row["draft_template"], draft_model)
    concepts = data.names.concepts_of(row["combo_id"])
    for concept in concepts:
        concept["description"] = data.description(concept["level"], concept["concept_id"])
    evals = data.evaluations_of(gen_id)
    evaluations = [{**_document(data, v["gen_id"], _gens_files(data, SCORED, v["gen_id"], ALL_FILES)),
                    "model_name": model_name(data, v["evaluation_llm_model"]),
                    "template_name": template_name(data, SCORED, v["evaluation_template"]),
                    "replicate": v["replicate"], "score": points(v["score"]), "error": v["error"],
                    "flags": v["flags"], "scale": scale_text(v["score_min"], v["score_max"]),
                    "answer": docs.get(v["gen_id"], {}).get("raw.txt")} for v in evals]
    flags = [{"text": f, "bad": f.startswith("raw.txt changed")} for f in str(row["flags"]).split("; ") if f]
    label = row["concepts"]
    return {"title": label or gen_id, "essay": essay_doc, "draft": draft_doc, "concepts": concepts,
            "concepts_label": label, "evaluations": evaluations, "summary": _judge_summary(data, evals),
            "overall": share(row["overall"]), "flags": flags}


def comparisons(data: SiteData) -> dict:
    tasks = task_scores(data.aggregated, data.scales)
    found = paired_comparisons(tasks) if len(tasks) else []
    for n, comparison in enumerate(found):
        comparison["anchor"] = f"c{n}"
        for r in comparison["rows"]:
            fmt = share if r["scale"] == "share" else mean_points
            r.update(mean_a=fmt(r["mean_a"]), mean_b=fmt(r["mean_b"]), diff=fmt(r["diff"]),
                     ci="" if _nan(r["ci_low"]) else f"{fmt(r['ci_low'])} to {fmt(r['ci_high'])}")
    return {"title": "Compare", "comparisons": found, "confidence": round(CONFIDENCE * 100)}


# -- tables ----------------------------------------------------------------------------------------------
def describe_column(table: str, name: str, judges: set[str]) -> str:
    """A column in words: the table's own entry, the shared one, or an evaluator column's."""
    own = TABLE_COLUMN_DESCRIPTIONS.get(table, {})
    if name in own:
        return own[name]
    if name in COLUMN_DESCRIPTIONS:
        return COLUMN_DESCRIPTIONS[name]
    for suffix in sorted(EVALUATOR_COLUMN_DESCRIPTIONS, key=len, reverse=True):
        stem = name[:len(name) - len(suffix)]
        if name.endswith(suffix) and stem in judges:
            return EVALUATOR_COLUMN_DESCRIPTIONS[suffix].format(judge=stem)
    return "(not described yet: add it to COLUMN_DESCRIPTIONS in daydream/columns.py)"


def report_tables(data: SiteData) -> list[dict]:
    """Every report CSV of the cohort: the registry's tables in order, then any other CSV under
    reports/ (other helpers' analyses appear without a change here)."""
    reports_dir = data.paths.reports_dir(data.cohort_id)
    names = [r.name for r in reports.cohort_reports() if r.kind == "table"]
    if reports_dir.exists():
        extra = sorted(str(p.relative_to(reports_dir)) for p in reports_dir.rglob("*.csv")
                       if p.relative_to(reports_dir).parts[0] != SITE_DIR)
        names += [n for n in extra if n not in names]
    titles = {r.name: r.title for r in reports.REPORTS}
    out = []
    for name in names:
        path = reports_dir / name
        out.append({"name": name, "path": path, "page": table_page(name),
                    "title": titles.get(name, Path(name).stem.replace("_", " ")),
                    "about": TABLE_DESCRIPTIONS.get(name, ""), "rows": None})
    return out


def judge_names(data: SiteData) -> set[str]:
    return ({f"{m}_{t}" for m, t in data.judges} | {f"{t}__{m}" for m, t in data.judges})


def table(data: SiteData, entry: dict, max_rows: int) -> dict:
    """A report table's page variables, its first `max_rows` rows as cells. The file is read and
    its cells made once for the folder and the bundle (which shows fewer rows)."""
    key = str(entry["path"])
    found = data.table_cells.get(key)
    if found is None or found[2] < max_rows:
        frame = read_table(entry["path"])
        found = data.table_cells[key] = (frame, [[cell(v) for v in row] for row in
                                                 frame.head(max_rows).itertuples(index=False)], max_rows)
    frame, cells, _ = found
    judges = judge_names(data)
    body = cells[:max_rows]
    columns = [{"name": c, "about": describe_column(entry["name"], c, judges)} for c in frame.columns]
    return {**entry, "rows": len(frame), "shown": len(body), "cut": len(frame) > len(body), "columns": columns,
            "body": body}


def judges_page(data: SiteData, tables: list[dict]) -> dict:
    agg = data.aggregated
    means = []
    for (model, template), group in agg.groupby(["evaluation_llm_model", "evaluation_template"], sort=True):
        low, high = scale_of(data, template)
        valid = group[group["error"].fillna("") == ""]["score"]
        mean = valid.mean() if len(valid) else math.nan
        means.append({"model": model_name(data, model), "template": template_name(data, SCORED, template),
                      "scale": scale_text(low, high), "n": len(group), "errors": len(group) - len(valid),
                      "mean": mean_points(mean), "share": "" if _nan(mean) else share((mean - low) / (high - low))})
    analyses = [t for t in tables if t["name"].startswith("analysis/") and t["rows"] is not None]
    findings = [{"question": f.question, "lines": f.lines, "page": table_page(f.table)}
                for f in judge_findings(data.paths.reports_dir(data.cohort_id), essay_page)]
    return {"title": "Judges", "judge_means": means, "agreement": agreement_rows(data), "analyses": analyses,
            "findings": findings}

