#!/usr/bin/env python3
"""Time the results site (daydream.site) against the run that made its documents.

An offline run of one cohort of the sample experiment (k concepts of the first N, two draft
templates on two offline models, an LLM essay and a copied one per draft, two judges x two
rubrics x two replicates): 10 concepts, k=3 is 120 combos and 9,120 documents (960 essays).
Prints the whole run's seconds (which include the site job), the site job's seconds (from its
log), a second build of the site in this process, and the pages' sizes: the largest page, the
essays table, and the one-file bundle the HTML report embeds. Nothing is asserted.

    python bench/bench_site.py [--concepts 10] [--k 3] [--root DIR]
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, repo_env, write_yaml

from daydream.experiment import load_experiment
from daydream.paths import Paths
from daydream.site import build_site

COHORT = "bench_site"


def cohort(concepts: list[str], k: int) -> dict:
    return {"concepts": {"level": "paragraph", "k": k, "ids": concepts},
            "draft": {"templates": ["idea-sketch", "links-brainstorm"], "models": ["offline_a", "offline_b"],
                      "replicates": 1},
            "essay": {"templates": ["essay-from-draft", "copy-draft"], "models": ["draft"], "replicates": 1},
            "evaluation": {"templates": ["novelty-judge", "rigor-judge"], "models": ["offline_a", "offline_b"],
                           "replicates": 2}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", type=int, default=10)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--root", type=Path, default=None, help="work folder (default: a temp folder, removed)")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="bench_site_"))
    try:
        shutil.copytree(REPO / "data" / "1_raw", root / "data" / "1_raw", dirs_exist_ok=True)
        with (root / "data" / "1_raw" / "concepts_metadata.csv").open(encoding="utf-8") as handle:
            ids = [row["concept_id"] for row in csv.DictReader(handle)][:args.concepts]
        write_yaml(root / "cohorts" / f"{COHORT}.yaml", cohort(ids, args.k))
        command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2", "--config",
                   f"data_root={root / 'data'}", f"cohorts_dir={root / 'cohorts'}", f'cohorts=["{COHORT}"]',
                   "offline=true", "progress_interval_s=0"]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=root, capture_output=True, text=True, env=repo_env())
        run_s = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"the run failed:\n{done.stderr[-3000:]}")
        paths = Paths(root / "data")
        documents = sum(1 for _ in paths.membership_csv(COHORT).open(encoding="utf-8")) - 1
        job_log = paths.log_path("cohort_site", COHORT).read_text(encoding="utf-8")
        job_s = float(re.search(r", ([0-9.]+) s: ", job_log).group(1))
        started = time.perf_counter()
        built = build_site(paths, COHORT, load_experiment(paths))
        rebuild_s = time.perf_counter() - started
        table = (paths.cohort_site(COHORT) / "essays.html").stat().st_size
        print(f"documents {documents:,}, essays {built['essays']:,}, pages {built['pages']:,}")
        print(f"run (offline, whole workflow incl. reports and site): {run_s:8.1f} s")
        print(f"site job in that run:                                  {job_s:8.1f} s  ({job_s / run_s:.1%} of the run)")
        print(f"site built again in this process:                      {rebuild_s:8.1f} s  ({rebuild_s / run_s:.1%})")
        print(f"largest page {built['largest_page'] / 1e6:.2f} MB, essays table {table / 1e6:.2f} MB "
              f"({table / max(built['essays'], 1):,.0f} bytes per essay), bundle {built['bundle_bytes'] / 1e6:.1f} MB")
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
