#!/usr/bin/env python3
"""Rebuild 7_cross_experiment/aggregated_scores.csv from every evaluation in the gens store
(metadata.json + parsed.txt of each, joined with its essay's and draft's metadata)."""

import argparse
import logging

from daydream import reports, settings
from daydream.paths import Paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", help="the data root (default: $DAYDREAM_DATA_ROOT, else config/config.yaml's data_root)")
    parser.add_argument("--cohort-id", help="only the evaluations in this cohort's membership.csv; "
                        "written to 7_cross_experiment/by_cohort/<cohort_id>/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        print(reports.write_cross_table(Paths.from_str(settings.data_root(args.data_root)), reports.CROSS_AGGREGATED, args.cohort_id))
    except FileNotFoundError as error:
        parser.exit(1, f"error: {error}\n")


if __name__ == "__main__":
    main()
