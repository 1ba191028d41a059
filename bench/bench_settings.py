"""Snakemake settings that may cut the per-job cost, on the bare Snakefile and on daydream.

For each setting (added to the workflow profile's flags; all but the first also lift
`--max-jobs-per-timespan`, whose default 100/1s would hide every other effect), each variant
gets a fresh folder per repetition, interleaved, for a full offline run of about `--docs`
documents (default ~2,000) and a no-op rerun. Prints a table: setting -> medians of documents/s
and no-op wall for each variant, and daydream / bare taken within each repetition. Numbers only:
nothing is asserted.
Usage: python bench/bench_settings.py [--docs 2000] [--reps 1] [--variants bare2,daydream]
           [--only LABEL,...] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from bench_throughput import VARIANTS, choose_shape, document_times, profile_flags, run_snakemake  # noqa: E402
from common import REPO, fmt, median  # noqa: E402

LIFTED = ["--max-jobs-per-timespan", "10000/1s"]
SETTINGS = [
    ("profile as is (100/1s)", []),
    ("--max-jobs-per-timespan 10000/1s", LIFTED),
    ("lifted + --drop-metadata", [*LIFTED, "--drop-metadata"]),
    ("lifted + --quiet", [*LIFTED, "--quiet"]),
    ("lifted + --scheduler-subsample 16", [*LIFTED, "--scheduler-subsample", "16"]),
    ("lifted + --scheduler-subsample 256", [*LIFTED, "--scheduler-subsample", "256"]),
    ("lifted + --keep-incomplete", [*LIFTED, "--keep-incomplete"]),
    ("lifted + --latency-wait 0", [*LIFTED, "--latency-wait", "0"]),
    ("lifted + --ignore-incomplete", [*LIFTED, "--ignore-incomplete"]),
    ("lifted + all five above", [*LIFTED, "--drop-metadata", "--quiet", "--keep-incomplete", "--latency-wait", "0",
                                 "--ignore-incomplete"]),
]


def one(variant_name: str, root: Path, shape, flags: list[str], cores: int) -> dict:
    variant = VARIANTS[variant_name]
    variant.prepare(root, shape)
    command = variant.command(root, shape, flags, "--cores", str(cores))
    full = run_snakemake(command, root, root / "full.log")
    documents, _, _ = document_times(variant.gens(root))
    noop = run_snakemake(command, root, root / "noop.log")
    ok = full.returncode == 0 and noop.returncode == 0
    return {"docs_per_s": documents / full.wall_s if ok else None, "noop_s": noop.wall_s if ok else None,
            "documents": documents, "returncode": (full.returncode, noop.returncode)}




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--variants", default="bare2,daydream")
    parser.add_argument("--only", default="", help="comma-separated setting labels (default: all)")
    parser.add_argument("--keep", type=Path)
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    settings = [s for s in SETTINGS if not args.only or s[0] in args.only.split(",")]
    shape = choose_shape(args.docs)
    base = profile_flags(REPO / "profiles" / "default")
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="daydream-bench-settings-"))
    print(f"{shape.documents} documents ({shape.describe()}); every run: --cores {args.cores} {' '.join(base)} "
          "--workflow-profile none, plus the setting", flush=True)
    results = {label: {v: [] for v in variants} for label, _ in settings}
    for rep in range(args.reps):
        for index, (label, extra) in enumerate(settings):
            order = variants if (rep + index) % 2 == 0 else variants[::-1]
            for name in order:
                root = workdir / f"s{index}-r{rep}-{name}"
                shutil.rmtree(root, ignore_errors=True)
                result = one(name, root, shape, base + extra, args.cores)
                results[label][name].append(result)
                print(f"   rep {rep + 1} {label:36s} {name:9s} {fmt(result['docs_per_s'], '6.1f')} docs/s  "
                      f"no-op {fmt(result['noop_s'], '5.1f')} s  exit {result['returncode']}", flush=True)
                if args.keep is None:
                    shutil.rmtree(root, ignore_errors=True)
    print(f"\nsetting -> documents/s (full run) and no-op wall, medians of {args.reps} repetition(s), "
          f"{shape.documents} documents")
    header = "".join(f"{VARIANTS[v].label + ' docs/s':>32s}{'no-op s':>9s}" for v in variants)
    print(f"{'setting':36s}{header}{'  daydream/bare time':>22s}")
    for label, _ in settings:
        row = "".join(f"{fmt(median([r['docs_per_s'] for r in results[label][v]]), '.1f'):>32s}"
                      f"{fmt(median([r['noop_s'] for r in results[label][v]]), '.1f'):>9s}" for v in variants)
        ratio = None
        if "daydream" in variants and "bare2" in variants:
            ratio = median([b["docs_per_s"] / d["docs_per_s"] if d["docs_per_s"] and b["docs_per_s"] else None
                            for d, b in zip(results[label]["daydream"], results[label]["bare2"], strict=True)])
        print(f"{label:36s}{row}{fmt(ratio, '.2f'):>21s}x")
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
