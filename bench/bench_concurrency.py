"""Concurrency of real model calls through the real Snakefile, and the run's peak memory.

A loopback OpenAI-protocol server (tests/openai_server.py) answers every request after
`--latency` seconds. A curated cohort evaluates existing essays (made first on the offline
model, untimed) so that all `--calls` calls are independent; `snakemake --cores 64` runs it
with `llm.max_concurrency = --cap`. Ideal time = calls / cap x latency (10 s for the
defaults). The run's fixed start-up is measured twice: launch to first request in the timed
run, and the whole of the same run with a 0 s latency. Prints elapsed time, the ratio to the
ideal (goal: elapsed <= 1.2 x ideal + start-up), the server's peak in-flight requests (must
never pass the cap) and the peak RSS of Snakemake's process tree (goal < 1 GB). Numbers
only: nothing is asserted. Usage: python bench/bench_concurrency.py [--calls 320]
[--latency 1.0] [--cap 32] [--cores 64] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from common import ProcessTree, loopback_copy, write_yaml  # noqa: E402

from tests.openai_server import FakeOpenAIServer  # noqa: E402

TEMPLATES, REPLICATES = ["novelty-judge", "rigor-judge"], 4  # calls per essay: 2 x 4


def snakemake(root: Path, cohort: str, cores: int, *, offline: bool, extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", str(cores), *extra,
            "--config", f"data_root={root / 'data'}", f"cohorts_dir={root / 'cohorts'}", f"cohorts={cohort}",
            f"offline={str(offline).lower()}"]



def seed(root: Path, essays: int) -> list[str]:
    """`essays` copy essays on the offline model (untimed); their gen_ids."""
    shutil.copytree(REPO / "data" / "1_raw", root / "data" / "1_raw")
    write_yaml(root / "cohorts" / "seed.yaml", {
        "concepts": {"level": "paragraph", "k": 2, "ids": "all"},
        "draft": {"templates": ["links-brainstorm"], "models": ["offline_a"]},
        "essay": {"templates": ["copy-draft"], "models": ["draft"]},
        "evaluation": {"templates": ["novelty-judge"], "models": ["offline_a"]}})
    subprocess.run(snakemake(root, "seed", 8, offline=True), cwd=root, check=True, capture_output=True)
    with (root / "data" / "cohorts" / "seed" / "membership.csv").open(newline="") as handle:
        ids = [r["gen_id"] for r in csv.DictReader(handle) if r["stage"] == "essay"]
    if len(ids) < essays:
        raise SystemExit(f"--calls needs {essays} essays, the sample experiment makes {len(ids)}: lower --calls")
    return ids[:essays]




def timed_run(root: Path, settings: Path, server: FakeOpenAIServer, cores: int, calls: int) -> dict:
    """Run the bench cohort: elapsed, launch to first request, launch to last reply, peak tree
    RSS (sampled every 10 ms), exit code."""
    command = snakemake(root, "bench", cores, offline=False, extra=("--configfile", str(settings)))
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watched, result = psutil.Process(child.pid), {"first_call_s": None, "last_reply_s": None, "peak_rss": 0}

    def watch() -> None:
        tree = ProcessTree(watched)
        while child.poll() is None:
            result["peak_rss"] = max(result["peak_rss"], tree.rss())
            if result["first_call_s"] is None and server.request_count:
                result["first_call_s"] = time.perf_counter() - started
            if result["last_reply_s"] is None and server.completed_count >= calls:
                result["last_reply_s"] = time.perf_counter() - started
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stderr = child.communicate()[1]
    result["elapsed_s"] = time.perf_counter() - started
    watcher.join()
    result["returncode"], result["stderr_tail"] = child.returncode, stderr[-2000:]
    return result


def run_at(latency: float, seeded: Path, workdir: Path, essays: list[str], args) -> tuple[dict, dict]:
    with FakeOpenAIServer(latency=latency) as server:
        root = workdir / f"latency-{latency:g}"
        settings = loopback_copy(seeded, root, essays, TEMPLATES, REPLICATES, server.base_url, args.cap)
        result = timed_run(root, settings, server, args.cores, args.calls)
        stats = server.stats()
    if result["returncode"] != 0:
        raise SystemExit(f"the latency {latency:g} s run failed ({result['returncode']}):\n{result['stderr_tail']}")
    return result, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=320, help="model calls (a multiple of 8)")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds the server takes per reply")
    parser.add_argument("--cap", type=int, default=32, help="llm.max_concurrency (global cap)")
    parser.add_argument("--cores", type=int, default=64)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="daydream-bench-concurrency-"))
    shutil.rmtree(workdir, ignore_errors=True)
    essays = seed(workdir / "seed", args.calls // (len(TEMPLATES) * REPLICATES))
    zero, _ = run_at(0.0, workdir / "seed", workdir, essays, args)
    real, stats = run_at(args.latency, workdir / "seed", workdir, essays, args)
    ideal = args.calls / args.cap * args.latency
    startup, last = real["first_call_s"] or 0.0, real["last_reply_s"] or real["elapsed_s"]
    calls_phase, wind_down = last - startup, real["elapsed_s"] - last
    child_maxrss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"calls                {stats['request_count']} (server latency {args.latency:g} s, global cap {args.cap}, "
          f"--cores {args.cores})")
    print(f"ideal                {ideal:.2f} s  (calls / cap x latency)")
    print(f"elapsed              {real['elapsed_s']:.2f} s  (launch to exit)")
    print(f"start-up             {startup:.2f} s  (launch to first request: Snakemake, DAG, checkpoint, "
          "prompts, litellm import)")
    print(f"calls phase          {calls_phase:.2f} s  (first request to last reply) = {calls_phase / ideal:.2f}x ideal")
    print(f"wind-down            {wind_down:.2f} s  (last reply to exit: parse jobs, reports, interpreter exit)")
    print(f"zero-latency run     {zero['elapsed_s']:.2f} s  (the same run against a 0 s server, for reference)")
    print(f"ratio                {real['elapsed_s'] / (1.2 * ideal + startup):.2f}  "
          "(elapsed / (1.2 x ideal + start-up); <= 1.00 meets the goal)")
    print(f"ratio incl. wind-down {real['elapsed_s'] / (1.2 * ideal + startup + wind_down):.2f}  "
          "(elapsed / (1.2 x ideal + start-up + wind-down))")
    print(f"peak in flight       {stats['peak_in_flight']}  (cap {args.cap})")
    print(f"peak memory          {real['peak_rss'] / 2**20:.0f} MB RSS of the Snakemake process tree, "
          f"--cores {args.cores} (largest child maxrss {child_maxrss_mb:.0f} MB; goal < 1024 MB)")
    if args.keep is None:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
