#!/usr/bin/env python3
"""Register in combo_mappings.csv the combinations a design spec names, given by their concepts.

A combo id is computed from its concept ids, description level and k (SPEC §4), so the register
the original repository git-ignores can be rebuilt: name each combination's concepts and the
ids the spec names are registered (a list whose id the spec does not name is refused).

Example: python scripts/register_combos.py data/cohorts/x/spec/config.yaml --level paragraph \\
             --concepts default-mode-network,exaptation --concepts weak-ties,bisociation
         python scripts/register_combos.py SPEC --level paragraph --concepts-file combos.txt  # a,b per line
"""

import argparse
import sys

from daydream import combos, settings
from daydream.cohort_design import DesignError, compile_design_file, design_combo_ids
from daydream.paths import Paths

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("spec", help="the design spec whose combo ids to register")
parser.add_argument("--level", required=True, help="description level of the combos (e.g. paragraph)")
parser.add_argument("--k", type=int, help="k of the combos (default: the number of concepts named)")
parser.add_argument("--concepts", action="append", default=[], help="one combination: concept ids, comma-separated")
parser.add_argument("--concepts-file", help="one combination a line: concept ids separated by commas or spaces")
parser.add_argument("--data-root", help="the data root (default: $DAYDREAM_DATA_ROOT, else config/config.yaml's data_root)")
parser.add_argument("--dry-run", action="store_true", help="say what would be registered, write nothing")
args = parser.parse_args()
lines = args.concepts + (open(args.concepts_file, encoding="utf-8").read().splitlines() if args.concepts_file else [])
lists = [line.replace(",", " ").split() for line in lines if line.strip() and not line.lstrip().startswith("#")]
try:
    wanted = design_combo_ids(compile_design_file(args.spec))
except DesignError as error:
    sys.exit(f"{args.spec}: the design spec has {len(error.problems)} problem(s):\n{error}")
paths = Paths.from_str(settings.data_root(args.data_root))
done = combos.register_named(paths, wanted, lists, args.level, args.k, write=not args.dry_run)
for combo in done.added:
    print(f"{'would register' if args.dry_run else 'registered'} {combo.combo_id}: {','.join(combo.concepts)}")
for combo in done.refused:
    print(f"refused {combo.combo_id}: {','.join(combo.concepts)} (level {combo.level}, k {combo.k}) is not a combo "
          "of this spec; check the concept ids, --level and --k")
print(f"{len(done.added)} new, {len(done.known)} already registered, {len(done.refused)} refused; "
      f"{len(done.still_unknown)} of the spec's {len(set(wanted))} combo ids still unknown"
      + (f": {' '.join(done.still_unknown)}" if done.still_unknown else ""))
sys.exit(1 if done.refused or done.still_unknown else 0)
