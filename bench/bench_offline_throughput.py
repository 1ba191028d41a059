"""Throughput of a whole cohort on the offline model through the real Snakefile.

Builds a cohort of 66 drafts, 132 essays (half of them copies) and 528 evaluations (726
documents) in a temp folder, runs `snakemake --cores 2` with the shipped profile, and prints
documents per second, plus the dry-run planning time and a no-op rerun. Numbers only: the
goal (>= 20 documents/s on a 2-core machine) is read off the output, never asserted.
`--evaluation-replicates 5` scales the cohort to 2,838 documents, to see how the per-document
cost grows with the size of the DAG.
Usage: python bench/bench_offline_throughput.py [--cores 2] [--evaluation-replicates 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
COHORT = {
    "concepts": {"level": "paragraph", "k": 2, "ids": "all"},
    "draft": {"templates": ["idea-sketch"], "models": ["offline_a"]},
    "essay": {"templates": ["essay-from-draft", "copy-draft"], "models": ["draft"]},
    "evaluation": {"templates": ["novelty-judge", "rigor-judge"], "models": ["offline_a", "offline_b"]},
}


def snakemake(workdir: Path, cores: int, *extra: str) -> float:
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", str(cores),
               *extra, "--config", f"data_root={workdir / 'data'}", f"cohorts_dir={workdir / 'cohorts'}",
               "cohorts=bench", "offline=true"]
    started = time.perf_counter()
    subprocess.run(command, cwd=workdir, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--evaluation-replicates", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="daydream-bench-"))
    shutil.rmtree(workdir / "data", ignore_errors=True)
    shutil.copytree(REPO / "data" / "1_raw", workdir / "data" / "1_raw")
    (workdir / "cohorts").mkdir(parents=True, exist_ok=True)
    cohort = {**COHORT, "evaluation": {**COHORT["evaluation"], "replicates": args.evaluation_replicates}}
    (workdir / "cohorts" / "bench.yaml").write_text(yaml.safe_dump(cohort))
    snakemake(workdir, args.cores, "--until", "cohort_membership")
    membership = (workdir / "data" / "cohorts" / "bench" / "membership.csv").read_text().splitlines()
    documents = len(membership) - 1
    planning = snakemake(workdir, args.cores, "-n")
    elapsed = snakemake(workdir, args.cores)
    noop = snakemake(workdir, args.cores)
    print(f"documents            {documents}")
    print(f"dry-run planning     {planning:.2f} s")
    print(f"full run             {elapsed:.2f} s  (--cores {args.cores}, includes Snakemake start-up)")
    print(f"throughput           {documents / elapsed:.1f} documents/s  (goal >= 20)")
    print(f"no-op rerun          {noop:.2f} s")
    if args.keep is None:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
