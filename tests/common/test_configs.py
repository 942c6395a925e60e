"""Dataclass configs <-> dicts and YAML: unknown keys refused by name, values coerced."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from omniflex.common.configs import (
    check_fields,
    coerce,
    coerce_fields,
    config_from_dict,
    dump_yaml,
    load_yaml,
)


@dataclass(frozen=True)
class Toy:
    steps: int = 10
    lr: float = 1e-3
    name: str = "toy"
    shuffle: bool = True
    betas: tuple[float, float] = (0.9, 0.95)
    weights: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    device: Literal["cpu", "cuda"] = "cpu"
    heads: int | None = None

    def __post_init__(self) -> None:
        coerce_fields(self)


def test_unknown_keys_are_named_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"toy\.yaml: unknown Toy fields \['step'\]; valid keys"):
        config_from_dict(Toy, {"step": 3}, source="toy.yaml")
    with pytest.raises(ValueError, match=r"valid keys are \['steps', 'lr'"):
        check_fields(Toy, {"steps": 1, "learning_rate": 1}, source="x")


def test_a_non_mapping_is_refused():
    with pytest.raises(ValueError, match="toy config must be a mapping of Toy fields, got list"):
        config_from_dict(Toy, [1, 2], source="toy config")


def test_the_error_class_can_be_the_callers():
    class FolderError(ValueError):
        pass

    with pytest.raises(FolderError, match="unknown Toy fields"):
        check_fields(Toy, {"nope": 1}, source="x", error=FolderError)


def test_strings_from_yaml_and_command_lines_are_coerced():
    toy = Toy(
        steps="20",
        lr="3e-4",
        shuffle="no",
        betas="0.8,0.9",
        weights={"asr": "2"},
        extra=None,
        name=None,
        heads="4",
    )
    assert (toy.steps, toy.lr, toy.shuffle, toy.betas) == (20, 3e-4, False, (0.8, 0.9))
    assert (toy.weights, toy.extra, toy.name, toy.heads) == ({"asr": 2.0}, {}, "", 4)
    assert Toy(steps=4.0, betas=[0.1, 0.2]).steps == 4
    assert Toy(heads=None).heads is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": "abc"}, "Toy.steps must be an integer, got 'abc'"),
        ({"steps": 1.5}, "Toy.steps must be an integer"),
        ({"steps": True}, "Toy.steps must be an integer"),
        ({"lr": "inf"}, "Toy.lr must be a finite number"),
        ({"shuffle": "maybe"}, "Toy.shuffle must be true or false"),
        ({"name": 3}, "Toy.name must be a string"),
        ({"betas": "0.9"}, "Toy.betas must be two numbers, e.g. 0.9,0.95"),
        ({"weights": [1]}, "Toy.weights must be a mapping"),
        ({"device": "tpu"}, r"Toy.device must be one of \('cpu', 'cuda'\), got 'tpu'"),
    ],
)
def test_bad_values_name_the_field_and_the_type(changes, message):
    with pytest.raises(ValueError, match=message):
        Toy(**changes)


def test_an_unsupported_annotation_is_a_type_error():
    with pytest.raises(TypeError, match="x has no coercion for field type"):
        coerce(1, set[int], name="x")


def test_yaml_round_trip_in_field_order(tmp_path):
    toy = Toy(steps=3, betas=(0.5, 0.6))
    data = {**toy.__dict__, "betas": list(toy.betas)}
    text = dump_yaml(data, tmp_path / "toy.yaml")
    assert text.splitlines()[0] == "steps: 3"
    assert (tmp_path / "toy.yaml").read_text() == text
    for source in (text, tmp_path / "toy.yaml", str(tmp_path / "toy.yaml")):
        assert config_from_dict(Toy, load_yaml(source), source="toy") == toy
