"""How many Slurm jobs, and how long, a cohort takes through `--profile profiles/slurm`.

Starts a throwaway single-node Slurm cluster (tests/slurm_cluster.py; needs root and the
slurm-wlm and munge packages), runs a cohort on the offline model with the given batch size and
call latency in a temp folder, prints the Slurm jobs and the wall time, and stops the daemons.

    python bench/bench_slurm.py                                  # sample cohort `pilot`, batches of 25
    python bench/bench_slurm.py --batch-size 10 --latency 1.0
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.slurm_cluster import SlurmCluster, slurm_available  # noqa: E402

FAST = ("--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1",
        "--latency-wait", "5")


def run_cohort(cluster: SlurmCluster, work: Path, cohort: str, batch_size: int, latency: float) -> float:
    data_root = work / "data"
    shutil.copytree(REPO / "data" / "1_raw", data_root / "1_raw")
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--profile",
               str(REPO / "profiles" / "slurm"), *FAST, "--config", f"data_root={data_root}",
               f"cohorts_dir={REPO / 'config' / 'cohorts'}", "cohorts=" + json.dumps([cohort]), "offline=true",
               f"reply_batch_size={batch_size}"]
    env = {**cluster.env, "DAYDREAM_OFFLINE_LATENCY_S": str(latency)}
    started = time.monotonic()
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"snakemake failed:\n{done.stderr[-4000:]}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", default="pilot", help="a cohort file of config/cohorts")
    parser.add_argument("--batch-size", type=int, default=25, help="reply_batch_size: documents per Slurm job")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per offline call")
    args = parser.parse_args()
    available, reason = slurm_available()
    if not available:
        raise SystemExit(f"cannot start a Slurm cluster here: {reason}")
    work = Path(tempfile.mkdtemp(prefix="bench_slurm_"))
    try:
        with SlurmCluster(work / "cluster") as cluster:
            seconds = run_cohort(cluster, work, args.cohort, args.batch_size, args.latency)
            jobs = cluster.run("squeue", "-h", "-t", "all", "-o", "%i %T %M %k").stdout.splitlines()
        calls = (work / "data" / "7_reporting" / "llm_calls.jsonl").read_text().splitlines()
        documents = sum(1 for _ in (work / "data" / "gens").glob("*/*/raw.txt"))
        for job in jobs:
            print(f"  job {job}")
        print(f"cohort {args.cohort}: {documents} documents, {len(calls)} calls of {args.latency} s, "
              f"batch size {args.batch_size}: {len(jobs)} Slurm jobs, {seconds:.0f} s")
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
