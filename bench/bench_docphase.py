"""The document phase's CPU seconds, per thread, of daydream against the bare Snakefile.

A shared 2-core machine makes walls noisy; CPU seconds much less so. For each variant (and
repetition, interleaved, the order rotated) this runs a full run from nothing, sampling the
CPU seconds of every thread of the Snakemake process (`/proc/<pid>/task/*/stat`) every
`--sample` seconds, then takes from Snakemake's job records (bench_goals.job_records) the
first document job's start and the last one's end: the document phase. It prints, for that
phase, the wall, the main thread's CPU seconds (Snakemake's scheduler loop: job selection,
preparation, finalisation, metadata records, the logger) and the other threads' (the jobs'
`run:` bodies, which share the GIL with it, and daydream's own threads), each also per
document; then a no-op rerun's and a dry run's CPU seconds (the whole process tree), and the
ratios daydream / bare within each repetition. Numbers only: nothing is asserted.

Usage: python bench/bench_docphase.py [--docs 2000] [--reps 2] [--cores 2] [--sample 0.2]
           [--variants daydream,bare1] [--extra "..."] [--keep DIR]
"""

from __future__ import annotations

import argparse
import bisect
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import bench_throughput as bt
from bench_goals import DOCUMENT_RULES, job_records
from common import REPO, document_run_arguments, fmt, median, repo_env

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of a process, by thread id (the main
    thread's id is the process's)."""
    found: dict[int, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended between listing and reading
        found[int(tid)] = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15 of stat)
    return found


def sampled_run(command: list[str], cwd: Path, output: Path, every: float) -> tuple[float, list[tuple]]:
    """Run Snakemake; returns its wall and samples (epoch time, main thread CPU s, other threads'
    CPU s). A thread that ended is no longer in /proc: each thread counts with its figure when
    last seen."""
    samples: list[tuple[float, float, float]] = []
    seen: dict[int, float] = {}  # every thread's CPU seconds when last seen
    started = time.perf_counter()
    with output.open("w", encoding="utf-8") as sink:
        child = subprocess.Popen(command, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, env=repo_env())

        def watch() -> None:
            while child.poll() is None:
                threads = thread_cpu(child.pid)
                if threads:
                    seen.update(threads)
                    main = seen.get(child.pid, 0.0)
                    samples.append((time.time(), main, sum(seen.values()) - main))
                time.sleep(every)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        child.wait()
        watcher.join()
    return time.perf_counter() - started, samples


def at(samples: list[tuple], when: float) -> tuple[float, float]:
    """The (main, other) CPU seconds at epoch time `when`, interpolated between samples."""
    times = [s[0] for s in samples]
    i = bisect.bisect_left(times, when)
    if i <= 0:
        return samples[0][1], samples[0][2]
    if i >= len(samples):
        return samples[-1][1], samples[-1][2]
    (t0, m0, o0), (t1, m1, o1) = samples[i - 1], samples[i]
    share = (when - t0) / (t1 - t0) if t1 > t0 else 0.0
    return m0 + share * (m1 - m0), o0 + share * (o1 - o0)


def measure(variant: bt.Variant, root: Path, shape: bt.Shape, flags: list[str], cores: int, every: float) -> dict:
    variant.prepare(root, shape)
    common = ("--cores", str(cores))
    wall, samples = sampled_run(variant.command(root, shape, flags, *common), root, root / "full.log", every)
    documents = [j for j in job_records(root) if j["rule"] in DOCUMENT_RULES]
    result = {"documents": len(documents), "full_s": wall}
    if documents and samples:
        first, last = min(j["start"] for j in documents), max(j["end"] for j in documents)
        (m0, o0), (m1, o1) = at(samples, first), at(samples, last)
        result.update(phase_s=last - first, main_cpu=m1 - m0, other_cpu=o1 - o0,
                      total_main=samples[-1][1], total_other=samples[-1][2])
    noop = bt.run_snakemake(variant.command(root, shape, flags, *common), root, root / "noop.log")
    shutil.rmtree(variant.gens(root), ignore_errors=True)
    dry = bt.run_snakemake(variant.command(root, shape, flags, *common, "-n"), root, root / "dry.log")
    result.update(noop_s=noop.wall_s, noop_cpu=noop.cpu_s, dry_s=dry.wall_s, dry_cpu=dry.cpu_s,
                  failed=[n for n, r in (("no-op", noop), ("dry", dry)) if r.returncode])
    return result


def main() -> None:
    parser = document_run_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), 2000, 2)
    parser.add_argument("--sample", type=float, default=0.2, help="seconds between CPU samples")
    args = parser.parse_args()
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    flags = bt.profile_flags(REPO / "profiles" / "default") + shlex.split(args.extra)
    shape = bt.choose_shape(args.docs)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="daydream-bench-docphase-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"{shape.documents} documents ({shape.describe()}); flags: --cores {args.cores} {' '.join(flags)}; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    results: dict[str, list[dict]] = {name: [] for name in names}
    for rep in range(args.reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            root = workdir / f"r{rep}-{name}"
            shutil.rmtree(root, ignore_errors=True)
            r = measure(bt.VARIANTS[name], root, shape, flags, args.cores, args.sample)
            results[name].append(r)
            docs = r["documents"] or 1
            print(f"   rep {rep + 1} {name:9s} full {r['full_s']:6.1f} s; document phase {fmt(r.get('phase_s'), '.1f')} s, "
                  f"main thread {fmt(r.get('main_cpu'), '.1f')} s CPU ({fmt(r.get('main_cpu', 0) * 1000 / docs)} ms/doc), "
                  f"other threads {fmt(r.get('other_cpu'), '.1f')} s ({fmt(r.get('other_cpu', 0) * 1000 / docs)} ms/doc); "
                  f"whole run main {fmt(r.get('total_main'), '.1f')} + other {fmt(r.get('total_other'), '.1f')} s; "
                  f"no-op {r['noop_s']:.1f} s ({r['noop_cpu']:.1f} s CPU), dry {r['dry_s']:.1f} s "
                  f"({r['dry_cpu']:.1f} s CPU); load {os.getloadavg()[0]:.1f}"
                  + (f"  FAILED: {r['failed']}" if r["failed"] else ""), flush=True)
            if args.keep is None:
                shutil.rmtree(root, ignore_errors=True)
    if "daydream" in results and "bare1" in results:
        pairs = list(zip(results["daydream"], results["bare1"], strict=True))

        def ratio(key: str) -> str:
            return fmt(median([d.get(key) / b.get(key) if d.get(key) and b.get(key) else None for d, b in pairs]))

        phase = median([((d["main_cpu"] + d["other_cpu"]) / (b["main_cpu"] + b["other_cpu"]))
                        for d, b in pairs if d.get("main_cpu") and b.get("main_cpu")])
        print(f"daydream / bare1 (medians of per-repetition ratios): document phase wall {ratio('phase_s')}x, "
              f"main thread CPU {ratio('main_cpu')}x, all threads' CPU {fmt(phase)}x; no-op CPU "
              f"{ratio('noop_cpu')}x (wall {ratio('noop_s')}x); dry run CPU {ratio('dry_cpu')}x "
              f"(wall {ratio('dry_s')}x); load average now {os.getloadavg()[0]:.1f}", flush=True)
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
