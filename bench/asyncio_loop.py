"""The plain asyncio baseline for model calls: N `litellm.acompletion` calls under one semaphore.

Starts the loopback OpenAI server (tests/openai_server.py, its command line) in another
process, then runs `--calls` calls of `litellm.acompletion(model="openai/...", api_base=...)`
gathered under one `asyncio.Semaphore(--cap)`, and prints the calls phase (first request to
last reply, from the server's stats file), its ratio to the ideal (calls / cap x latency), the
server's peak in flight and this process's peak RSS. `--json` prints one JSON line instead
(bench/bench_calls.py reads it). With `--base-url` and `--stats-file` it uses a server that is
already running instead of starting one.

litellm's HTTP client (`--client`):
  default         whatever litellm builds itself (litellm 1.110: an httpx.AsyncClient on its
                  aiohttp transport, limits from AIOHTTP_CONNECTOR_LIMIT (1000) and
                  AIOHTTP_CONNECTOR_LIMIT_PER_HOST (500), read when litellm is imported)
  per-host-env    as default, with AIOHTTP_CONNECTOR_LIMIT(_PER_HOST) set to the cap before
                  litellm is imported
  httpx-default   litellm.aclient_session = httpx.AsyncClient() (httpx's own pool: 100)
  httpx-limits    litellm.aclient_session = httpx.AsyncClient(limits=httpx.Limits(
                  max_connections=cap, max_keepalive_connections=cap))
Numbers only: nothing is asserted.
`--waves 20,2,15` makes three dependent waves instead (drafts, essays per draft, evaluations per
essay: 660 calls), each call once its parent's reply is back (bench/bench_calls.py).
Usage: python bench/asyncio_loop.py [--calls 528 | --waves 20,2,15] [--cap 100] [--latency 2] [--client default]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Polling

REPO = Path(__file__).resolve().parent.parent
CLIENTS = ("default", "per-host-env", "httpx-default", "httpx-limits")


def start_server(latency: float, stats_file: Path) -> tuple[subprocess.Popen, str]:
    """The loopback server's command line in its own process; its base URL."""
    server = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "openai_server.py"), "--port", "0", "--latency", str(latency),
         "--stats-file", str(stats_file)], stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline().strip() if server.stdout else ""
    if not line.startswith("BASE_URL="):
        server.terminate()
        raise SystemExit(f"the loopback server did not start (printed {line!r})")
    return server, line.removeprefix("BASE_URL=")


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def read_stats(stats_file: Path) -> dict:
    return json.loads(stats_file.read_text(encoding="utf-8"))


class StatsWatcher(Polling):
    """Polls the server's stats file (rewritten after every completed request) every 5 ms.

    The calls phase, first request to last reply, is (time the last of `calls` replies was
    counted) - (time the first reply was counted - latency): the server sleeps exactly
    `latency` before its first reply, and the file is only written when a reply completes.
    """

    def __init__(self, stats_file: Path, calls: int, latency: float):
        super().__init__(0.005, "stats-watcher")
        self.stats_file, self.calls, self.latency = stats_file, calls, latency
        self.first_reply: float | None = None
        self.last_reply: float | None = None
        self.base = read_stats(stats_file)["completed_count"]

    def poll(self) -> bool:
        try:
            done = read_stats(self.stats_file)["completed_count"] - self.base
        except (OSError, ValueError):
            done = 0  # the file is replaced atomically; a read can still race a rename
        now = time.perf_counter()
        if done >= 1 and self.first_reply is None:
            self.first_reply = now
        if done >= self.calls:
            self.last_reply = now
        return self.last_reply is not None

    @property
    def calls_phase_s(self) -> float | None:
        if self.first_reply is None or self.last_reply is None:
            return None
        return self.last_reply - (self.first_reply - self.latency)


def import_litellm(client: str, cap: int):
    """litellm, set up for `client` (environment knobs must be set before the import)."""
    if client == "per-host-env":
        os.environ["AIOHTTP_CONNECTOR_LIMIT"] = str(max(cap, 1000))
        os.environ["AIOHTTP_CONNECTOR_LIMIT_PER_HOST"] = str(cap)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    if client in ("httpx-default", "httpx-limits"):
        import httpx

        limits = httpx.Limits(max_connections=cap, max_keepalive_connections=cap)
        litellm.aclient_session = httpx.AsyncClient(limits=limits) if client == "httpx-limits" else httpx.AsyncClient()
    return litellm


def wave_calls(waves: tuple[int, int, int] | None, calls: int) -> int:
    """Calls of a run: `calls`, or every document of the three waves."""
    if waves is None:
        return calls
    drafts, essays, evaluations = waves
    return drafts + drafts * essays + drafts * essays * evaluations


