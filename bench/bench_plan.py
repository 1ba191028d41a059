"""The dry run and the no-op rerun of daydream against the bare Snakefile, many times on one store.

A full run at 10,000 documents takes 5-10 minutes on the shared 2-core machine, and a dry run or
a no-op rerun 30-60 s whose wall swings 2x with the load: several repetitions are needed, not
several full runs. For each variant (daydream, bench/bare/Snakefile with one job per document,
the same flags as bench_throughput.py gives them) this makes, once and untimed, a full store
(every document and report) and a planned store (the membership only); then, `--reps` times in
turn (the order rotated): a no-op rerun on the full store and a dry run (`-n`) on the planned
one. Prints each run's wall and CPU seconds (user + system of the process tree, steadier than
the wall on a loaded machine) and the load average, then the medians and daydream / bare taken
within each repetition. `--checkout DIR` adds daydream from another checkout (e.g. a `git
worktree` of an earlier commit) on the same stores: a before figure in the same run. Numbers
only: nothing is asserted.

Usage: python bench/bench_plan.py [--docs 10000] [--reps 3] [--checkout DIR] [--keep DIR [--reuse]]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import bench_throughput as bt
import common
from common import REPO, fmt, median


def command(kind: str, root: Path, shape: bt.Shape, flags: list[str], checkout: Path, *extra: str) -> list[str]:
    """The variant's command (bench_throughput's), daydream's Snakefile taken from `checkout`."""
    line = bt.VARIANTS[kind].command(root, shape, flags, "--cores", "2", *extra)
    return [str(checkout / "Snakefile") if part == str(REPO / "Snakefile") else part for part in line]


def run(line: list[str], root: Path, log: Path, checkout: Path) -> bt.RunResult:
    """One run with `checkout` first on PYTHONPATH (its `daydream` package is the one imported)."""
    saved = common.REPO
    common.REPO = checkout  # read by common.repo_env, which bench_throughput.run_snakemake calls
    try:
        return bt.run_snakemake(line, root, log)
    finally:
        common.REPO = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10000, help="about this many documents")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions of each run")
    parser.add_argument("--checkout", type=Path, help="also daydream from this checkout (a before figure)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--reuse", action="store_true", help="with --keep: use the stores already made there")
    args = parser.parse_args()
    shape = bt.choose_shape(args.docs)
    flags = bt.profile_flags(REPO / "profiles" / "default")
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="daydream-bench-plan-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"{shape.documents} documents: {shape.describe()}\nflags: --cores 2 {' '.join(flags)}", flush=True)
    runs = [("bare1", "bare1", REPO), ("daydream", "daydream", REPO)]
    if args.checkout:
        runs.append(("daydream", "before", args.checkout.resolve()))
    for kind in ("bare1", "daydream"):  # the stores, untimed; a checkout's daydream shares daydream's
        for purpose in ("full", "plan"):
            root = workdir / f"{purpose}-{kind}"
            if args.reuse and args.keep and root.is_dir():
                print(f"   {kind} {purpose} store: reused ({root})", flush=True)
                continue
            shutil.rmtree(root, ignore_errors=True)
            bt.VARIANTS[kind].prepare(root, shape)
            extra = () if purpose == "full" else (str(bt.VARIANTS[kind].membership(root)),)
            made = run(command(kind, root, shape, flags, REPO, *extra), root, root / f"{purpose}.log", REPO)
            print(f"   {kind} {purpose} store: {made.wall_s:.0f} s, exit {made.returncode}", flush=True)
            if made.returncode != 0:
                raise SystemExit(made.text()[-1500:])
    found: dict[tuple[str, str], list[bt.RunResult]] = {}
    for rep in range(args.reps):
        order = runs[rep % len(runs):] + runs[:rep % len(runs)]
        for what in ("dry", "noop"):
            for kind, name, checkout in order:
                root = workdir / f"{'plan' if what == 'dry' else 'full'}-{kind}"
                load = os.getloadavg()[0]
                extra = ("-n",) if what == "dry" else ()
                done = run(command(kind, root, shape, flags, checkout, *extra), root,
                           root / f"{what}-{name}-{rep}.log", checkout)
                found.setdefault((what, name), []).append(done)
                text = done.text()
                planned = done.planned_jobs() if what == "dry" else ("nothing to do" if "Nothing to be done" in text
                                                                     else "NOT A NO-OP")
                print(f"   rep {rep + 1} {what:4s} {name:8s} wall {done.wall_s:6.1f} s  CPU {done.cpu_s:5.1f} s  "
                      f"{planned}  exit {done.returncode}  load {load:.1f}", flush=True)
    print(f"\nmedians of {args.reps} repetition(s), daydream / bare within each repetition:")
    for what, label in (("dry", "dry run"), ("noop", "no-op rerun")):
        for name in [n for _, n, _ in runs]:
            mine, bare = found[what, name], found[what, "bare1"]
            wall = median([m.wall_s / b.wall_s for m, b in zip(mine, bare, strict=True)])
            cpu = median([m.cpu_s / b.cpu_s for m, b in zip(mine, bare, strict=True)])
            print(f"   {label:12s} {name:8s} wall {fmt(median([m.wall_s for m in mine]), '6.1f')} s  CPU "
                  f"{fmt(median([m.cpu_s for m in mine]), '5.1f')} s" +
                  ("" if name == "bare1" else f"   / bare: wall {fmt(wall)}x, CPU {fmt(cpu)}x"))
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
