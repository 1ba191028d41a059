"""Shared fixtures: a temp data root holding a copy of the sample experiment, small cohort
files, a runner for the real Snakefile, and a guard that fails any non-loopback connection.

Expensive states are built once per test run (shared by the pytest-xdist workers) and every test gets
its own copy in its `tmp_path`, so tests share nothing on disk and run in any order:
`finished_run` is the tiny cohort run to the end with the offline model (a Snakemake run).

Snakemake launches: `SNAKEMAKE` is Snakemake's command line for subprocess.run/Popen. Through
tests/snakemake_client.py it runs Snakemake's real CLI forked from a pre-imported Snakemake (the
zygote, tests/snakemake_zygote.py: one per test process, started by `snakemake_zygote` when an
e2e or slurm test is selected), so a launch skips the seconds of imports; it has the caller's
working directory, environment, streams, exit code and signals. Killed, it takes its Snakemake
process with it before any later launch starts (and tens of ms after its own death under load).
A launch whose import-time state differs (e.g. PYTHONPATH, DAYDREAM_STAGES, PATH) runs the real
`python -m snakemake` instead, as does `REAL_SNAKEMAKE`, for a test that needs the run's pid."""

from __future__ import annotations

import base64
import csv
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from daydream import cohorts, ids, settings
from daydream.paths import Paths
from daydream.runtime import Runtime
from tests import snakemake_zygote
from tests.openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parent.parent
# A suite started in the background by a shell without job control (`(make test &)`, `nohup ...
# &`) inherits SIGINT ignored, and so would every process it starts: Snakemake runs that ignore
# Ctrl-C, unlike a user's, and the tests of Ctrl-C would wait for nothing. The tests' processes
# get Python's own handling back, as in a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
SNAKEMAKE = [sys.executable, str(REPO / "tests" / "snakemake_client.py")]
REAL_SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# The profile keeps Snakemake quiet about rules (no per-job blocks); tests that read the jobs of a
# dry run or a run from Snakemake's output pass this to bring them back.
PER_JOB_OUTPUT = ("--quiet", "host")

TINY_COHORT = {
    "concepts": {"level": "paragraph", "k": 2, "ids": ["default-mode-network", "exaptation", "weak-ties"]},
    "draft": {"templates": ["idea-sketch"], "models": ["offline_a"], "replicates": 1},
    "essay": {"templates": ["essay-from-draft", "copy-draft"], "models": ["draft"], "replicates": 1},
    "evaluation": {"templates": ["novelty-judge", "rigor-judge"], "models": ["offline_a", "offline_b"],
                   "replicates": 1},
}

TINY_COMBOS = [ids.combo_id(pair, "paragraph", 2) for pair in
               (("default-mode-network", "exaptation"), ("default-mode-network", "weak-ties"),
                ("exaptation", "weak-ties"))]
# TINY_COHORT, written in the design language.
TINY_DESIGN = f"""
axes:
  combo_id: [{", ".join(TINY_COMBOS)}]
  draft_template: [idea-sketch]
  draft_llm: [offline_a]
  evaluation_template: [novelty-judge, rigor-judge]
  evaluation_llm: [offline_a, offline_b]
rules:
  tuples:
    essay: {{axes: [essay_template, essay_llm], items: [[essay-from-draft, None], [copy-draft, None]]}}
output:
  field_order: [combo_id, draft_template, draft_llm, essay_template, essay_llm, evaluation_template,
                evaluation_llm]
"""


@pytest.fixture(autouse=True)
def no_remote_network(monkeypatch):
    """Any attempt to reach a host other than loopback fails the test at once."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not (host.startswith("127.") or host in ("localhost", "::1")):
            raise AssertionError(f"test tried to reach {address}: tests never call a real API")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    for var in ("OPENROUTER_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DAYDREAM_DATA_ROOT"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session", autouse=True)
def snakemake_zygote_process(request, tmp_path_factory) -> Iterator[snakemake_zygote.Running | None]:
    """This test process's pre-imported Snakemake, named to `SNAKEMAKE` launches by an environment
    variable; started only when a selected test runs Snakemake (marked e2e or slurm), stopped at
    the end of the session with the Snakemake processes it still runs."""
    if not any(item.get_closest_marker(mark) for item in request.session.items for mark in ("e2e", "slurm")):
        yield None
        return
    zygote = snakemake_zygote.start(tmp_path_factory.mktemp("snakemake-zygote"))
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(snakemake_zygote.ENV_VAR, str(zygote.socket_path))
            yield zygote
    finally:
        zygote.stop()


@pytest.fixture
def data_root(tmp_path) -> Path:
    """A data folder holding a copy of the shipped sample experiment definitions."""
    root = tmp_path / "data"
    shutil.copytree(REPO / "data" / "1_raw", root / "1_raw")
    return root


@pytest.fixture
def cohorts_dir(tmp_path) -> Path:
    folder = tmp_path / "cohorts"
    folder.mkdir()
    write_cohort(folder, "tiny", TINY_COHORT)
    return folder


def copy_tree(source: Path, target: Path) -> Path:
    """`source` copied into `target` (created or merged) with modification times kept, as
    `cp -a` would: a copied finished run is as finished for Snakemake as the original (the
    membership's record names its inputs relative to the data root, checkpoint_inputs.py)."""
    return Path(shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True))


