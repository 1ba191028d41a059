"""What the judge-reliability reports say, in sentences (the results site's Judges page).

Each function reads one table of `reports/analysis/` (as `daydream.reports.judges` wrote it)
and returns a `Finding`: the question the table answers, one sentence per row worth reading,
and whether any of them is a warning (an interval that excludes "no effect"). A table whose
statistics cannot be computed gives its note instead, so the page never shows a bare blank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from daydream.reports.io import read_table

SHOWN_DISAGREEMENTS = 5


@dataclass
class Finding:
    """One analysis on the Judges page: its table, its question, and what it says."""

    table: str  # the report's name under reports/, e.g. analysis/length_bias.csv
    question: str
    lines: list[dict] = field(default_factory=list)  # {"text", "warn", "href"}

    def add(self, text: str, warn: bool = False, href: str | None = None) -> None:
        self.lines.append({"text": text, "warn": warn, "href": href})


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _num(value: object, digits: int = 2) -> str:
    return "n/a" if _missing(value) else f"{float(value):+.{digits}f}".replace("+-", "-")


def _plain(value: object, digits: int = 2) -> str:
    return "n/a" if _missing(value) else f"{float(value):.{digits}f}"


def _interval(row: pd.Series, low: str, high: str, digits: int = 2) -> str:
    if _missing(row.get(low)) or _missing(row.get(high)):
        return "no interval"
    return f"{_plain(row[low], digits)} to {_plain(row[high], digits)}"


def _excludes_zero(row: pd.Series, low: str, high: str) -> bool:
    return not (_missing(row.get(low)) or _missing(row.get(high))) and (float(row[low]) > 0 or float(row[high]) < 0)


def _notes(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(str(n) for n in frame.get("note", pd.Series(dtype=str)) if not _missing(n)))


def _judge(row: pd.Series) -> str:
    return f"{row['evaluation_llm_model']} on {row['evaluation_template']}"


def length_bias(frame: pd.DataFrame) -> Finding:
    found = Finding("analysis/length_bias.csv", "Do the judges reward longer essays?")
    rows = frame[frame["analysis_type"] == "score_vs_length"]
    for _, row in rows.iterrows():
        if _missing(row["spearman"]):
            found.add(f"{_judge(row)}: not computable ({row['note']}).")
            continue
        warn = _excludes_zero(row, "spearman_ci_low", "spearman_ci_high")
        found.add(f"{_judge(row)}: score and length correlate at ρ = {_num(row['spearman'])} "
                  f"({_interval(row, 'spearman_ci_low', 'spearman_ci_high')}); "
                  f"{_num(row['slope_per_doubling'])} points per doubling of length"
                  + (": this judge favours length." if warn else "."), warn)
    if not found.lines:
        found.add("No judge scored enough essays to tell. " + " ".join(_notes(frame)))
    return found


def self_preference(frame: pd.DataFrame) -> Finding:
    found = Finding("analysis/self_preference.csv",
                    "Does a judge favour essays of its own model or provider over other providers' essays?")
    whose = {"same_model": "its own model's", "same_provider": "its provider's other models'"}
    computable = frame[~frame["difference"].map(_missing)]
    for _, row in computable.iterrows():
        warn = str(row["flagged"]).lower() == "true"
        if warn:
            found.add(f"{_judge(row)} gives {whose.get(row['comparison'], row['comparison'])} essays "
                      f"{_num(row['difference'])} points more than other providers' "
                      f"({_interval(row, 'ci_low', 'ci_high')}).", warn)
    if not computable.empty and not found.lines:
        found.add(f"No judge favours its own beyond chance ({len(computable)} comparison(s); every interval "
                  "holds 0). A better essay also raises this difference: read it beside the other judges.")
    if computable.empty:
        providers = sorted({str(p) for p in frame.get("judge_provider", []) if not _missing(p)})
        found.add("Not computable: every essay the judges scored comes from their own provider"
                  + (f" ({', '.join(providers)})" if providers else "")
                  + "; add essays of another provider's model to measure it.")
    return found


def judge_vs_human(frame: pd.DataFrame) -> Finding:
    found = Finding("analysis/judge_vs_human.csv", "Do the judges agree with human raters?")
    judges = frame[(frame["comparison"] == "judge_vs_humans") & ~frame["n"].map(_missing)]
    for _, row in judges.iterrows():
        warn = _excludes_zero(row, "bias_ci_low", "bias_ci_high")
        found.add(f"{_judge(row)}, {int(row['n'])} essays: ranks them like the humans at ρ = {_num(row['spearman'])} "
                  f"({_interval(row, 'spearman_ci_low', 'spearman_ci_high')}), α = {_num(row['krippendorff_alpha'])}; "
                  f"scores {_num(row['mean_bias'])} points against the humans "
                  f"({_interval(row, 'bias_ci_low', 'bias_ci_high')})"
                  + (": a bias beyond chance." if warn else "."), warn)
    humans = frame[frame["comparison"] == "between_humans"]
    for _, row in humans.iterrows():
        if not _missing(row["krippendorff_alpha"]):
            found.add(f"The human raters agree among themselves on {row['evaluation_template']} at "
                      f"α = {_num(row['krippendorff_alpha'])} ({_interval(row, 'alpha_ci_low', 'alpha_ci_high')}).")
    if not found.lines:
        found.add(" ".join(_notes(frame)) or "No essay has both a judge's and a human's score.")
    return found


def calibrated_means(frame: pd.DataFrame) -> Finding:
    found = Finding("analysis/calibrated_means.csv",
                    "What would humans score, estimated from every essay and the human ratings?")
    overall = frame[(frame["analysis_type"] == "overall") & ~frame["calibrated_mean"].map(_missing)]
    for _, row in overall.iterrows():
        who = "the panel" if _missing(row.get("evaluation_llm_model")) else row["evaluation_llm_model"]
        found.add(f"{row['evaluation_template']}, {who}: calibrated mean {_plain(row['calibrated_mean'])} "
                  f"({_interval(row, 'calibrated_ci_low', 'calibrated_ci_high')}) against the judges' "
                  f"{_plain(row['judge_mean'])} and the humans-only {_plain(row['human_mean'])} "
                  f"({int(row['n_labelled'])} rated essays).")
    if not found.lines:
        found.add(" ".join(_notes(frame)) or "No overall estimate could be made.")
    return found


def disagreement(frame: pd.DataFrame, essay_href) -> Finding:
    found = Finding("analysis/disagreement.csv",
                    "Which essays split the judges most (the ones worth a human rating next)?")
    ranked = frame[~frame["rank"].map(_missing)].head(SHOWN_DISAGREEMENTS)
    for _, row in ranked.iterrows():
        found.add(f"{row['gen_id']}: {row['lowest_judge']} and {row['highest_judge']} are "
                  f"{_plain(float(row['spread']) * 100, 0)}% of the {row['spread_template']} scale apart.",
                  href=essay_href(row["gen_id"]))
    if not found.lines:
        found.add(" ".join(_notes(frame)) or "No essay has two judges under one rubric.")
    return found


def judge_findings(reports_dir: Path, essay_href) -> list[Finding]:
    """The findings of every judge-reliability table the cohort has (a missing table is left out)."""
    readers = {"analysis/judge_vs_human.csv": judge_vs_human, "analysis/calibrated_means.csv": calibrated_means,
               "analysis/length_bias.csv": length_bias, "analysis/self_preference.csv": self_preference,
               "analysis/disagreement.csv": lambda f: disagreement(f, essay_href)}
    found = []
    for name, reader in readers.items():
        path = reports_dir / name
        if path.exists():
            found.append(reader(read_table(path)))
    return found
