"""Real model calls: daydream against the plain asyncio loop and a bare Snakefile, in one run.

For each cap of `--caps` (default 100, 200 and 500), four runs of the same three dependent
waves (`--shape`: drafts, essays per draft, evaluations per essay; default 20,2,15 = 660
documents), each against a fresh loopback OpenAI server (tests/openai_server.py, its command
line, in another process) answering every request after `--latency` seconds (default 2):
- the plain loop: bench/asyncio_loop.py --waves, `litellm.acompletion` under one
  asyncio.Semaphore(cap), each call once its parent's reply is back;
- daydream: `snakemake --cores cap+8` on a cohort whose drafts (links-brainstorm), essays
  (essay-from-draft, `essays` replicates) and evaluations (novelty-judge, `evaluations`
  replicates) are all made by a loopback model row (route `openai`, `api_base` the server), with
  `llm.max_concurrency: cap` (one attempt per call) passed by `--configfile`;
- bare: bench/bare/Snakefile with one job per document and the same shape: Snakemake's own
  floor for these jobs, with no call at all;
- bare with waits: the same Snakefile whose jobs each sleep `--latency` seconds after writing
  prompt.txt, at most cap of them at once (a semaphore in the job bodies, `wait_s` and
  `wait_cap`): Snakemake's own floor for three waves of jobs that each wait for a reply under
  the cap, with no client and no server.
Snakemake gets the same flags for all three (the settings of profiles/default as flags, with
`--workflow-profile none`, and `--cores cap+8` unless `--cores` says otherwise for daydream).

Read the same way for the loop and daydream, from the server's stats file: the calls phase
(first request to last reply). For daydream and both bare runs: the documents phase, from the
first request (daydream; its first reply less `--latency`), the first prompt.txt (bare) or the
first prompt.txt less `--latency` (bare with waits: Snakemake touches a job's outputs when it
ends, so prompt.txt's time is its job's end) to the last parsed.txt written: the wall time of
the same work. Prints, per cap, the medians over `--reps`: each phase, daydream / loop,
daydream / bare, daydream / bare with waits (what daydream adds to Snakemake's floor), bare with
waits / loop (what Snakemake adds to the loop), the peak in flight against the cap, the elapsed
runs, daydream's peak RSS (its process tree; the Snakemake process and its call process
each) and CPU seconds of each, and how many of the machine's cores were busy (/proc/stat, every
process on it), how many of them in the kernel, and the CPU seconds, during the phase measured of
the loop, daydream and bare with waits: whether a run had the machine's CPU to spare; and in the
same phases each process's CPU seconds and those in the kernel (the Snakemake process, the call
process, the server, the loop, the bench's own watchers; /proc/<pid>/stat). `--checkout DIR`
runs daydream from another checkout (the "before" figures); `--cores` gives daydream's
Snakemake another `--cores` than cap+8 (a number, or cap+N). Numbers only: nothing is asserted.

Usage: python bench/bench_calls.py [--caps 100,200,500] [--shape 20,2,15] [--latency 2] [--reps 1]
           [--extra "..."] [--checkout DIR] [--cores cap+8] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from itertools import combinations
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
from asyncio_loop import StatsWatcher, start_server, stop_server, wave_calls  # noqa: E402
from bench_throughput import document_times, profile_flags  # noqa: E402
from common import MachineCPU, ProcessTree, fmt, median, usage, write_yaml  # noqa: E402

BARE = BENCH / "bare" / "Snakefile"


def env_for(checkout: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(checkout), *filter(None, [env.get("PYTHONPATH")])])
    return env


def cohort(shape: tuple[int, int, int]) -> dict:
    drafts, essays, evaluations = shape
    ids = sorted(p.stem for p in (REPO / "data" / "1_raw" / "concepts" / "descriptions-paragraph").glob("*.txt"))
    pairs = [list(pair) for pair in combinations(ids, 2)]
    if drafts > len(pairs):
        raise SystemExit(f"at most {len(pairs)} drafts (pairs of the sample concepts)")
    return {"concepts": {"level": "paragraph", "k": 2, "combos": pairs[:drafts]},
            "draft": {"templates": ["links-brainstorm"], "models": ["loop"]},
            "essay": {"templates": ["essay-from-draft"], "models": ["loop"], "replicates": essays},
            "evaluation": {"templates": ["novelty-judge"], "models": ["loop"], "replicates": evaluations}}


def timed(command: list[str], cwd: Path, env: dict, log: Path, peaks: dict | None = None
          ) -> tuple[int, float, float, float]:
    """Run a command: (exit code, elapsed s, peak RSS MB of its process tree, start time.time());
    `peaks` gets the peak RSS MB of the process alone (`main_mb`) and of its call process
    (`call_process_mb`), and their CPU seconds at the last sample (`main_cpu_s`, `call_process_cpu_s`)."""
    with log.open("w", encoding="utf-8") as sink:
        wall_start, started = time.time(), time.perf_counter()
        child = subprocess.Popen(command, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, env=env)
        watched, peak, each, cpu = psutil.Process(child.pid), [0], [0, 0], [0.0, 0.0]

        def watch() -> None:
            tree, calls = ProcessTree(watched), None
            while child.poll() is None:
                peak[0] = max(peak[0], tree.rss())
                calls = calls if calls is not None and calls.is_running() else tree.member("daydream.call_process")
                (own, own_cpu), (call_rss, call_cpu) = usage(watched), usage(calls)
                each[:] = map(max, each, (own, call_rss))
                cpu[:] = map(max, cpu, (own_cpu, call_cpu))
                time.sleep(0.1)

        sampler = threading.Thread(target=watch, daemon=True)
        sampler.start()
        returncode = child.wait()
        elapsed = time.perf_counter() - started
        sampler.join()
    if peaks is not None:
        peaks.update(main_mb=each[0] / 2**20, call_process_mb=each[1] / 2**20, main_cpu_s=cpu[0],
                     call_process_cpu_s=cpu[1])
    return returncode, elapsed, peak[0] / 2**20, wall_start


def daydream_run(root: Path, checkout: Path, shape, cap: int, latency: float, flags: list[str],
                 cpu: MachineCPU, cores: int) -> dict:
    stats_file = root.parent / f"{root.name}-stats.json"
    server, base_url = start_server(latency, stats_file)
    calls, peaks = wave_calls(shape, 0), {}
    try:
        shutil.copytree(checkout / "data" / "1_raw", root / "data" / "1_raw")
        with (root / "data" / "1_raw" / "llm_models.csv").open("a", newline="") as handle:
            handle.write(f"loop,fake-model,bench,Loopback,openai,{base_url},,,\n")
        write_yaml(root / "cohorts" / "bench.yaml", cohort(shape))
        settings = write_yaml(root / "llm_settings.yaml", {"llm": {"max_concurrency": cap, "max_attempts": 1}})
        command = [sys.executable, "-m", "snakemake", "-s", str(checkout / "Snakefile"), "--workflow-profile", "none",
                   *flags, "--cores", str(cores), "--configfile", str(settings), "--config",
                   f"data_root={root / 'data'}", f"cohorts_dir={root / 'cohorts'}", "cohorts=bench", "offline=false"]
        with StatsWatcher(stats_file, calls, latency) as watcher:
            offset = time.time() - time.perf_counter()
            returncode, elapsed, rss, _ = timed(command, root, env_for(checkout), root / "run.log", peaks)
        stats = json.loads(stats_file.read_text(encoding="utf-8"))
    finally:
        stop_server(server)
    documents, _, last = document_times(root / "data" / "gens")
    first_request = None if watcher.first_reply is None else watcher.first_reply - latency + offset
    phase_end = None if last is None else last - offset
    return {"returncode": returncode, "elapsed_s": elapsed, "peak_rss_mb": rss, **peaks,
            "requests": stats["request_count"],
            "peak_in_flight": stats["peak_in_flight"], "calls_phase_s": watcher.calls_phase_s,
            "documents": documents,
            "documents_phase_s": None if first_request is None or last is None else last - first_request,
            **busy(cpu, None if first_request is None else first_request - offset, phase_end),
            "tail": (root / "run.log").read_text(encoding="utf-8", errors="replace")[-1500:]}


def busy(cpu: MachineCPU, start: float | None, end: float | None) -> dict:
    """The machine's busy cores in a phase, and those in the kernel; and their CPU seconds; and
    the CPU seconds (all, kernel) of each process of the run in it (`role`)."""
    cores, kernel = cpu.cores_busy(start, end), cpu.cores_busy(start, end, system=True)
    seconds = None if cores is None else cores * (end - start)
    return {"cores_busy": cores, "cores_kernel": kernel, "cpu_s": seconds, "processes": cpu.process_cpu(start, end)}


def role(cmdline: list[str]) -> str | None:
    """Which process of a run a command line is (`MachineCPU`'s per-process CPU)."""
    line = " ".join(cmdline)
    for needle, name in (("daydream.call_process", "call process"), ("-m snakemake", "Snakemake process"),
                         ("openai_server.py", "server"), ("asyncio_loop.py", "loop")):
        if needle in line:
            return name
    return None


def bare_run(root: Path, shape, cap: int, flags: list[str], cpu: MachineCPU, wait_s: float = 0.0) -> dict:
    """The bare Snakefile, one job per document; with `wait_s`, each job sleeps that long after
    writing prompt.txt, at most `cap` jobs at once."""
    drafts, essays, evaluations = shape
    root.mkdir(parents=True)
    command = [sys.executable, "-m", "snakemake", "-s", str(BARE), "--workflow-profile", "none", *flags,
               "--cores", str(cap + 8), "--config", f"drafts={drafts}", f"essays_per_draft={essays}",
               f"evaluations_per_essay={evaluations}", "jobs_per_document=1", f"wait_s={wait_s:g}",
               f"wait_cap={cap if wait_s else 0}"]
    offset = time.time() - time.perf_counter()
    returncode, elapsed, rss, _ = timed(command, root, env_for(REPO), root / "run.log")
    documents, first, last = document_times(root / "gens")
    # Snakemake touches every output when its job ends: the first prompt.txt is the first job's
    # end, `wait_s` after its wait began (as daydream's first request is its first reply less the latency).
    return {"returncode": returncode, "elapsed_s": elapsed, "peak_rss_mb": rss, "documents": documents,
            "documents_phase_s": None if first is None else last - first + wait_s,
            **busy(cpu, None if first is None else first - wait_s - offset, None if last is None else last - offset),
            "tail": (root / "run.log").read_text(encoding="utf-8", errors="replace")[-1500:]}


def loop_run(workdir: Path, name: str, shape, cap: int, latency: float, cpu: MachineCPU) -> dict:
    stats_file = workdir / f"{name}-stats.json"
    server, base_url = start_server(latency, stats_file)
    try:
        done = subprocess.run(
            [sys.executable, str(BENCH / "asyncio_loop.py"), "--waves", ",".join(map(str, shape)), "--cap", str(cap),
             "--latency", str(latency), "--base-url", base_url, "--stats-file", str(stats_file), "--json"],
            capture_output=True, text=True, env=env_for(REPO))
    finally:
        stop_server(server)
    if done.returncode != 0:
        raise SystemExit(f"the asyncio loop failed ({done.returncode}):\n{done.stderr[-1500:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, **busy(cpu, result["phase_start"], result["phase_end"])}


def report(cap: int, shape, latency: float, loops: list[dict], days: list[dict], bares: list[dict],
           waits: list[dict], cores: int) -> None:
    calls = wave_calls(shape, 0)
    print(f"\ncap {cap}, {calls} calls in three dependent waves {shape}, {latency:g} s replies; medians of "
          f"{len(loops)} interleaved repetition(s)")
    loop = median([r["calls_phase_s"] for r in loops])
    print(f"  asyncio loop   calls phase {fmt(loop)} s   peak in flight {max(r['peak_in_flight'] for r in loops)} / "
          f"cap {cap}   {sum(r['failures'] for r in loops)} failed calls")
    failed = [r for r in days + bares + waits if r["returncode"] != 0]
    if failed:
        print(f"  FAILED ({failed[0]['returncode']}), run tail:\n{failed[0]['tail']}")
        return
    day_calls, day_docs = median([r["calls_phase_s"] for r in days]), median([r["documents_phase_s"] for r in days])
    bare = median([r["documents_phase_s"] for r in bares])
    print(f"  daydream       calls phase {fmt(day_calls)} s, documents phase {fmt(day_docs)} s   peak in flight "
          f"{max(r['peak_in_flight'] for r in days)} / cap {cap}   requests {days[0]['requests']}   elapsed "
          f"{fmt(median([r['elapsed_s'] for r in days]))} s   peak RSS "
          f"{fmt(median([r['peak_rss_mb'] for r in days]), '.0f')} MB (Snakemake process "
          f"{fmt(median([r['main_mb'] for r in days]), '.0f')}, call process "
          f"{fmt(median([r['call_process_mb'] for r in days]), '.0f')})   CPU s: Snakemake process "
          f"{fmt(median([r['main_cpu_s'] for r in days]), '.1f')}, call process "
          f"{fmt(median([r['call_process_cpu_s'] for r in days]), '.1f')}")
    print(f"  bare Snakefile documents phase {fmt(bare)} s ({bares[0]['documents']} jobs, no calls)   elapsed "
          f"{fmt(median([r['elapsed_s'] for r in bares]))} s")
    ratio = median([d["documents_phase_s"] / lp["calls_phase_s"] for d, lp in zip(days, loops, strict=True)
                    if d["documents_phase_s"] and lp["calls_phase_s"]])
    floor = median([d["documents_phase_s"] / max(lp["calls_phase_s"], b["documents_phase_s"])
                    for d, lp, b in zip(days, loops, bares, strict=True)
                    if d["documents_phase_s"] and lp["calls_phase_s"] and b["documents_phase_s"]])
    print(f"  daydream / loop {fmt(ratio)}x (documents phase / calls phase)   daydream / max(loop, bare) {fmt(floor)}x "
          f"(bare / loop {fmt(bare and loop and bare / loop)}x)")
    waited = median([r["documents_phase_s"] for r in waits])
    print(f"  bare with waits documents phase {fmt(waited)} s ({waits[0]['documents']} jobs, {latency:g} s each, "
          f"at most {cap} at once)   elapsed {fmt(median([r['elapsed_s'] for r in waits]))} s")
    over_floor = median([d["documents_phase_s"] / w["documents_phase_s"] for d, w in zip(days, waits, strict=True)
                         if d["documents_phase_s"] and w["documents_phase_s"]])
    floor_over_loop = median([w["documents_phase_s"] / lp["calls_phase_s"] for w, lp in zip(waits, loops, strict=True)
                              if w["documents_phase_s"] and lp["calls_phase_s"]])
    print(f"  daydream / bare with waits {fmt(over_floor)}x (daydream's own)   bare with waits / loop "
          f"{fmt(floor_over_loop)}x (Snakemake's own)")
    print(f"  the machine in the phase measured (of {cores} cores; every process on it): loop {machine_use(loops)}; "
          f"daydream {machine_use(days)}; bare with waits {machine_use(waits)}")
    print(f"  CPU s (in the kernel) of each process in the phase: loop: {process_use(loops)}; daydream: "
          f"{process_use(days)}; bare with waits: {process_use(waits)}")


def machine_use(runs: list[dict]) -> str:
    """Medians of the runs' busy cores, those in the kernel, and CPU seconds in their phase."""
    return (f"{fmt(median([r['cores_busy'] for r in runs]))} ({fmt(median([r['cores_kernel'] for r in runs]))} "
            f"in the kernel), {fmt(median([r['cpu_s'] for r in runs]), '.1f')} CPU s")


def process_use(runs: list[dict]) -> str:
    """Medians of the runs' CPU seconds in their phase, per process (its role), and the kernel's."""
    names = sorted({name for r in runs for name in (r["processes"] or {})})
    parts = []
    for name in names:
        use = [r["processes"].get(name, (0.0, 0.0)) for r in runs if r["processes"]]
        parts.append(f"{name} {fmt(median([u[0] for u in use]))} ({fmt(median([u[1] for u in use]))})")
    return ", ".join(parts) or "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caps", default="100,200,500", help="comma-separated llm.max_concurrency values")
    parser.add_argument("--shape", default="20,2,15", help="drafts, essays per draft, evaluations per essay")
    parser.add_argument("--latency", type=float, default=2.0, help="seconds the server takes per reply")
    parser.add_argument("--reps", type=int, default=1, help="interleaved repetitions (medians are printed)")
    parser.add_argument("--extra", default="", help="more Snakemake flags for daydream's and the bare runs")
    parser.add_argument("--checkout", type=Path, default=REPO, help="run daydream from this checkout")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--cores", default="cap+8", help="daydream's --cores: a number, or cap+N (the bare runs "
                        "always get cap+8: their jobs wait in their threads)")
    args = parser.parse_args()
    daydream_cores(args.cores, 1)  # a bad value fails before any run
    caps = [int(c) for c in args.caps.split(",")]
    shape = tuple(int(n) for n in args.shape.split(","))
    flags = [*profile_flags(REPO / "profiles" / "default"), *shlex.split(args.extra)]
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="daydream-bench-calls-"))
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    print(f"daydream from {args.checkout.resolve()}; Snakemake flags: {' '.join(flags)}; --cores {args.cores} "
          "(the bare runs: cap+8)")
    with MachineCPU(role=role) as cpu:
        for cap in caps:
            run_cap(cap, args, shape, flags, workdir, cpu)
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)


