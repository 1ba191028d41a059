"""What the benches share: the checkout, its environment, a process tree's memory, small formats.

Imported by the bench scripts as `common` (each script's own folder is first on sys.path when
it runs); it imports nothing of daydream.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import threading
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
PROFILE_LINE = "for setting default command line arguments"  # Snakemake's "Using ... profile" line


def document_run_arguments(parser: argparse.ArgumentParser, docs: int, reps: int) -> argparse.ArgumentParser:
    """The options every bench that runs daydream against the bare Snakefile takes."""
    parser.add_argument("--docs", type=int, default=docs, help="about this many documents")
    parser.add_argument("--reps", type=int, default=reps, help="interleaved repetitions")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--variants", default="daydream,bare1")
    parser.add_argument("--extra", default="", help="more Snakemake flags for every run")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    return parser


def repo_env() -> dict[str, str]:
    """The environment with this checkout first on PYTHONPATH, so that its `daydream` package is
    imported (an editable install elsewhere would win otherwise)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of a process and all its children now (0 once it has ended)."""
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue  # a child that ended between listing and reading
    return total


def write_yaml(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def loopback_copy(seeded: Path, root: Path, essays: list[str], templates: list[str], replicates: int,
                  base_url: str, cap: int) -> Path:
    """A copy of a seeded root (essays made on the offline model) whose curated cohort `bench`
    evaluates `essays` on the loopback model `loop` at `base_url`; returns the config file
    setting llm.max_concurrency to `cap` (one attempt per call)."""
    shutil.copytree(seeded, root, ignore=shutil.ignore_patterns(".snakemake"))
    with (root / "data" / "1_raw" / "llm_models.csv").open("a", newline="") as handle:
        handle.write(f"loop,fake-model,bench,Loopback,openai,{base_url},,,\n")
    write_yaml(root / "cohorts" / "bench.yaml", {
        "essays": essays, "evaluation": {"templates": templates, "models": ["loop"], "replicates": replicates}})
    return write_yaml(root / "llm_settings.yaml", {"llm": {"max_concurrency": cap, "max_attempts": 1}})


class Polling:
    """A daemon thread that calls `poll()` every `every` seconds while the `with` block runs,
    until the block ends or `poll()` returns True."""

    def __init__(self, every: float, name: str):
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def poll(self) -> bool:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set() and not self.poll():
            self._stop.wait(self.every)


class MachineCPU(Polling):
    """The whole machine's busy CPU, sampled from /proc/stat every `every` seconds in a thread
    while the `with` block runs: `cores_busy(start, end)` is the average number of cores busy
    (not idle, not waiting for I/O; with `system`, in the kernel only: system, irq and softirq
    time) between two `time.perf_counter()` readings (CLOCK_MONOTONIC, the same clock in every
    process of the machine), None without a sample on both sides."""

    def __init__(self, every: float = 0.05):
        super().__init__(every, "machine-cpu")
        self.cores = os.cpu_count() or 1
        self.samples: list[tuple[float, int, int, int]] = []  # (perf_counter, busy, kernel, all jiffies)

    def poll(self) -> bool:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(n) for n in handle.readline().split()[1:]]
        idle, kernel = fields[3] + fields[4], fields[2] + fields[5] + fields[6]  # idle iowait, system irq softirq
        self.samples.append((time.perf_counter(), sum(fields) - idle, kernel, sum(fields)))
        return False

    def cores_busy(self, start: float | None, end: float | None, system: bool = False) -> float | None:
        if start is None or end is None:
            return None
        before = [s for s in self.samples if s[0] <= start]
        after = [s for s in self.samples if s[0] >= end]
        if not before or not after or after[0][3] == before[-1][3]:
            return None
        (_, busy0, kernel0, all0), (_, busy1, kernel1, all1) = before[-1], after[0]
        return ((kernel1 - kernel0) if system else (busy1 - busy0)) / (all1 - all0) * self.cores
