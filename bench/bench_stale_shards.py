#!/usr/bin/env python3
"""The stale report's shards on a store that a full run made (`bench_goals.py --keep DIR`, then
`DIR/<N>-r0-daydream`): when each shard was ready in that run, and what the shards' checks cost.

1. Readiness, from Snakemake's metadata records of the run (`.snakemake/metadata/`, the file
   backend): each document's end (its job's `endtime`, the mtime Snakemake's touch gave its
   outputs), and for each shard the end of its last document (or of a document's parent): under
   today's grouping (`stale.group`, whole draft lineages) and under the earlier one (CRC-32 of
   each document's own gen_id), with the run's shard jobs' actual starts. All in seconds from
   the first document's end.
2. Cost: every gens output touched as Snakemake touches it after its job (`os.utime(path,
   None)`: the check records' stat keys no longer hold), then every shard's checks in this
   process (`stale.StaleCheck`, `check_member` and the records saved, as rule `stale_shard`
   does), then once more with the records as the first pass left them; after a warm-up pass
   (imports, definitions, the record file read once). Wall and CPU seconds, and the documents
   hashed again. Touches the store's files (their times only).

    python bench/bench_stale_shards.py DIR/10032-r0-daydream [--cohort bench] [--reps 2]
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import logging
import os
import time
import zlib
from pathlib import Path

from daydream import checks, stale
from daydream.runtime import Runtime


def document_ends(root: Path) -> tuple[dict[str, float], list[float]]:
    """gen_id -> its job's end (epoch seconds), and the starts of the run's stale_shard jobs."""
    ends, shard_starts = {}, []
    folder = root / ".snakemake" / "metadata"
    for directory, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(directory, name)
            key = os.path.relpath(path, folder).replace(os.sep, "").replace("@", "")
            record = json.loads(Path(path).read_text(encoding="utf-8"))
            output = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)).decode()
            if record.get("rule") == "gen_document" and output.endswith("parsed.txt"):
                ends[Path(output).parent.name] = record["endtime"]
            elif record.get("rule") == "stale_shard":
                shard_starts.append(record["starttime"])
    return ends, shard_starts


def readiness(root: Path, rt: Runtime) -> None:
    ends, shard_starts = document_ends(root)
    if not ends:
        print("no document job in .snakemake/metadata/ (a run with the file persistence backend is needed)")
        return
    members = stale.report_members(rt)
    first, last = min(ends.values()), max(ends.values())
    print(f"{len(ends)} documents made, the last {last - first:.1f} s after the first")
    for stage in ("draft", "essay", "evaluation"):
        times = sorted(ends[m.gen_id] - first for m in members if m.stage == stage and m.gen_id in ends)
        if times:
            print(f"   {stage:10s} ends: first {times[0]:6.1f}  median {times[len(times) // 2]:6.1f}  "
                  f"last {times[-1]:6.1f}")
    count = stale.shard_count(len(members))
    old = {}
    for member in members:
        old.setdefault(zlib.crc32(member.gen_id.encode("utf-8")) % count, []).append(member)
    for label, groups in (("by draft lineage (stale.group)", stale.group(members).values()),
                          ("by each gen_id (before)", old.values())):
        ready = sorted(max(ends.get(g, first) for m in shard for g in (m.gen_id, m.parent_gen_id) if g) - first
                       for shard in groups if shard)
        print(f"   {len(ready)} shards {label}: ready at {_spread(ready)}; "
              f"{sum(t < last - first - 5 for t in ready)} more than 5 s before the last document")
    if shard_starts:
        print(f"   the run's shard jobs started at {_spread(sorted(s - first for s in shard_starts))}")


def _spread(times: list[float]) -> str:
    def at(share: float) -> float:
        return times[min(len(times) - 1, int(share * len(times)))]
    return f"first {times[0]:.1f}, 10% {at(.1):.1f}, median {at(.5):.1f}, 90% {at(.9):.1f}, last {times[-1]:.1f}"


def touch_outputs(rt: Runtime) -> None:
    for member in stale.report_members(rt):
        folder = rt.paths.gen_dir(member.stage, member.gen_id)
        for name in ("prompt.txt", "raw.txt", "parsed.txt", "metadata.json"):
            if (folder / name).exists():
                os.utime(folder / name, None)


def check_all_shards(rt: Runtime) -> str:
    started, cpu = time.perf_counter(), time.process_time()
    hashed = used = content = stale_rows = 0
    for members in stale.shards(rt).values():
        check = stale.StaleCheck(rt)
        stale_rows += sum(1 for m in members if stale.check_member(rt, m, check))
        check.documents.reuse.save(may_compact=False)
        hashed, used = hashed + check.documents.reuse.rehashed, used + check.documents.used
        content += check.documents.checked
    return (f"{time.perf_counter() - started:6.2f} s wall {time.process_time() - cpu:6.2f} s CPU  ({used} from "
            f"records, {hashed} hashed again, {content} by content, {stale_rows} stale)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the folder a full run was made in (its data/ and cohorts/)")
    parser.add_argument("--cohort", default="bench")
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the offline model's warning about the data root
    root = args.root.resolve()
    os.chdir(root)
    with (root / "data" / "cohorts" / args.cohort / "membership.csv").open(newline="") as handle:
        documents = sum(1 for _ in csv.DictReader(handle))
    rt = Runtime({"data_root": "data", "cohorts_dir": str(root / "cohorts"), "cohorts": [args.cohort],
                  "offline": True})
    print(f"{root}: {documents} documents, {stale.shard_count(documents)} shards")
    readiness(root, rt)
    print(f"   warm-up (imports, definitions, records read): {check_all_shards(rt)}")
    checks.tidy(rt.paths)  # one record per document again, as the stale report leaves the file
    for rep in range(args.reps):
        touch_outputs(rt)
        print(f"   rep {rep + 1}: every shard after the touch   {check_all_shards(rt)}")
        print(f"   rep {rep + 1}: every shard, records as left {check_all_shards(rt)}")


if __name__ == "__main__":
    main()
