#!/usr/bin/env python3
"""Who holds a data root, and the safe way past a marker left by a killed run.

A run holds its data root for its whole life (daydream/writer_lock.py). On a local filesystem
the kernel releases that lock even after kill -9, so nothing is ever left behind. Where the
filesystem has no lock that reaches every host (e.g. NFS mounted with nolock), a marker file
stands for the lock and a killed run leaves it behind: `release` removes it once its run has
ended (checked here when the run was on this host; from another host, check there and add
--force).

Example: python scripts/data_root_lock.py status --data-root data
         python scripts/data_root_lock.py release --data-root data
"""

import argparse
import sys

from daydream import settings, writer_lock

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("action", choices=["status", "release"], help="show the holder, or release a left-behind marker")
parser.add_argument("--data-root", help="the data root (default: $DAYDREAM_DATA_ROOT, else config/config.yaml's data_root)")
parser.add_argument("--force", action="store_true",
                    help="release a marker whose holder ran on another host (check there first that it has ended)")
args = parser.parse_args()
if args.action == "status":
    print(writer_lock.status(settings.data_root(args.data_root)))
else:
    try:
        print(writer_lock.release_marker(settings.data_root(args.data_root), force=args.force))
    except writer_lock.DataRootBusy as error:
        sys.exit(f"refused: {error}")
