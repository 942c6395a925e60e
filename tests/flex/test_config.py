import pytest

from omniflex.flex import RECIPES, AutoflexConfig, FlexConfig, FlexFormat


def test_recipes_and_overrides():
    cfg = FlexConfig.from_recipe_name("flex16+5-master", rounding="stochastic")
    assert cfg.weight_mode == "master" and cfg.rounding == "stochastic"
    assert FlexConfig.from_recipe_name("flex8+5").format == FlexFormat(8, 5)
    with pytest.raises(ValueError, match="unknown flex recipe 'fp9'"):
        FlexConfig.from_recipe_name("fp9")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_yaml_round_trip(name, tmp_path):
    cfg = RECIPES[name]
    path = tmp_path / "flex.yaml"
    cfg.to_yaml(path)
    assert FlexConfig.from_yaml(path) == cfg
    assert FlexConfig.from_yaml(cfg.to_yaml()) == cfg


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"weight_mode": "fp32"}, "weight_mode"),
        ({"rounding": "up"}, "rounding"),
        ({"kernel": "triton"}, "kernel"),
    ],
)
def test_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        FlexConfig(**kwargs)


def test_autoflex_validation():
    with pytest.raises(ValueError, match="history"):
        AutoflexConfig(history=0)
    with pytest.raises(ValueError, match="alpha"):
        AutoflexConfig(alpha=0.5)
    with pytest.raises(ValueError, match="unknown FlexConfig fields"):
        FlexConfig.from_yaml("colour: blue\n")
