"""Recipes: every shipped recipe loads; overrides are typed; errors list the valid choices."""

import pytest

from omniflex.cli.main import main as omniflex_main
from omniflex.train import TrainConfig, list_recipes, load_recipe
from omniflex.train.config import PRECISIONS


def test_shipped_recipes_load_and_round_trip_through_yaml(tmp_path):
    names = list_recipes()
    assert {"tiny", "tiny-float32", "small-gpu", "base-multigpu"} <= set(names)
    for name in names:
        config = load_recipe(name)
        path = tmp_path / f"{name}.yaml"
        config.to_yaml(path)
        assert TrainConfig.from_yaml(path) == config


def test_tiny_float32_extends_tiny_and_changes_only_precision_and_folder():
    tiny, f32 = load_recipe("tiny").to_dict(), load_recipe("tiny-float32").to_dict()
    assert tiny["precision"] == "flex16+5" and f32["precision"] == "float32"
    assert {k for k in tiny if tiny[k] != f32[k]} == {"precision", "out_dir"}


def test_overrides_are_coerced_to_field_types():
    config = load_recipe(
        "tiny",
        ["lr=1e-3", "steps=150", "betas=0.8,0.9", "progress=false", "model_overrides.n_layers=2",
         "val_data="],
    )  # fmt: skip
    assert config.lr == 1e-3 and isinstance(config.lr, float)
    assert config.steps == 150
    assert config.betas == (0.8, 0.9)
    assert config.progress is False
    assert config.model_overrides["n_layers"] == 2
    assert config.val_data == ""


def test_yaml_paths_and_extends(tmp_path):
    (tmp_path / "parent.yaml").write_text("steps: 40\nlr: 3e-4\nmin_lr: 1e-5\nwarmup: 4\n")
    (tmp_path / "child.yaml").write_text("extends: parent\nsteps: 20\n")
    config = load_recipe(tmp_path / "child.yaml")
    assert (config.steps, config.lr, config.warmup) == (20, 3e-4, 4)


def test_unknown_recipe_lists_the_available_ones():
    with pytest.raises(FileNotFoundError, match=r"available recipes.*tiny"):
        load_recipe("no-such-recipe")


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ValueError, match=r"valid keys are.*batch_size"):
        load_recipe("tiny", ["learning_rate=1"])
    with pytest.raises(ValueError, match="not key=value"):
        load_recipe("tiny", ["steps"])


@pytest.mark.parametrize(
    "override,match",
    [
        ("steps=abc", "TrainConfig.steps must be an integer"),
        ("steps=1.5", "TrainConfig.steps must be an integer"),
        ("precision=float16", "precision='float16' is unknown"),
        ("batch_size=6", "batch_size=6 is not divisible by grad_accum"),
        ("parallel=zero", "parallel must be one of"),
        ("warmup=100000", "warmup=100000 exceeds steps"),
        ("betas=0.9", "two numbers"),
    ],
)
def test_bad_values_name_the_field(override, match):
    extra = ["grad_accum=4"] if override.startswith("batch_size") else []
    with pytest.raises(ValueError, match=match):
        load_recipe("tiny", [*extra, override])


def test_precisions_follow_the_model():
    model_config = pytest.importorskip("omniflex.model.config")
    assert set(PRECISIONS) == set(model_config.PRECISIONS)


def test_micro_batch_must_split_over_ranks():
    config = load_recipe("tiny", ["batch_size=8", "grad_accum=2"])
    assert config.micro_batch_size(1) == 4 and config.micro_batch_size(2) == 2
    with pytest.raises(ValueError, match="multiple of 24"):
        config.micro_batch_size(12)


def test_train_command_reports_user_errors_without_traceback(capsys):
    assert omniflex_main(["train", "--recipe", "no-such-recipe"]) == 2
    assert "error: unknown recipe 'no-such-recipe'" in capsys.readouterr().err
