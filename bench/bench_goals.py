"""Every throughput goal of issue 24 against its baseline, measured in the same run (`make bench`).

1. Documents: daydream against bench/bare/Snakefile with the same jobs (one per document, the
   same stage dependencies: evaluations on essays on drafts) and the same Snakemake flags (the
   settings of profiles/default, as bench_throughput.py passes them). For each repetition, in
   turn (the order rotated): a full run from nothing, a no-op rerun, and a dry run after the
   gens store is removed. Ratios daydream / bare are taken within each repetition; goal 1.1x.
2. The tail: from daydream's full run, the seconds from the last document job's end to the
   run's end, and each tail job (stale report, cohort reports, figures, site) with its start,
   end and own seconds, read from Snakemake's metadata records (`.snakemake/metadata/`, or
   `.snakemake/metadata.db` under `--persistence-backend db`). The bare run's tail (its last
   document to its exit: Snakemake's own wind-down) is printed beside it. Goal: under 10 s at
   10,000 documents.
3. Calls: bench/bench_calls.py (daydream's calls phase against the plain asyncio loop over
   litellm, 2 s replies from the loopback server), run as it is for caps 100, 200 and 500 on
   three dependent waves (`--shape`, default 20 drafts, 2 essays each, 15 evaluations each: 660
   calls); its ratio lines are collected into the summary. Goal 1.1x,
   peak in flight reaching the cap and never above it.

Numbers only: nothing is asserted; the summary says each goal's figure and target. The
machine is shared, so figures are noisy; the ratios are the measure, the walls only context.

`make bench` runs `--docs 1000 --reps 1` (about 5 minutes on an idle 2-core machine). The
issue's figures:

    python bench/bench_goals.py --docs 10000 --reps 3 --no-calls
    python bench/bench_throughput.py --scaling --sizes 1000,10000,100000 --reps 1 --variants daydream,bare1

Usage: python bench/bench_goals.py [--docs 1000] [--reps 1] [--cores 2] [--caps 100,200,500]
           [--shape 20,2,15] [--no-calls] [--extra "--persistence-backend db"] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_throughput as bt
from common import REPO, fmt, median, repo_env

DOCUMENT_RULES = {"gen_document", "document"}  # daydream's, the bare Snakefile's (1 job/doc)
BEFORE_DOCUMENTS = {"cohort_inputs_fingerprint", "cohort_membership", "membership"}
VARIANTS = ("daydream", "bare1")


# ------------------------------------------------------------------ Snakemake's job records


def job_records(root: Path) -> list[dict]:
    """One record per job of the runs made in `root` (its working folder): rule, start, end (epoch
    seconds), from Snakemake's metadata (one record per output file; a job's outputs share it)."""
    database = root / ".snakemake" / "metadata.db"
    rows: list[tuple] = []
    if database.exists():
        with sqlite3.connect(database) as connection:
            rows = connection.execute("SELECT rule, starttime, endtime, job_hash FROM snakemake_metadata").fetchall()
    else:
        for folder, _, names in os.walk(root / ".snakemake" / "metadata"):
            for name in names:
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    record = json.load(handle)
                rows.append((record.get("rule"), record.get("starttime"), record.get("endtime"),
                             record.get("job_hash")))
    jobs: dict[tuple, dict] = {}
    for rule, start, end, job_hash in rows:
        if rule is None or start is None or end is None:
            continue
        job = jobs.setdefault((rule, job_hash), {"rule": rule, "start": start, "end": end})
        job["start"], job["end"] = min(job["start"], start), max(job["end"], end)  # per output file
    return list(jobs.values())


def tail_of(root: Path, run_end: float) -> dict:
    """The last document job's end, the run's end, and every job after the documents."""
    jobs = job_records(root)
    documents = [j for j in jobs if j["rule"] in DOCUMENT_RULES]
    if not documents:
        return {"tail_s": None, "jobs": []}
    last = max(j["end"] for j in documents)
    after = sorted((j for j in jobs if j["rule"] not in BEFORE_DOCUMENTS | DOCUMENT_RULES),
                   key=lambda j: j["start"])
    return {"tail_s": run_end - last,
            "jobs": [{"rule": j["rule"], "start_s": j["start"] - last, "end_s": j["end"] - last,
                      "own_s": j["end"] - j["start"]} for j in after]}


# ------------------------------------------------------------------ the documents


def measure(variant: bt.Variant, root: Path, shape: bt.Shape, flags: list[str], cores: int) -> dict:
    """A full run, its tail, a no-op rerun, then a dry run once the gens store is removed."""
    variant.prepare(root, shape)
    common = ("--cores", str(cores))
    full = bt.run_snakemake(variant.command(root, shape, flags, *common), root, root / "full.log")
    documents, _, _ = bt.document_times(variant.gens(root))
    tail = tail_of(root, full.started_at + full.wall_s)
    noop = bt.run_snakemake(variant.command(root, shape, flags, *common), root, root / "noop.log")
    shutil.rmtree(variant.gens(root), ignore_errors=True)
    dry = bt.run_snakemake(variant.command(root, shape, flags, *common, "-n"), root, root / "dry.log")
    failed = [name for name, run in (("full", full), ("no-op", noop), ("dry", dry)) if run.returncode != 0]
    return {"documents": documents, "full_s": full.wall_s, "noop_s": noop.wall_s, "dry_s": dry.wall_s,
            "full_cpu": full.cpu_s, "noop_cpu": noop.cpu_s, "dry_cpu": dry.cpu_s,
            "rss_full_mb": full.peak_rss_mb, "rss_noop_mb": noop.peak_rss_mb, "rss_dry_mb": dry.peak_rss_mb,
            "planned_jobs": dry.planned_jobs(), "tail": tail, "failed": failed,
            "profiles": sorted({full.profile_used(), noop.profile_used(), dry.profile_used()}),
            "tail_of_failure": full.text()[-1500:] if full.returncode else ""}


def run_documents(args, flags: list[str], workdir: Path) -> dict[str, list[dict]]:
    shape = bt.choose_shape(args.docs)
    print(f"\n== documents: {shape.documents} ({shape.describe()})", flush=True)
    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for rep in range(args.reps):
        for name in VARIANTS[rep % 2:] + VARIANTS[:rep % 2]:
            root = workdir / f"{shape.documents}-r{rep}-{name}"
            shutil.rmtree(root, ignore_errors=True)
            result = measure(bt.VARIANTS[name], root, shape, flags, args.cores)
            results[name].append(result)
            print(f"   rep {rep + 1} {name:9s} full {result['full_s']:7.1f} s  dry {result['dry_s']:6.1f} s  "
                  f"no-op {result['noop_s']:6.1f} s  (CPU {result['full_cpu']:.1f}, {result['dry_cpu']:.1f}, "
                  f"{result['noop_cpu']:.1f} s)  tail {fmt(result['tail']['tail_s'], '.1f')} s  "
                  f"peak RSS {max(result['rss_full_mb'], result['rss_dry_mb'], result['rss_noop_mb']):5.0f} MB  "
                  f"documents {result['documents']}  jobs planned {result['planned_jobs']}"
                  + (f"  FAILED: {result['failed']}" if result["failed"] else ""), flush=True)
            if result["failed"]:
                print(result["tail_of_failure"], flush=True)
            if args.keep is None:
                shutil.rmtree(root, ignore_errors=True)
    return results


def report_documents(results: dict[str, list[dict]]) -> list[tuple[str, str, str]]:
    """Prints the documents' and the tail's figures; returns the summary's rows."""
    days, bares = results["daydream"], results["bare1"]
    print(f"\nmedians of {len(days)} interleaved repetition(s); profile applied: "
          f"{', '.join(sorted({p for r in days + bares for p in r['profiles']}))}")
    print(f"{'':22s} {'full s':>8s} {'dry s':>7s} {'no-op s':>8s} {'full CPU':>9s} {'dry CPU':>8s} {'no-op CPU':>10s} "
          f"{'tail s':>7s} {'peak RSS MB':>12s}")
    for name, runs in results.items():
        m = {key: fmt(median([r[key] for r in runs]), ".1f")
             for key in ("full_s", "dry_s", "noop_s", "full_cpu", "dry_cpu", "noop_cpu")}
        print(f"{bt.VARIANTS[name].label:22s} {m['full_s']:>8s} {m['dry_s']:>7s} {m['noop_s']:>8s} {m['full_cpu']:>9s} "
              f"{m['dry_cpu']:>8s} {m['noop_cpu']:>10s} {fmt(median([r['tail']['tail_s'] for r in runs]), '.1f'):>7s} "
              f"{fmt(median([max(r['rss_full_mb'], r['rss_dry_mb'], r['rss_noop_mb']) for r in runs]), '.0f'):>12s}")
    rows = []
    for key, label in (("full", "full run"), ("dry", "dry run"), ("noop", "no-op rerun")):
        wall, cpu = (median([d[k] / b[k] for d, b in zip(days, bares, strict=True) if d[k] and b[k]])
                     for k in (f"{key}_s", f"{key}_cpu"))
        rows.append((f"{label}, {days[0]['documents']} documents",
                     f"{fmt(wall)}x the bare Snakefile (CPU seconds {fmt(cpu)}x)", "<= 1.10x"))
    print("\ntail of daydream's full run (seconds after the last document job's end; median over repetitions "
          "of each job's figures, in the order the jobs started):")
    per_rule: dict[str, list[dict]] = {}
    for run in days:
        for job in run["tail"]["jobs"]:
            per_rule.setdefault(job["rule"], []).append(job)
    for rule, jobs in per_rule.items():
        print(f"   {rule:24s} starts {fmt(median([j['start_s'] for j in jobs]), '6.1f')}  "
              f"ends {fmt(median([j['end_s'] for j in jobs]), '6.1f')}  own {fmt(median([j['own_s'] for j in jobs]), '6.1f')} s"
              + (f"  ({len(jobs) // len(days)} jobs a run)" if len(jobs) > len(days) else ""))
    tail = median([r["tail"]["tail_s"] for r in days])
    bare_tail = median([r["tail"]["tail_s"] for r in bares])
    print(f"   run's end                {fmt(tail, '6.1f')} s after the last document "
          f"(the bare Snakefile: {fmt(bare_tail, '.1f')} s, Snakemake's own wind-down)")
    rows.append((f"tail, {days[0]['documents']} documents", f"{fmt(tail, '.1f')} s (bare {fmt(bare_tail, '.1f')} s)",
                 "< 10 s at 10,000"))
    return rows


