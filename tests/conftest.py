"""Shared fixtures: a temp data root holding a copy of the sample experiment, small cohort
files, a runner for the real Snakefile, and a guard that fails any non-loopback connection."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from daydream import settings

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
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
