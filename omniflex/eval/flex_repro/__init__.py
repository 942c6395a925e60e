"""Reproduce the Flexpoint paper's experiments: flex16+5 vs float32, float16 and bfloat16."""

from omniflex.eval.flex_repro.formats import FORMATS, make_optimizer, prepare_model
from omniflex.eval.flex_repro.runner import EXPERIMENTS, ReproConfig, run_experiment, run_repro

__all__ = [
    "EXPERIMENTS",
    "FORMATS",
    "ReproConfig",
    "make_optimizer",
    "prepare_model",
    "run_experiment",
    "run_repro",
]