async def run_calls(litellm, base_url: str, calls: int, cap: int, timeout: float,
                    waves: tuple[int, int, int] | None = None) -> dict:
    """`calls` independent calls; with `waves` (drafts, essays per draft, evaluations per
    essay) three dependent waves instead: each essay's call once its draft's reply is back, each
    evaluation's once its essay's is."""
    semaphore = asyncio.Semaphore(cap)
    failures: list[str] = []

    async def one(index) -> None:
        async with semaphore:
            try:
                await litellm.acompletion(
                    model="openai/fake-model", api_base=base_url, api_key="loopback",
                    messages=[{"role": "user", "content": f"call {index}"}],
                    timeout=timeout, num_retries=0, max_retries=0)
            except Exception as error:  # noqa: BLE001 - a failed call is counted, not fatal
                failures.append(f"{type(error).__name__}: {error}"[:200])

    if waves is not None:
        drafts, essays, evaluations = waves

        async def essay(d: int, e: int) -> None:
            await one(f"essay {d}.{e}")
            await asyncio.gather(*(one(f"evaluation {d}.{e}.{v}") for v in range(evaluations)))

        async def draft(d: int) -> None:
            await one(f"draft {d}")
            await asyncio.gather(*(essay(d, e) for e in range(essays)))

        started = time.perf_counter()
        await asyncio.gather(*(draft(d) for d in range(drafts)))
        return {"loop_s": time.perf_counter() - started, "failures": len(failures), "first_failure": failures[:1]}

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    return {"loop_s": time.perf_counter() - started, "failures": len(failures), "first_failure": failures[:1]}


def measure(base_url: str, stats_file: Path, calls: int, cap: int, latency: float, client: str,
            timeout: float = 120.0, waves: tuple[int, int, int] | None = None) -> dict:
    """Run the loop against a running server whose stats file starts at zero requests."""
    import_started = time.perf_counter()
    litellm = import_litellm(client, cap)
    import_s = time.perf_counter() - import_started
    before = read_stats(stats_file)
    calls = wave_calls(waves, calls)
    with StatsWatcher(stats_file, calls, latency) as watcher:
        result = asyncio.run(run_calls(litellm, base_url, calls, cap, timeout, waves))
    after = read_stats(stats_file)
    ideal = calls / cap * latency
    phase = watcher.calls_phase_s or result["loop_s"]
    return {
        "client": client, "calls": calls, "cap": cap, "latency": latency, "import_s": import_s,
        "phase_start": None if watcher.first_reply is None else watcher.first_reply - latency,
        "phase_end": watcher.last_reply,
        "calls_phase_s": phase, "loop_s": result["loop_s"], "ideal_s": ideal, "ratio": phase / ideal,
        "requests": after["request_count"] - before["request_count"],
        "peak_in_flight": after["peak_in_flight"], "failures": result["failures"],
        "first_failure": result["first_failure"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=528)
    parser.add_argument("--cap", type=int, default=100, help="the semaphore: calls in flight at once")
    parser.add_argument("--latency", type=float, default=2.0, help="seconds the server takes per reply")
    parser.add_argument("--client", choices=CLIENTS, default="default", help="litellm's HTTP client")
    parser.add_argument("--base-url", help="use this running loopback server (with --stats-file)")
    parser.add_argument("--stats-file", type=Path, help="that server's stats file")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--waves", help="drafts,essays per draft,evaluations per essay: three dependent waves "
                                        "instead of --calls independent calls")
    args = parser.parse_args()
    waves = tuple(int(n) for n in args.waves.split(",")) if args.waves else None
    server = None
    if args.base_url:
        if args.stats_file is None:
            raise SystemExit("--base-url needs --stats-file")
        base_url, stats_file = args.base_url, args.stats_file
    else:
        stats_file = Path(tempfile.mkdtemp(prefix="daydream-loop-")) / "stats.json"
        server, base_url = start_server(args.latency, stats_file)
    try:
        result = measure(base_url, stats_file, args.calls, args.cap, args.latency, args.client, waves=waves)
    finally:
        if server is not None:
            stop_server(server)
    if args.json:
        print(json.dumps(result))
        return
    print(f"calls                {result['requests']} requests for {result['calls']} calls (latency {args.latency:g} s, "
          f"cap {args.cap}, client {args.client}), {result['failures']} failed {result['first_failure']}")
    print(f"calls phase          {result['calls_phase_s']:.2f} s (first request to last reply, from the stats "
          f"file) = {result['ratio']:.2f}x ideal ({result['ideal_s']:.2f} s); gather {result['loop_s']:.2f} s")
    print(f"peak in flight       {result['peak_in_flight']} (cap {args.cap})")
    print(f"peak RSS             {result['peak_rss_mb']:.0f} MB (this process; litellm import {result['import_s']:.1f} s)")


if __name__ == "__main__":
    main()
