"""Offline throughput of daydream against a bare Snakefile of the same shape, in one run.

Builds a cohort of about `--docs` documents from the tracked sample experiment (data/1_raw,
copied into a temp data root; concepts, templates, models and replicates chosen to reach the
size) on the offline model, and the same cohort shape for bench/bare/Snakefile with 2 jobs per
document (daydream's shape today) and with 1 job per document. For each repetition, in turn
(interleaved, the order rotated), each variant gets a fresh folder and: a full run (from
nothing: checkpoint, every document, and for daydream its reports), a no-op rerun, and a dry
run (`-n`) after the gens store is removed (the membership stays, so every document's jobs are
planned). Prints medians of documents/s, the walls, peak RSS of the process tree (psutil) and
the ratios daydream / bare taken within each repetition. Numbers only: nothing is asserted.

Every variant gets the same Snakemake flags: the settings of `--profile` (the workflow
profile, profiles/default by default) turned into command-line flags, plus `--extra`, with
`--workflow-profile none` so that no profile is applied on top; the bench checks each run's
output for Snakemake's "Using ... profile" line and prints what it found.

Usage: python bench/bench_throughput.py [--docs 10000] [--reps 3] [--cores 2]
           [--variants daydream,bare2,bare1] [--extra "--max-jobs-per-timespan 10000/1s"]
           [--scaling [--sizes 1000,10000,100000]] [--plan-only] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml
from common import PROFILE_LINE, REPO, ProcessTree, fmt, median, repo_env

BARE = REPO / "bench" / "bare" / "Snakefile"
ESSAY_TEMPLATES = ["essay-from-draft", "copy-draft"]
DRAFT_TEMPLATES = ["idea-sketch", "links-brainstorm"]
EVALUATION_TEMPLATES = ["novelty-judge", "rigor-judge"]
MODELS = ["offline_a", "offline_b"]


# ------------------------------------------------------------------ flags and cohort


def profile_flags(profile_dir: Path | None) -> list[str]:
    """A Snakemake profile's config.yaml as command-line flags (`cores` is left out: the bench
    passes --cores itself)."""
    if profile_dir is None:
        return []
    settings = yaml.safe_load((profile_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    flags: list[str] = []
    for key, value in settings.items():
        if key == "cores" or value is False or value is None:
            continue
        flag = f"--{key}"
        if value is True:
            flags.append(flag)
        elif isinstance(value, list):
            flags += [flag, *map(str, value)]
        elif isinstance(value, dict):
            flags += [flag, *(f"{k}={v}" for k, v in value.items())]
        else:
            flags += [flag, str(value)]
    return flags


@dataclass(frozen=True)
class Shape:
    """A cohort: k-combinations of the sample concepts, then drafts, essays, evaluations."""

    k: int
    combos: int
    draft_templates: int
    draft_models: int
    draft_replicates: int
    evaluation_templates: int
    evaluation_models: int
    evaluation_replicates: int

    @property
    def drafts(self) -> int:
        return self.combos * self.draft_templates * self.draft_models * self.draft_replicates

    @property
    def essays_per_draft(self) -> int:
        return len(ESSAY_TEMPLATES)

    @property
    def evaluations_per_essay(self) -> int:
        return self.evaluation_templates * self.evaluation_models * self.evaluation_replicates

    @property
    def essays(self) -> int:
        return self.drafts * self.essays_per_draft

    @property
    def evaluations(self) -> int:
        return self.essays * self.evaluations_per_essay

    @property
    def documents(self) -> int:
        return self.drafts + self.essays + self.evaluations

    def cohort(self) -> dict:
        return {
            "concepts": {"level": "paragraph", "k": self.k, "ids": "all"},
            "draft": {"templates": DRAFT_TEMPLATES[:self.draft_templates], "models": MODELS[:self.draft_models],
                      "replicates": self.draft_replicates},
            "essay": {"templates": ESSAY_TEMPLATES, "models": ["draft"], "replicates": 1},
            "evaluation": {"templates": EVALUATION_TEMPLATES[:self.evaluation_templates],
                           "models": MODELS[:self.evaluation_models], "replicates": self.evaluation_replicates},
        }

    def describe(self) -> str:
        return (f"{self.drafts} drafts (k={self.k}: {self.combos} combos x {self.draft_templates} templates x "
                f"{self.draft_models} models x {self.draft_replicates}), {self.essays} essays (2 per draft, one a "
                f"copy), {self.evaluations} evaluations ({self.evaluations_per_essay} per essay)")


def active_concepts() -> int:
    with (REPO / "data" / "1_raw" / "concepts_metadata.csv").open(newline="") as handle:
        return sum(1 for row in csv.DictReader(handle) if row.get("active", "True").strip().lower() != "false")


def choose_shape(documents: int) -> Shape:
    """A sample-experiment cohort within 3% of `documents`, shaped like daydream's usual ones:
    at most 24 evaluations per essay, every evaluation template and model where possible, then
    the closest size and fewer replicates."""
    concepts = active_concepts()
    best: tuple | None = None
    for k, td, md, rd, tv, mv in itertools.product((2, 3, 4), (1, 2), (1, 2), (1, 2, 3, 4), (1, 2), (1, 2)):
        base = Shape(k, math.comb(concepts, k), td, md, rd, tv, mv, 1)
        per_replicate = base.essays * tv * mv
        rv = max(1, round((documents - base.drafts - base.essays) / per_replicate))
        shape = Shape(k, base.combos, td, md, rd, tv, mv, rv)
        error = abs(shape.documents - documents) / documents
        key = (error > 0.03, shape.evaluations_per_essay > 24, -(tv + mv), error, rd, rv)
        if best is None or key < best[0]:
            best = (key, shape)
    return best[1]


# ------------------------------------------------------------------ running Snakemake



@dataclass
class RunResult:
    wall_s: float
    peak_rss_mb: float
    returncode: int
    output: Path
    started_at: float  # time.time() at launch, to compare with file mtimes
    cpu_s: float = 0.0  # user + system CPU seconds of the process tree: steadier than wall on a shared machine

    def text(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")

    def profile_used(self) -> str:
        lines = [line for line in self.text().splitlines() if PROFILE_LINE in line]
        return lines[0].strip() if lines else "none"

    def planned_jobs(self) -> int | None:
        for line in self.text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
                return int(parts[1])
        return None



def run_snakemake(command: list[str], cwd: Path, output: Path, sample_s: float = 0.25) -> RunResult:
    """Run one Snakemake command, its output to a file, sampling the process tree's RSS."""
    started_at, started = time.time(), time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with output.open("w", encoding="utf-8") as sink:
        child = subprocess.Popen(command, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, env=repo_env())
        watched, peak = psutil.Process(child.pid), [0]

        def watch() -> None:
            tree = ProcessTree(watched)
            while child.poll() is None:
                peak[0] = max(peak[0], tree.rss())
                time.sleep(sample_s)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        returncode = child.wait()
        wall = time.perf_counter() - started
        watcher.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the waited-for tree (one run at a time)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return RunResult(wall, peak[0] / 2**20, returncode, output, started_at, cpu)


