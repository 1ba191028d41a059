"""Offline rehearsals never stand in for paid replies (issue 18, invariant 4).

`offline=true` sends every call to the built-in offline model. Its replies are saved in the
same gens store, so a rehearsal on the data root of a real experiment would leave documents
that a later paid run takes as done ("Nothing to be done") and reports as if paid. The two are
kept from mixing, per document, by refusing the run before it starts (the default target's
input function, `targets.cohort_outputs`, so the refusal holds even when nothing is to be
done):

- a paid run (`offline=false`) whose active cohorts hold documents made by the offline model
  in a rehearsal (a row whose own route is not `offline`) is refused; the message names them and
  the way on: archive them with `scripts/regenerate.py --offline` (free: offline replies cost
  nothing), or keep rehearsals in another `data_root`;
- a rehearsal (`offline=true`) whose active cohorts hold paid replies is refused: rehearse in
  another `data_root`.

The scan reads the saved replies of the active cohorts' documents only when the data root has
ever held a reply of the other kind: `ledger.save_reply` drops a marker file on the first
offline reply (`Paths.rehearsal_marker`) and on the first paid one (`Paths.paid_marker`).
Documents of rows whose route is `offline` (the sample's `offline_a`) are the experiment's own,
never a rehearsal.
"""

from __future__ import annotations

import json
from pathlib import Path

from daydream.membership import Member
from daydream.paths import Paths
from daydream.providers import OFFLINE_ROUTE
from daydream.runtime import Runtime

SHOWN = 5
_MARKED: set[str] = set()


class RehearsalMixError(RuntimeError):
    """A run that would mix offline rehearsal replies with paid ones; the message says which
    documents and the way on."""


def is_offline_model(model: str) -> bool:
    return str(model or "").startswith(f"{OFFLINE_ROUTE}/")


def _mark(marker: Path) -> None:
    if str(marker) in _MARKED:
        return
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("a reply of this kind is saved under gens/ (daydream.rehearsal)\n", encoding="utf-8")
    _MARKED.add(str(marker))


def note_paid(paths: Paths, model: str) -> None:
    """A reply of a real provider was saved (`ledger.save_reply`): mark the data root."""
    if not is_offline_model(model):
        _mark(paths.paid_marker)


def note_rehearsal(rt: Runtime, member: Member) -> None:
    """A reply was made offline for a row whose own route is not offline (`ledger.answer`)."""
    if rt.settings.offline and not _own_route_is_offline(rt, member):
        _mark(rt.paths.rehearsal_marker)


def _reply_models(paths: Paths, member: Member) -> list[str]:
    folder = paths.replies_dir(member.stage, member.gen_id)
    if not folder.is_dir():
        return []
    models = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # the ledger names a damaged record when it reads it
        if isinstance(record, dict):
            models.append(str(record.get("model") or ""))
    return models


def _own_route_is_offline(rt: Runtime, member: Member) -> bool:
    row = rt.experiment.models.get(member.llm_model_id)
    return row is None or (row.route or rt.settings.default_route) == OFFLINE_ROUTE


def mixed_documents(rt: Runtime, cohort_id: str) -> list[tuple[str, str]]:
    """(gen_id, model) of the cohort's documents whose saved replies are of the other kind than
    this run's: rehearsal replies in a paid run, paid replies in a rehearsal."""
    offline_run = rt.settings.offline
    marker = rt.paths.paid_marker if offline_run else rt.paths.rehearsal_marker
    if not marker.exists():
        return []
    found = []
    for member in rt.membership.members(cohort_id):
        if rt.template(member).generator != "llm" or _own_route_is_offline(rt, member):
            continue
        for model in _reply_models(rt.paths, member):
            if model and is_offline_model(model) != offline_run:
                found.append((member.gen_id, model))
                break
    return found


def refuse_mixing(rt: Runtime, cohort_id: str) -> None:
    """RehearsalMixError when this run would mix rehearsal and paid replies in `cohort_id`."""
    found = mixed_documents(rt, cohort_id)
    if not found:
        return
    shown = ", ".join(f"{gen_id} ({model})" for gen_id, model in found[:SHOWN])
    more = f" and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
    root = rt.paths.data_root
    if rt.settings.offline:
        raise RehearsalMixError(
            f"daydream: offline=true, but {len(found)} document(s) of cohort {cohort_id} in {root} hold paid "
            f"replies: {shown}{more}. A rehearsal here would mix offline replies with paid ones. Rehearse in "
            f"another data root: --config data_root={root.parent / (root.name + '_rehearsal')} offline=true")
    raise RehearsalMixError(
        f"daydream: {len(found)} document(s) of cohort {cohort_id} in {root} were made by the offline model in a "
        f"rehearsal (offline=true): {shown}{more}. A paid run would take them as done and report their offline "
        f"scores. Archive them (free: offline replies cost nothing) so this run pays for them: python "
        f"scripts/regenerate.py --offline --data-root {root}; or give this run another data_root")


def rehearsal_gen_ids(paths: Paths) -> list[str]:
    """Every document of the gens store made by the offline model in a rehearsal: all its saved
    replies are offline ones while its model row (metadata.json's model_id in llm_models.csv)
    has a route other than `offline` (for `scripts/regenerate.py --offline`)."""
    from daydream import stages, store
    from daydream.experiment import load_experiment

    models = load_experiment(paths).models
    found = []
    for stage in stages.STAGES:
        folder = paths.stage_dir(stage.name)
        if not folder.is_dir():
            continue
        for doc in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            member = Member(stage.name, doc.name, "", "", "", "", "", 0)
            replies = _reply_models(paths, member)
            if not replies or not all(is_offline_model(m) for m in replies):
                continue
            try:
                model_id = store.read_document_metadata(paths, stage.name, doc.name, lineage=False).get("model_id")
            except (FileNotFoundError, ValueError):
                continue
            row = models.get(model_id)
            if row is not None and row.route != OFFLINE_ROUTE:
                found.append(doc.name)
    return found


def clear_marker(paths: Paths) -> None:
    """After the rehearsal documents were archived: the data root holds no rehearsal reply."""
    Path(paths.rehearsal_marker).unlink(missing_ok=True)
    _MARKED.discard(str(paths.rehearsal_marker))
