#!/usr/bin/env python3
"""Print the design rows a cohort design spec (SPEC-DSL.md) compiles to: JSON lines or CSV.

Example: python scripts/compile_cohort_spec.py data/cohorts/pilot/spec/config.yaml --format csv
"""

import argparse
import csv
import json
import sys

from daydream.cohort_design import DesignError, compile_design_file

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("spec", help="the design spec (YAML with a top-level `axes` key)")
parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="output format (default: jsonl)")
parser.add_argument("--seed", type=int, help="shuffle the rows with this seed (wins over output.seed)")
args = parser.parse_args()
try:
    design = compile_design_file(args.spec, seed=args.seed)
except DesignError as error:
    sys.exit(f"{args.spec}: the design spec has {len(error.problems)} problem(s):\n{error}")
if args.format == "csv":
    writer = csv.DictWriter(sys.stdout, fieldnames=design.columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(design.rows)
else:
    for row in design.rows:
        print(json.dumps(row, ensure_ascii=False))
