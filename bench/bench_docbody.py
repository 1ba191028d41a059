"""The document job's body alone: `documents.write_document` in a loop, in this process, with
no Snakemake around it, over a fresh store of a bench-shaped cohort on the offline model.

It prints the body's CPU seconds per document (this thread's, median and lower quartile by
stage: the figure least moved by other processes on a shared machine) and the process's user
and system seconds per document. For figures that do not move with the load, count what one
document costs instead of timing it, between two `--limit`s (the difference over the
documents between them):

    valgrind --tool=cachegrind --cache-sim=no python bench/bench_docbody.py --limit 100   # I refs
    valgrind --tool=cachegrind --cache-sim=no python bench/bench_docbody.py --limit 300
    strace -f -c python bench/bench_docbody.py --limit 100                                # system calls
    strace -f -c python bench/bench_docbody.py --limit 300

`--checkout DIR` runs another checkout's package (a before figure): that checkout first on
sys.path. Numbers only: nothing is asserted.

Usage: python bench/bench_docbody.py [--docs 1000] [--limit N] [--checkout DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000, help="the cohort: about this many documents")
    parser.add_argument("--limit", type=int, default=0, help="make only the first N documents (0: all)")
    parser.add_argument("--checkout", type=Path, default=HERE.parent, help="the checkout whose package runs")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    return parser.parse_args()


def quantile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[int(fraction * (len(ordered) - 1))]


def main() -> None:
    args = arguments()
    sys.path[:0] = [str(args.checkout.resolve()), str(HERE)]
    import bench_throughput
    import yaml

    from daydream import cohorts, documents, stages
    from daydream.runtime import Runtime

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_docbody_"))
    shutil.rmtree(work, ignore_errors=True)
    (work / "cohorts").mkdir(parents=True)
    shutil.copytree(args.checkout / "data" / "1_raw", work / "data" / "1_raw")
    shape = bench_throughput.choose_shape(args.docs)
    (work / "cohorts" / "bench.yaml").write_text(yaml.safe_dump(shape.cohort(), sort_keys=False))
    rt = Runtime({"data_root": str(work / "data"), "cohorts_dir": str(work / "cohorts"), "cohorts": ["bench"],
                  "offline": True})
    cohorts.write_cohort(rt, "bench")
    members = [m for stage in stages.STAGES for m in rt.membership.members("bench", stage.name)]
    members = members[:args.limit] if args.limit else members

    def job(member) -> None:
        log = rt.paths.log_path("gen_document", member.stage, member.gen_id)
        documents.write_document(rt, member.stage, member.gen_id, str(log))

    for member in members[:5]:  # templates compiled, modules warm
        job(member)
    per_stage: dict[str, list[float]] = {}
    before = os.times()
    for member in members[5:]:
        started = time.thread_time()
        job(member)
        per_stage.setdefault(member.stage, []).append(time.thread_time() - started)
    after = os.times()
    count = max(1, len(members) - 5)
    every = [v for values in per_stage.values() for v in values]
    print(f"{shape.describe()}; {count} documents timed, from {args.checkout}; load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"process: user {1e3 * (after.user - before.user) / count:.3f} ms/doc, system "
          f"{1e3 * (after.system - before.system) / count:.3f} ms/doc")
    if every:
        print(f"thread CPU per document: median {1e3 * quantile(every, 0.5):.3f} ms, lower quartile "
              f"{1e3 * quantile(every, 0.25):.3f} ms; " + "; ".join(
                  f"{stage} {1e3 * quantile(v, 0.5):.3f} / {1e3 * quantile(v, 0.25):.3f} ms (n={len(v)})"
                  for stage, v in per_stage.items()))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