@dataclass
class Variant:
    name: str
    label: str

    def prepare(self, root: Path, shape: Shape) -> None:
        root.mkdir(parents=True)
        if self.name == "daydream":
            shutil.copytree(REPO / "data" / "1_raw", root / "data" / "1_raw")
            (root / "cohorts").mkdir()
            (root / "cohorts" / "bench.yaml").write_text(yaml.safe_dump(shape.cohort(), sort_keys=False))

    def command(self, root: Path, shape: Shape, flags: list[str], *extra: str) -> list[str]:
        base = [sys.executable, "-m", "snakemake", "--workflow-profile", "none", *flags, *extra]
        if self.name == "daydream":
            # The data root relative to the run's folder (`root`, the working directory), as the
            # bare Snakefile's gens/ is and as config.yaml's `data_root: data` is: Snakemake's cost of
            # each of the ~100,000 input and output paths it plans at 10k grows with its length
            # (e.g. `PrefixLookup._common_prefix`, a Python loop over the characters).
            return [*base, "-s", str(REPO / "Snakefile"), "--config", "data_root=data",
                    f"cohorts_dir={root / 'cohorts'}", "cohorts=bench", "offline=true"]
        jobs = 2 if self.name == "bare2" else 1
        return [*base, "-s", str(BARE), "--config", f"drafts={shape.drafts}",
                f"essays_per_draft={shape.essays_per_draft}",
                f"evaluations_per_essay={shape.evaluations_per_essay}", f"jobs_per_document={jobs}"]

    def membership(self, root: Path) -> Path:
        """The membership file the checkpoint writes (a file target, not a rule name), relative to
        the run's working folder (`root`) as the rule's output is."""
        if self.name == "daydream":
            return Path("data") / "cohorts" / "bench" / "membership.csv"
        return Path("cohorts") / "bench" / "membership.csv"

    def gens(self, root: Path) -> Path:
        return root / "data" / "gens" if self.name == "daydream" else root / "gens"


