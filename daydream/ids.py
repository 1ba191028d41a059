"""Deterministic ids (SPEC §4): the one place that defines how combos and documents are named.

Both functions are pure and stable across machines, cohorts and Python versions: a change here
would orphan every existing gens store, so the formats below are a compatibility contract.
A gen_id's prefix and its signature parts come from the stage registry (`daydream.stages`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from daydream import stages

COMBO_PREFIX = "combo_v1_"
COHORT_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
# Every id of a definition (concept, template, model, cohort) names a file or a folder: letters,
# digits, `_`, `.` and `-`, starting with a letter or a digit; never a path (no `/`, no `..`).
ID_PATTERN = COHORT_ID_PATTERN


def id_problem(kind: str, value: object) -> str | None:
    """Why `value` is not a valid id of `kind` (the id pattern), or None when it is one."""
    if isinstance(value, str) and re.fullmatch(ID_PATTERN, value) and ".." not in value:
        return None
    shown = repr(value) if len(str(value)) <= 80 else repr(str(value)[:77] + "...")
    return (f"{kind} {shown} is not a valid id: use letters, digits, '_', '.' and '-', starting with a letter or "
            "a digit (an id names a file, never a path)")
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def combo_id(concept_ids: Iterable[str], description_level: str, k: int) -> str:
    """`combo_v1_` + 12 hex of SHA-256 over sorted concept ids joined by `|`, then `|level|k`."""
    key = "|".join(sorted(str(c) for c in concept_ids)) + f"|{description_level}|{int(k)}"
    return COMBO_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def _base36(number: int) -> str:
    digits = []
    while number:
        number, rest = divmod(number, 36)
        digits.append(_BASE36[rest])
    return "".join(reversed(digits)) or "0"


def gen_id(stage: str, *parts: object) -> str:
    """Stage prefix + base36 of a 10-byte BLAKE2b digest over the signature parts.

    Parts are stripped, lower-cased and joined with `|`, in the order of SPEC §4 (see
    `document_id` for the parts of each stage).
    """
    prefix = stages.get(stage).prefix
    signature = "|".join(str(part).strip().lower() for part in parts)
    digest = hashlib.blake2b(signature.encode("utf-8"), digest_size=10).digest()
    return prefix + _base36(int.from_bytes(digest, "big"))


def document_id(stage: str, anchor: str, template_id: str, model_id: str, replicate: int,
                parent_model_id: str | None = None) -> str:
    """A document's gen_id from its lineage: `anchor` is the combo_id of a root-stage document
    or the parent's gen_id; the stage registry says which parts enter the hash: draft
    (combo_id, template_id, llm_model_id, replicate); essay (draft_gen_id, template_id,
    replicate[, essay model when it differs from the draft's]); evaluation (essay_gen_id,
    template_id, llm_model_id, replicate)."""
    parts = stages.get(stage).id_parts(anchor, template_id, model_id, int(replicate), parent_model_id)
    return gen_id(stage, *parts)


def essay_gen_id(draft_gen_id: str, template_id: str, replicate: int, model_id: str,
                 draft_model_id: str) -> str:
    """Essay id (kept for callers of the original API): see `document_id`."""
    return document_id("essay", draft_gen_id, template_id, model_id, replicate, draft_model_id)
