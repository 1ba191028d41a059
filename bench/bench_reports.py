#!/usr/bin/env python3
"""Time the reports on a synthetic gens store of 100,000 evaluations (goal: <= 10 s each).

The store: 250 combos x 2 draft templates x 5 generation models = 2,500 drafts, 5 essay
templates each = 12,500 essays, 2 evaluation templates x 2 judges x 2 replicates each =
100,000 evaluations (0.5% without parsed.txt, 0.1% unparsable), all in one cohort. Building
the store is not timed. Prints the seconds of: the cohort tables (`cohort_reports`), the
figures (`cohort_report_figures`) and the cross-experiment tables (every metadata.json and
parsed.txt read once). The page cache is warm (the store was just written or reused).

    python bench/bench_reports.py [--root DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from daydream import reports
from daydream.experiment import Experiment, Template
from daydream.paths import Paths

COHORT = "bench"
COMBOS, DRAFT_TEMPLATES, MODELS, ESSAY_TEMPLATES = 250, 2, 5, 5
JUDGES, REPLICATES = ("judge_a", "judge_b"), (1, 2)
SCALES = {"novelty": (0.0, 9.0), "rigor": (1.0, 10.0)}
MARKER = "bench_store_complete"


def membership() -> pd.DataFrame:
    """Every document of the synthetic cohort, drafts then essays then evaluations."""
    rows = []
    for c in range(COMBOS):
        for t in range(DRAFT_TEMPLATES):
            for m in range(MODELS):
                draft = f"d_{c}x{t}x{m}"
                rows.append(("draft", draft, "", f"combo_{c}", f"draft-{t}", f"model_{m}", 1))
                for e in range(ESSAY_TEMPLATES):
                    rows.append(("essay", f"e_{c}x{t}x{m}x{e}", draft, f"combo_{c}", f"essay-{e}", f"model_{m}", 1))
    essays = [r for r in rows if r[0] == "essay"]
    for essay in essays:
        for template in SCALES:
            for judge in JUDGES:
                for rep in REPLICATES:
                    gen_id = f"v_{essay[1][2:]}x{template[0]}x{judge[-1]}x{rep}"
                    rows.append(("evaluation", gen_id, essay[1], essay[3], template, judge, rep))
    frame = pd.DataFrame(rows, columns=["stage", "gen_id", "parent_gen_id", "combo_id", "template_id",
                                        "llm_model_id", "replicate"])
    frame.insert(2, "cohort_id", COHORT)
    return frame.sort_values("stage", key=lambda s: s.map({"draft": 0, "essay": 1, "evaluation": 2}), kind="stable")


def parsed_text(template: str, rng: np.random.Generator) -> str | None:
    draw = rng.random()
    if draw < 0.005:
        return None
    if draw < 0.006:
        return "n/a"
    low, high = SCALES[template]
    return f"{float(rng.integers(int(low), int(high) + 1)):.1f}"


def build_store(paths: Paths) -> int:
    """Write the synthetic store; returns the number of evaluations."""
    rng = np.random.default_rng(0)
    table = membership()
    for row in table.itertuples(index=False):
        folder = paths.gen_dir(row.stage, row.gen_id)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"stage": row.stage, "gen_id": row.gen_id, "template_id": row.template_id, "model_id": row.llm_model_id,
                "parent_gen_id": row.parent_gen_id, "combo_id": row.combo_id, "replicate": row.replicate,
                "cohort_id": COHORT, "task_id": f"{row.parent_gen_id}__{row.template_id}__{row.llm_model_id}"}
        (folder / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
        text = parsed_text(row.template_id, rng) if row.stage == "evaluation" else f"Essay text of {row.gen_id}.\n"
        if text is not None and row.stage != "draft":
            (folder / "parsed.txt").write_text(text, encoding="utf-8")
    paths.membership_csv(COHORT).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(paths.membership_csv(COHORT), index=False)
    (paths.data_root / MARKER).write_text("ok\n", encoding="utf-8")
    return int((table["stage"] == "evaluation").sum())


def write_templates(paths: Paths) -> None:
    """The evaluation template table, so the cross-experiment scan knows each scale."""
    rows = "".join(f"{t},{t},,in_last_line,llm,{low:g},{high:g}\n" for t, (low, high) in SCALES.items())
    paths.raw_root.mkdir(parents=True, exist_ok=True)
    paths.templates_csv("evaluation").write_text(
        "template_id,template_name,description,parser,generator,score_min,score_max\n" + rows, encoding="utf-8")


def experiment() -> Experiment:
    templates = {t: Template("evaluation", t, t, "in_last_line", "llm", True, low, high)
                 for t, (low, high) in SCALES.items()}
    return Experiment(concepts={}, templates={"evaluation": templates}, models={})


def timed(label: str, function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    seconds = time.perf_counter() - start
    print(f"{label:<48} {seconds:7.2f} s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="data folder for the store (reused when complete; default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="daydream-bench-")) / "data"
    paths = Paths(root)
    if not (root / MARKER).exists():
        start = time.perf_counter()
        count = build_store(paths)
        print(f"built a store of {count} evaluations in {root} ({time.perf_counter() - start:.1f} s, not timed)")
    write_templates(paths)
    tables = f"cohort tables ({len(reports.in_group(reports.TABLES))} CSVs)"
    total = timed(tables, reports.write_cohort_reports, paths, COHORT, experiment())
    total += timed("cohort figures (3 PNGs, 2 HTML pages)", reports.write_cohort_figures, paths, COHORT, experiment())
    total += timed("cross-experiment tables (scan of gens/**)", reports.write_cross_experiment_tables, paths)
    rows = len(pd.read_csv(paths.cohort_report(COHORT, "parsing/aggregated_scores.csv"), usecols=["gen_id"]))
    print(f"{'total':<48} {total:7.2f} s   ({rows} evaluations; goal <= 10 s)")
    if args.root is None and not args.keep:
        shutil.rmtree(root.parent)


if __name__ == "__main__":
    main()
