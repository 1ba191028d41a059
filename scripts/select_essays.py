#!/usr/bin/env python3
"""Rank essays by one evaluation template and a set of judges into an editable candidate CSV.

Per essay and judge the highest score over replicates, then avg_score (mean over judges),
max_score, models_covered, score__<model> (daydream/curation.py). Edit `selected`, then
make a cohort of the selected essays with scripts/curated_cohort.py.

Example: python scripts/select_essays.py --template novelty-judge --models offline_a offline_b --top 10
         python scripts/select_essays.py --template novelty-judge --span 7 10 --out picks.csv
"""

import argparse
import sys
from pathlib import Path

from daydream import curation, reports, settings
from daydream.paths import Paths

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--template", required=True, help="the evaluation template whose scores rank the essays")
parser.add_argument("--models", nargs="+", help="the judge models (default: every judge of that template)")
pick = parser.add_mutually_exclusive_group()
pick.add_argument("--top", type=int, help="select the N best-ranked essays")
pick.add_argument("--span", type=float, nargs=2, metavar=("LOW", "HIGH"), help="select scores in [LOW, HIGH]")
parser.add_argument("--max-only", action="store_true", help="rank by max_score; alone: the essays at the top score")
parser.add_argument("--scores", help="an aggregated_scores.csv (default: 7_cross_experiment/ or --cohort-id's)")
parser.add_argument("--cohort-id", help="rank this cohort's essays (its reports/parsing/aggregated_scores.csv)")
parser.add_argument("--out", help="the candidate CSV (default: 7_cross_experiment/curation/<template>_candidates.csv)")
parser.add_argument("--data-root", help="the data root (default: $DAYDREAM_DATA_ROOT, else config/config.yaml's data_root)")
args = parser.parse_args()
paths = Paths.from_str(settings.data_root(args.data_root))
scores = Path(args.scores) if args.scores else paths.cohort_report(args.cohort_id, reports.AGGREGATED) \
    if args.cohort_id else paths.cross_table(reports.CROSS_AGGREGATED)
selection = curation.Selection(args.top, tuple(args.span) if args.span else None, args.max_only)
try:
    rows = curation.rank_essays(scores, args.template, args.models, selection)
except curation.CurationError as error:
    sys.exit(f"error: {error}")
out = Path(args.out) if args.out else paths.cross_experiment_dir / "curation" / f"{args.template}_candidates.csv"
curation.write_candidates(rows, out)
print(f"{sum(r['selected'] for r in rows)} of {len(rows)} essays selected: {out}")
print(f"next: edit `selected` there, then python scripts/curated_cohort.py {out} --template {args.template} "
      "--cohort-id <new_cohort>")