# ------------------------------------------------------------------ the calls


def run_calls(args) -> list[tuple[str, str, str]]:
    """bench_calls.py as it is, its output shown; the summary's rows from its ratio lines."""
    caps = [int(c) for c in args.caps.split(",")]
    command = [sys.executable, str(REPO / "bench" / "bench_calls.py"), "--caps", ",".join(map(str, caps)),
               "--shape", args.shape, "--reps", str(args.calls_reps)]
    print(f"\n== calls: {shlex.join(command[1:])}", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, env=repo_env())
    print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        print(f"bench_calls.py failed ({done.returncode}):\n{done.stderr[-2000:]}", flush=True)
    return calls_rows(done.stdout)


def calls_rows(output: str) -> list[tuple[str, str, str]]:
    """The summary's rows from bench_calls.py's report: per cap, daydream / loop and the peaks in flight."""
    rows, cap = [], None
    for line in output.splitlines():
        if (match := re.match(r"\s*cap (\d+),", line)):
            cap, in_flight = int(match.group(1)), []
        elif cap is not None and (found := re.search(r"peak in flight (\d+ / cap \d+)", line)):
            in_flight.append(found.group(1))
        elif cap is not None and "daydream / loop" in line:
            ratio = found.group(1) if (found := re.search(r"([0-9.]+|-)x", line)) else "?"
            rows.append((f"calls at cap {cap}", f"{ratio}x the asyncio loop; in flight "
                         f"{' (loop), '.join(in_flight)}{' (daydream)' if len(in_flight) > 1 else ''}",
                         "<= 1.10x, reaching the cap"))
        elif cap is not None and ("REFUSED" in line or "FAILED" in line):
            rows.append((f"calls at cap {cap}", line.strip().split(None, 1)[1][:60], "<= 1.10x, reaching the cap"))
    return rows or [("calls", "no `daydream / loop` line in bench_calls.py's output", "<= 1.10x, reaching the cap")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000, help="about this many documents")
    parser.add_argument("--reps", type=int, default=1, help="interleaved repetitions of the documents' runs")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--profile", type=Path, default=REPO / "profiles" / "default",
                        help="the profile whose settings both variants get as flags ('none': no settings)")
    parser.add_argument("--extra", default="", help="more Snakemake flags for both variants")
    parser.add_argument("--caps", default="100,200,500", help="bench_calls.py's caps")
    parser.add_argument("--shape", default="20,2,15",
                        help="bench_calls.py's --shape: drafts, essays per draft, evaluations per essay "
                             "(the default's 600 evaluations can fill cap 500)")
    parser.add_argument("--calls-reps", type=int, default=1, help="bench_calls.py's --reps")
    parser.add_argument("--no-calls", action="store_true", help="skip the calls (bench_calls.py)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    flags = bt.profile_flags(None if str(args.profile) == "none" else args.profile) + shlex.split(args.extra)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="daydream-bench-goals-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"flags for both variants: --cores {args.cores} {' '.join(flags)} --workflow-profile none")
    rows = report_documents(run_documents(args, flags, workdir))
    if not args.no_calls:
        rows += run_calls(args)
    print(f"\n== summary ({time.perf_counter() - started:.0f} s; a shared machine: figures are noisy)")
    for goal, figure, target in rows:
        print(f"   {goal:34s} {figure:58s} goal {target}")
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
