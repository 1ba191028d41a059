#!/usr/bin/env python3
"""Regenerate chosen documents and their descendants: archive them, then rerun snakemake.

Example: python scripts/regenerate.py --stale       # every document in stale_generations.csv
         python scripts/regenerate.py d_5ezrffv9uf3lr37d e_sq5klak2lljyyom --dry-run
"""

import argparse
import sys

from daydream import rehearsal, settings, writer_lock
from daydream.experiment import ExperimentError
from daydream.paths import Paths
from daydream.regenerate import RegenerateError, archive_for_regeneration, raw_changed_gen_ids, stale_gen_ids

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("gen_ids", nargs="*", help="documents to regenerate (d_..., e_..., v_...)")
parser.add_argument("--stale", action="store_true", help="add every document of the stale report")
parser.add_argument("--data-root", help="the data root (default: $DAYDREAM_DATA_ROOT, else config/config.yaml's data_root)")
parser.add_argument("--dry-run", action="store_true", help="list what would be archived, change nothing")
parser.add_argument("--offline", action="store_true",
                    help="add every document an offline rehearsal (offline=true) made for a real model (free)")
args = parser.parse_args()
paths = Paths.from_str(settings.data_root(args.data_root))
try:
    chosen = args.gen_ids + (stale_gen_ids(paths) if args.stale else [])
    chosen += rehearsal.rehearsal_gen_ids(paths) if args.offline else []
except (FileNotFoundError, ExperimentError) as error:
    sys.exit(f"refused: {error}")
if args.stale and (edited := raw_changed_gen_ids(paths)):
    print(f"not regenerated: {len(edited)} document(s) whose only problem is a changed raw.txt, parsed.txt or "
          f"metadata.json ({' '.join(edited)}); the paid reply is saved: delete the file the stale report names "
          f"({paths.stale_generations_csv}) and rerun snakemake to restore it, no call is made")
if not chosen and args.stale:
    print(f"nothing is stale ({paths.stale_generations_csv}): nothing to regenerate")
    sys.exit(0)
if not chosen:
    if args.offline and not args.gen_ids and not args.stale:
        rehearsal.clear_marker(paths)
        print("no document of an offline rehearsal to archive")
        sys.exit(0)
    parser.error("name gen_ids or use --stale")
if not args.dry_run:
    try:  # never move files while a run writes to this data root
        writer_lock.acquire(paths.data_root)
    except writer_lock.DataRootBusy as error:
        sys.exit(f"refused: {error}")
try:
    affected = archive_for_regeneration(paths, chosen, dry_run=args.dry_run)
except RegenerateError as error:
    sys.exit(f"refused: {error}")
if args.offline and not args.dry_run:
    rehearsal.clear_marker(paths)
verb = "would archive" if args.dry_run else "archived (into each folder's .history/)"
print(f"{verb} {len(affected)} document(s): {' '.join(affected)}")
print("next: snakemake --cores N   (makes them again; `snakemake -n` shows the calls)")
