"""One writer per data root: a second run is refused before any job, naming the first; a
killed holder never leaves a stale lock where flock works, and a marker where it does not has
a safe, documented way past."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from daydream import writer_lock
from daydream.paths import Paths
from tests.conftest import REAL_SNAKEMAKE, REPO, SNAKEMAKE, add_models, write_cohort
from tests.openai_server import FakeOpenAIServer

KEY = "sk-writer-lock-loopback-KEY-5e6f7a8b"
HOLD = ("import sys, time\nfrom daydream import writer_lock\n"
        "writer_lock.acquire(sys.argv[1], mode=sys.argv[2])\nprint('held', flush=True)\ntime.sleep(600)\n")


@pytest.fixture(autouse=True)
def released():
    yield
    for held in list(writer_lock._HELD.values()):
        writer_lock.release(held.data_root)


def hold_in_child(data_root: Path, cwd: Path, mode: str = "auto") -> subprocess.Popen:
    """Another process (a stand-in for a run started elsewhere) that holds `data_root`."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(data_root), mode], cwd=cwd, env=env,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait()


def test_a_second_holder_is_refused_naming_the_first_and_kill_9_leaves_no_stale_lock(tmp_path):
    data_root = tmp_path / "data"
    child = hold_in_child(data_root, tmp_path / "clone-a")
    try:
        with pytest.raises(writer_lock.DataRootBusy) as error:
            writer_lock.acquire(data_root)
        message = str(error.value)
        assert f"{data_root} is in use by the run started " in message
        assert f"on host {socket.gethostname()}, pid {child.pid}, in {tmp_path / 'clone-a'}:" in message
        assert "Two runs on one data root would pay for the same documents twice" in message
        assert f"kill {child.pid} on {socket.gethostname()}" in message
    finally:
        kill(child)
    held = writer_lock.acquire(data_root)  # the kernel released the killed holder's lock
    assert held.marker is None
    holder = json.loads((data_root / writer_lock.LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid() and holder["working_directory"] == os.getcwd()
    assert writer_lock.acquire(data_root) is held  # the same process may ask again


def no_flock(monkeypatch):
    def unsupported(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(writer_lock.fcntl, "flock", unsupported)


def test_where_flock_does_not_work_a_marker_stands_for_the_lock_with_a_safe_way_past(tmp_path, monkeypatch):
    data_root = tmp_path / "data"
    no_flock(monkeypatch)
    held = writer_lock.acquire(data_root)
    assert held.fd is None and held.marker == data_root / writer_lock.MARKER_FILE
    assert "flock on" in json.loads(held.marker.read_text())["marker_reason"]
    writer_lock.release(data_root)
    assert not held.marker.exists()

    # a run on another host was killed and left its marker behind
    left = {"host": "node-7", "pid": 4242, "working_directory": "/home/ada/clone-b", "started_at": "2026-01-02T03:04:05",
            "command": "snakemake --cores 8"}
    held.marker.write_text(json.dumps(left))
    with pytest.raises(writer_lock.DataRootBusy) as error:
        writer_lock.acquire(data_root)
    message = str(error.value)
    assert "held by the run started 2026-01-02T03:04:05 on host node-7, pid 4242, in /home/ada/clone-b" in message
    assert "flock on" in message and "No locks available" in message
    assert "check on node-7: ps -p 4242" in message
    assert f"python scripts/data_root_lock.py release --data-root {data_root}" in message
    with pytest.raises(writer_lock.DataRootBusy, match="on another host, so this host cannot tell"):
        writer_lock.release_marker(data_root)
    assert "released" in writer_lock.release_marker(data_root, force=True)
    assert writer_lock.acquire(data_root).marker is not None


def test_a_marker_left_on_this_host_by_a_dead_process_is_cleared_and_a_live_one_refuses(tmp_path, monkeypatch):
    data_root = tmp_path / "data"
    data_root.mkdir()
    no_flock(monkeypatch)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    marker = data_root / writer_lock.MARKER_FILE
    marker.write_text(json.dumps({**writer_lock.holder_record("auto"), "pid": dead.pid, "process_start": "1"}))
    assert writer_lock.acquire(data_root).marker == marker  # provably stale: replaced by ours
    writer_lock.release(data_root)

    child = hold_in_child(data_root, tmp_path / "clone-a")  # the child sees flock working: force a marker
    try:
        marker.write_text(json.dumps({**writer_lock.holder_record("auto"), "pid": child.pid,
                                      "process_start": writer_lock._process_start(child.pid)}))
        with pytest.raises(writer_lock.DataRootBusy, match="If that run is still going, wait for it"):
            writer_lock.acquire(data_root)
        with pytest.raises(writer_lock.DataRootBusy, match="is still running; stop it first"):
            writer_lock.release_marker(data_root, force=True)
    finally:
        kill(child)


def test_nfs_without_lock_support_is_detected_and_gets_a_marker_too(tmp_path, monkeypatch):
    data_root = tmp_path / "data"
    monkeypatch.setattr(writer_lock, "_mount_of", lambda path: ("/mnt/lab", "nfs", "rw,relatime,vers=3,nolock"))
    assert writer_lock.flock_reach(data_root) == "/mnt/lab is NFS mounted with nolock: its locks do not reach other hosts"
    held = writer_lock.acquire(data_root)
    assert held.fd is not None and held.marker is not None  # flock for this host, the marker for the others
    monkeypatch.setattr(writer_lock, "_mount_of", lambda path: ("/", "ext4", "rw,relatime"))
    assert writer_lock.flock_reach(data_root) is None


def test_writer_lock_marker_in_the_config_always_adds_the_marker(tmp_path):
    held = writer_lock.acquire(tmp_path / "data", mode="marker")
    assert held.fd is not None and held.marker is not None
    assert "writer_lock: marker" in writer_lock.status(tmp_path / "data")


# -- through the real Snakefile -----------------------------------------------------------------
def workflow(data_root: Path, cohorts_dir: Path, cohort: str, cwd: Path, *args: str,
             snakemake: tuple[str, ...] = tuple(SNAKEMAKE)) -> list[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return [*snakemake, "-s", str(REPO / "Snakefile"), "--cores", "4", *args, "--config", f"data_root={data_root}",
            f"cohorts_dir={cohorts_dir}", f"cohorts={cohort}", "offline=false"]


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "LOOP_API_KEY": KEY}


@pytest.mark.e2e
def test_two_runs_on_one_data_root_from_two_working_directories_pay_for_each_document_once(tmp_path, data_root,
                                                                                           cohorts_dir):
    paths = Paths(data_root)
    with FakeOpenAIServer() as server:
        server.hold_replies()  # the first run outlasts the second one: its calls wait until the second ends
        add_models(data_root, [{"id": "loop", "api_base": server.base_url}])
        write_cohort(cohorts_dir, "shared", {
            "concepts": {"level": "paragraph", "k": 2, "ids": ["exaptation", "weak-ties", "bisociation"]},
            "draft": {"templates": ["links-brainstorm"], "models": ["loop"]},
            "essay": {"templates": ["essay-from-draft", "copy-draft"], "models": ["draft"]},
            "evaluation": {"templates": ["novelty-judge"], "models": ["loop"]},
        })
        # the real entry point: the lock and the refusal name the pid of the Snakemake process
        first = subprocess.Popen(workflow(data_root, cohorts_dir, "shared", tmp_path / "clone-a",
                                          snakemake=REAL_SNAKEMAKE),
                                 cwd=tmp_path / "clone-a", env=environment(), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        lock, deadline = data_root / writer_lock.LOCK_FILE, time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:
            if lock.exists() and lock.read_text() and json.loads(lock.read_text()).get("pid") == first.pid:
                break
            time.sleep(0.05)
        try:
            second = subprocess.run(workflow(data_root, cohorts_dir, "shared", tmp_path / "clone-b"),
                                    cwd=tmp_path / "clone-b", env=environment(), capture_output=True, text=True,
                                    timeout=600)
        finally:
            server.release_replies()
        first_output = first.communicate(timeout=600)[0]
        assert first.returncode == 0, first_output[-3000:]
        assert server.in_flight == 0
        assert second.returncode != 0
        assert (f"{data_root} is in use by the run started" in second.stderr
                and f"pid {first.pid}, in {tmp_path / 'clone-a'}" in second.stderr)
        table = pd.read_csv(paths.membership_csv("shared"), dtype=str)
        paid = table[table.template_id != "copy-draft"]  # 3 drafts, 3 essays, 6 evaluations
        assert server.request_count == len(paid) == 12

        again = subprocess.run(workflow(data_root, cohorts_dir, "shared", tmp_path / "clone-b"),
                               cwd=tmp_path / "clone-b", env=environment(), capture_output=True, text=True)
        assert again.returncode == 0, again.stderr[-3000:]
        assert server.request_count == 12
    calls = Counter(json.loads(line)["gen_id"] for line in paths.llm_calls_jsonl.read_text().splitlines())
    assert set(calls) == set(paid.gen_id) and set(calls.values()) == {1}


@pytest.mark.e2e
def test_a_refused_run_stops_before_the_checkpoint_and_a_dry_run_needs_no_lock(tmp_path, data_root, cohorts_dir):
    paths = Paths(data_root)
    child = hold_in_child(data_root, tmp_path / "clone-a")
    try:
        plan = subprocess.run(workflow(data_root, cohorts_dir, "tiny", tmp_path / "clone-b", "-n"),
                              cwd=tmp_path / "clone-b", env=environment(), capture_output=True, text=True)
        assert plan.returncode == 0 and "cohort_membership" in plan.stdout
        done = subprocess.run(workflow(data_root, cohorts_dir, "tiny", tmp_path / "clone-b"),
                              cwd=tmp_path / "clone-b", env=environment(), capture_output=True, text=True)
    finally:
        kill(child)
    assert done.returncode != 0 and f"pid {child.pid}, in {tmp_path / 'clone-a'}" in done.stderr
    assert not paths.membership_csv("tiny").exists() and not paths.gens_root.exists()
    assert not paths.llm_calls_jsonl.exists()
