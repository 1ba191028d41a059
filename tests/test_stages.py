"""The stage registry: every other module's view of the stages comes from here."""

import re

import pytest

from daydream import ids, offline_model, parsers, stages


def test_the_stages_form_one_lineage_from_the_root_to_the_scored_stage():
    assert stages.NAMES == ("draft", "essay", "evaluation")
    assert stages.ROOT.name == "draft" and stages.SCORED.name == "evaluation"
    assert [s.name for s in stages.lineage("evaluation")] == ["evaluation", "essay", "draft"]
    assert [s.name for s in stages.children_of("draft")] == ["essay"]


def test_a_gen_id_names_its_stage_by_its_prefix():
    assert stages.of_gen_id("d_5ezrffv9uf3lr37d").name == "draft"
    assert stages.of_gen_id("v_abc").name == "evaluation"
    with pytest.raises(stages.UnknownStageError, match=r"must start with one of d_\.\.\. \(draft\)"):
        stages.of_gen_id("x_123")
    with pytest.raises(stages.UnknownStageError, match="expected one of draft, essay, evaluation"):
        stages.get("summary")


def test_the_wildcard_patterns_match_exactly_the_registered_stages_and_prefixes():
    stage, gen_id = re.compile(f"^(?:{stages.STAGE_PATTERN})$"), re.compile(f"^{stages.GEN_ID_PATTERN}$")
    assert all(stage.match(name) for name in stages.NAMES) and not stage.match("drafts")
    assert gen_id.match(ids.gen_id("essay", "x")) and not gen_id.match("z_abc") and not gen_id.match("d_A")


def test_each_stage_renders_with_its_own_variables():
    concepts = [{"concept_id": "a", "name": "A", "content": "x"}]
    assert stages.get("draft").variables(concepts, None) == {"concepts": concepts}
    assert stages.get("essay").variables([], "the draft") == {"draft_block": "the draft", "links_block": "the draft"}
    assert stages.get("evaluation").variables([], "the essay") == {"response": "the essay"}


def test_the_kind_a_stage_keeps_decides_its_parsers_and_the_default():
    assert parsers.allowed_parsers("evaluation") == {"in_last_line", "complex"}
    assert "essay_block" in parsers.allowed_parsers("draft")
    assert parsers.resolve_parser("essay", "") == "identity"
    with pytest.raises(ValueError, match="needs a score parser"):
        parsers.resolve_parser("evaluation", "")


def test_every_stage_has_an_offline_reply_and_only_a_child_stage_may_be_a_copy():
    for stage in stages.STAGES:
        assert callable(getattr(offline_model, stage.offline_reply))
        assert not (stage.allows_copy and stage.is_root)


def test_ids_take_their_parts_from_the_registry():
    assert ids.document_id("draft", "combo_v1_85128e4e5ef3", "creative-synthesis-v10", "gemini_25_pro", 1) \
        == "d_5ezrffv9uf3lr37d"
    same_model = ids.document_id("essay", "d_5ezrffv9uf3lr37d", "creative-synthesis-v10", "m", 1, "m")
    other_model = ids.document_id("essay", "d_5ezrffv9uf3lr37d", "creative-synthesis-v10", "n", 1, "m")
    assert same_model == "e_sq5klak2lljyyom" and other_model != same_model


def test_a_registry_named_in_the_environment_replaces_the_built_in_one(monkeypatch):
    from tests import fourth_stage

    monkeypatch.setenv(stages.STAGES_ENV, "tests.fourth_stage:STAGES")
    assert stages._registry() == fourth_stage.STAGES
    monkeypatch.setenv(stages.STAGES_ENV, "tests.no_such_module:STAGES")
    with pytest.raises(stages.RegistryError, match="DAYDREAM_STAGES='tests.no_such_module:STAGES'.*or unset it"):
        stages._registry()


def test_the_lineage_columns_of_the_reports_come_from_the_registry():
    assert stages.lineage_columns(stages.EVALUATED.name) == ("draft_template", "generation_template", "generation_model")
    assert stages.EVALUATED.curated_key == "essays" and stages.EVALUATED.id_pattern == "^e_[0-9a-z]+$"
