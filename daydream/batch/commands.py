"""Batch mode's commands (`scripts/batches.py`) and the end-of-run note of what is in flight."""

from __future__ import annotations

import logging

from daydream.batch import ledger as batch_ledger
from daydream.batch.policy import BatchError
from daydream.batch.rounds import collect_live, target_from_state
from daydream.paths import Paths
from daydream.providers import batch_provider_for
from daydream.runtime import Runtime

log = logging.getLogger(__name__)


def list_batches(paths: Paths) -> list[dict]:
    """One row per batch of the ledger (columns.PROVIDER_BATCH_LIST_COLUMNS)."""
    return [{"local_id": s["local_id"], "provider": s["provider"], "batch_id": s.get("batch_id") or "",
             "stage": s["stage"], "model_id": s["model_id"], "state": s["state"], "status": s.get("status") or "",
             "requests": s["requests"], "done": s.get("done", 0), "failed": s.get("failed", 0),
             "created_at": s["created_at"]} for s in batch_ledger.all_states(paths)]


def collect(rt: Runtime) -> list[dict]:
    """Look at every live batch once and collect the ended ones (no submission)."""
    with batch_ledger.locked(rt.paths):
        collect_live(rt, None, None)
    return list_batches(rt.paths)


def cancel(rt: Runtime, local_ids: list[str]) -> list[str]:
    """Ask the provider to cancel these live batches (all live ones when none is named). What they
    finished is collected as usual; the rest counts as cancelled and a later run submits it again."""
    with batch_ledger.locked(rt.paths):
        live = {s["local_id"]: s for s in batch_ledger.live_states(rt.paths)}
        chosen = local_ids or sorted(live)
        unknown = [i for i in chosen if i not in live]
        if unknown:
            raise BatchError(f"not live batches: {', '.join(unknown)} (python scripts/batches.py list)")
        for local_id in chosen:
            state = live[local_id]
            if state.get("batch_id"):
                batch_provider_for(state["route"]).cancel(target_from_state(state), state["batch_id"])
                log.info("asked %s to cancel provider batch %s (%s)", state["provider"], local_id, state["batch_id"])
    return chosen


def log_waiting(rt: Runtime) -> None:
    """At the end of a run: say what is still in flight and how to collect it."""
    live = batch_ledger.live_states(rt.paths) if rt.paths.provider_batches_dir.exists() else []
    if live:
        requests = sum(s["requests"] for s in live)
        log.warning("%d requests are in %d provider batches still in flight; the documents that need them and the "
                    "reports built from them are left for a later run: run snakemake again to collect them "
                    "(`python scripts/batches.py list --data-root %s` shows them)", requests, len(live),
                    rt.paths.data_root)


def command_runtime(data_root: str | None) -> Runtime:
    """The Runtime of scripts/batches.py: config/config.yaml, the data root resolved as the
    workflow does (`--data-root` > $DAYDREAM_DATA_ROOT > config.yaml) and its daydream.yaml."""
    from daydream import settings

    return Runtime(settings.command_config(data_root))


def format_batches(rows: list[dict]) -> str:
    """The batch list as aligned text columns (columns.PROVIDER_BATCH_LIST_COLUMNS)."""
    from daydream.columns import PROVIDER_BATCH_LIST_COLUMNS as columns

    table = [list(columns)] + [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in table)
