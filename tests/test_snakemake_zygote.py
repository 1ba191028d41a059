"""The tests' Snakemake launcher (tests/snakemake_client.py forking from tests/snakemake_zygote.py)
is Snakemake's command line as `python -m snakemake` is: the same output and exit code, the
caller's working directory, environment and stdin, its signals, no process left behind
when it is killed, and the real entry point whenever the zygote cannot stand in for it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import snakemake_zygote
from tests.conftest import REAL_SNAKEMAKE, SNAKEMAKE, write_dedented

pytestmark = pytest.mark.e2e  # each test runs Snakemake

# Parsed by Snakemake in the launched process: it says where and what it is, then does what the
# environment asks (DO: exit N, sleep until signalled, echo stdin).
PROBE = '''
import json, os, sys, time
from pathlib import Path

record = {"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(), "path": sys.path,
          "argv": sys.argv[1:], "umask": os.umask(0o022), "probe": os.environ.get("PROBE"),
          "zygote": os.environ.get("DAYDREAM_TEST_SNAKEMAKE_ZYGOTE")}
Path(os.environ["RECORD"]).write_text(json.dumps(record))
print("to stdout", flush=True)
print("to stderr", file=sys.stderr, flush=True)
do = os.environ.get("DO", "")
if do.startswith("exit"):
    sys.exit(int(do.split()[1]))
if do == "echo":
    print("stdin said", sys.stdin.read().strip())
if do == "sleep":
    try:
        time.sleep(120)
    except KeyboardInterrupt:
        print("interrupted, ending cleanly", flush=True)
        sys.exit(5)


rule all:
    run:
        pass
'''


@pytest.fixture
def probe(tmp_path) -> tuple[Path, Path]:
    snakefile = write_dedented(tmp_path / "workflow" / "Snakefile", PROBE)
    (tmp_path / "here").mkdir()
    return snakefile, tmp_path / "record.json"


def launch(launcher: list[str], snakefile: Path, record: Path, *args: str, popen: bool = False, **env: str):
    command = [*launcher, "-s", str(snakefile), "--cores", "1", "--force-use-threads", *args]
    environment = {**os.environ, "RECORD": str(record), **env}
    if popen:
        return subprocess.Popen(command, cwd=record.parent / "here", env=environment, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=record.parent / "here", env=environment, capture_output=True, text=True,
                          timeout=300)


def written(record: Path, run: subprocess.Popen, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while not record.exists() or not record.read_text():
        assert run.poll() is None and time.monotonic() < deadline, "the probe never wrote its record"
        time.sleep(0.02)
    return json.loads(record.read_text())


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def test_a_launch_is_snakemake_forked_from_the_zygote_with_the_callers_directory_and_environment(
        probe, snakemake_zygote_process):
    snakefile, record = probe
    done = launch(SNAKEMAKE, snakefile, record, "--nolock", PROBE="the caller's", DO="exit 3")
    seen = json.loads(record.read_text())
    assert done.returncode == 3 and "to stdout" in done.stdout and "to stderr" in done.stderr, done.stderr
    assert seen["ppid"] == snakemake_zygote_process.process.pid, "not forked from the zygote"
    assert seen["cwd"] == str(record.parent / "here") and seen["cwd"] in seen["path"]  # as `-m` puts it there
    assert seen["argv"] == ["-s", str(snakefile), "--cores", "1", "--force-use-threads", "--nolock"]
    assert seen["probe"] == "the caller's" and seen["umask"] == snakemake_zygote_process.umask


def test_stdin_goes_to_the_launched_snakemake(probe, snakemake_zygote_process):
    snakefile, record = probe
    command = [*SNAKEMAKE, "-s", str(snakefile), "--cores", "1", "--force-use-threads"]
    done = subprocess.run(command, cwd=record.parent / "here", env={**os.environ, "RECORD": str(record), "DO": "echo"},
                          input="hello zygote\n", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "stdin said hello zygote" in done.stdout, done.stderr
    assert json.loads(record.read_text())["ppid"] == snakemake_zygote_process.process.pid


@pytest.mark.parametrize("args", [["--no-such-option"], ["--list-rules"]])
def test_the_launcher_prints_and_exits_as_python_m_snakemake_does(probe, args):
    snakefile, record = probe
    through, real = (launch(launcher, snakefile, record, *args) for launcher in (SNAKEMAKE, REAL_SNAKEMAKE))
    assert (through.returncode, through.stdout) == (real.returncode, real.stdout)
    # the same words: some of argparse's choices are sets, in the order of each process's hash seed
    assert sorted(re.findall(r"[\w-]+", through.stderr)) == sorted(re.findall(r"[\w-]+", real.stderr))
    assert through.returncode == (2 if args == ["--no-such-option"] else 0), through.stderr


def test_sigint_and_sigterm_reach_the_launched_snakemake(probe, snakemake_zygote_process):
    snakefile, record = probe
    run = launch(SNAKEMAKE, snakefile, record, popen=True, DO="sleep")
    written(record, run)
    run.send_signal(signal.SIGINT)
    stdout, _ = run.communicate(timeout=120)
    assert run.returncode == 5 and "interrupted, ending cleanly" in stdout  # Python's KeyboardInterrupt

    record.unlink()
    run = launch(SNAKEMAKE, snakefile, record, popen=True, DO="sleep")
    child = written(record, run)["pid"]
    run.send_signal(signal.SIGTERM)
    run.communicate(timeout=120)
    assert run.returncode == -signal.SIGTERM and gone(child)


def test_a_killed_launcher_takes_its_snakemake_with_it_before_the_next_launch(probe, snakemake_zygote_process):
    snakefile, record = probe
    run = launch(SNAKEMAKE, snakefile, record, popen=True, DO="sleep")
    child = written(record, run)["pid"]
    assert child != run.pid and not gone(child)
    run.send_signal(signal.SIGKILL)
    run.wait()
    record.unlink()
    # the zygote ends and reaps the killed launch's process before it forks the next one
    done = launch(SNAKEMAKE, snakefile, record, "--nolock", DO="exit 0")
    assert done.returncode == 0 and gone(child), done.stderr


@pytest.mark.parametrize("change", ["no zygote", "DAYDREAM_STAGES"])
def test_the_real_entry_point_runs_when_the_zygote_cannot_stand_in(probe, change, tmp_path):
    """Without a zygote, or with an environment that changes what importing Snakemake and
    daydream does (the stage registry here), the launcher becomes `python -m snakemake` itself
    (same pid)."""
    snakefile, record = probe
    env = {"no zygote": {"DAYDREAM_TEST_SNAKEMAKE_ZYGOTE": str(tmp_path / "no-such.sock")},
           "DAYDREAM_STAGES": {"DAYDREAM_STAGES": "daydream.stages:BUILT_IN"}}[change]
    run = launch(SNAKEMAKE, snakefile, record, popen=True, DO="exit 4", **env)
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 4 and "to stdout" in stdout, stderr
    assert json.loads(record.read_text())["pid"] == run.pid


def test_the_zygote_declines_a_launch_whose_import_time_state_differs():
    state = snakemake_zygote.ImportState({"DAYDREAM_STAGES": None, "HOME": "/root", "PYTHONHASHSEED": "0"}, 0o022,
                                         "/venv/bin/python")
    same = {"env": {"HOME": "/root", "PYTHONHASHSEED": "0", "LOOP_API_KEY": "k"}, "umask": 0o022,
            "executable": "/venv/bin/python"}
    assert state.difference(same) is None  # a variable not read at import may differ
    for change, why in [({"env": {**same["env"], "PYTHONPATH": "/elsewhere"}}, "PYTHONPATH"),
                        ({"env": {**same["env"], "DAYDREAM_STAGES": "mine:STAGES"}}, "DAYDREAM_STAGES"),
                        ({"env": {"PYTHONHASHSEED": "0", "LOOP_API_KEY": "k"}}, "HOME"),
                        ({"umask": 0o077}, "umask 77"), ({"executable": "/usr/bin/python3"}, "/usr/bin/python3")]:
        assert why in state.difference({**same, **change})
