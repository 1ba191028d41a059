"""Snakemake's metadata backends compared: `--persistence-backend file` (one JSON file per
output under .snakemake/metadata/, the default) against `db` (one SQLite file,
.snakemake/metadata.db; experimental since Snakemake 9.17), in one run.

Each variant (daydream, and the bare Snakefile with one job per document for Snakemake's own
share) runs with each backend: for each repetition, in turn (the order rotated), a full run from
nothing, a no-op rerun, and a dry run after the gens store is removed (bench_goals.measure),
with the settings of profiles/default as flags. Prints medians of the walls, peak RSS, what the
metadata takes on disk, and db / file taken within each repetition. Numbers only.

Usage: python bench/bench_persistence.py [--docs 3000] [--reps 3] [--variants daydream,bare1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import tempfile
from pathlib import Path

import bench_goals
import bench_throughput as bt
from common import REPO, document_run_arguments, fmt, median

BACKENDS = {"file": [], "db": ["--persistence-backend", "db"]}


def metadata_size(root: Path) -> tuple[int, int]:
    """(files, bytes) of Snakemake's metadata in a working folder."""
    files = size = 0
    for folder, _, names in os.walk(root / ".snakemake"):
        if "metadata" not in folder and not any(n.startswith("metadata.db") for n in names):
            continue
        for name in names:
            if "metadata" in folder or name.startswith("metadata.db"):
                files += 1
                size += os.path.getsize(os.path.join(folder, name))
    return files, size


def main() -> None:
    parser = document_run_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), 3000, 3)
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    flags = bt.profile_flags(REPO / "profiles" / "default") + shlex.split(args.extra)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="daydream-bench-persistence-"))
    workdir.mkdir(parents=True, exist_ok=True)
    shape = bt.choose_shape(args.docs)
    print(f"flags: --cores {args.cores} {' '.join(flags)} --workflow-profile none, then the backend's")
    print(f"\n== {shape.documents} documents: {shape.describe()}", flush=True)
    runs = [(v, b) for v in variants for b in BACKENDS]
    results: dict[tuple[str, str], list[dict]] = {run: [] for run in runs}
    for rep in range(args.reps):
        for variant, backend in runs[rep % len(runs):] + runs[:rep % len(runs)]:
            root = workdir / f"r{rep}-{variant}-{backend}"
            shutil.rmtree(root, ignore_errors=True)
            result = bench_goals.measure(bt.VARIANTS[variant], root, shape, flags + BACKENDS[backend], args.cores)
            result["metadata_files"], result["metadata_mb"] = metadata_size(root)
            result["metadata_mb"] /= 2**20
            results[(variant, backend)].append(result)
            print(f"   rep {rep + 1} {variant:9s} {backend:4s} full {result['full_s']:7.1f} s  dry {result['dry_s']:6.1f} s  "
                  f"no-op {result['noop_s']:6.1f} s  (CPU {result['full_cpu']:.1f}, {result['dry_cpu']:.1f}, "
                  f"{result['noop_cpu']:.1f} s)  tail {fmt(result['tail']['tail_s'], '.1f')} s  peak RSS {result['rss_full_mb']:5.0f} MB  metadata "
                  f"{result['metadata_files']} files {result['metadata_mb']:.1f} MB  documents {result['documents']}"
                  + (f"  FAILED: {result['failed']}\n{result['tail_of_failure']}" if result["failed"] else ""),
                  flush=True)
            if args.keep is None:
                shutil.rmtree(root, ignore_errors=True)
    print(f"\nmedians of {args.reps} interleaved repetition(s):")
    print(f"{'':16s} {'full s':>8s} {'dry s':>7s} {'no-op s':>8s} {'RSS MB':>7s} {'dry RSS':>8s} {'meta files':>11s}")
    for (variant, backend), rs in results.items():
        print(f"{variant + ' ' + backend:16s} {fmt(median([r['full_s'] for r in rs]), '.1f'):>8s} "
              f"{fmt(median([r['dry_s'] for r in rs]), '.1f'):>7s} {fmt(median([r['noop_s'] for r in rs]), '.1f'):>8s} "
              f"{fmt(median([r['rss_full_mb'] for r in rs]), '.0f'):>7s} {fmt(median([r['rss_dry_mb'] for r in rs]), '.0f'):>8s} "
              f"{fmt(median([r['metadata_files'] for r in rs]), '.0f'):>11s}")
    for variant in variants:
        pairs = list(zip(results[(variant, "db")], results[(variant, "file")], strict=True))
        ratios = {key: median([d[key] / f[key] for d, f in pairs if d[key] and f[key]])
                  for key in ("full_s", "dry_s", "noop_s", "full_cpu", "dry_cpu", "noop_cpu", "rss_full_mb")}
        print(f"{variant:9s} db / file   full {fmt(ratios['full_s'])}x  dry {fmt(ratios['dry_s'])}x  "
              f"no-op {fmt(ratios['noop_s'])}x  peak RSS {fmt(ratios['rss_full_mb'])}x;  CPU seconds: full "
              f"{fmt(ratios['full_cpu'])}x  dry {fmt(ratios['dry_cpu'])}x  no-op {fmt(ratios['noop_cpu'])}x")
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
