#!/usr/bin/env python3
"""Write 7_cross_experiment/evaluation_scores_by_template_model.csv (one row per essay, one
column per <evaluation_template>__<evaluation_model>, replicates averaged) from the
aggregated_scores.csv that scripts/aggregate_scores.py wrote."""

import argparse
import logging

from daydream import reports, settings
from daydream.paths import Paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", help="the data root (default: $DAYDREAM_DATA_ROOT, else config/config.yaml's data_root)")
    parser.add_argument("--cohort-id", help="use 7_cross_experiment/by_cohort/<cohort_id>/aggregated_scores.csv "
                        "(made by aggregate_scores.py --cohort-id) and write beside it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        print(reports.write_cross_table(Paths.from_str(settings.data_root(args.data_root)), reports.CROSS_PIVOT, args.cohort_id))
    except FileNotFoundError as error:
        parser.exit(1, f"error: {error}\n")


if __name__ == "__main__":
    main()
