"""Deterministic ids (SPEC §4): the one place that defines how combos and documents are named.

Both functions are pure and stable across machines, cohorts and Python versions: a change here
would orphan every existing gens store, so the formats below are a compatibility contract.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

STAGES = ("draft", "essay", "evaluation")
STAGE_PREFIX = {"draft": "d_", "essay": "e_", "evaluation": "v_"}
COMBO_PREFIX = "combo_v1_"
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

    Parts are stripped, lower-cased and joined with `|`, in the order of SPEC §4:
    draft (combo_id, template_id, llm_model_id, replicate); essay (draft_gen_id, template_id,
    replicate[, essay model when it differs from the draft's]); evaluation (essay_gen_id,
    template_id, llm_model_id, replicate).
    """
    if stage not in STAGE_PREFIX:
        raise ValueError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")
    signature = "|".join(str(part).strip().lower() for part in parts)
    digest = hashlib.blake2b(signature.encode("utf-8"), digest_size=10).digest()
    return STAGE_PREFIX[stage] + _base36(int.from_bytes(digest, "big"))


def essay_gen_id(draft_gen_id: str, template_id: str, replicate: int, model_id: str,
                 draft_model_id: str) -> str:
    """Essay id: the essay model is a 4th signature part only when it differs from the draft's."""
    parts: list[object] = [draft_gen_id, template_id, replicate]
    if model_id != draft_model_id:
        parts.append(model_id)
    return gen_id("essay", *parts)
