"""Reading data/1_raw: every problem named with its file, its row and the fix."""

import shutil

import pytest

from daydream.experiment import ExperimentError, load_experiment
from daydream.paths import Paths
from tests.conftest import REPO


def rewrite(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_the_sample_and_the_original_layout_load(data_root, tmp_path):
    experiment = load_experiment(Paths(data_root))
    assert experiment.templates["essay"]["copy-draft"].generator == "copy"
    shutil.copytree(REPO / "tests" / "fixtures" / "legacy_1_raw", tmp_path / "legacy" / "1_raw")
    legacy = load_experiment(Paths(tmp_path / "legacy"))
    assert legacy.templates["draft"]["creative-synthesis-v10"].parser == "essay_idea_last"


def test_a_misspelled_model_column_is_an_error_naming_it_and_the_known_columns(data_root):
    models = Paths(data_root).models_csv
    rewrite(models, "max_concurrency", "max_concurency")
    with pytest.raises(ExperimentError) as error:
        load_experiment(Paths(data_root))
    message = str(error.value)
    assert str(models) in message and "unknown column(s) 'max_concurency'" in message
    assert "known columns: id, model, provider, display_name, route" in message


def test_the_original_pipelines_own_model_columns_are_accepted(data_root):
    models = Paths(data_root).models_csv
    lines = models.read_text().splitlines()
    models.write_text("\n".join([lines[0] + ",specialization,for_generation,for_evaluation"]
                                + [line + ",creative,true,false" for line in lines[1:]]) + "\n")
    assert "offline_a" in load_experiment(Paths(data_root)).models


def test_an_unknown_template_column_is_an_error_and_scales_belong_to_the_scored_stage(data_root):
    paths = Paths(data_root)
    rewrite(paths.templates_csv("draft"), "parser,generator,active", "parser,generator,activ")
    rewrite(paths.templates_csv("essay"), "generator,active\n", "generator,active,score_max\n")
    with pytest.raises(ExperimentError) as error:
        load_experiment(paths)
    problems = error.value.problems
    assert any(str(paths.templates_csv("draft")) in p and "'activ'" in p for p in problems)
    assert any(str(paths.templates_csv("essay")) in p and "'score_max'" in p for p in problems)


def test_a_root_stage_template_cannot_be_a_copy(data_root):
    rewrite(Paths(data_root).templates_csv("draft"), "essay_idea_last,llm", "essay_idea_last,copy")
    with pytest.raises(ExperimentError, match="a draft cannot be a copy"):
        load_experiment(Paths(data_root))
