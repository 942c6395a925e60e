"""Flex tensors split across ranks (FSDP2): one exponent for the whole tensor, on every shard.

A flex tensor shares one exponent over all its elements. When FSDP2 shards a ``FlexWeight``
(``torch.distributed.fsdp.fully_shard``), each rank holds some rows of the mantissas and
updates only those; if each rank let Autoflex pick the exponent from its own rows, the shards
would disagree and the gathered weight would not be one flex tensor. So every Autoflex state
of a sharded tensor — the weight's own, and ``FlexAdam``'s moment and update states — takes
the maximum over all shards (an all-reduce MAX of one number) before it settles the exponent:

* every rank then makes the same Autoflex decision, from the same history, and holds the same
  exponent; given the same gradients, each shard's mantissas are exactly the rows the
  unsharded tensor would hold (tested bit for bit);
* the exponent need not travel with the mantissas: FSDP2 all-gathers int16 mantissas only
  (``FlexWeight.fsdp_pre_all_gather``), half the bytes of float32.

The cost is one small all-reduce per flex tensor update (the weight and, with ``FlexAdam``,
its two moments and its update: four per parameter per step); a NaN or Inf on any shard
reaches every rank's state as Inf, so all ranks raise together instead of hanging.

Flush counts and element counts in a state's telemetry are this rank's shard's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.fsdp._fully_shard._fsdp_api import AllGather
from torch.distributed.tensor import DTensor, Shard

from omniflex.flex.weight import FlexWeight

__all__ = [
    "FlexAllGather",
    "ShardMax",
    "fully_shard_flex",
    "local_tensor",
    "shard_max_of",
    "shard_rows",
    "share_shard_exponents_",
]


class ShardMax:
    """The maximum of a number over the ranks of ``group`` (an all-reduce MAX): an Autoflex
    state's ``amax_reduce`` for a tensor those ranks hold in shards.

    Host states pass Python floats (sent as float64, exact); device-resident states pass 0-d
    tensors and get one back, with nothing read to the host. NaN is sent as +Inf so that
    every rank sees a non-finite maximum and raises."""

    def __init__(self, group: dist.ProcessGroup, device: torch.device) -> None:
        self.group = group
        self.device = device
        self.calls = 0

    def __call__(self, amax: Any) -> Any:
        self.calls += 1
        if isinstance(amax, torch.Tensor):
            t = torch.where(torch.isnan(amax), math.inf, amax).to(self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
            return t.to(amax.device)
        value = math.inf if math.isnan(amax) else float(amax)
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return float(t.item())

    def __deepcopy__(self, memo: dict[int, Any]) -> ShardMax:
        return self  # a process group is shared, not copied

    def __repr__(self) -> str:
        return f"ShardMax(ranks={dist.get_world_size(self.group)}, device={self.device})"


def shard_max_of(tensor: torch.Tensor) -> ShardMax | None:
    """The ``ShardMax`` over the ranks that hold shards of ``tensor`` (a ``DTensor``), or
    ``None`` when it is not sharded (a plain tensor, or replicated on every rank)."""
    if not isinstance(tensor, DTensor):
        return None
    dims = [i for i, p in enumerate(tensor.placements) if isinstance(p, Shard)]
    if not dims:
        return None
    if len(dims) > 1:
        raise NotImplementedError(
            f"a flex tensor sharded over {len(dims)} mesh dimensions ({tensor.placements}); "
            "shard flex weights over one dimension (FSDP or HSDP)"
        )
    mesh = tensor.device_mesh
    if mesh.device_type == "cpu":
        device = torch.device("cpu")
    else:
        device = torch.device(mesh.device_type, torch.accelerator.current_device_index())
    return ShardMax(mesh.get_group(dims[0]), device)


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The part of ``tensor`` this rank holds: a ``DTensor``'s local shard, else itself."""
    return tensor._local_tensor if isinstance(tensor, DTensor) else tensor


def shard_rows(whole: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's part of ``whole``, a tensor of the global shape of the ``DTensor`` ``like``,
    cut as FSDP2 shards ``like``: dim-0 chunks (``torch.chunk``) in mesh order, empty past the
    last chunk. For loading an unsharded (or re-joined) checkpoint into a sharded model."""
    dims = [i for i, p in enumerate(like.placements) if isinstance(p, Shard)]
    if len(dims) != 1 or like.placements[dims[0]] != Shard(0):
        raise NotImplementedError(f"shard_rows cuts dim 0 over one mesh dim, not {like.placements}")
    mesh = like.device_mesh
    chunks = torch.chunk(whole, mesh.size(dims[0]), dim=0)
    rank = mesh.get_local_rank(dims[0])
    return chunks[rank] if rank < len(chunks) else whole[:0]


def share_shard_exponents_(module: nn.Module) -> int:
    """Make every sharded ``FlexWeight`` of ``module`` (after ``fully_shard``) settle its
    exponent on the maximum over all its shards; returns how many weights are sharded."""
    count = 0
    for p in module.parameters():
        weight = local_tensor(p)
        reducer = shard_max_of(p)
        if isinstance(weight, FlexWeight) and reducer is not None:
            weight.state.amax_reduce = reducer
            count += 1
    return count


class FlexAllGather(AllGather):
    """FSDP2's parameter all-gather for flex models (one flat buffer per FSDP group, as
    FSDP2's default), counting what this rank sends: ``bytes_sent`` over ``calls``.

    A buffer of int16 mantissas travels as its bytes: a copy is exact in any type, and neither
    gloo nor NCCL has an int16 type (FSDP2 already sends a group that mixes int16 mantissas
    with float parameters as bytes)."""

    def __init__(self) -> None:
        self.bytes_sent = 0
        self.calls = 0

    def allocate(self, size: Any, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return torch.empty(*size, dtype=dtype, device=device)

    def __call__(
        self,
        output_tensor: torch.Tensor,
        input_tensor: torch.Tensor,
        group: dist.ProcessGroup,
        async_op: bool = False,
    ) -> dist.Work | None:
        self.calls += 1
        self.bytes_sent += input_tensor.numel() * input_tensor.element_size()
        if input_tensor.dtype == torch.int16:
            output_tensor = output_tensor.view(torch.uint8)
            input_tensor = input_tensor.view(torch.uint8)
        return dist.all_gather_single(output_tensor, input_tensor, group=group, async_op=async_op)


def fully_shard_flex(
    module: nn.Module,
    *,
    blocks: Iterable[nn.Module] = (),
    all_gather: FlexAllGather | None = None,
    **fsdp_kwargs: Any,
) -> FlexAllGather:
    """FSDP2 for a model with flex layers: ``fully_shard`` each of ``blocks`` (one all-gather
    group each), then ``module`` (the rest), all-gathering flex weights as their mantissas
    through ``all_gather``, which is returned; then ``share_shard_exponents_``. Build the
    optimizer after this, on ``module.parameters()``. ``fsdp_kwargs`` go to ``fully_shard``
    (``mesh``, ``reshard_after_forward``…)."""
    comm = all_gather or FlexAllGather()
    for block in [*blocks, module]:
        fully_shard(block, **fsdp_kwargs)
        block.set_custom_all_gather(comm)  # type: ignore[operator]
    share_shard_exponents_(module)
    return comm