VARIANTS = {
    "daydream": Variant("daydream", "daydream (1 job/doc)"),
    "bare2": Variant("bare2", "bare (2 jobs/doc)"),
    "bare1": Variant("bare1", "bare (1 job/doc)"),
}


def document_times(gens: Path) -> tuple[int, float | None, float | None]:
    """Documents in a gens store, the earliest prompt.txt and the latest parsed.txt mtime."""
    count, first, last = 0, None, None
    if not gens.is_dir():
        return 0, None, None
    for stage in os.scandir(gens):
        if not stage.is_dir():
            continue
        for document in os.scandir(stage.path):
            if not document.is_dir():
                continue
            count += 1
            try:
                made = os.stat(os.path.join(document.path, "prompt.txt")).st_mtime
                done = os.stat(os.path.join(document.path, "parsed.txt")).st_mtime
            except FileNotFoundError:
                continue
            first = made if first is None else min(first, made)
            last = done if last is None else max(last, done)
    return count, first, last


TAIL_RULES = ("stale_generations", "cohort_reports", "cohort_report_figures", "cohort_site", "all")


def tail_jobs(root: Path) -> list[tuple[str, float, float | None, float | None]]:
    """The jobs after the last document of a daydream run, from its Snakemake log (`Finished
    jobid: N (Rule: R)` after a timestamp, 1 s resolution) and their job logs: (rule, seconds
    from the previous job's end to its end, its own wall seconds and CPU seconds as its job log
    says, None where it does not say)."""
    logs = sorted((root / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        return []
    ends: list[tuple[str, float]] = []
    stamp = None
    for line in logs[0].read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("[") and line.endswith("]"):
            stamp = time.mktime(time.strptime(line[1:-1]))
        elif line.startswith("Finished jobid:") and stamp is not None:
            ends.append((line.rsplit("Rule: ", 1)[-1].rstrip(")"), stamp))
    last_doc = max((t for rule, t in ends if rule == "gen_document"), default=None)
    found, previous = [], last_doc
    for rule, end in ends:
        if rule not in TAIL_RULES or previous is None:
            continue
        own = cpu = None
        for job_log in sorted((root / "data" / "logs" / rule).glob("*.log")) if rule != "all" else []:
            text = job_log.read_text(encoding="utf-8", errors="replace")
            seconds = re.findall(r"([0-9.]+) s(?: \(|:)", text)
            own = float(seconds[-1]) if seconds else None
            cpu_found = re.findall(r"([0-9.]+) s CPU", text)
            cpu = float(cpu_found[-1]) if cpu_found else None
        found.append((rule, end - previous, own, cpu))
        previous = end
    return found


def measure(variant: Variant, root: Path, shape: Shape, flags: list[str], cores: int) -> dict:
    """Full run, no-op rerun, then a dry run once the gens store is removed."""
    variant.prepare(root, shape)
    common = ("--cores", str(cores))
    full = run_snakemake(variant.command(root, shape, flags, *common), root, root / "full.log")
    documents, first, last = document_times(variant.gens(root))
    tail = tail_jobs(root) if variant.name == "daydream" else []
    noop = run_snakemake(variant.command(root, shape, flags, *common), root, root / "noop.log")
    shutil.rmtree(variant.gens(root), ignore_errors=True)
    dry = run_snakemake(variant.command(root, shape, flags, *common, "-n"), root, root / "dry.log")
    failed = [name for name, run in (("full", full), ("no-op", noop), ("dry", dry)) if run.returncode != 0]
    end = full.started_at + full.wall_s
    return {
        "documents": documents, "full_s": full.wall_s, "noop_s": noop.wall_s, "dry_s": dry.wall_s,
        "docs_per_s": documents / full.wall_s,
        "start_s": (first - full.started_at) if first else None,  # launch to the first document
        "docs_phase_s": (last - first) if first and last else None,  # first prompt to last parse
        "tail_s": (end - last) if last else None,  # last document to exit (reports, shutdown)
        "tail_jobs": tail,
        "rss_full_mb": full.peak_rss_mb, "rss_noop_mb": noop.peak_rss_mb, "rss_dry_mb": dry.peak_rss_mb,
        "planned_jobs": dry.planned_jobs(), "failed": failed,
        "profiles": sorted({full.profile_used(), noop.profile_used(), dry.profile_used()}),
        "tail_of_failure": (full.text()[-1500:] if full.returncode else ""),
    }


# ------------------------------------------------------------------ reporting


def measure_plan(variant: Variant, root: Path, shape: Shape, flags: list[str], cores: int) -> dict:
    """Only the plan: the membership is made first (untimed, by its file as the target), then
    a dry run plans every document's jobs."""
    variant.prepare(root, shape)
    common = ("--cores", str(cores))
    made = run_snakemake(variant.command(root, shape, flags, *common, str(variant.membership(root))), root,
                         root / "membership.log")
    dry = run_snakemake(variant.command(root, shape, flags, *common, "-n"), root, root / "dry.log")
    failed = [name for name, run in (("membership", made), ("dry", dry)) if run.returncode != 0]
    return {"dry_s": dry.wall_s, "rss_dry_mb": dry.peak_rss_mb, "planned_jobs": dry.planned_jobs(),
            "membership_s": made.wall_s, "failed": failed, "profiles": sorted({made.profile_used(), dry.profile_used()}),
            "tail_of_failure": (dry.text()[-1500:] if dry.returncode else "")}


def run_plans(docs: int, args, flags: list[str], workdir: Path) -> None:
    shape = choose_shape(docs)
    print(f"\n== plan only, {shape.documents} documents: {shape.describe()}", flush=True)
    results: dict[str, list[dict]] = {name: [] for name in args.variants}
    for rep in range(args.reps):
        for name in args.variants[rep % len(args.variants):] + args.variants[:rep % len(args.variants)]:
            root = workdir / f"plan-{shape.documents}-r{rep}-{name}"
            shutil.rmtree(root, ignore_errors=True)
            result = measure_plan(VARIANTS[name], root, shape, flags, args.cores)
            results[name].append(result)
            print(f"   rep {rep + 1} {name:9s} dry run {result['dry_s']:7.1f} s  peak RSS {result['rss_dry_mb']:6.0f} MB  "
                  f"jobs {result['planned_jobs']}  (membership {result['membership_s']:.1f} s)  profile "
                  f"{', '.join(result['profiles'])}" + (f"  FAILED: {result['failed']}" if result["failed"] else ""),
                  flush=True)
            if result["failed"]:
                print(result["tail_of_failure"], flush=True)
            if args.keep is None:
                shutil.rmtree(root, ignore_errors=True)
    for name, runs in results.items():
        dry = median([r["dry_s"] for r in runs])
        print(f"{VARIANTS[name].label:24s} dry run {fmt(dry, '.1f')} s = {fmt(dry and 1000 * dry / shape.documents)} ms "
              f"per document, peak RSS {fmt(median([r['rss_dry_mb'] for r in runs]), '.0f')} MB")
    if "daydream" in results:
        for bare in ("bare2", "bare1"):
            if bare in results:
                ratio = median([d["dry_s"] / b["dry_s"]
                                for d, b in zip(results["daydream"], results[bare], strict=True)])
                print(f"daydream / {VARIANTS[bare].label:17s}  dry run {fmt(ratio)}x")




def run_size(docs: int, args, flags: list[str], workdir: Path) -> dict[str, list[dict]]:
    shape = choose_shape(docs)
    names = args.variants
    results: dict[str, list[dict]] = {name: [] for name in names}
    print(f"\n== {shape.documents} documents: {shape.describe()}", flush=True)
    for rep in range(args.reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            root = workdir / f"{shape.documents}-r{rep}-{name}"
            shutil.rmtree(root, ignore_errors=True)
            result = measure(VARIANTS[name], root, shape, flags, args.cores)
            results[name].append(result)
            print(f"   rep {rep + 1} {name:9s} full {result['full_s']:7.1f} s  {result['docs_per_s']:6.1f} docs/s  "
                  f"dry {result['dry_s']:6.1f} s  no-op {result['noop_s']:6.1f} s  "
                  f"peak RSS {result['rss_full_mb']:5.0f} MB  documents {result['documents']}"
                  + (f"  FAILED: {result['failed']}" if result["failed"] else ""), flush=True)
            if result["failed"]:
                print(result["tail_of_failure"], flush=True)
            for rule, span, own, cpu in result["tail_jobs"]:
                print(f"      tail {rule:22s} {span:6.0f} s since the previous job's end (1 s resolution); job's own "
                      f"{fmt(own, '.2f')} s, {fmt(cpu, '.2f')} s CPU", flush=True)
            if args.keep is None:
                shutil.rmtree(root, ignore_errors=True)
    report_size(shape, results)
    return results


def report_size(shape: Shape, results: dict[str, list[dict]]) -> None:
    reps = len(next(iter(results.values())))
    print(f"\n{shape.documents} documents, medians of {reps} interleaved repetition(s):")
    print(f"{'':24s} {'docs/s':>8s} {'full s':>8s} {'dry s':>7s} {'no-op s':>8s} {'start s':>8s} {'docs s':>7s} "
          f"{'tail s':>7s} {'RSS MB':>7s} {'dry RSS':>7s} {'jobs':>7s}  profile applied")
    for name, runs in results.items():
        m = {key: median([r[key] for r in runs]) for key in
             ("docs_per_s", "full_s", "dry_s", "noop_s", "start_s", "docs_phase_s", "tail_s", "rss_full_mb",
              "rss_dry_mb", "planned_jobs")}
        profiles = sorted({p for r in runs for p in r["profiles"]})
        print(f"{VARIANTS[name].label:24s} {fmt(m['docs_per_s'], '.1f'):>8s} {fmt(m['full_s'], '.1f'):>8s} "
              f"{fmt(m['dry_s'], '.1f'):>7s} {fmt(m['noop_s'], '.1f'):>8s} {fmt(m['start_s'], '.1f'):>8s} "
              f"{fmt(m['docs_phase_s'], '.1f'):>7s} {fmt(m['tail_s'], '.1f'):>7s} "
              f"{fmt(m['rss_full_mb'], '.0f'):>7s} {fmt(m['rss_dry_mb'], '.0f'):>7s} "
              f"{fmt(m['planned_jobs'], '.0f'):>7s}  {', '.join(profiles)}")
    if "daydream" not in results:
        return
    for bare in ("bare2", "bare1"):
        if bare not in results:
            continue
        pairs = list(zip(results["daydream"], results[bare], strict=True))

        def ratio(key: str) -> float | None:
            return median([d[key] / b[key] if d[key] and b[key] else None for d, b in pairs])  # noqa: B023

        print(f"daydream / {VARIANTS[bare].label:17s}  time full {fmt(ratio('full_s'))}x  "
              f"dry {fmt(ratio('dry_s'))}x  no-op {fmt(ratio('noop_s'))}x  "
              f"(docs/s {fmt(ratio('docs_per_s'))}x of bare)")


def report_scaling(sizes: list[int], per_size: dict[int, dict[str, list[dict]]]) -> None:
    print("\nPer-document cost (medians; ms per document) and growth against the smallest size:")
    print(f"{'':24s} {'documents':>10s} {'full':>8s} {'dry':>8s} {'no-op':>8s} {'RSS MB':>8s} "
          f"{'KB/doc':>7s} {'full x':>7s} {'dry x':>7s} {'no-op x':>7s}")
    for name in next(iter(per_size.values())):
        base = None
        for size in sizes:
            runs = per_size[size][name]
            docs = median([r["documents"] for r in runs]) or 1
            cost = {key: 1000 * median([r[key] for r in runs]) / docs for key in ("full_s", "dry_s", "noop_s")}
            rss = median([max(r["rss_full_mb"], r["rss_dry_mb"], r["rss_noop_mb"]) for r in runs])
            base = base or cost
            print(f"{VARIANTS[name].label:24s} {docs:>10.0f} {cost['full_s']:>8.2f} {cost['dry_s']:>8.2f} "
                  f"{cost['noop_s']:>8.2f} {rss:>8.0f} {1024 * rss / docs:>7.1f} "
                  f"{cost['full_s'] / base['full_s']:>7.2f} {cost['dry_s'] / base['dry_s']:>7.2f} "
                  f"{cost['noop_s'] / base['noop_s']:>7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10000, help="about this many documents")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (medians are printed)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--variants", default="daydream,bare2,bare1",
                        help="comma-separated: daydream, bare2 (2 jobs/doc), bare1 (1 job/doc)")
    parser.add_argument("--profile", type=Path, default=REPO / "profiles" / "default",
                        help="the profile whose settings every variant gets as flags ('none': no settings)")
    parser.add_argument("--extra", default="", help="more Snakemake flags for every variant, e.g. "
                        "'--max-jobs-per-timespan 10000/1s'")
    parser.add_argument("--scaling", action="store_true", help="run every size of --sizes, print per-document cost")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--plan-only", action="store_true",
                        help="only the dry run (after the membership is made): plan wall and peak RSS")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}: choose from {list(VARIANTS)}")
    flags = profile_flags(None if str(args.profile) == "none" else args.profile) + shlex.split(args.extra)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="daydream-bench-throughput-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"flags for every variant: --cores {args.cores} {' '.join(flags)} --workflow-profile none "
          f"(from {args.profile}{' + --extra' if args.extra else ''})")
    sizes = [int(s) for s in args.sizes.split(",")] if args.scaling else [args.docs]
    if args.plan_only:
        for size in sizes:
            run_plans(size, args, flags, workdir)
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
        return
    per_size = {size: run_size(size, args, flags, workdir) for size in sizes}
    if args.scaling:
        report_scaling(sizes, per_size)
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
