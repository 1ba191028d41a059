"""What the benches share: the checkout, its environment, a process tree's memory, small formats.

Imported by the bench scripts as `common` (each script's own folder is first on sys.path when
it runs); it imports nothing of daydream.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
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
