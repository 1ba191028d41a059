#!/usr/bin/env python3
"""Make a gens store of the original pipeline complete for this workflow, without rewriting it.

Where a document has only the original's raw_metadata.json / parsed_metadata.json, writes our
metadata.json beside them (from those files and prompt.txt); where a copy has no prompt.txt,
writes its parent's parsed text there (what our copies keep); where a parsed.txt is older than
its raw.txt or metadata.json, brings its modification time forward (its text is unchanged), so
Snakemake neither makes nor parses those documents again. No file is overwritten, moved or
deleted. Without --write it only lists what it would do.

Example: python scripts/import_gens_store.py --data-root data            # dry run
         python scripts/import_gens_store.py --data-root data --write
"""

import argparse
import sys
from collections import Counter

from daydream import settings
from daydream.original_store import import_store
from daydream.paths import Paths

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data-root", help="the data root (default: $DAYDREAM_DATA_ROOT, else config/config.yaml's data_root)")
parser.add_argument("--write", action="store_true", help="do it (default: a dry run that changes nothing)")
args = parser.parse_args()
paths = Paths.from_str(settings.data_root(args.data_root))
if not paths.gens_root.is_dir():
    parser.exit(1, f"error: {paths.gens_root} does not exist; pass the data folder that holds gens/\n")
actions = import_store(paths, write=args.write)
for action in actions:
    print(f"{action.action:15} {action.stage:11} {action.gen_id}  {action.detail}")
counts = Counter(a.action for a in actions)
summary = ", ".join(f"{counts[name]} {name}" for name in ("write-prompt", "write-metadata", "touch-parsed", "skip"))
print(("done: " if args.write else "dry run, nothing changed (add --write): ") + summary)
if counts["skip"]:
    sys.exit(f"{counts['skip']} document(s) of the original store are incomplete (see 'skip' above); "
             "they stay as they are and must not be members of a cohort")
