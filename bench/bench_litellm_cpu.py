"""litellm's own CPU per call, under each of its module switches that might skip per-call work.

For each setting of `--settings` (default: none, then each switch below alone), a fresh Python
process imports litellm (with the local price map, telemetry and debug info off, as
`daydream.providers.litellm_import` does), sets the switch on the module, makes `--warm` calls,
then `--calls` calls of `litellm.acompletion` under one asyncio.Semaphore(`--cap`) against the
loopback OpenAI server (tests/openai_server.py, its command line) answering at once, and prints
the process's CPU milliseconds per call (time.process_time) and the wall seconds of those calls:
the median and range over `--reps` rounds, each round running every setting in turn.
The server runs in a process of its own: its CPU is not counted. Numbers only: nothing is
asserted. This is the per-call work that daydream's call process and the plain asyncio loop
(bench/asyncio_loop.py) both pay; a switch that lowers it would be worth setting in
`litellm_import`.

Usage: python bench/bench_litellm_cpu.py [--calls 600] [--cap 50] [--reps 3] [--settings "logging=False;disable_token_counter=True"]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from asyncio_loop import start_server, stop_server  # noqa: E402
from common import repo_env  # noqa: E402

SWITCHES = ("logging=False", "disable_token_counter=True", "turn_off_message_logging=True",
            "disable_aiohttp_transport=True")


def one_setting(setting: str, base_url: str, calls: int, cap: int, warm: int) -> dict:
    """In this process (a child of `main`): litellm with `setting`, then the timed calls."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm

    litellm.suppress_debug_info, litellm.telemetry = True, False
    if setting:
        name, _, value = setting.partition("=")
        if not hasattr(litellm, name):
            raise SystemExit(f"litellm has no module setting {name!r}")
        setattr(litellm, name, ast.literal_eval(value))

    async def run(count: int) -> None:
        gate = asyncio.Semaphore(cap)

        async def one(i: int) -> None:
            async with gate:
                await litellm.acompletion(model="openai/fake-model", api_base=base_url, api_key="bench",
                                          messages=[{"role": "user", "content": f"call {i}"}], max_tokens=50)

        await asyncio.gather(*(one(i) for i in range(count)))

    asyncio.run(run(warm))
    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(run(calls))
    return {"setting": setting or "(none)", "cpu_ms_per_call": (time.process_time() - cpu) / calls * 1000,
            "wall_s": time.perf_counter() - wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--cap", type=int, default=50)
    parser.add_argument("--warm", type=int, default=50, help="calls made first, not timed")
    parser.add_argument("--reps", type=int, default=3, help="rounds over all the settings (medians are printed)")
    parser.add_argument("--settings", default=";".join(("", *SWITCHES)),
                        help="';'-separated litellm module settings name=value, one process each ('' = none)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(one_setting(args.child, args.base_url, args.calls, args.cap, args.warm)))
        return
    settings = args.settings.split(";")
    results: dict[str, list[dict]] = {setting: [] for setting in settings}
    server, base_url = start_server(0.0, Path(tempfile.mkdtemp(prefix="daydream-litellm-cpu-")) / "stats.json")
    try:
        print(f"litellm {version('litellm')}; {args.calls} calls, {args.cap} at once, replies at once; "
              f"{args.reps} round(s), medians [range]")
        for _ in range(args.reps):
            for setting in settings:
                done = subprocess.run(
                    [sys.executable, __file__, "--child", setting, "--base-url", base_url, "--calls", str(args.calls),
                     "--cap", str(args.cap), "--warm", str(args.warm)], capture_output=True, text=True, env=repo_env())
                if done.returncode != 0:
                    raise SystemExit(f"{setting or '(none)'} failed: {done.stderr.strip()[-300:]}")
                results[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        stop_server(server)
    for setting, runs in results.items():
        cpu = sorted(r["cpu_ms_per_call"] for r in runs)
        wall = sorted(r["wall_s"] for r in runs)
        print(f"{setting or '(none)':34s} CPU {statistics.median(cpu):5.2f} ms per call [{cpu[0]:.2f}-{cpu[-1]:.2f}]   "
              f"wall {statistics.median(wall):.2f} s [{wall[0]:.2f}-{wall[-1]:.2f}]")


if __name__ == "__main__":
    main()