def daydream_cores(spec: str, cap: int) -> int:
    """daydream's --cores for a cap: `spec` is a number, or cap+N."""
    try:
        return cap + int(spec.removeprefix("cap+")) if spec.startswith("cap+") else int(spec)
    except ValueError:
        raise SystemExit(f"--cores {spec!r}: give a number of cores, or cap+N") from None


def run_cap(cap: int, args, shape, flags: list[str], workdir: Path, cpu: MachineCPU) -> None:
    """The four runs of one cap, `args.reps` times in alternating order, then their report."""
    loops, days, bares, waits = [], [], [], []
    for rep in range(args.reps):
        order = ("loop", "daydream", "bare", "waits") if rep % 2 == 0 else ("waits", "bare", "daydream", "loop")
        for who in order:
            root = workdir / f"{who}-{cap}-{rep}"
            if who == "loop":
                loops.append(loop_run(workdir, root.name, shape, cap, args.latency, cpu))
            elif who == "daydream":
                days.append(daydream_run(root, args.checkout.resolve(), shape, cap, args.latency, flags, cpu,
                                         daydream_cores(args.cores, cap)))
            elif who == "bare":
                bares.append(bare_run(root, shape, cap, flags, cpu))
            else:
                waits.append(bare_run(root, shape, cap, flags, cpu, args.latency))
            if args.keep is None:
                shutil.rmtree(root, ignore_errors=True)
    report(cap, shape, args.latency, loops, days, bares, waits, cpu.cores)


if __name__ == "__main__":
    main()
