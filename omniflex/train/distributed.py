"""One script, any launch: 1 process, ``torchrun`` on CPUs (gloo), or GPUs (NCCL).

``init_distributed`` reads the variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``); without them it returns a single-process context and touches no process group.
``wrap_model`` puts the model under DDP or FSDP2 (``fully_shard``); both also run on CPUs with
gloo, which is how the tests check them.

Flexpoint and DDP: a ``FlexWeight`` parameter is int16 mantissas and one exponent behind a
float32 face. DDP's own start-up broadcast writes each parameter in place, which re-quantises a
flex weight through its Autoflex state (a spurious update that breaks bit-exact resume), so DDP is
built with ``init_sync=False`` and ``broadcast_module_`` sends the mantissas and exponents
themselves. Gradients are plain float tensors, so DDP's all-reduce needs nothing special. Each rank
keeps its own Autoflex histories for activations and deltas (its data differs); weights and
optimizer states see identical values on every rank and stay identical.

Flexpoint and FSDP2: each rank keeps some rows of every weight. A ``FlexWeight`` shard is int16
mantissas; FSDP2 all-gathers those (``FlexWeight.fsdp_pre_all_gather``), half the bytes of
float32, and every shard of a weight (and of its ``FlexAdam`` moments) holds the same exponent,
settled on the maximum over all shards (``omniflex.flex.sharding``). Gradients are float32 and
reduce-scattered as for a float model. ``FlexAllGather`` counts the bytes each rank sends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule

from omniflex.flex.sharding import FlexAllGather, fully_shard_flex
from omniflex.flex.weight import FlexWeight

__all__ = [
    "DistContext",
    "all_reduce_sum",
    "barrier",
    "broadcast_module_",
    "gather_objects",
    "init_distributed",
    "is_fsdp",
    "no_sync",
    "shutdown_distributed",
    "unwrap_model",
    "wrap_model",
]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: its rank among ``world_size`` and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # None: no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", *, timeout_s: float = 600.0) -> DistContext:
    """The process's ``DistContext``; starts the process group when launched by ``torchrun``.

    Args:
        device: ``"auto"`` (``cuda:LOCAL_RANK`` when CUDA exists, else CPU), ``"cpu"`` or
            ``"cuda"``.
        timeout_s: collective timeout.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError(
            "device='cuda' but torch sees no CUDA device (this torch build: "
            f"{torch.__version__}); use device=cpu or install a CUDA build of torch"
        )
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size == 1:
        return DistContext(0, 1, 0, dev, None)
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            timeout=timedelta(seconds=timeout_s),
            device_id=dev if use_cuda else None,
        )
    return DistContext(rank, world_size, local_rank, dev, backend)


def shutdown_distributed(ctx: DistContext) -> None:
    """Destroy the process group this context started (no-op for one process)."""
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of ``values`` over ranks (returned; ``values`` is reduced in place when distributed)."""
    if ctx.is_distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def gather_objects(obj: Any, ctx: DistContext) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0 (in rank order); ``None`` on the other ranks."""
    if not ctx.is_distributed:
        return [obj]
    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


@torch.no_grad()
def broadcast_module_(module: nn.Module, ctx: DistContext, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank, exactly (flex weights as their
    mantissas and exponents, so nothing is re-quantised)."""
    if not ctx.is_distributed:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        if isinstance(tensor, FlexWeight):
            # gloo has no int16 collectives: send the mantissas widened to int32 (exact).
            mantissa = tensor.mantissa.to(torch.int32)
            exponent = torch.tensor([tensor.exponent], dtype=torch.int64, device=ctx.device)
            dist.broadcast(mantissa, src)
            dist.broadcast(exponent, src)
            tensor.load_flex_(mantissa.to(tensor.mantissa.dtype), int(exponent.item()))
        else:
            dist.broadcast(tensor.data, src)


def wrap_model(
    module: nn.Module,
    ctx: DistContext,
    parallel: str = "ddp",
    *,
    all_gather: FlexAllGather | None = None,
) -> nn.Module:
    """``module`` ready for data-parallel training (returned unchanged for one process).

    Args:
        module: on ``ctx.device`` already.
        parallel: ``"ddp"`` (a replica per rank) or ``"fsdp"``: FSDP2 (``fully_shard``) shards
            each block of every ``nn.ModuleList``, then the root; flex weights shard as int16
            mantissas with one exponent per weight (see the module docstring).
        all_gather: FSDP's all-gather, to read the bytes it sent (default: a fresh one).
    """
    if parallel not in ("ddp", "fsdp"):
        raise ValueError(f"parallel must be 'ddp' or 'fsdp', got {parallel!r}")
    if not ctx.is_distributed:
        return module
    if parallel == "fsdp":
        blocks = [b for m in module.modules() if isinstance(m, nn.ModuleList) for b in m]
        fully_shard_flex(module, blocks=blocks, all_gather=all_gather)
        return module
    broadcast_module_(module, ctx)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        module, device_ids=device_ids, init_sync=False, forward_sync_buffers=False
    )


def unwrap_model(module: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (FSDP2 shards in place: the module itself)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def is_fsdp(module: nn.Module) -> bool:
    return isinstance(module, FSDPModule)


@contextmanager
def no_sync(module: nn.Module, skip: bool) -> Iterator[None]:
    """Skip the gradient all-reduce of this backward (all micro-steps but the last)."""
    if not skip:
        with nullcontext():
            yield
        return
    if isinstance(module, nn.parallel.DistributedDataParallel):
        with module.no_sync():
            yield
        return
    if is_fsdp(module):
        module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)
        return
    yield
