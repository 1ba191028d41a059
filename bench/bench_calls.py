"""Real model calls: daydream's calls phase against the plain asyncio loop, in one run.

For each cap of `--caps` (default 100 and 200, with 528 and 2,000 calls), a loopback OpenAI
server (tests/openai_server.py, its command line, in another process) answers every request
after `--latency` seconds (default 2). Two clients take turns against a fresh server each:
- the plain loop: bench/asyncio_loop.py, `litellm.acompletion` under one asyncio.Semaphore(cap);
- daydream: `snakemake --cores cap+8` on a curated cohort (`essays: [...]`, 66 copy essays made
  first on the offline model, untimed, plus an `evaluation:` block of 2 templates x `calls / 2 / essays`
  replicates on a loopback model row appended to llm_models.csv: route `openai`, `api_base` the
  server) with `llm.max_concurrency: cap` passed by `--configfile`.
Both calls phases are read the same way, from the server's stats file (first request to last
reply; see asyncio_loop.StatsWatcher). Prints, per cap, the medians over `--reps` of: calls
phase and its ratio to the ideal (calls / cap x latency) for both, daydream / loop (taken within
each repetition), peak in flight against the cap (the maximum over repetitions), daydream's
start-up and wind-down, and peak RSS (psutil, Snakemake's process tree; the loop's own
process). A cap the config refuses (config/schema: llm.max_concurrency maximum) is reported as
refused, and the loop is still measured. Numbers only: nothing is asserted.

Usage: python bench/bench_calls.py [--caps 100,200] [--calls 528,2000] [--latency 2] [--reps 1]
           [--extra "--max-jobs-per-timespan 10000/1s"] [--loop-client auto] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
from asyncio_loop import CLIENTS, StatsWatcher, start_server, stop_server  # noqa: E402
from common import PROFILE_LINE, fmt, loopback_copy, median, repo_env, tree_rss, write_yaml  # noqa: E402

TEMPLATES = ["novelty-judge", "rigor-judge"]
SEED_COHORT = {
    "concepts": {"level": "paragraph", "k": 2, "ids": "all"},
    "draft": {"templates": ["links-brainstorm"], "models": ["offline_a"]},
    "essay": {"templates": ["copy-draft"], "models": ["draft"]},
    "evaluation": {"templates": ["novelty-judge"], "models": ["offline_a"]},
}


def snakemake(root: Path, cohort: str, cores: int, *, offline: bool, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", str(cores), *extra,
            "--config", f"data_root={root / 'data'}", f"cohorts_dir={root / 'cohorts'}", f"cohorts={cohort}",
            f"offline={str(offline).lower()}"]



def seed(root: Path) -> list[str]:
    """Copy essays on the offline model (untimed): their gen_ids."""
    shutil.copytree(REPO / "data" / "1_raw", root / "data" / "1_raw")
    write_yaml(root / "cohorts" / "seed.yaml", SEED_COHORT)
    done = subprocess.run(snakemake(root, "seed", 8, offline=True, extra=[]), cwd=root, capture_output=True,
                          text=True, env=repo_env())
    if done.returncode != 0:
        raise SystemExit(f"seeding the essays failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")
    with (root / "data" / "cohorts" / "seed" / "membership.csv").open(newline="") as handle:
        return [r["gen_id"] for r in csv.DictReader(handle) if r["stage"] == "essay"]


def split_calls(calls: int, available: int) -> tuple[int, int]:
    """(essays, replicates) with essays x 2 templates x replicates == calls, fewest replicates
    (2,000 calls over the 66 seeded essays: 50 essays x 2 templates x 20 replicates)."""
    for replicates in range(1, calls + 1):
        if calls % (len(TEMPLATES) * replicates) == 0 and calls // (len(TEMPLATES) * replicates) <= available:
            return calls // (len(TEMPLATES) * replicates), replicates
    raise SystemExit(f"{calls} calls cannot be split over at most {available} essays x 2 templates: "
                     "choose an even number of calls")



def refusal(output: str) -> str | None:
    """The config's refusal of the cap (Snakemake's validation message), if that is why the run
    failed."""
    if "['max_concurrency']" not in output:
        return None
    errors = [line.strip() for line in output.splitlines() if line.startswith("ValidationError")]
    return f"{errors[0] if errors else 'ValidationError'} (llm.max_concurrency, config/schema/config.schema.yaml)"


def daydream_run(seeded: Path, root: Path, essays: list[str], replicates: int, cap: int, calls: int,
                 latency: float, extra: list[str]) -> dict:
    stats_file = root.parent / f"{root.name}-stats.json"
    server, base_url = start_server(latency, stats_file)
    try:
        settings = loopback_copy(seeded, root, essays, TEMPLATES, replicates, base_url, cap)
        command = snakemake(root, "bench", cap + 8, offline=False, extra=["--configfile", str(settings), *extra])
        log = root / "run.log"
        with log.open("w", encoding="utf-8") as sink, StatsWatcher(stats_file, calls, latency) as watcher:
            started = time.perf_counter()
            child = subprocess.Popen(command, cwd=root, stdout=sink, stderr=subprocess.STDOUT, env=repo_env())
            watched, peak = psutil.Process(child.pid), [0]

            def watch() -> None:
                while child.poll() is None:
                    peak[0] = max(peak[0], tree_rss(watched))
                    time.sleep(0.1)

            sampler = threading.Thread(target=watch, daemon=True)
            sampler.start()
            returncode = child.wait()
            elapsed = time.perf_counter() - started
            sampler.join()
        stats = json.loads(stats_file.read_text(encoding="utf-8"))
    finally:
        stop_server(server)
    output = log.read_text(encoding="utf-8", errors="replace")
    profile = next((line.strip() for line in output.splitlines() if PROFILE_LINE in line), "none")
    result = {"returncode": returncode, "elapsed_s": elapsed, "peak_rss_mb": peak[0] / 2**20,
              "requests": stats["request_count"], "peak_in_flight": stats["peak_in_flight"], "profile": profile,
              "calls_phase_s": watcher.calls_phase_s, "refused": None, "tail": output[-1500:]}
    if watcher.first_reply is not None:
        result["start_up_s"] = watcher.first_reply - latency - started
    if watcher.last_reply is not None:
        result["wind_down_s"] = started + elapsed - watcher.last_reply
    if returncode != 0:
        result["refused"] = refusal(output)
    return result


def loop_run(workdir: Path, name: str, cap: int, calls: int, latency: float, client: str) -> dict:
    stats_file = workdir / f"{name}-stats.json"
    server, base_url = start_server(latency, stats_file)
    try:
        done = subprocess.run(
            [sys.executable, str(BENCH / "asyncio_loop.py"), "--calls", str(calls), "--cap", str(cap),
             "--latency", str(latency), "--client", client, "--base-url", base_url, "--stats-file", str(stats_file),
             "--json"], capture_output=True, text=True, env=repo_env())
    finally:
        stop_server(server)
    if done.returncode != 0:
        raise SystemExit(f"the asyncio loop failed ({done.returncode}):\n{done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])




def report(cap: int, calls: int, latency: float, client: str, loops: list[dict], days: list[dict]) -> None:
    ideal = calls / cap * latency
    print(f"\ncap {cap}, {calls} calls, {latency:g} s replies: ideal {ideal:.2f} s (calls / cap x latency), "
          f"medians of {len(loops)} interleaved repetition(s)")
    loop_phase = median([r["calls_phase_s"] for r in loops])
    print(f"  asyncio loop         calls phase {fmt(loop_phase)} s = {fmt(loop_phase and loop_phase / ideal)}x ideal"
          f"   peak in flight {max(r['peak_in_flight'] for r in loops)} / cap {cap}"
          f"   peak RSS {fmt(median([r['peak_rss_mb'] for r in loops]), '.0f')} MB   (client {client}, "
          f"{sum(r['failures'] for r in loops)} failed calls)")
    refused = [r["refused"] for r in days if r["refused"]]
    if refused:
        print(f"  daydream             REFUSED by the config at max_concurrency {cap}: {refused[0]}")
        return
    failed = [r for r in days if r["returncode"] != 0]
    if failed:
        print(f"  daydream             FAILED ({failed[0]['returncode']}), run tail:\n{failed[0]['tail']}")
        return
    phase = median([r["calls_phase_s"] for r in days])
    ratio = median([d["calls_phase_s"] / lp["calls_phase_s"] if d["calls_phase_s"] else None
                    for d, lp in zip(days, loops, strict=True)])
    print(f"  daydream             calls phase {fmt(phase)} s = {fmt(phase and phase / ideal)}x ideal"
          f"   peak in flight {max(r['peak_in_flight'] for r in days)} / cap {cap}"
          f"   peak RSS {fmt(median([r['peak_rss_mb'] for r in days]), '.0f')} MB (Snakemake process tree)")
    print(f"                       start-up {fmt(median([r.get('start_up_s') for r in days]))} s (launch to first "
          f"request), wind-down {fmt(median([r.get('wind_down_s') for r in days]))} s (last reply to exit), "
          f"elapsed {fmt(median([r['elapsed_s'] for r in days]))} s, requests {days[0]['requests']}, "
          f"profile: {days[0]['profile']}")
    print(f"  daydream / loop      calls phase {fmt(ratio)}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caps", default="100,200", help="comma-separated llm.max_concurrency values")
    parser.add_argument("--calls", default="528,2000", help="calls per cap (comma-separated, one per cap)")
    parser.add_argument("--latency", type=float, default=2.0, help="seconds the server takes per reply")
    parser.add_argument("--reps", type=int, default=1, help="interleaved repetitions (medians are printed)")
    parser.add_argument("--extra", default="", help="more Snakemake flags for daydream's timed runs")
    parser.add_argument("--loop-client", default="auto", choices=("auto", *CLIENTS),
                        help="the loop's litellm client; auto: default up to cap 500, per-host-env above")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    caps = [int(c) for c in args.caps.split(",")]
    calls = [int(c) for c in args.calls.split(",")]
    if len(calls) != len(caps):
        raise SystemExit("--calls needs one number per cap")
    extra = shlex.split(args.extra)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="daydream-bench-calls-"))
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    started = time.perf_counter()
    available = seed(workdir / "seed")
    print(f"seeded {len(available)} essays on the offline model in {time.perf_counter() - started:.1f} s (untimed)")
    for cap, n in zip(caps, calls, strict=True):
        essays, replicates = split_calls(n, len(available))
        client = args.loop_client if args.loop_client != "auto" else ("default" if cap <= 500 else "per-host-env")
        loops, days = [], []
        for rep in range(args.reps):
            order = ("loop", "daydream") if rep % 2 == 0 else ("daydream", "loop")
            for who in order:
                if who == "loop":
                    loops.append(loop_run(workdir, f"loop-{cap}-{rep}", cap, n, args.latency, client))
                else:
                    root = workdir / f"daydream-{cap}-{rep}"
                    days.append(daydream_run(workdir / "seed", root, available[:essays], replicates, cap, n,
                                             args.latency, extra))
                    if args.keep is None:
                        shutil.rmtree(root, ignore_errors=True)
        report(cap, n, args.latency, client, loops, days)
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
