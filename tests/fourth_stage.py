"""A stage registry with a fourth stage, "revision" between essay and evaluation, for the tests
that check a new stage needs nothing but its registry entry, its templates and its offline
reply. A run picks it up through the environment: DAYDREAM_STAGES=tests.fourth_stage:STAGES
(`daydream.stages.STAGES_ENV`), with the checkout on PYTHONPATH."""

from __future__ import annotations

import dataclasses

from daydream.stages import BUILT_IN, TEXT, Stage, same_parts

REPLY_MARK = "Revised:"


def revision_reply(words: list[str], seed: bytes) -> str:
    """The offline model's revision: a few lines made of the prompt's keywords, seeded."""
    chosen = [words[(seed[i] + i) % len(words)] for i in range(12)] if words else ["nothing"]
    return "\n".join([f"{REPLY_MARK} {' '.join(chosen[:4])}.", " ".join(chosen[4:8]) + ".", " ".join(chosen[8:]) + "."])


DRAFT, ESSAY, EVALUATION = BUILT_IN
REVISION = Stage(name="revision", prefix="r_", parent=ESSAY.name,
                 variables=lambda concepts, parent: {"essay": parent},
                 keeps=TEXT, default_parser="identity", offline_reply=f"{__name__}:revision_reply",
                 id_parts=same_parts,
                 lineage_columns=(("template_id", "revision_template"), ("llm_model_id", "revision_model")))
STAGES = (DRAFT, ESSAY, REVISION, dataclasses.replace(EVALUATION, parent=REVISION.name))
