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


def test_a_model_row_pasted_under_a_shorter_header_is_refused_not_shifted_into_prices(data_root):
    models = Paths(data_root).models_csv
    # a row from a file with api_key_env: under this header its price would land in the caps
    models.write_text(models.read_text() + "pricey,gpt-x,openai,GPT X,openai,,KEY_ENV,4,2.5,10\n")
    with pytest.raises(ExperimentError) as error:
        load_experiment(Paths(data_root))
    line = len(models.read_text().splitlines())
    assert error.value.problems == [
        f"{models} line {line}: 10 fields but the header has 9 (id, model, provider, display_name, route, "
        "api_base, max_concurrency, input_cost_per_mtok, output_cost_per_mtok); extra: '10'. A value that "
        "contains a comma must be in double quotes (e.g. \"Strength of Weak Ties, revisited\"); otherwise "
        "remove the extra field(s)"]


def test_a_byte_order_mark_before_the_header_is_read_transparently(data_root):
    for path in (Paths(data_root).models_csv, Paths(data_root).concepts_metadata_csv):
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    experiment = load_experiment(Paths(data_root))
    assert "offline_a" in experiment.models and "weak-ties" in experiment.concepts


def test_active_columns_are_read_for_templates_and_models_and_must_say_true_or_false(data_root):
    paths = Paths(data_root)
    rewrite(paths.templates_csv("draft"), "essay_idea_last,llm,True", "essay_idea_last,llm,false")
    models = paths.models_csv
    lines = models.read_text().splitlines()
    models.write_text("\n".join([lines[0] + ",active"] + [line + (",no" if line.startswith("offline_b") else ",")
                                                             for line in lines[1:]]) + "\n")
    experiment = load_experiment(paths)
    assert experiment.templates["draft"]["idea-sketch"].active is False
    assert experiment.templates["draft"]["idea-sketch"].line == 2
    assert experiment.models["offline_b"].active is False and experiment.models["offline_a"].active is True
    rewrite(paths.concepts_metadata_csv, "weak-ties,Strength of Weak Ties,True", "weak-ties,Strength of Weak Ties,maybe")
    with pytest.raises(ExperimentError) as error:
        load_experiment(paths)
    assert error.value.problems == [f"{paths.concepts_metadata_csv} line 10 (weak-ties): active is 'maybe'; "
                                    "write true or false (empty means true)"]


def test_every_tables_problems_are_collected_and_what_could_be_read_is_returned(data_root):
    paths = Paths(data_root)
    rewrite(paths.concepts_metadata_csv, "exaptation,Exaptation,True", "exaptation,Exaptation, a trait,False")
    rewrite(paths.templates_csv("essay"), "template_id,template_name", "template_id,template_id")
    rewrite(paths.models_csv, "offline_b,daydream-offline-b,daydream,Daydream Offline B,offline,,,,",
            "offline_b,daydream-offline-b,daydream,Daydream Offline B,offline,,0,,")
    problems: list[str] = []
    experiment = load_experiment(paths, problems)
    assert [p.split(" line ")[0] for p in problems] == [str(paths.concepts_metadata_csv),
                                                         str(paths.templates_csv("essay")), str(paths.models_csv)]
    assert experiment.was_rejected("concepts", "exaptation") and "exaptation" not in experiment.concepts
    assert experiment.unreadable == {"essay"} and experiment.was_rejected("essay", "anything")
    assert "max_concurrency: '0' must be a whole number of at least 1" in problems[2]


def test_the_originals_replication_config_of_ones_is_accepted(data_root):
    shutil.copy(REPO / "tests" / "fixtures" / "legacy_1_raw" / "replication_config.csv", data_root / "1_raw")
    assert load_experiment(Paths(data_root)).models


def test_replication_config_with_more_replicates_is_refused_saying_where_they_go_now(data_root):
    (data_root / "1_raw" / "replication_config.csv").write_text("stage,replicates\ndraft,1\nessay,1\nevaluation,3\n")
    with pytest.raises(ExperimentError) as raised:
        load_experiment(Paths(data_root))
    (problem,) = raised.value.problems
    assert "replication_config.csv line 4: evaluation replicates=3" in problem
    assert "`evaluation: {replicates: 3}` in the cohort file" in problem
    assert "`evaluation_replicate: ['1', '2', '3']` in a design spec" in problem


def test_replication_config_rows_are_checked(data_root):
    (data_root / "1_raw" / "replication_config.csv").write_text("stage,replicates\ndrafts,1\nessay,0\n")
    problems: list[str] = []
    load_experiment(Paths(data_root), problems)
    assert any("line 2: unknown stage 'drafts'" in p for p in problems)
    assert any("line 3: replicates '0' is not a whole number of at least 1" in p for p in problems)
