"""Helpers shared by the model tests: a micro vocabulary and config (tests stay fast)."""

from __future__ import annotations

from typing import Any

from omniflex.model.config import ModelConfig
from omniflex.model.vocab import VocabLayout

__all__ = ["MICRO_LAYOUT", "micro_config"]

#: 200 text ids (the 174 specials first), 16 image codes, 2 audio codebooks of 8: 232 ids.
MICRO_LAYOUT = VocabLayout(text_size=200, image_size=16, audio_size=8, audio_codebooks=2)


def micro_config(**overrides: Any) -> ModelConfig:
    """dim 32, 2 layers, 2 heads (head size 16), float32 unless overridden."""
    fields: dict[str, Any] = {
        "vocab": MICRO_LAYOUT,
        "dim": 32,
        "n_layers": 2,
        "n_heads": 2,
        "mlp_hidden": 64,
        "max_seq_len": 64,
        "precision": "float32",
    }
    fields.update(overrides)
    return ModelConfig(**fields)
