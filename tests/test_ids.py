import pytest

from daydream import ids


def test_combo_id_matches_the_spec_vector():
    concepts = ["generator-verifier-gap", "dearth-ai-discoveries", "economic-moat", "default-mode-network"]
    assert ids.combo_id(concepts, "paragraph", 4) == "combo_v1_13c725cf02fa"


def test_combo_id_ignores_concept_order_but_not_level_or_k():
    base = ids.combo_id(["a", "b"], "paragraph", 2)
    assert ids.combo_id(["b", "a"], "paragraph", 2) == base
    assert ids.combo_id(["a", "b"], "sentence", 2) != base
    assert ids.combo_id(["a", "b"], "paragraph", 3) != base


def test_draft_and_essay_gen_ids_match_the_spec_vectors():
    draft = ids.gen_id("draft", "combo_v1_85128e4e5ef3", "creative-synthesis-v10", "gemini_25_pro", 1)
    assert draft == "d_5ezrffv9uf3lr37d"
    assert ids.gen_id("essay", draft, "creative-synthesis-v10", 1) == "e_sq5klak2lljyyom"


def test_gen_id_strips_and_lowercases_parts():
    assert ids.gen_id("draft", " COMBO_v1_85128E4E5EF3 ", "Creative-Synthesis-V10", "GEMINI_25_PRO", 1) == \
        "d_5ezrffv9uf3lr37d"


def test_essay_id_adds_the_model_only_when_it_differs_from_the_drafts():
    same = ids.essay_gen_id("d_5ezrffv9uf3lr37d", "creative-synthesis-v10", 1, "m1", "m1")
    assert same == "e_sq5klak2lljyyom"
    other = ids.essay_gen_id("d_5ezrffv9uf3lr37d", "creative-synthesis-v10", 1, "m2", "m1")
    assert other == ids.gen_id("essay", "d_5ezrffv9uf3lr37d", "creative-synthesis-v10", 1, "m2")
    assert other != same


def test_evaluation_ids_differ_by_replicate_and_use_the_v_prefix():
    one = ids.gen_id("evaluation", "e_sq5klak2lljyyom", "novelty-judge", "offline_a", 1)
    two = ids.gen_id("evaluation", "e_sq5klak2lljyyom", "novelty-judge", "offline_a", 2)
    assert one.startswith("v_") and one != two
    assert set(one[2:]) <= set("0123456789abcdefghijklmnopqrstuvwxyz")


def test_unknown_stage_is_rejected():
    with pytest.raises(ValueError, match="unknown stage"):
        ids.gen_id("summary", "x")
