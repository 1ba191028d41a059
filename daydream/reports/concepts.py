"""Concept names for the reports: each combo's concepts by name instead of by hash.

A combo's concepts come from the combo register (`data/combo_mappings.csv`, append-only, the
one record of what a `combo_id` means) and each concept's name from `concepts_metadata.csv`
(every row, active or not: a retired concept still names old essays). The `concepts` column
of a report joins the names with " + " in the combo's registered order.

A concept without a row in the concept table keeps its id (and one warning names the ids and
the file to fix); a combo missing from the register gets an empty cell (one warning too).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from daydream import definitions
from daydream.columns import CONCEPT_COLUMNS, OPTIONAL_CONCEPT_COLUMNS
from daydream.combos import registered_combos
from daydream.paths import Paths

log = logging.getLogger(__name__)

SEPARATOR = " + "
CONCEPTS = "concepts"


@dataclass(frozen=True)
class ConceptNames:
    """The names of every concept and the concepts of every registered combo of a data root."""

    paths: Paths

    @cached_property
    def names(self) -> dict[str, str]:
        """concept_id -> name (every row of the concept table that could be read)."""
        problems: list[str] = []
        table = definitions.read_table(self.paths.concepts_metadata_csv, CONCEPT_COLUMNS, OPTIONAL_CONCEPT_COLUMNS,
                                       problems, key="concept_id")
        for problem in problems:
            log.warning("%s (reports show the concept id where no name is known)", problem)
        return {row["concept_id"]: row["name"] or row["concept_id"] for row in table.rows}

    @cached_property
    def combos(self) -> dict[str, tuple[tuple[str, ...], str, int]]:
        """combo_id -> (concept ids, description level, k) from the combo register."""
        return registered_combos(self.paths)

    def concepts_of(self, combo_id: str) -> list[dict[str, str]]:
        """The concepts of one combo: id, name and description level, in registered order."""
        concepts, level, _ = self.combos.get(combo_id, ((), "", 0))
        return [{"concept_id": c, "name": self.names.get(c, c), "level": level} for c in concepts]

    def label(self, combo_id: str) -> str:
        """The concept names of one combo joined with " + " ("" for an unregistered combo)."""
        return SEPARATOR.join(c["name"] for c in self.concepts_of(combo_id))

    def column(self, combo_ids: pd.Series) -> pd.Series:
        """The `concepts` cell of each row (a vectorised `label` over its distinct combos)."""
        distinct = sorted(set(combo_ids.fillna("").astype(str)) - {""})
        unregistered = [c for c in distinct if c not in self.combos]
        if unregistered:
            log.warning("%d combo(s) are not in %s (e.g. %s): their concepts column is empty; restore the "
                        "register from git", len(unregistered), self.paths.combo_mappings_csv, unregistered[0])
        nameless = sorted({c for combo in distinct for c in self.combos.get(combo, ((),))[0]} - set(self.names))
        if nameless:
            log.warning("concept(s) %s have no row in %s: the reports show their ids; add them with a name",
                        ", ".join(nameless), self.paths.concepts_metadata_csv)
        labels = {combo: self.label(combo) for combo in distinct}
        return combo_ids.fillna("").astype(str).map(labels).fillna("").rename(CONCEPTS)


def insert_concepts(frame: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    """`frame` with a `concepts` column right after `combo_id`."""
    out = frame.drop(columns=[CONCEPTS], errors="ignore")
    out.insert(out.columns.get_loc("combo_id") + 1, CONCEPTS, labels.to_numpy())
    return out
