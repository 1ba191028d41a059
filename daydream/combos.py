"""`data/combo_mappings.csv`: the append-only register of concept combinations (SPEC §4).

New combos are appended; existing rows never change. A combo_id already registered with other
concepts, level or k is a clash and an error (it would mean two meanings for one id).
"""

from __future__ import annotations

import csv
import fcntl
from dataclasses import dataclass
from datetime import UTC, datetime

from daydream.columns import COMBO_MAPPING_COLUMNS
from daydream.paths import Paths

VERSION = "v1"


@dataclass(frozen=True)
class Combo:
    """One combination of concepts: its id, concept ids (in combo order), level and size."""

    combo_id: str
    concepts: tuple[str, ...]
    level: str
    k: int

    def as_dict(self) -> dict:
        return {"combo_id": self.combo_id, "concepts": list(self.concepts), "level": self.level, "k": self.k}


class ComboClashError(ValueError):
    pass


def _registered(handle) -> dict[str, tuple[tuple[str, ...], str, str]]:
    handle.seek(0)
    found: dict[str, tuple[list[str], str, str]] = {}
    for row in csv.DictReader(handle):
        concepts, level, k = found.setdefault(row["combo_id"], ([], row["description_level"], row["k_max"]))
        concepts.append(row["concept_id"])
    return {key: (tuple(sorted(c)), level, k) for key, (c, level, k) in found.items()}


def _check_clash(combo: Combo, known: tuple[tuple[str, ...], str, str], path) -> None:
    if known != (tuple(sorted(combo.concepts)), combo.level, str(combo.k)):
        raise ComboClashError(f"{path}: combo {combo.combo_id} is registered as {known}, "
                              f"not {sorted(combo.concepts)} {combo.level} k={combo.k}; "
                              "this file is append-only: restore it from git")


def append_combo_mappings(paths: Paths, combos: list[Combo]) -> int:
    """Register combos not yet in the file (under a lock); return how many rows were added."""
    path = paths.combo_mappings_csv
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", newline="", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        known = _registered(handle)
        writer = csv.DictWriter(handle, fieldnames=list(COMBO_MAPPING_COLUMNS), lineterminator="\n")
        if handle.tell() == 0:
            writer.writeheader()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        added = 0
        for combo in combos:
            if combo.combo_id in known:
                _check_clash(combo, known[combo.combo_id], path)
                continue
            for concept in combo.concepts:
                writer.writerow(dict(zip(COMBO_MAPPING_COLUMNS, (combo.combo_id, VERSION, concept,
                                                                 combo.level, combo.k, now), strict=True)))
                added += 1
        handle.flush()
        fcntl.flock(handle, fcntl.LOCK_UN)
    return added


def registered_combos(paths: Paths) -> dict[str, tuple[tuple[str, ...], str, int]]:
    """combo_id -> (concept ids in registered order, description level, k) from the register."""
    path = paths.combo_mappings_csv
    if not path.exists():
        return {}
    found: dict[str, tuple[list[str], str, int]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            entry = found.setdefault(row["combo_id"], ([], row["description_level"], int(row["k_max"])))
            entry[0].append(row["concept_id"])
    return {key: (tuple(concepts), level, k) for key, (concepts, level, k) in found.items()}
