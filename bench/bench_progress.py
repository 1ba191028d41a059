"""What a readable live run costs per job: daydream's in-process counters and terminal filter,
against a Snakemake logger plugin (snakemake-interface-logger-plugins) doing the counting.

Micro (always): microseconds per document of `Run.document` plus the call events the run's
counters observe (what `documents.write_document` and `Run.spend` add to each job, no budget set); per record of
`terminal.TerminalFilter` (inside daydream's logger plugin); and per record of a logger plugin handler as Snakemake attaches one
(a QueueHandler on its logger, a QueueListener thread feeding the plugin), timed on the
emitting thread, which is the thread that schedules jobs.
End to end (`--e2e`): the 726-document offline cohort of bench_offline_throughput.py, run with
the shipped profile, then again with `--logger probe`: a plugin (written to a temp folder on
PYTHONPATH: Snakemake finds plugins as top-level packages named snakemake_logger_plugin_*, never
in an editable install) that counts finished jobs per rule,
as a progress line would. Prints the wall times and the difference per job. Numbers only.
Usage: python bench/bench_progress.py [--e2e] [--cores 2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from daydream import calls, terminal  # noqa: E402
from daydream.run import Run  # noqa: E402

COHORT = {
    "concepts": {"level": "paragraph", "k": 2, "ids": "all"},
    "draft": {"templates": ["idea-sketch"], "models": ["offline_a"]},
    "essay": {"templates": ["essay-from-draft", "copy-draft"], "models": ["draft"]},
    "evaluation": {"templates": ["novelty-judge", "rigor-judge"], "models": ["offline_a", "offline_b"]},
}
PROBE = '''
"""A probe logger plugin: counts finished jobs per rule, as a progress line would."""
from collections import Counter
from dataclasses import dataclass
from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    pass


class LogHandler(LogHandlerBase):
    def __post_init__(self):
        self.finished = Counter()

    def emit(self, record):
        if getattr(record, "event", None) == LogEvent.JOB_FINISHED:
            self.finished[getattr(record, "rule_name", None) or "?"] += 1

    writes_to_stream = False
    writes_to_file = False
    has_filter = True
    has_formatter = True
    needs_rulegraph = False
'''


def per_call_us(action, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        action()
    return (time.perf_counter() - started) / n * 1e6


def micro(n: int = 20000) -> None:
    from snakemake_interface_logger_plugins.common import LogEvent

    done = calls.Completion("x", "offline/m", "stop", {"prompt_tokens": 300, "completion_tokens": 80}, 0.0, 0.0, 1)

    run = Run(SimpleNamespace(settings=SimpleNamespace(max_concurrency=1)))  # the counters need no Runtime

    def counted_document():
        with run.document("evaluation", "v_1") as counted:
            run.emit("call_started", "evaluation")
            run.emit("call_paid", "evaluation", done)
            run.emit("call_ended", "evaluation", True)
            counted.source = "called"

    print(f"counters per document (Run.document + call events)          {per_call_us(counted_document, n):8.2f} us")

    def record(event, msg="Finished jobid: 7 (Rule: gen_document)"):
        item = logging.LogRecord("snakemake.logging", logging.INFO, __file__, 1, msg, None, None)
        item.event, item.rule_name, item.jobid = event, "gen_document", 7
        return item

    keep = terminal.TerminalFilter()
    kept = record(LogEvent.RUN_INFO, "Job stats: ...")
    dropped = record(LogEvent.JOB_FINISHED)
    print(f"TerminalFilter per record (dropped / kept)                   "
          f"{per_call_us(lambda: keep.filter(dropped), n):8.2f} / {per_call_us(lambda: keep.filter(kept), n):.2f} us")

    def log_finished(logger):
        logger.info("Finished jobid: 7 (Rule: gen_document)",
                    extra={"event": LogEvent.JOB_FINISHED, "rule_name": "gen_document", "jobid": 7})

    baseline = logging.getLogger("bench.baseline")
    baseline.propagate, baseline.level = False, logging.INFO
    baseline.addHandler(logging.NullHandler())
    bare = per_call_us(lambda: log_finished(baseline), n)
    module = {}
    exec(PROBE, module)  # noqa: S102 - the probe plugin's source, above
    handler = module["LogHandler"](None, None)
    sink: queue.Queue = queue.Queue(-1)
    listener = logging.handlers.QueueListener(sink, handler, respect_handler_level=True)
    logger = logging.getLogger("bench.snakemake")
    logger.propagate, logger.level = False, logging.INFO
    logger.addHandler(logging.handlers.QueueHandler(sink))
    listener.start()
    try:
        emitting = per_call_us(lambda: log_finished(logger), n)
    finally:
        listener.stop()
    print(f"a Snakemake record with no handler (what any run pays)       {bare:8.2f} us")
    print(f"the same through a logger plugin, on the emitting thread     {emitting:8.2f} us "
          f"(+{emitting - bare:.2f}; counted {handler.finished['gen_document']} finished jobs)")
    print("Snakemake logs about 4 records per job (job info, started, finished, progress).")


def snakemake(workdir: Path, cores: int, env: dict, *extra: str) -> float:
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", str(cores), *extra,
               "--config", f"data_root={workdir / 'data'}", f"cohorts_dir={workdir / 'cohorts'}", "cohorts=bench",
               "offline=true", "progress_interval_s=5"]
    started = time.perf_counter()
    subprocess.run(command, cwd=workdir, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def end_to_end(cores: int, repeat: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="daydream-bench-progress-"))
    plugins = workdir / "plugins"
    (plugins / "snakemake_logger_plugin_probe").mkdir(parents=True)  # found only as a package
    (plugins / "snakemake_logger_plugin_probe" / "__init__.py").write_text(textwrap.dedent(PROBE))
    base_env = dict(os.environ)
    probe_env = {**base_env, "PYTHONPATH": os.pathsep.join(filter(None, [str(plugins), base_env.get("PYTHONPATH")]))}
    shutil.copytree(REPO / "data" / "1_raw", workdir / "data" / "1_raw")
    (workdir / "cohorts").mkdir()
    (workdir / "cohorts" / "bench.yaml").write_text(yaml.safe_dump(COHORT))
    snakemake(workdir, cores, base_env, "--until", "cohort_membership")
    documents = len((workdir / "data" / "cohorts" / "bench" / "membership.csv").read_text().splitlines()) - 1
    times: dict[str, list[float]] = {"profile": [], "profile + --logger probe": []}
    for _ in range(repeat):
        for name, env, extra in (("profile", base_env, ()), ("profile + --logger probe", probe_env,
                                                              ("--logger", "probe"))):
            shutil.rmtree(workdir / "data" / "gens", ignore_errors=True)
            shutil.rmtree(workdir / "data" / "7_reporting", ignore_errors=True)
            times[name].append(snakemake(workdir, cores, env, *extra))
    print(f"documents {documents}, cores {cores}, best of {repeat}")
    for name, values in times.items():
        print(f"  {name:28s} {min(values):7.1f} s  (runs: {', '.join(f'{v:.1f}' for v in values)})")
    extra_ms = (min(times["profile + --logger probe"]) - min(times["profile"])) / documents * 1e3
    print(f"  logger plugin, per document: {extra_ms:+.2f} ms (noise on a shared machine is larger)")
    shutil.rmtree(workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--e2e", action="store_true", help="also run the whole cohort twice")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    micro()
    if args.e2e:
        end_to_end(args.cores, args.repeat)


if __name__ == "__main__":
    main()
