"""``Trainer``: the training loop shared by every recipe, from one CPU core to many GPUs.

One optimizer step takes ``batch_size`` sequences (the *global* batch) from the token stream.
Every rank reads the same stream position and keeps its own contiguous share, split into
``grad_accum`` micro-batches. Each micro-batch's mean loss is weighted by its share of the global
batch's loss tokens, so the summed gradient is that of the token-mean loss over the whole global
batch — the same number whatever the split into ranks and micro-steps (up to float summation
order), and loss masks with uneven token counts weigh every token alike.

Resume is bit for bit: a checkpoint holds the weights (flex mantissas and exponents), the
optimizer (flex moments and their Autoflex states), every module's Autoflex histories (per rank),
the data position and the RNG states (per rank); the learning rate is a function of the step.
A flex model under FSDP2 writes a sharded checkpoint: each rank saves its shards of the weights
and of the optimizer state in its own file. The same number of processes resumes from its own
files; another number, or an unsharded run (one process, DDP), joins the shards and cuts them
anew (exact for weights and optimizer; per-rank histories as for any change of process count);
an unsharded checkpoint resumes sharded the same way.
Validation leaves no trace: it runs with the Autoflex states and RNG saved before and restored
after, so ``val_every`` never changes the training trajectory.

The model is any ``nn.Module`` called as ``model(input_ids, targets, loss_mask)`` (each
``(B, T)``) returning an object with ``.loss``, the mean cross-entropy over the tokens where
``loss_mask`` is true, and ``.logits``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from omniflex.flex.convert import flex_modules, flex_states
from omniflex.flex.sharding import FlexAllGather, shard_rows
from omniflex.train.balance import LossBalance
from omniflex.train.checkpoint import CheckpointManager, capture_rng_state, restore_rng_state
from omniflex.train.config import TrainConfig
from omniflex.train.dataset import TokenDataset
from omniflex.train.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    gather_objects,
    is_fsdp,
    no_sync,
    wrap_model,
)
from omniflex.train.metrics import Logger, MetricsLogger, NullLogger
from omniflex.train.optim import build_optimizer, flex_config_of, set_lr
from omniflex.train.schedule import CosineSchedule

__all__ = ["TrainResult", "Trainer"]

# Config fields that may change between a checkpoint and its resumption: bookkeeping, and the
# split of the (unchanged) global batch over processes and micro-steps.
_RESUMABLE_CHANGES = frozenset(
    {"steps", "val_data", "val_every", "val_batches", "ckpt_every", "keep_last", "log_every",
     "device", "parallel", "grad_accum", "threads", "tensorboard", "progress", "out_dir"}
)  # fmt: skip


@dataclass
class TrainResult:
    """What ``Trainer.fit`` returns."""

    step: int
    losses: dict[int, float] = field(default_factory=dict)  # step -> global mean train loss
    val_losses: dict[int, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    out_dir: Path | None = None


class Trainer:
    """Trains ``model`` on ``train_data`` as ``config`` says.

    Args:
        config: the run.
        model: built (precision applied), on the CPU or ``ctx.device``; the trainer moves it.
        train_data: training blocks (``seq_len`` must equal ``config.seq_len``).
        val_data: validation blocks, or ``None``.
        ctx: this process's place in the job (default: one process on the CPU).
        resume: continue from ``out_dir/checkpoints/latest`` (which must exist); without it,
            ``out_dir`` must hold no checkpoint.
        logger: metrics sink; default ``MetricsLogger`` on rank 0, ``NullLogger`` elsewhere.
    """

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        *,
        train_data: TokenDataset,
        val_data: TokenDataset | None = None,
        ctx: DistContext | None = None,
        resume: bool = False,
        logger: Logger | None = None,
    ) -> None:
        self.config = config
        self.ctx = ctx or DistContext()
        for name, data in (("train_data", train_data), ("val_data", val_data)):
            if data is not None and data.seq_len != config.seq_len:
                raise ValueError(
                    f"{name} was built with seq_len={data.seq_len} but the config says "
                    f"seq_len={config.seq_len}; build the TokenDataset with config.seq_len"
                )
        self.train_data, self.val_data = train_data, val_data
        self.micro_batch = config.micro_batch_size(self.ctx.world_size)
        self.out_dir = Path(config.out_dir)
        self.checkpoints = CheckpointManager(self.out_dir / "checkpoints", config.keep_last)
        self.schedule = CosineSchedule(config.lr, config.min_lr, config.warmup, config.steps)
        self.is_flex = flex_config_of(model) is not None

        self.raw_model = model.to(self.ctx.device)
        self.balance = (
            LossBalance.from_sidecar(train_data.tasks, train_data.sidecar)
            if train_data.tasks
            else None
        )
        fsdp = config.parallel == "fsdp" and self.ctx.is_distributed
        # FSDP shards in place, before the optimizer sees the parameters; DDP wraps after resume.
        self.all_gather = FlexAllGather() if fsdp else None  # counts FSDP's all-gather bytes
        self.model = (
            wrap_model(self.raw_model, self.ctx, "fsdp", all_gather=self.all_gather)
            if fsdp
            else self.raw_model
        )
        # Flex weights under FSDP are checkpointed as shards, one file per rank.
        self.sharded = fsdp and self.is_flex
        self.optimizer = build_optimizer(
            self.raw_model, lr=config.lr, betas=config.betas, eps=config.eps,
            weight_decay=config.weight_decay,
            fused=self.ctx.device.type == "cuda" and not self.is_flex and not fsdp,
        )  # fmt: skip
        self.step = 0
        if resume:
            self._resume()
        elif self.checkpoints.latest() is not None:
            raise FileExistsError(
                f"{self.out_dir} already holds checkpoints (latest: {self.checkpoints.latest()}); "
                "resume it (--resume / resume=True) or set out_dir to a new folder"
            )
        if not fsdp:
            self.model = wrap_model(self.raw_model, self.ctx, config.parallel)
        if logger is None and self.ctx.is_main:
            logger = MetricsLogger(
                self.out_dir, total_steps=config.steps, start_step=self.step,
                tensorboard=config.tensorboard, progress=config.progress,
            )  # fmt: skip
        self.logger = logger or NullLogger()
        if self.ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            config.to_yaml(self.out_dir / "config.yaml")

    # ------------------------------------------------------------------ the loop
    def fit(self, max_steps: int | None = None) -> TrainResult:
        """Train until ``config.steps`` (or until step ``max_steps``, for a run cut short: the
        schedule still spans ``config.steps``). Validates and checkpoints on schedule and at the
        end of a complete run."""
        cfg = self.config
        stop = cfg.steps if max_steps is None else min(max_steps, cfg.steps)
        result = TrainResult(step=self.step, out_dir=self.out_dir)
        window_time, window_steps = 0.0, 0  # training time since the last record (no validation)
        overflows_before = self._flex_overflows()
        try:
            while self.step < stop:
                start = time.perf_counter()
                metrics = self.train_step()
                window_time += time.perf_counter() - start
                result.losses[self.step] = metrics["loss"]
                window_steps += 1
                self.logger.advance(self.step, {"loss": metrics["loss"], "lr": metrics["lr"]})
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    metrics["step_time_s"] = window_time / window_steps
                    metrics["tokens_per_s"] = cfg.tokens_per_step * window_steps / window_time
                    if self.is_flex:
                        overflows = self._flex_overflows()
                        metrics["flex_overflows"] = overflows - overflows_before
                        overflows_before = overflows
                    self.logger.log(self.step, metrics)
                    window_time, window_steps = 0.0, 0
                done = self.step == cfg.steps
                if self.val_data is not None and (
                    done or (cfg.val_every and self.step % cfg.val_every == 0)
                ):
                    val_loss = self.evaluate()
                    result.val_losses[self.step] = val_loss
                    self.logger.log(self.step, {"val_loss": val_loss})
                    self.logger.message(f"step {self.step}: val_loss {val_loss:.4f}")
                if done or (cfg.ckpt_every and self.step % cfg.ckpt_every == 0):
                    result.checkpoint = self.save_checkpoint()
        finally:
            self.logger.close()
        result.step = self.step
        return result

    def train_step(self) -> dict[str, float]:
        """One optimizer step over one global batch; returns its metrics (same on every rank)."""
        cfg, ctx = self.config, self.ctx
        blocks = self.train_data.next_blocks(cfg.batch_size)  # the global batch, on every rank
        weights = self.train_data.task_weights
        # loss tokens (or their summed task weights), all ranks
        n_global = sum(TokenDataset.loss_weight_of(b, weights) for b in blocks)
        log_now = (self.step + 1) % cfg.log_every == 0 or self.step + 1 == cfg.steps
        share = cfg.batch_size // ctx.world_size
        mine = blocks[ctx.rank * share : (ctx.rank + 1) * share]
        lr = self.schedule.lr_at(self.step)
        set_lr(self.optimizer, lr)
        self.model.train()
        gathered = self.all_gather.bytes_sent if self.all_gather is not None else 0

        loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)  # sum over tokens
        for k in range(cfg.grad_accum):
            batch = TokenDataset.collate(
                mine[k * self.micro_batch : (k + 1) * self.micro_batch], weights
            )
            n_tokens = batch.loss_weight_sum  # counted on the CPU: no device sync
            with no_sync(self.model, skip=k < cfg.grad_accum - 1):
                batch = batch.to(ctx.device)
                out = self.model(
                    batch.input_ids, batch.targets, batch.model_loss_mask(),
                    **batch.model_kwargs(),
                )  # fmt: skip
                # a micro-batch with no loss tokens still runs forward and backward, with zero
                # gradient, so that ranks stay in step
                loss = out.loss.float() if n_tokens else out.logits.float().sum() * 0.0
                if log_now and self.balance is not None:
                    self.balance.add(out.logits, batch)
                # DDP averages gradients over ranks; the world_size factor makes it a sum.
                weight = n_tokens / max(n_global, 1) * ctx.world_size
                (loss * weight).backward()
            loss_sum += loss.detach().double() * n_tokens

        all_reduce_sum(loss_sum, ctx)
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        loss_value = float(loss_sum) / max(n_global, 1)
        if not math.isfinite(loss_value):
            raise FloatingPointError(
                f"training loss is {loss_value} at step {self.step}; lower lr (now {lr:.3g}) or "
                f"warm up longer, or resume from {self.checkpoints.latest()} with other settings"
            )
        metrics = {
            "loss": loss_value,
            "lr": lr,
            "grad_norm": float(grad_norm),
            "loss_tokens": n_global,
            "epoch": self.train_data.epoch,
        }
        if log_now and self.balance is not None:
            metrics.update(self.balance.metrics())
        if self.all_gather is not None:  # bytes this rank sent in FSDP's parameter all-gathers
            metrics["all_gather_bytes"] = self.all_gather.bytes_sent - gathered
        return metrics

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def evaluate(self) -> float:
        """Token-mean loss over the first ``val_batches * batch_size`` validation blocks (in
        the model's training precision), with no effect on training state."""
        if self.val_data is None:
            raise ValueError("evaluate() needs val_data; give the Trainer a validation set")
        cfg, ctx = self.config, self.ctx
        per_round = self.micro_batch * ctx.world_size
        blocks = self.val_data.first_blocks(cfg.val_batches * cfg.batch_size)
        blocks = blocks[: len(blocks) // per_round * per_round]  # every rank runs as many passes
        if not blocks:
            raise ValueError(
                f"validation set {self.val_data.path} has fewer than {per_round} blocks of "
                f"seq_len={cfg.seq_len}; write more validation documents or lower seq_len"
            )
        model = self.model if is_fsdp(self.model) else self.raw_model
        totals = torch.zeros(2, dtype=torch.float64, device=ctx.device)  # loss sum, tokens
        with _untouched(self.raw_model, ctx.device):
            model.eval()
            for start in range(ctx.rank * self.micro_batch, len(blocks), per_round):
                batch = TokenDataset.collate(blocks[start : start + self.micro_batch])
                n_tokens = batch.num_loss_tokens
                batch = batch.to(ctx.device)
                # every rank runs it, as FSDP needs
                out = model(
                    batch.input_ids, batch.targets, batch.model_loss_mask(),
                    **batch.model_kwargs(),
                )  # fmt: skip
                if n_tokens:
                    totals[0] += out.loss.double() * n_tokens
                    totals[1] += n_tokens
            model.train()
        all_reduce_sum(totals, ctx)
        return float(totals[0] / totals[1]) if totals[1] > 0 else math.nan

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Write a checkpoint of the current step (collective: every rank must call it)."""
        self._check_replicas()
        model_state = self._model_state_dict()
        tensors = {k: v for k, v in model_state.items() if isinstance(v, torch.Tensor)}
        extra = {k: v for k, v in model_state.items() if not isinstance(v, torch.Tensor)}
        ranks = gather_objects(
            {"rng": capture_rng_state(self.ctx.device), "model_extra": extra}, self.ctx
        )
        optim_state = self._optimizer_state_dict()
        path = self.checkpoints.root / f"step_{self.step:08d}"
        folder = None
        if self.sharded:  # every rank writes its shards, then rank 0 the rest
            folder = self.checkpoints.shard_folder(self.step, fresh=self.ctx.is_main)
            barrier(self.ctx)
            params = self._optimizer_params()
            shard = {
                "model": {k: _local(v) for k, v in tensors.items()},
                "sharded": [k for k, v in tensors.items() if isinstance(v, DTensor)],
                "optimizer": optim_state,
                # optimizer tensors that are this rank's rows of a parameter-shaped tensor
                "sharded_optimizer": [
                    [index, key]
                    for index, per_param in optim_state["state"].items()
                    for key, v in per_param.items()
                    if _is_shard_of(v, params[index])
                ],
            }
            self.checkpoints.save_shard(folder, self.ctx.rank, shard)
            barrier(self.ctx)
            tensors, optim_state = {}, {}
        if self.ctx.is_main:
            model_config = getattr(self.raw_model, "config", None)
            if not hasattr(model_config, "to_dict"):
                model_config = None
            payload = {
                "model": tensors,
                "config": self.config.to_dict(),
                "model_config": model_config.to_dict() if model_config is not None else None,
                "optimizer": optim_state,
                "data": self.train_data.state_dict(),
                "world_size": self.ctx.world_size,
                "ranks": ranks,
            }
            shards = self.ctx.world_size if folder is not None else 0
            path = self.checkpoints.save(self.step, payload, folder=folder, shards=shards)
        barrier(self.ctx)
        return path

    def _resume(self) -> None:
        payload = self.checkpoints.load()
        self._check_resumable(payload["config"], payload["path"])
        tensors, optim_state = payload["model"], payload["optimizer"]
        if payload.get("shards") or self.sharded:
            tensors, optim_state = self._load_shard(payload)
        saved_world = int(payload["world_size"])
        ranks = payload["ranks"]
        if saved_world == self.ctx.world_size:
            mine = ranks[self.ctx.rank]
        else:
            mine = ranks[0]
            if self.ctx.is_main:
                warnings.warn(
                    f"checkpoint {payload['path']} was written by {saved_world} processes and "
                    f"this run has {self.ctx.world_size}: every rank starts from rank 0's Autoflex "
                    "histories and RNG, so the run continues but not bit for bit",
                    RuntimeWarning,
                    stacklevel=2,
                )
        self._load_model_state_dict({**tensors, **mine["model_extra"]})
        self._load_optimizer_state_dict(optim_state)
        self.train_data.load_state_dict(payload["data"])
        restore_rng_state(mine["rng"], self.ctx.device)
        self.step = int(payload["step"])

    def _load_shard(self, payload: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The model tensors (sharded ones as DTensors) and optimizer state this rank loads when
        the checkpoint ``payload`` or this run is sharded: its own shard file when the layout is
        the same, else the whole state (a sharded checkpoint's shards joined) cut into this
        run's shards, or kept whole for an unsharded run (one process, DDP)."""
        shards, path = payload.get("shards", 0), payload["path"]
        if self.sharded and shards == self.ctx.world_size:
            shard = self.checkpoints.load_shard(path, self.ctx.rank)
            current = self.raw_model.state_dict()
            tensors = {
                k: _as_shard_of(v, current[k]) if k in shard["sharded"] else v
                for k, v in shard["model"].items()
            }
            return tensors, shard["optimizer"]
        if shards:
            tensors, optim_state = self.checkpoints.join_shards(path, shards)
        else:
            tensors, optim_state = payload["model"], payload["optimizer"]
        if not self.sharded:
            return tensors, optim_state
        current = self.raw_model.state_dict()
        tensors = {
            k: _as_shard_of(shard_rows(v, current[k]), current[k])
            if isinstance(current.get(k), DTensor)
            else v
            for k, v in tensors.items()
        }
        params = self._optimizer_params()
        state = {
            index: {
                key: shard_rows(v, params[index]) if _whole_of(v, params[index]) else v
                for key, v in per_param.items()
            }
            for index, per_param in optim_state["state"].items()
        }
        return tensors, {**optim_state, "state": state}

    def _optimizer_params(self) -> list[torch.Tensor]:
        """The parameters in the order ``optimizer.state_dict()`` numbers them."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _check_resumable(self, saved: dict[str, Any], path: str) -> None:
        mine = self.config.to_dict()
        changed = sorted(k for k in mine if k not in _RESUMABLE_CHANGES and saved.get(k) != mine[k])
        if changed:
            diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {mine[k]!r}" for k in changed)
            raise ValueError(
                f"cannot resume {path}: these settings differ from the checkpoint's ({diffs}); "
                "resume with the recipe and overrides it was started with, or start a new out_dir"
            )
        if saved.get("steps") != mine["steps"] and self.ctx.is_main:
            warnings.warn(
                f"resuming with steps={mine['steps']} (checkpoint: {saved.get('steps')}): the "
                "cosine schedule stretches from here on",
                RuntimeWarning,
                stacklevel=3,
            )

    def _model_state_dict(self) -> dict[str, Any]:
        if self.sharded:  # each rank's shards (DTensors), saved by each rank
            return self.raw_model.state_dict()
        if is_fsdp(self.model):
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_model_state_dict(self.model, options=opts)
        return self.raw_model.state_dict()

    def _load_model_state_dict(self, state: dict[str, Any]) -> None:
        if is_fsdp(self.model) and not self.sharded:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
            )

            set_model_state_dict(self.model, state, options=StateDictOptions(full_state_dict=True))
            return
        self.raw_model.load_state_dict(state, strict=True)

    def _optimizer_state_dict(self) -> dict[str, Any]:
        if is_fsdp(self.model) and not self.sharded:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_optimizer_state_dict,
            )

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_optimizer_state_dict(self.model, self.optimizer, options=opts)
        return self.optimizer.state_dict()

    def _load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        if is_fsdp(self.model) and not self.sharded:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_optimizer_state_dict,
            )

            set_optimizer_state_dict(
                self.model, self.optimizer, state, options=StateDictOptions(full_state_dict=True)
            )
            return
        self.optimizer.load_state_dict(state)

    # ------------------------------------------------------------------ checks
    def _flex_overflows(self) -> int:
        return sum(s.overflows for s in flex_states(self.raw_model)) if self.is_flex else 0

    @torch.no_grad()
    def _check_replicas(self) -> None:
        """Every rank must hold the same weights (DDP keeps them so; this proves it before a
        checkpoint records rank 0's copy as everyone's)."""
        if not self.ctx.is_distributed or is_fsdp(self.model):
            return
        total = torch.zeros(1, dtype=torch.float64, device=self.ctx.device)
        for p in self.raw_model.parameters():
            total += p.detach().double().sum()
        low, high = total.clone(), total.clone()
        torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN)
        torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise RuntimeError(
                f"model replicas differ across ranks at step {self.step} (weight sums "
                f"{float(low)} .. {float(high)}); something outside the optimizer changed weights "
                "on one rank, or ranks drew different random numbers"
            )


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a ``DTensor``, else the tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _is_shard_of(value: Any, param: torch.Tensor) -> bool:
    """Whether an optimizer state ``value`` holds this rank's rows of sharded ``param``'s shape."""
    return (
        isinstance(param, DTensor)
        and isinstance(value, torch.Tensor)
        and value.dim() > 0
        and value.shape == param.to_local().shape
    )


def _whole_of(value: Any, param: torch.Tensor) -> bool:
    """Whether a saved optimizer state ``value`` is whole-parameter-shaped for sharded ``param``."""
    return (
        isinstance(param, DTensor)
        and isinstance(value, torch.Tensor)
        and value.dim() > 0
        and value.shape == param.shape
    )


def _as_shard_of(local: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``local`` (this rank's saved shard) as a shard of the same global tensor as ``like``."""
    if not isinstance(like, DTensor):
        return local
    return DTensor.from_local(
        local.to(like.device), like.device_mesh, like.placements, run_check=False,
        shape=like.shape, stride=like.stride(),
    )  # fmt: skip


@contextmanager
def _untouched(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Restore every Autoflex state and the RNG on exit: validation must not move training."""
    saved_flex = {name: m.get_extra_state() for name, m in flex_modules(model)}
    saved_rng = capture_rng_state(device)
    try:
        yield
    finally:
        for name, m in flex_modules(model):
            state = saved_flex[name]
            m.op.states = {k: v for k, v in m.op.states.items() if k in state["op"]["states"]}
            m.set_extra_state(state)
        restore_rng_state(saved_rng, device)
