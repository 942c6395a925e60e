"""Training: recipes, the trainer loop, atomic checkpoints, ``torchrun`` distribution.

Quick start::

    from omniflex.train import train_main
    run_dir = train_main("tiny", ["steps=100"])     # recipes/tiny.yaml, 100 steps

or from a shell (one process, or two CPU processes with gloo)::

    python -m omniflex train --recipe tiny steps=100
    torchrun --nproc_per_node 2 -m omniflex train --recipe tiny

Any ``nn.Module`` called as ``model(input_ids, targets, loss_mask)`` and returning ``.loss`` and
``.logits`` trains with ``Trainer`` (a Flexpoint model gets ``FlexAdam``).
"""

from omniflex.train.checkpoint import (
    CheckpointManager,
    capture_rng_state,
    load_model_state,
    restore_rng_state,
)
from omniflex.train.config import PRECISIONS, TrainConfig
from omniflex.train.dataset import Batch, TokenDataset, write_token_cache
from omniflex.train.distributed import DistContext, init_distributed, shutdown_distributed
from omniflex.train.metrics import MetricsLogger, NullLogger, read_metrics
from omniflex.train.optim import build_optimizer
from omniflex.train.recipes import RECIPES_DIR, list_recipes, load_recipe
from omniflex.train.run import build_omni_model, run_training, train_main
from omniflex.train.schedule import CosineSchedule
from omniflex.train.tensorboard import EventFileWriter
from omniflex.train.trainer import Trainer, TrainResult

__all__ = [
    "PRECISIONS",
    "RECIPES_DIR",
    "Batch",
    "CheckpointManager",
    "CosineSchedule",
    "DistContext",
    "EventFileWriter",
    "MetricsLogger",
    "NullLogger",
    "TokenDataset",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "build_omni_model",
    "build_optimizer",
    "capture_rng_state",
    "init_distributed",
    "list_recipes",
    "load_model_state",
    "load_recipe",
    "read_metrics",
    "restore_rng_state",
    "run_training",
    "shutdown_distributed",
    "train_main",
    "write_token_cache",
]
