"""How report files are read and written.

Every report write is atomic (through `daydream.store`), so a killed run never leaves a
half-written table that looks complete. Paths are built from `Paths` only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from daydream import store
from daydream.paths import Paths

log = logging.getLogger(__name__)

DECIMALS = 10


def gen_dirs(paths: Paths, stage: str, gen_ids: pd.Series, name: str = "") -> pd.Series:
    """Each document's gens folder as a string, or its file `name` (`Paths.gen_dir_texts`),
    on the index of `gen_ids`."""
    return pd.Series(paths.gen_dir_texts(stage, gen_ids, name), index=gen_ids.index, dtype=object)


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    """A report CSV, written atomically; floats rounded to `DECIMALS` places (no 0.1 + 0.2
    noise), empty cells for NaN."""
    store.write_text_atomic(Path(path), frame.round(DECIMALS).to_csv(index=False))


def read_aggregated(path: Path) -> pd.DataFrame:
    """An aggregated_scores.csv as written: ids as text, `score` float, `error` "" when valid."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist; build it first (snakemake for a cohort, "
                                "scripts/aggregate_scores.py for the cross-experiment table)") from None
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
    return frame


def read_table(path: Path) -> pd.DataFrame:
    """A report CSV with empty cells as NaN in numeric columns and "" in text columns."""
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    text = frame.select_dtypes(exclude="number").columns
    frame[text] = frame[text].fillna("")
    return frame


def read_membership(paths: Paths, cohort_id: str) -> pd.DataFrame:
    """A cohort's membership.csv as text; a clear error when the cohort was never built."""
    path = paths.membership_csv(cohort_id)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; build the cohort first: snakemake {path}")
    return pd.read_csv(path, dtype=str, keep_default_na=False)
