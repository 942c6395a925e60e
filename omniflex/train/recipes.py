"""Recipes: named ``TrainConfig``s as YAML files in the repository's ``recipes/`` folder.

``load_recipe("tiny", ["lr=1e-3", "model_overrides.n_layer=2"])`` reads ``recipes/tiny.yaml``
(or any ``.yaml`` path), follows its ``extends:`` chain (a recipe may start from another and
change a few keys), applies the ``key=value`` overrides in order, and validates the result.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from omniflex.train.config import TrainConfig

__all__ = ["RECIPES_DIR", "list_recipes", "load_recipe", "parse_overrides", "recipe_path"]

# The repository's recipes/ folder; OMNIFLEX_RECIPES points elsewhere (e.g. an installed copy).
RECIPES_DIR = Path(
    os.environ.get("OMNIFLEX_RECIPES", Path(__file__).resolve().parents[2] / "recipes")
)

_MAX_EXTENDS = 8


def list_recipes(folder: str | Path | None = None) -> list[str]:
    """Names of the recipes in ``folder`` (default ``RECIPES_DIR``)."""
    root = Path(folder) if folder is not None else RECIPES_DIR
    return sorted(p.stem for p in root.glob("*.yaml"))


def recipe_path(name_or_path: str | Path, folder: str | Path | None = None) -> Path:
    """The YAML file of a recipe name or a path; raises ``FileNotFoundError`` listing the names."""
    root = Path(folder) if folder is not None else RECIPES_DIR
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if candidate.is_file():
            return candidate
        raise FileNotFoundError(f"recipe file {candidate} does not exist")
    path = root / f"{name_or_path}.yaml"
    if path.is_file():
        return path
    raise FileNotFoundError(
        f"unknown recipe {str(name_or_path)!r}; available recipes in {root}: "
        f"{list_recipes(root) or 'none'}. Pass a name from that list or a path to a .yaml file."
    )


def load_recipe(
    name_or_path: str | Path, overrides: list[str] | None = None, folder: str | Path | None = None
) -> TrainConfig:
    """A validated ``TrainConfig`` from a recipe name or YAML path, with ``key=value`` overrides.

    Override keys are ``TrainConfig`` fields, or ``model_overrides.FIELD`` for one field of the
    model config. Values are parsed as YAML and then coerced to the field's type.
    """
    path = recipe_path(name_or_path, folder)
    data = _read_with_extends(path, folder)
    for key, value in parse_overrides(overrides or []):
        if key.startswith("model_overrides."):
            sub = key.removeprefix("model_overrides.")
            data["model_overrides"] = {**(data.get("model_overrides") or {}), sub: value}
        elif key in TrainConfig.field_names():
            data[key] = value
        else:
            raise ValueError(
                f"override {key}=... names no TrainConfig field; valid keys are "
                f"{TrainConfig.field_names()} (and model_overrides.FIELD for the model config)"
            )
    return TrainConfig.from_dict(data, source=f"recipe {path}")


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``["lr=1e-3", "betas=0.9,0.95"]`` -> ``[("lr", 0.001), ("betas", "0.9,0.95")]``."""
    parsed = []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"override {item!r} is not key=value; write e.g. lr=1e-3 or steps=100")
        parsed.append((key, _parse_value(text.strip())))
    return parsed


def _parse_value(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" as a string
            return float(value)
        except ValueError:
            return value
    return value


def _parent_path(parent: str, here: Path, folder: str | Path | None) -> Path:
    """``extends: NAME`` looks beside the extending file first, then in the recipes folder."""
    for root in (here, Path(folder) if folder is not None else RECIPES_DIR):
        try:
            return recipe_path(parent, root)
        except FileNotFoundError:
            continue
    return recipe_path(parent, folder)  # raises, listing the recipes folder


def _read_with_extends(path: Path, folder: str | Path | None) -> dict[str, Any]:
    chain: list[Path] = []
    data: dict[str, Any] = {}
    layers: list[dict[str, Any]] = []
    current: Path | None = path
    while current is not None:
        if current in chain or len(chain) >= _MAX_EXTENDS:
            raise ValueError(f"recipe {path}: 'extends' loops or nests too deep: {chain}")
        chain.append(current)
        raw = yaml.safe_load(current.read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"recipe {current} must be a YAML mapping, got {type(raw).__name__}")
        parent = raw.pop("extends", None)
        layers.append(raw)
        current = _parent_path(parent, current.parent, folder) if parent else None
    for layer in reversed(layers):
        model_overrides = {
            **(data.get("model_overrides") or {}),
            **(layer.get("model_overrides") or {}),
        }
        data.update(layer)
        if model_overrides:
            data["model_overrides"] = model_overrides
    return data
