#!/usr/bin/env python3
"""List, collect or cancel provider batches (README "Batch mode").

  python scripts/batches.py list                  # every batch: provider, id, state, counts
  python scripts/batches.py collect               # look at live batches once, save what has ended
  python scripts/batches.py cancel [pb_... ...]   # cancel these live batches (default: all of them)
"""

import argparse
import logging

from daydream.batch import commands
from daydream.batch.policy import BatchError

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("command", choices=["list", "collect", "cancel"])
parser.add_argument("local_ids", nargs="*", help="cancel: our batch ids (pb_..., from `list`)")
parser.add_argument("--data-root", help="the data root (default: $DAYDREAM_DATA_ROOT, else config/config.yaml's data_root)")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
rt = commands.command_runtime(args.data_root)
try:
    if args.command == "cancel":
        print("cancelling:", " ".join(commands.cancel(rt, args.local_ids)) or "no live batch")
    rows = commands.collect(rt) if args.command == "collect" else commands.list_batches(rt.paths)
except BatchError as error:
    parser.exit(1, f"error: {error}\n")
print(commands.format_batches(rows))