@pytest.fixture(scope="session")
def finished_tiny_run(tmp_path_factory) -> Path:
    """A folder holding `data/` and `cohorts/` after one offline run of the tiny cohort (every
    document and report made), built once per test run, shared by the xdist workers
    (`built_once`). Read-only: tests take a copy (`finished_run`)."""
    def build(root: Path) -> None:
        shutil.copytree(REPO / "data" / "1_raw", root / "data" / "1_raw")
        (root / "cohorts").mkdir()
        write_cohort(root / "cohorts", "tiny", TINY_COHORT)
        run_workflow(root / "data", root / "cohorts", ["tiny"])

    return built_once(tmp_path_factory, "finished_tiny_run", build)


@pytest.fixture
def finished_run(data_root, cohorts_dir, finished_tiny_run) -> tuple[Path, Path, Paths]:
    """This test's own copy of the finished tiny run, in `data_root` and `cohorts_dir`."""
    copy_tree(finished_tiny_run / "data", data_root)
    copy_tree(finished_tiny_run / "cohorts", cohorts_dir)
    return data_root, cohorts_dir, Paths(data_root)


@pytest.fixture
def rt(data_root, cohorts_dir) -> Runtime:
    """An offline Runtime over the tiny cohort, its membership built in-process (no document made)."""
    runtime = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"],
                       "offline": True})
    cohorts.build_cohort(runtime.paths, "tiny", runtime.paths.cohort_file("tiny"))
    return runtime


def calls_made(rt) -> list[dict]:
    path = rt.paths.llm_calls_jsonl
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def first_draft(rt):
    return rt.membership.members("tiny", "draft")[0]


def write_cohort(folder: Path, cohort_id: str, spec: dict) -> Path:
    path = folder / f"{cohort_id}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def run_workflow(data_root: Path, cohorts_dir: Path, cohorts: list[str], *args: str,
                 offline: bool = True, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real Snakefile with Snakemake's CLI from the data root's parent folder."""
    command = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--cores", "2", *args, "--config",
               f"data_root={data_root}", f"cohorts_dir={cohorts_dir}", f"cohorts={cohorts!r}".replace("'", '"'),
               f"offline={str(offline).lower()}"]
    done = subprocess.run(command, cwd=data_root.parent, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"snakemake failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return done


def write_dedented(path: Path, text: str) -> Path:
    """`text` (dedented, without its first newline) written to `path`, folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


# -- loopback models (tests/openai_server.py) in a data root's llm_models.csv ---------------------
def add_models(data_root: Path, rows: list[dict]) -> None:
    """Append loopback models to the data root's llm_models.csv (route openai, key from LOOP_API_KEY)."""
    path = Paths(data_root).models_csv
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns, existing = list(reader.fieldnames), list(reader)
    columns += [c for c in dict.fromkeys(["api_key_env", *(k for row in rows for k in row)]) if c not in columns]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(existing)
        for row in rows:
            writer.writerow({"model": "fake-model", "provider": "test", "display_name": row["id"], "route": "openai",
                             "api_key_env": "LOOP_API_KEY", **row})


def config_file(tmp_path: Path, settings: dict) -> str:
    path = tmp_path / "llm_settings.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return str(path)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def count_lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0


def llm_settings(**llm) -> settings.LLMSettings:
    """Model-call settings with the schema's defaults for every key not given."""
    config = settings.validated({"data_root": "data", "cohorts": ["tiny"], "llm": llm})
    return settings.LLMSettings.from_config(config)


def planned_by_stage(dry_run_output: str) -> Counter:
    """(rule, stage) -> how many jobs a dry run lists, from each job's `wildcards:` line."""
    counts: Counter = Counter()
    rule = None
    for line in dry_run_output.splitlines():
        started = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):", line)
        if started:
            rule = started.group(1)
        stage = re.match(r"^\s+wildcards:.*\bstage=(\w+)", line)
        if stage and rule:
            counts[(rule, stage.group(1))] += 1
    return counts


