#!/usr/bin/env python3
"""Turn the selected rows of a candidate CSV (scripts/select_essays.py) into a curated cohort:
`essays:` (in selection_rank order) plus the same evaluation template and judges, so the
existing evaluations are reused and only missing ones are made (daydream/curation.py).

Example: python scripts/curated_cohort.py picks.csv --template novelty-judge --cohort-id best_of_pilot
         snakemake --cores 8 --config cohorts=best_of_pilot
"""

import argparse
import sys
from pathlib import Path

from daydream import curation, settings
from daydream.paths import Paths

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("candidates", help="the (edited) candidate CSV")
parser.add_argument("--template", required=True, help="the evaluation template of the new cohort")
parser.add_argument("--cohort-id", required=True, help="the new cohort's id (its file: <cohorts_dir>/<id>.yaml)")
parser.add_argument("--models", nargs="+", help="judge models (default: the CSV's score__<model> columns)")
parser.add_argument("--replicates", type=int, default=1, help="evaluation replicates (default: 1)")
parser.add_argument("--force", action="store_true", help="replace an existing cohort file")
args = parser.parse_args()
config = settings.command_config()  # cohorts_dir from config.yaml or <data_root>/daydream.yaml
path = Paths.from_str(config["data_root"], config.get("cohorts_dir")).cohort_file(args.cohort_id)
try:
    cohort = curation.curated_cohort(Path(args.candidates), args.template, args.models, args.replicates)
    curation.write_cohort_file(cohort, path, Path(args.candidates), overwrite=args.force)
except curation.CurationError as error:
    sys.exit(f"error: {error}")
print(f"{path}: {len(cohort['essays'])} essays, {args.template} by {', '.join(cohort['evaluation']['models'])}")
print(f"next: snakemake -n --config cohorts={args.cohort_id}   (the evaluations still missing)")
