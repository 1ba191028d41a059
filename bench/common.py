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
from collections.abc import Callable
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


class ProcessTree:
    """A process and its descendants, as a bench's watcher samples them every few ms: the
    descendants are looked for again at most every `every_s` seconds (a walk of all of /proc
    each time), and read at every sample (each member's own /proc files)."""

    def __init__(self, root: psutil.Process, every_s: float = 1.0):
        self.root, self.every_s = root, every_s
        self._members: list[psutil.Process] = [root]
        self._found_at: float | None = None

    def members(self) -> list[psutil.Process]:
        now = time.perf_counter()
        if self._found_at is None or now - self._found_at >= self.every_s:
            self._found_at = now
            try:
                self._members = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                self._members = [self.root]
        return self._members

    def rss(self) -> int:
        """Resident bytes of the process and its descendants now (0 once all have ended)."""
        return sum(usage(member)[0] for member in self.members())

    def member(self, marker: str) -> psutil.Process | None:
        """The first descendant whose command line holds `marker`, or None."""
        for member in self.members()[1:]:
            try:
                if marker in " ".join(member.cmdline()):
                    return member
            except psutil.Error:
                continue  # ended between listing and reading
        return None


def usage(process: psutil.Process | None) -> tuple[int, float]:
    """Resident bytes and CPU seconds (user + system) of a process now; zeros for none or one
    that has ended."""
    if process is None:
        return 0, 0.0
    try:
        times = process.cpu_times()
        return process.memory_info().rss, times.user + times.system
    except psutil.NoSuchProcess:
        return 0, 0.0


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


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (proc(5) field 3 is index 0: utime
    is 11, stime 12, starttime 19), None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


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
    process of the machine), None without a sample on both sides. With `role`, also each
    process of the bench's own tree that `role` names: `process_cpu(start, end)`."""

    def __init__(self, every: float = 0.05, role: Callable[[list[str]], str | None] | None = None):
        super().__init__(every, "machine-cpu")
        self.cores = os.cpu_count() or 1
        self.samples: list[tuple[float, int, int, int]] = []  # (perf_counter, busy, kernel, all jiffies)
        # With `role` (a command line -> a name, or None for a process not to follow): the CPU of
        # this process and of each of its descendants that has a role, sampled with the machine's.
        # A process is known by its pid and its start time (a pid is reused once its process ends).
        self._role = role
        self._followed: set[tuple[int, int]] = set()  # (pid, start ticks) of those sampled still
        self._polls = 0
        self.process_samples: dict[tuple[int, int], list[tuple[float, int, int]]] = {}  # (perf_counter, user, system ticks)
        self.roles: dict[tuple[int, int], str] = {}

    def poll(self) -> bool:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(n) for n in handle.readline().split()[1:]]
        now = time.perf_counter()
        idle, kernel = fields[3] + fields[4], fields[2] + fields[5] + fields[6]  # idle iowait, system irq softirq
        self.samples.append((now, sum(fields) - idle, kernel, sum(fields)))
        if self._role is not None:
            self._poll_processes(now)
        return False

    def _poll_processes(self, now: float) -> None:
        """Each followed process's user and system ticks now; the descendants looked for again
        every 20 polls (a second: a process is followed from then on; a walk of /proc costs the
        bench a few ms)."""
        if self._polls % 20 == 0:
            self._find_processes()
        self._polls += 1
        for key in list(self._followed):
            fields = _proc_stat(key[0])
            if fields is None or int(fields[19]) != key[1]:
                self._followed.discard(key)  # ended (its pid gone or another's): its last sample stands
                continue
            self.process_samples.setdefault(key, []).append((now, int(fields[11]), int(fields[12])))

    def _find_processes(self) -> None:
        me = psutil.Process()
        for process in [me, *me.children(recursive=True)]:
            fields = _proc_stat(process.pid)
            if fields is None or (key := (process.pid, int(fields[19]))) in self.roles:
                continue
            try:
                role = "bench" if process.pid == me.pid else self._role(process.cmdline())
            except psutil.Error:
                continue
            if role is not None:
                self.roles[key] = role
                self._followed.add(key)

    def process_cpu(self, start: float | None, end: float | None) -> dict[str, tuple[float, float]] | None:
        """CPU seconds (all, and in the kernel) of each role's processes between two
        `time.perf_counter()` readings, summed over the processes of a role. A process with no
        sample before `start` counts from zero (it began in the window); one that ended in it
        counts to its last sample."""
        if start is None or end is None or self._role is None:
            return None
        tick = os.sysconf("SC_CLK_TCK")
        use: dict[str, tuple[float, float]] = {}
        for key, samples in self.process_samples.items():
            before = [s for s in samples if s[0] <= start]
            after = [s for s in samples if s[0] >= end] or [samples[-1]]
            if after[0][0] < start or samples[0][0] > end:
                continue  # ended before the window, or began after it
            _, user0, system0 = before[-1] if before else (start, 0, 0)
            _, user1, system1 = after[0]
            total, kernel = use.get(self.roles[key], (0.0, 0.0))
            use[self.roles[key]] = (total + (user1 - user0 + system1 - system0) / tick,
                                    kernel + (system1 - system0) / tick)
        return use

    def cores_busy(self, start: float | None, end: float | None, system: bool = False) -> float | None:
        if start is None or end is None:
            return None
        before = [s for s in self.samples if s[0] <= start]
        after = [s for s in self.samples if s[0] >= end]
        if not before or not after or after[0][3] == before[-1][3]:
            return None
        (_, busy0, kernel0, all0), (_, busy1, kernel1, all1) = before[-1], after[0]
        return ((kernel1 - kernel0) if system else (busy1 - busy0)) / (all1 - all0) * self.cores