# -- issue 20 (tests-b): xdist groups; a state built once per test run; the checkpoint in-process;
# headless Chromium
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """`--dist loadgroup` sends the tests of one `xdist_group` to one worker by a "@<group>" suffix
    that pytest-xdist 3.8.0 writes into `item._nodeid`; pytest 9.2 keeps the id in `item._id`, so
    the suffix was lost and the groups silently spread over the workers (two Slurm clusters
    waiting on each other, module fixtures built once per worker). Known upstream:
    https://github.com/pytest-dev/pytest-xdist/issues/1386. Until xdist writes it, this writes the
    suffix where pytest reads it (in xdist workers only; nothing to do when it is already there)."""
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # a pytest before structured ids: xdist's own suffix works there
        return
    for item in items:
        groups = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                         for mark in item.iter_markers("xdist_group")})
        if groups and "@" not in item.nodeid and isinstance(getattr(item, "_id", None), NodeId):
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder `name`, filled by `build(folder)` once per test run. Under pytest-xdist it lives
    in the folder every worker's temp folder sits in: the first worker to ask builds it, the others
    wait on a lock file and reuse it (one Snakemake run instead of one per worker). Read only once
    built; a failed build leaves no mark, so the next asker builds again (and fails the same way)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder, built = base / name, base / f"{name}.built"
    with (base / f"{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not built.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            built.touch()
    return folder


def checkpoint(data_root: Path, cohorts_dir: Path, cohort_id: str, offline: bool = True) -> Runtime:
    """The cohort's checkpoint run in-process, as Snakemake's `cohort_membership` job runs it (the
    membership, manifest and the record of its inputs; no document made; a refusal raises
    `cohorts.CohortError`): a following Snakemake run or dry run plans the cohort's documents
    without a launch for the checkpoint."""
    runtime = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": [cohort_id],
                       "offline": offline})
    cohorts.write_cohort(runtime, cohort_id)
    return runtime


# Headless Chromium (test_html_report.py, test_site.py) runs with a new profile folder, no network services and no sandbox (root in CI); it
# prints the page's console messages to stderr, where an uncaught JavaScript error would show.
# Tests needing it skip, saying why, only when no Chromium binary is installed.
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0", "--virtual-time-budget=8000"]


def chromium(page: Path | str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on `page` (a file or a URL) with its own profile folder."""
    profile.mkdir(parents=True, exist_ok=True)
    url = page.as_uri() if isinstance(page, Path) else page
    command = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def javascript_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]


def embedded_result(report_html: str, name: str) -> bytes:
    """The bytes of a result embedded (as a data URI) in a self-contained Snakemake report."""
    results = json.loads(re.search(r"var results = (\{.*?\});\n", report_html, re.S).group(1))
    uri = next(r["data_uri"] for r in results.values() if r["filename"] == name)
    return base64.b64decode(uri.split(",", 1)[1])


# == tests-a (issue 20): shared loopback servers =================================================
# One loopback server per name and test session (per xdist worker), given back its starting state
# (`FakeOpenAIServer.restore`) before each test that asks for it: a session-scoped store can name
# a server in its llm_models.csv and every copy of it still reaches that server. A test that needs
# a server of its own (its port closed, its process killed) starts one (`openai_fixtures`).
class LoopbackServers:
    """Named loopback servers of this session, each started on first use."""

    def __init__(self) -> None:
        self._servers: dict[str, FakeOpenAIServer] = {}

    def __getitem__(self, name: str) -> FakeOpenAIServer:
        return self.get(name)

    def get(self, name: str, latency: float = 0.0) -> FakeOpenAIServer:
        """The session's server `name` (started with `latency` the first time it is asked for)."""
        if name not in self._servers:
            self._servers[name] = FakeOpenAIServer(latency=latency).start()
        server = self._servers[name]
        if server.initial_latency != latency:
            raise ValueError(f"loopback server {name!r} was started with latency {server.initial_latency}, "
                             f"not {latency}")
        return server

    def restore(self) -> None:
        for server in self._servers.values():
            server.restore()

    def stop(self) -> None:
        for server in self._servers.values():
            server.stop()


@pytest.fixture(scope="session")
def session_loopback() -> Iterator[LoopbackServers]:
    """The session's loopback servers, not restored: for session-scoped fixtures."""
    servers = LoopbackServers()
    yield servers
    servers.stop()


@pytest.fixture
def loopback(session_loopback) -> LoopbackServers:
    """The session's loopback servers, each as a new one (`restore`) for this test."""
    session_loopback.restore()
    return session_loopback
# == end of tests-a's block ======================================================================
