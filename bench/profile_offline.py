"""Where the time of an offline run goes: py-spy over the Snakemake process, summarised.

Runs one full offline run of about `--docs` documents (default ~2,000) of `--variant` (daydream
or the bare Snakefile, as bench/bench_throughput.py builds them) under `py-spy record` (raw
collapsed stacks, every thread, idle samples left out), then prints the functions with the most
samples, inclusive and self, and the share of samples in each part of Snakemake and daydream.
py-spy is not a project dependency: pass its path (`--py-spy`), e.g. after
`python -m venv /tmp/pyspy && /tmp/pyspy/bin/pip install py-spy`.
Usage: python bench/profile_offline.py --py-spy /tmp/pyspy/bin/py-spy [--docs 2000]
           [--variant daydream] [--extra "--max-jobs-per-timespan 10000/1s"] [--top 25] [--keep DIR]
"""

from __future__ import annotations

import argparse
import collections
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from bench_throughput import VARIANTS, choose_shape, profile_flags  # noqa: E402
from common import REPO, repo_env  # noqa: E402

# Parts of the run, by the file a frame is in (first match wins, checked on every frame of a stack).
PARTS = [
    ("daydream package (input functions, job bodies)", r"(^|/)daydream/"),
    ("workflow files (Snakefile, rules/*.smk, bare Snakefile)", r"(Snakefile|\.smk)\b"),
    ("snakemake persistence (.snakemake/metadata, incomplete markers)", r"snakemake/persistence"),
    ("snakemake logging", r"snakemake/logging|snakemake_interface_logger|logging/__init__"),
    ("snakemake scheduler", r"snakemake/scheduling|snakemake_interface_scheduler|scheduler"),
    ("snakemake DAG (update, checkpoints, finish)", r"snakemake/dag\.py"),
    ("snakemake jobs", r"snakemake/jobs\.py"),
    ("snakemake io (stat, exists, mtime)", r"snakemake/io"),
    ("snakemake executors (thread pool, run wrapper)", r"snakemake/executors|executor_plugins|script"),
    ("snakemake rules (expand_wildcards, input functions)", r"snakemake/rules\.py"),
]
# Leaf functions that are a thread waiting, not working (py-spy counts some of them as active).
WAITS = ("Condition.wait ", "Event.wait ", "EpollSelector.select ", "_worker (", "Thread.join ",
         "Lock.acquire ", "sleep (")
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::(?P<line>\d+))?\)$")


def parse(raw: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def short(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "wt-bench/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


def part_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        match = FRAME.match(frame)
        path = match["file"] if match else frame
        for label, pattern in PARTS:
            if re.search(pattern, path):
                return label
    return "other (interpreter start-up, imports, threading)"


def summarise(stacks: list[tuple[list[str], int]], top: int) -> None:
    waiting = sum(count for frames, count in stacks if frames[-1].startswith(WAITS))
    stacks = [(frames, count) for frames, count in stacks if not frames[-1].startswith(WAITS)]
    total = sum(count for _, count in stacks) or 1
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    parts: collections.Counter[str] = collections.Counter()
    main_parts: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        if not frames[0].startswith("Thread._bootstrap"):
            main_parts[part_of(frames)] += count
        names = [short(f) for f in frames]
        for name in set(names):
            inclusive[name] += count
        own[names[-1]] += count
        parts[part_of(frames)] += count
    print(f"\n{total} working samples, all threads ({waiting} samples of threads waiting left out)")
    print("\nshare of working samples by part (the innermost frame of a listed part decides; a stack "
          "inside daydream code counts as daydream even when Snakemake called it):")
    for label, count in parts.most_common():
        print(f"  {100 * count / total:5.1f}%  {label}")
    main = sum(main_parts.values()) or 1
    print(f"\nthe main thread (Snakemake's scheduler loop, which also runs input functions and job "
          f"finalisation): {100 * main / total:.1f}% of working samples; its own split:")
    for label, count in main_parts.most_common():
        print(f"  {100 * count / main:5.1f}%  {label}")
    print(f"\ntop {top} functions, inclusive:")
    for name, count in inclusive.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {name}")
    print(f"\ntop {top} functions, self:")
    for name, count in own.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--py-spy", required=True, help="path of the py-spy executable")
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--variant", default="daydream", choices=list(VARIANTS))
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--extra", default="--max-jobs-per-timespan 10000/1s",
                        help="more Snakemake flags (default lifts the 100/1s job rate)")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--raw", type=Path, help="summarise this raw py-spy file instead of running")
    parser.add_argument("--keep", type=Path)
    args = parser.parse_args()
    if args.raw:
        summarise(parse(args.raw), args.top)
        return
    shape = choose_shape(args.docs)
    variant = VARIANTS[args.variant]
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="daydream-profile-"))
    root = workdir / args.variant
    shutil.rmtree(root, ignore_errors=True)
    variant.prepare(root, shape)
    flags = profile_flags(REPO / "profiles" / "default") + shlex.split(args.extra)
    command = variant.command(root, shape, flags, "--cores", str(args.cores))
    raw = workdir / f"{args.variant}.pyspy.txt"
    print(f"{variant.label}, {shape.documents} documents, flags: {' '.join(flags)}; raw stacks: {raw}", flush=True)
    with (root / "run.log").open("w", encoding="utf-8") as sink:
        done = subprocess.run([args.py_spy, "record", "--rate", str(args.rate), "--format", "raw", "--output",
                               str(raw), "--", *command], cwd=root, stdout=sink, stderr=subprocess.STDOUT,
                              env=repo_env())
    if done.returncode != 0:
        raise SystemExit(f"the profiled run failed ({done.returncode}); see {root / 'run.log'}")
    summarise(parse(raw), args.top)
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
