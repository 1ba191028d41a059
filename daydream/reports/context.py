"""What the builders of one cohort's reports share, each read or computed once.

A `CohortContext` holds the paths, the cohort and the score scales; its `aggregated` table is
computed from the gens store when the tables are built (rule `cohort_reports`), or read back
from the written `parsing/aggregated_scores.csv` when the figures and pages are built (rule
`cohort_report_figures`, which reads only report tables).
"""

from __future__ import annotations

from functools import cached_property

import pandas as pd

from daydream.paths import Paths
from daydream.reports import io
from daydream.reports.scores import aggregated_scores, task_scores

AGGREGATED = "parsing/aggregated_scores.csv"


class CohortContext:
    def __init__(self, paths: Paths, cohort_id: str, scales: pd.DataFrame, *, from_written_tables: bool = False):
        self.paths, self.cohort_id, self.scales = paths, cohort_id, scales
        self.from_written_tables = from_written_tables

    @cached_property
    def membership(self) -> pd.DataFrame:
        return io.read_membership(self.paths, self.cohort_id)

    @cached_property
    def aggregated(self) -> pd.DataFrame:
        """One row per evaluation of the cohort (AGGREGATED_COLUMNS)."""
        if self.from_written_tables:
            return io.read_aggregated(self.paths.cohort_report(self.cohort_id, AGGREGATED))
        return aggregated_scores(self.paths, self.membership, self.scales)

    @cached_property
    def tasks(self) -> pd.DataFrame:
        """One replicate-averaged score per evaluation task (`scores.task_scores`)."""
        return task_scores(self.aggregated, self.scales)

    def table(self, name: str) -> pd.DataFrame:
        """A report table of this cohort as written (for the figures and pages)."""
        return io.read_table(self.paths.cohort_report(self.cohort_id, name))
