"""Entry points: ``train_main`` (for ``omniflex train``) and ``run_training`` (any model).

The same call works in one process or under ``torchrun``::

    python -m omniflex train --recipe tiny steps=100
    torchrun --nproc_per_node 2 -m omniflex train --recipe tiny
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from omniflex.model.config import ModelConfig
from omniflex.model.pretrained import model_folder_state, read_info
from omniflex.model.transformer import OmniModel
from omniflex.train.checkpoint import load_model_state
from omniflex.train.config import TrainConfig
from omniflex.train.dataset import TokenDataset
from omniflex.train.distributed import DistContext, init_distributed, shutdown_distributed
from omniflex.train.recipes import load_recipe
from omniflex.train.speech_encoder import load_speech_encoder_state
from omniflex.train.trainer import Trainer, TrainResult

__all__ = [
    "build_omni_model",
    "cache_template",
    "cache_vocab_layout",
    "init_weights",
    "model_config_of",
    "run_training",
    "train_main",
]

ModelBuilder = Callable[[TrainConfig], nn.Module]


def build_omni_model(config: TrainConfig) -> nn.Module:
    """The omni transformer of ``config.model`` with ``config.model_overrides``, in
    ``config.precision`` (``OmniModel.build`` converts to Flexpoint or emulates bfloat16).

    The vocabulary is the layout the token cache was written with (``<train_data>.json``, from
    ``pretokenize_corpus``), unless ``model_overrides`` gives ``vocab``.
    """
    return OmniModel.build(model_config_of(config), seed=config.seed)


def model_config_of(config: TrainConfig) -> ModelConfig:
    """The ``ModelConfig`` a recipe trains (see ``build_omni_model``)."""
    overrides = dict(config.model_overrides)
    vocab = overrides.pop("vocab", None) or cache_vocab_layout(config.train_data)
    # A cache written with media as features needs the input encoders to read them.
    features = bool(cache_template(config.train_data).get("input_features", False))
    overrides.setdefault("input_encoders", features)
    model_config = ModelConfig.from_name(
        config.model, vocab=vocab, **{"precision": config.precision, **overrides}
    )
    if model_config.max_seq_len < config.seq_len:
        raise ValueError(
            f"seq_len={config.seq_len} exceeds the model's max_seq_len={model_config.max_seq_len}"
            f" ({config.model}); lower seq_len or set model_overrides.max_seq_len"
        )
    return model_config


def cache_template(train_data: str | Path) -> dict[str, Any]:
    """The chat template options a token cache was written with (``{}`` when unrecorded)."""
    stats = Path(f"{Path(train_data)}.json")
    if not stats.is_file():
        return {}
    template = json.loads(stats.read_text()).get("template")
    return dict(template) if isinstance(template, dict) else {}


def cache_vocab_layout(train_data: str | Path) -> dict[str, int]:
    """The ``VocabLayout`` dict stored beside a token cache by ``pretokenize_corpus``."""
    stats = Path(f"{Path(train_data)}.json")
    if not stats.is_file():
        raise FileNotFoundError(
            f"cannot tell the model's vocabulary: {stats} (written by `omniflex data tokenize` "
            f"beside the cache {train_data}) is missing; tokenize the corpus, or give the layout "
            "as model_overrides.vocab: {text_size: .., image_size: .., audio_size: .., "
            "audio_codebooks: ..}"
        )
    meta = json.loads(stats.read_text())
    try:
        return dict(meta["template"]["layout"])
    except (KeyError, TypeError):
        raise ValueError(
            f"{stats} has no template.layout; rewrite the cache with pretokenize_corpus"
        ) from None


def run_training(
    config: TrainConfig,
    *,
    build_model: ModelBuilder = build_omni_model,
    resume: bool = False,
    max_steps: int | None = None,
    ctx: DistContext | None = None,
) -> TrainResult:
    """Build data, model and trainer from ``config`` and train (in this process's rank).

    Args:
        build_model: ``fn(config) -> nn.Module`` with precision applied; called after seeding
            with ``config.seed`` on every rank, so every rank builds the same weights.
        resume: continue from the run's latest checkpoint.
        max_steps: stop early at this step (the schedule still spans ``config.steps``).
        ctx: an existing process context (default: from the ``torchrun`` environment, started
            and shut down here).
    """
    own_ctx = ctx is None
    ctx = ctx or init_distributed(config.device)
    try:
        if config.threads:
            torch.set_num_threads(config.threads)
        train_data = TokenDataset(
            config.train_data, config.seq_len, seed=config.seed, packing=config.packing,
            task_weights=config.task_weights, task_rates=config.task_rates,
        )  # fmt: skip
        val_data = (
            TokenDataset(config.val_data, config.seq_len, shuffle=False, packing=config.packing)
            if config.val_data
            else None
        )
        # Same seed on every rank: identical initial weights, and identical random streams for
        # stochastic rounding of weight updates (which must agree across replicas).
        torch.manual_seed(config.seed)
        model = build_model(config)
        _check_vocab(model, train_data, val_data)
        if (config.init_from or config.init_speech_from) and not resume:
            init_weights(model, config.init_from, speech_from=config.init_speech_from)
        trainer = Trainer(
            config, model, train_data=train_data, val_data=val_data, ctx=ctx, resume=resume
        )
        return trainer.fit(max_steps=max_steps)
    finally:
        if own_ctx:
            shutdown_distributed(ctx)


def train_main(recipe: str, overrides: list[str] | None = None, resume: bool = False) -> Path:
    """``omniflex train --recipe NAME [key=value ...] [--resume]``: train and return the run
    folder (metrics, TensorBoard events, checkpoints)."""
    config = load_recipe(recipe, overrides or [])
    result = run_training(config, resume=resume)
    return result.out_dir or Path(config.out_dir)


def init_weights(model: nn.Module, source: str | Path, *, speech_from: str | Path = "") -> None:
    """Load the weights and Autoflex states of ``source`` (a run folder, one checkpoint, or a
    model folder) into ``model``, which must have the same configuration: the start of a
    training stage. With ``speech_from`` (a stage-0 folder) the speech encoder comes from there
    and ``source`` may differ from ``model`` in the speech encoder's fields."""
    config = getattr(model, "config", None)
    state: dict[str, Any] = {}
    if source:
        state, saved = _source_state(source)
        if saved is not None and hasattr(config, "to_dict"):
            mine = config.to_dict()
            saved = type(config).from_dict(saved).to_dict()  # fields added since: defaults
            free = _SPEECH_FIELDS if speech_from else ()
            diffs = {
                k: (saved.get(k), mine.get(k))
                for k in mine
                if saved.get(k) != mine[k] and k not in free
            }
            if diffs:
                raise ValueError(
                    f"init_from={str(source)!r} holds a different model (checkpoint vs this "
                    f"recipe: {diffs}); start the stage with the model and precision its "
                    "source trained"
                )
    if speech_from:
        state = {k: v for k, v in state.items() if not k.startswith(_SPEECH_PREFIX)}
        state.update(load_speech_encoder_state(speech_from, config))
    if source:
        model.load_state_dict(state)
        return
    missing, unexpected = model.load_state_dict(state, strict=False)  # the encoder alone
    if unexpected or any(k.startswith(_SPEECH_PREFIX) for k in missing):
        raise ValueError(
            f"init_speech_from={str(speech_from)!r} does not fit this model's speech encoder "
            f"(unexpected {unexpected[:3]}, missing {[k for k in missing if 'speech' in k][:3]})"
        )


_SPEECH_PREFIX = "encoders.speech."
_SPEECH_FIELDS = ("speech_layers", "speech_width", "speech_kernel", "speech_ffn")


def _source_state(source: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(state, model config dict)`` of a run, checkpoint or model folder."""
    folder = Path(source)
    if not (folder / "meta.json").is_file() and not (folder / "checkpoints").is_dir():
        try:
            info = read_info(source)  # a model folder, or a shipped model's name
        except (FileNotFoundError, ValueError):
            pass
        else:
            return model_folder_state(info.path), info["model"]
    try:
        return load_model_state(source)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"init_from={str(source)!r}: no checkpoint there ({err}); give a run folder with "
            "checkpoints/, one checkpoints/step_* folder, or a model folder"
        ) from None


def _check_vocab(model: nn.Module, *datasets: TokenDataset | None) -> None:
    """Fail before training if the cache holds ids the model's embedding cannot look up."""
    emb = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    if emb is None:
        return
    for data in datasets:
        if data is not None and data.max_id >= emb.num_embeddings:
            raise ValueError(
                f"token cache {data.path} holds ids up to {data.max_id}, but the model's "
                f"vocabulary has {emb.num_embeddings} entries; rebuild the cache with this "
                "model's tokenizers, or set model_overrides.vocab_size"
            )
