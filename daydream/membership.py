"""Read the active cohorts' membership once per process: gen_id -> row in O(1).

Snakemake calls input functions once per job; they look rows up here instead of filtering a
table. The index reloads itself only when a membership or manifest file changes on disk (the
checkpoint rewrote it), checked with one `stat` per file.
"""

from __future__ import annotations

import csv
import json
import os
import threading
from dataclasses import dataclass

from daydream.combos import Combo
from daydream.paths import Paths


class UnknownGenerationError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, slots=True)  # slots: 100,000 members cost ~18 MB, not ~65 MB
class Member:
    stage: str
    gen_id: str
    cohort_id: str
    parent_gen_id: str
    combo_id: str
    template_id: str
    llm_model_id: str
    replicate: int


class MembershipIndex:
    def __init__(self, paths: Paths, cohort_ids: list[str]):
        self.paths, self.cohort_ids = paths, list(cohort_ids)
        self._lock = threading.Lock()
        self._signature: tuple | None = None
        self._members: dict[str, Member] = {}
        self._by_cohort: dict[str, list[Member]] = {}
        self._combos: dict[str, Combo] = {}
        self._file_names: tuple[str, ...] | None = None

    def _files(self) -> list:
        return [p for c in self.cohort_ids for p in (self.paths.membership_csv(c), self.paths.manifest_json(c))]

    def _current_signature(self) -> tuple:
        if self._file_names is None:
            self._file_names = tuple(map(os.fspath, self._files()))
        return tuple(map(_identity, self._file_names))

    def _refresh(self) -> None:
        with self._lock:
            signature = self._current_signature()
            if signature != self._signature:
                self._load()
                self._signature = signature

    def _load(self) -> None:
        members: dict[str, Member] = {}
        by_cohort: dict[str, list[Member]] = {}
        combos: dict[str, Combo] = {}
        for cohort_id in self.cohort_ids:  # first cohort wins for shared gen_ids
            by_cohort[cohort_id] = _read_members(self.paths.membership_csv(cohort_id))
            for member in by_cohort[cohort_id]:
                members.setdefault(member.gen_id, member)
            combos.update(_read_combos(self.paths.manifest_json(cohort_id)))
        self._members, self._by_cohort, self._combos = members, by_cohort, combos

    def member(self, gen_id: str) -> Member:
        self._refresh()
        try:
            return self._members[gen_id]
        except KeyError:
            raise UnknownGenerationError(
                f"{gen_id} is in no active cohort's membership ({', '.join(self.cohort_ids)}); "
                "add its cohort to `cohorts` in the config") from None

    def lineage(self, gen_id: str) -> Member:
        """`member` without its check of the files when the loaded index holds `gen_id`, for
        what a gen_id fixes by itself: its stage and parent (both enter its hash,
        `daydream.ids.document_id`), which no rewrite of a membership can change. Snakemake asks
        this once per document job (its input: the parent's parsed.txt), where `member` costs
        two `stat`s each time. Read nothing else of it (its cohort, say): use `member`.
        Unknown here: as `member` (reloads when a file changed, else UnknownGenerationError)."""
        found = self._members.get(gen_id)
        return found if found is not None else self.member(gen_id)

    def members(self, cohort_id: str, stage: str | None = None) -> list[Member]:
        self._refresh()
        rows = self._by_cohort.get(cohort_id, [])
        return [m for m in rows if stage is None or m.stage == stage]

    def signature(self) -> tuple:
        """Changes whenever the index reloads (the checkpoint rewrote a membership or manifest)."""
        self._refresh()
        return self._signature

    def combo(self, combo_id: str) -> Combo:
        self._refresh()
        return self._combos[combo_id]


def _identity(name: str) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten (an atomic replace is a new inode); None when
    the file does not exist."""
    try:
        st = os.stat(name)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _read_members(path) -> list[Member]:
    """The membership's rows. Every value but the gen_id repeats across rows (stage, cohort,
    parent, combo, template, model): each is kept once (`shared`), not once per row as the CSV
    reader makes it, which is most of what 100,000 members weigh."""
    if not path.exists():
        return []
    shared: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        return [Member(**{key: value if key == "gen_id" else shared.setdefault(value, value)
                          for key, value in row.items()} | {"replicate": int(row["replicate"])})
                for row in csv.DictReader(handle)]


def _read_combos(path) -> dict[str, Combo]:
    if not path.exists():
        return {}
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {c["combo_id"]: Combo(c["combo_id"], tuple(c["concepts"]), c["level"], int(c["k"]))
            for c in doc.get("combos", [])}
