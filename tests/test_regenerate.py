"""scripts/regenerate.py: what it says when there is nothing to regenerate."""

from __future__ import annotations

import subprocess
import sys

from daydream.paths import Paths
from tests.conftest import REPO


def regenerate(data_root, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "regenerate.py"), *args, "--data-root",
                           str(data_root)], capture_output=True, text=True, timeout=120)


def test_stale_dry_run_with_nothing_stale_says_so_and_succeeds(tmp_path):
    paths = Paths.from_str(tmp_path)
    paths.stale_generations_csv.parent.mkdir(parents=True)
    paths.stale_generations_csv.write_text("gen_id,stage,reason\n", encoding="utf-8")
    for args in (["--stale", "--dry-run"], ["--stale"]):
        done = regenerate(tmp_path, *args)
        assert done.returncode == 0 and "nothing is stale" in done.stdout, done.stderr
        assert "name gen_ids" not in done.stderr


def test_stale_without_a_stale_report_says_how_to_get_one(tmp_path):
    done = regenerate(tmp_path, "--stale", "--dry-run")
    assert done.returncode == 1 and "run snakemake once to build the stale report" in done.stderr
    assert "Traceback" not in done.stderr
