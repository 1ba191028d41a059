"""The fixture gens store in the original pipeline's shape (tests/fixtures/original_store/):
copied into a data folder with the original's file times, and its ids by role."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from daydream.paths import Paths

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ORIGINAL = FIXTURES / "original_store"
COHORT = "legacy-2025"
# The order the original pipeline wrote a document's files (its prompt, raw and parsed assets).
WRITE_ORDER = ("metadata.json", "prompt.txt", "raw.txt", "raw_metadata.json", "parsed.txt", "parsed_metadata.json")
START = 1_748_856_000  # 2025-06-02, when the original ran the cohort

COMBO_A, COMBO_B = "combo_v1_ce556da37fe9", "combo_v1_a141fcb61629"
DRAFTS = {"A1": "d_56jy41n0mp4mcl2l", "A2": "d_2qrruj5cke5umfw2", "B1": "d_3gzzskcw33s4thi8"}
ESSAYS = {"A1": "e_26ydiqej96mcflnc", "A2": "e_bdw4cj73tlkzgvo", "B1": "e_4itghhcj8tms7tgv"}
COPY_ESSAY = "e_28ufzyuh9pdj1ibx"  # parsed-from-links-v1 of draft B1; no prompt.txt
VERIFICATION = {"A1": "v_vnl8iow34k2jcjg", "A2": "v_44tmmncbpdayddsa", "B1": "v_2zw7vzj8z6o7q8h3"}
PRIOR_ART = {"A1": "v_2byuxcxc8dg5d8fm", "A2": "v_4zggbgjm7xpph30h", "B1": "v_vsp9p1sgyaob4cw"}
COPY_VERIFICATION = "v_2b1ilks1j3y3a4u5"  # of the copy essay; raw/parsed_metadata.json only
SCORES = {VERIFICATION["A1"]: 7.0, VERIFICATION["A2"]: 8.0, VERIFICATION["B1"]: 8.0, COPY_VERIFICATION: 5.0,
          PRIOR_ART["A1"]: 5.4, PRIOR_ART["A2"]: 4.5, PRIOR_ART["B1"]: 6.3}


def copy_original_store(data_root: Path) -> Paths:
    """`data_root` with the original's experiment (1_raw), combo register, cohort spec and gens
    store, every document's files timed in the original's write order (drafts first)."""
    shutil.copytree(FIXTURES / "legacy_1_raw", data_root / "1_raw")
    for name in ("gens", "cohorts"):
        shutil.copytree(ORIGINAL / name, data_root / name)
    shutil.copy(ORIGINAL / "combo_mappings.csv", data_root / "combo_mappings.csv")
    paths = Paths(data_root)
    stamp = START
    for stage in ("draft", "essay", "evaluation"):
        for folder in sorted(paths.stage_dir(stage).iterdir()):
            for name in WRITE_ORDER:
                if (folder / name).exists():
                    stamp += 1
                    os.utime(folder / name, (stamp, stamp))
    return paths


def snapshot(paths: Paths) -> dict[str, tuple[bytes, int]]:
    """Content and modification time of every file the original wrote."""
    return {str(p.relative_to(paths.gens_root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(paths.gens_root.rglob("*")) if p.is_file()}
