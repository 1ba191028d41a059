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

    @cached_property
    def essay_words(self) -> pd.Series:
        """The length in words of each essay the cohort's evaluations score (its parsed.txt
        split on whitespace), indexed by essay id; NaN where the text is missing."""
        from daydream.reports.scores import GENERATION, read_texts

        essays = sorted(set(self.aggregated["parent_gen_id"]) - {""})
        texts = read_texts([self.paths.parsed_path(GENERATION, e) for e in essays])
        return pd.Series([float("nan") if t is None else float(len(t.split())) for t in texts],
                         index=pd.Index(essays, name="gen_id"), dtype=float)

    @cached_property
    def model_providers(self) -> dict[str, str]:
        """Model id -> its `provider` in llm_models.csv (read strictly; a problem raises). Without
        the file (a gens store copied without its definitions) no provider is known, and the
        self-preference report notes each judge's provider as unknown."""
        from daydream.experiment import ExperimentError, load_models

        if not self.paths.models_csv.exists():
            return {}
        problems: list[str] = []
        models = load_models(self.paths, problems)
        if problems:
            raise ExperimentError(problems)
        return {model_id: row.provider for model_id, row in models.items()}

    @cached_property
    def human_scores(self) -> pd.DataFrame | None:
        """The human ratings of `data/1_raw/human_scores.csv`, None without the file
        (`daydream.human_scores`; a problem raises, naming the file, the line and the fix)."""
        from daydream.human_scores import load_human_scores

        return load_human_scores(self.paths, self.scales)

    def table(self, name: str) -> pd.DataFrame:
        """A report table of this cohort as written (for the figures and pages)."""
        return io.read_table(self.paths.cohort_report(self.cohort_id, name))
