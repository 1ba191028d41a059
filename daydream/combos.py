"""`data/combo_mappings.csv`: the append-only register of concept combinations (SPEC §4).

New combos are appended; existing rows never change. A combo_id already registered with other
concepts, level or k is a clash and an error (it would mean two meanings for one id).
"""

from __future__ import annotations

import csv
import fcntl
from dataclasses import dataclass
from datetime import UTC, datetime

from daydream import definitions
from daydream.columns import COMBO_MAPPING_COLUMNS
from daydream.errors import UserError
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


class ComboRegisterError(ValueError, UserError):
    """`combo_mappings.csv` cannot be read; `problems` has one line per problem (file, line, fix)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(f"- {p}" for p in self.problems))


def _parse_register(path, data: bytes) -> tuple[dict[str, tuple[list[str], str, int]], list[str]]:
    """combo_id -> (concept ids in file order, level, k) and the problems, read strictly
    (`daydream.definitions`: encoding, header, field counts); a combo's rows must agree on
    its level and k."""
    problems: list[str] = []
    try:
        text = definitions.decode(path, data)
    except definitions.DefinitionError as error:
        return {}, [str(error)]
    if not text.strip():
        return {}, []  # a new register: the header is written with the first rows
    found: dict[str, tuple[list[str], str, int]] = {}
    for row in definitions.read_table_text(path, text, COMBO_MAPPING_COLUMNS, (), problems).rows:
        try:
            k = int(row["k_max"])
        except ValueError:
            problems.append(f"{path} line {row.line}: k_max {row['k_max']!r} is not a whole number; "
                            "this file is append-only: restore it from git")
            continue
        concepts, level, known_k = found.setdefault(row["combo_id"], ([], row["description_level"], k))
        if (level, known_k) != (row["description_level"], k):
            problems.append(f"{path} line {row.line}: combo {row['combo_id']} is registered with level {level} "
                            f"and k {known_k} on an earlier line; this file is append-only: restore it from git")
            continue
        concepts.append(row["concept_id"])
    return found, problems


def _read_register(path) -> dict[str, tuple[list[str], str, int]]:
    if not path.exists():
        return {}
    found, problems = _parse_register(path, path.read_bytes())
    if problems:
        raise ComboRegisterError(problems)
    return found


def register_problems(paths: Paths) -> list[str]:
    """The problems of the combo register as it is on disk (none when it does not exist)."""
    path = paths.combo_mappings_csv
    return _parse_register(path, path.read_bytes())[1] if path.exists() else []


def _check_clash(combo: Combo, known: tuple[list[str], str, int], path) -> None:
    concepts, level, k = known
    if (tuple(sorted(concepts)), level, k) != (tuple(sorted(combo.concepts)), combo.level, combo.k):
        raise ComboClashError(f"{path}: combo {combo.combo_id} is registered as "
                              f"{(tuple(sorted(concepts)), level, str(k))}, not {sorted(combo.concepts)} "
                              f"{combo.level} k={combo.k}; this file is append-only: restore it from git")


def append_combo_mappings(paths: Paths, combos: list[Combo]) -> int:
    """Register combos not yet in the file (under a lock); return how many rows were added.
    The file is read strictly first (ComboRegisterError), so a damaged register is never
    appended to."""
    path = paths.combo_mappings_csv
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            data = path.read_bytes()
            known, problems = _parse_register(path, data)
            if problems:
                raise ComboRegisterError(problems)
            writer = csv.DictWriter(handle, fieldnames=list(COMBO_MAPPING_COLUMNS), lineterminator="\n")
            if not data.strip():
                handle.truncate(0)
                writer.writeheader()
            elif not data.endswith(b"\n"):
                handle.write("\n")  # a last line without its newline would merge with the first new row
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
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return added


def registered_combos(paths: Paths) -> dict[str, tuple[tuple[str, ...], str, int]]:
    """combo_id -> (concept ids in registered order, description level, k) from the register;
    ComboRegisterError when it cannot be read."""
    return {key: (tuple(concepts), level, k) for key, (concepts, level, k) in
            _read_register(paths.combo_mappings_csv).items()}


# -- rebuilding the register from concept lists -------------------------------------------------
# The original repository git-ignores combo_mappings.csv, so its specs arrive naming combo ids
# that no register here knows. An id is `ids.combo_id(concepts, level, k)`: it cannot be read
# back into concepts, but the concepts a researcher names give it again.

@dataclass(frozen=True)
class Registration:
    """What `register_named` did: combos added, those already registered, lists whose id the
    spec does not name (refused), and the spec's ids still unknown."""

    added: list[Combo]
    known: list[Combo]
    refused: list[Combo]
    still_unknown: list[str]


def combo_of(concepts: list[str], level: str, k: int | None = None) -> Combo:
    """The combo these concept ids make at `level` (k: their number unless given)."""
    from daydream import ids

    k = len(concepts) if k is None else int(k)
    return Combo(ids.combo_id(concepts, level, k), tuple(concepts), level, k)


def register_named(paths: Paths, wanted: list[str], concept_lists: list[list[str]], level: str,
                   k: int | None = None, *, write: bool = True) -> Registration:
    """Register the combos of `concept_lists` whose ids are among `wanted` (the combo ids a spec
    names). A list whose id is not wanted is refused (a typo, another level or k), so nothing
    the spec does not ask for enters the append-only register."""
    registered = registered_combos(paths)
    combos = [combo_of(concepts, level, k) for concepts in concept_lists]
    wanted_set = set(wanted)
    refused = [c for c in combos if c.combo_id not in wanted_set]
    accepted = [c for c in combos if c.combo_id in wanted_set]
    known = [c for c in accepted if c.combo_id in registered]
    added = [c for c in accepted if c.combo_id not in registered]
    if write and added:
        append_combo_mappings(paths, added)
    covered = set(registered) | {c.combo_id for c in accepted}
    return Registration(added, known, refused, [i for i in dict.fromkeys(wanted) if i not in covered])
