"""Flex versions of ``nn.Linear``, ``nn.Conv2d``, ``nn.Embedding``, and a ``FlexMatmul`` site.

Built by ``convert_to_flex`` from the float modules (``from_float``), reusing their parameters:
in master mode the very same ``nn.Parameter`` objects; in paper mode ``FlexWeight`` parameters
quantised from them (build the optimizer after converting). Autoflex states and the weights'
exact mantissas and exponents are part of ``state_dict``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from omniflex.flex.autoflex_device import AnyAutoflexState
from omniflex.flex.config import FlexConfig
from omniflex.flex.errors import FlexConversionError
from omniflex.flex.ops import FlexOp, flex_conv2d, flex_embedding, flex_linear, flex_matmul
from omniflex.flex.sharding import local_tensor, shard_rows
from omniflex.flex.weight import FlexWeight

__all__ = ["FlexConv2d", "FlexEmbedding", "FlexLinear", "FlexMatmul", "FlexModule"]

_PARAM_NAMES = ("weight", "bias")


class FlexModule(nn.Module):
    """Common behaviour: a ``FlexOp``, the on/off switch, and exact (de)serialisation."""

    op: FlexOp
    flex_config: FlexConfig
    flex_enabled: bool

    def _init_flex(self, name: str, config: FlexConfig) -> None:
        self.flex_config = config
        self.op = FlexOp(name, config)
        self.flex_enabled = True

    def _to_flex_param(self, p: nn.Parameter | None, role: str) -> nn.Parameter | None:
        if p is None or self.flex_config.weight_mode == "master":
            return p
        cfg = self.flex_config
        state = cfg.new_autoflex_state(f"{self.op.name}.{role}.storage")
        stochastic = cfg.weight_rounding == "stochastic"
        return nn.Parameter(FlexWeight.from_float(p, state, stochastic=stochastic), p.requires_grad)

    def float_param(self, name: str) -> torch.Tensor | None:
        """A parameter as a plain float32 tensor (the exact flex value in paper mode)."""
        p = getattr(self, name, None)
        if isinstance(p, FlexWeight):
            return p.dequantize()
        return p

    def flex_states(self) -> dict[str, AnyAutoflexState]:
        """Every Autoflex state of this module, by full tensor name."""
        states = {s.name: s for s in self.op.states.values()}
        for name in _PARAM_NAMES:
            p = _flex_weight(getattr(self, name, None))
            if p is not None:
                states[p.state.name] = p.state
        return states

    # ---------------------------------------------------------- state_dict
    def get_extra_state(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"op": self.op.state_dict(), "weights": {}}
        for name in _PARAM_NAMES:
            p = _flex_weight(getattr(self, name, None))
            if p is not None:
                extra["weights"][name] = p.state.state_dict()
        return extra

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.op.load_state_dict(state["op"])
        pending = self.__dict__.get("_pending_flex", {})
        for name, st in state.get("weights", {}).items():
            p = _flex_weight(pending.get(name, getattr(self, name, None)))
            if p is not None:
                p.state.load_state_dict(st)

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # type: ignore[override]
        for name, p in self._parameters.items():
            if p is None:
                continue
            weight = _flex_weight(p)
            if weight is not None:
                mantissa = weight.mantissa.clone()
                if isinstance(p, DTensor):  # an FSDP shard: the mantissas as a shard too
                    mantissa = DTensor.from_local(
                        mantissa, p.device_mesh, p.placements, run_check=False,
                        shape=p.shape, stride=p.stride(),
                    )  # fmt: skip
                destination[prefix + name + "_mantissa"] = mantissa
                destination[prefix + name + "_exponent"] = _host_exponent(weight.exponent)
            else:
                destination[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = b if keep_vars else b.detach()
        destination[prefix + "_extra_state"] = self.get_extra_state()

    def _load_from_state_dict(  # type: ignore[override]
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        from_float = False
        for name, p in list(self._parameters.items()):
            weight = _flex_weight(p)
            if weight is None:
                continue
            m_key, e_key, f_key = (prefix + name + s for s in ("_mantissa", "_exponent", ""))
            if m_key in state_dict and e_key in state_dict:
                mantissa = _this_shard(state_dict.pop(m_key), p)
                if mantissa.shape != weight.shape:
                    error_msgs.append(
                        f"size mismatch for {m_key}: checkpoint {tuple(mantissa.shape)}, "
                        f"model {tuple(weight.shape)}"
                    )
                    state_dict.pop(e_key)
                    continue
                weight.load_flex_(mantissa.to(weight.mantissa.dtype), int(state_dict.pop(e_key)))
            elif f_key in state_dict:
                # A float checkpoint (e.g. of the unconverted model): quantise it on load.
                weight.assign_(_this_shard(state_dict.pop(f_key), p))
                from_float = True
            elif strict:
                missing_keys.append(m_key)
        # The remaining float params, buffers and the extra state load the ordinary way, with the
        # flex params hidden from it (set_extra_state still finds them for their Autoflex state).
        flex_params = {n: p for n, p in self._parameters.items() if _flex_weight(p) is not None}
        for n in flex_params:
            self._parameters[n] = None
        self._pending_flex = flex_params
        try:
            super()._load_from_state_dict(
                state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                error_msgs,
            )  # fmt: skip
        finally:
            self._parameters.update(flex_params)
            del self._pending_flex
        extra_key = prefix + "_extra_state"
        if from_float and extra_key in missing_keys:
            missing_keys.remove(extra_key)  # a float checkpoint has no Autoflex state: start fresh

    def extra_repr(self) -> str:
        base = super().extra_repr()
        mode = self.flex_config.weight_mode
        return f"{base}, {self.flex_config.format.name}, weights={mode}"


def _flex_weight(p: torch.Tensor | None) -> FlexWeight | None:
    """The ``FlexWeight`` a parameter holds on this rank (itself, or its FSDP shard), if any."""
    weight = None if p is None else local_tensor(p)
    return weight if isinstance(weight, FlexWeight) else None


def _this_shard(saved: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """This rank's rows of a saved tensor for parameter ``p``: a saved shard as it is, or FSDP's
    dim-0 chunk of a whole tensor when ``p`` is sharded (a checkpoint of an unsharded run)."""
    if isinstance(saved, DTensor):
        return saved.to_local()
    if not isinstance(p, DTensor) or saved.shape != p.shape:
        return saved
    return shard_rows(saved, p)


def _host_exponent(exponent: int | torch.Tensor) -> torch.Tensor:
    """A weight's exponent as saved: a 0-d int64 CPU tensor (read back if on a device)."""
    if isinstance(exponent, torch.Tensor):
        return exponent.detach().to("cpu", torch.int64).clone()
    return torch.tensor(exponent)


def _bare(cls: type[FlexModule]) -> Any:
    """An instance of ``cls`` without running the float module's __init__ (no new weights)."""
    obj = cls.__new__(cls)
    nn.Module.__init__(obj)
    return obj


class FlexLinear(FlexModule, nn.Linear):
    """``nn.Linear`` in Flexpoint."""

    @classmethod
    def from_float(cls, mod: nn.Linear, config: FlexConfig, name: str = "linear") -> FlexLinear:
        new = _bare(cls)
        new.in_features, new.out_features = mod.in_features, mod.out_features
        new._init_flex(name, config)
        new.weight = new._to_flex_param(mod.weight, "weight")
        new.bias = new._to_flex_param(mod.bias, "bias")
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.flex_enabled:
            return nn.functional.linear(x, self.float_param("weight"), self.float_param("bias"))
        return flex_linear(x, self.weight, self.bias, self.op)


class FlexConv2d(FlexModule, nn.Conv2d):
    """``nn.Conv2d`` (zero padding) in Flexpoint."""

    @classmethod
    def from_float(cls, mod: nn.Conv2d, config: FlexConfig, name: str = "conv") -> FlexConv2d:
        if mod.padding_mode != "zeros":
            raise FlexConversionError(
                f"cannot convert Conv2d '{name}': padding_mode={mod.padding_mode!r} is not "
                "supported (only 'zeros'); exclude it with module_filter_fn"
            )
        padding = mod.padding
        if isinstance(padding, str):
            if padding == "valid":
                padding = (0, 0)
            elif all(
                (d * (k - 1)) % 2 == 0 for d, k in zip(mod.dilation, mod.kernel_size, strict=True)
            ):
                padding = tuple(
                    d * (k - 1) // 2 for d, k in zip(mod.dilation, mod.kernel_size, strict=True)
                )
            else:
                raise FlexConversionError(
                    f"cannot convert Conv2d '{name}': padding='same' with an even kernel needs "
                    "asymmetric padding; pad explicitly or exclude it with module_filter_fn"
                )
        new = _bare(cls)
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "dilation", "groups"):
            setattr(new, attr, getattr(mod, attr))
        new.padding, new.padding_mode = tuple(padding), "zeros"
        new.transposed, new.output_padding = False, (0, 0)
        new._reversed_padding_repeated_twice = mod._reversed_padding_repeated_twice
        new._init_flex(name, config)
        new.weight = new._to_flex_param(mod.weight, "weight")
        new.bias = new._to_flex_param(mod.bias, "bias")
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.flex_enabled:
            w, b = self.float_param("weight"), self.float_param("bias")
            return nn.functional.conv2d(
                x, w, b, self.stride, self.padding, self.dilation, self.groups
            )  # fmt: skip
        return flex_conv2d(
            x, self.weight, self.bias, self.op, self.stride, self.padding, self.dilation,
            self.groups,
        )  # fmt: skip


class FlexEmbedding(FlexModule, nn.Embedding):
    """``nn.Embedding`` in Flexpoint (dense gradients, no ``max_norm``)."""

    @classmethod
    def from_float(
        cls, mod: nn.Embedding, config: FlexConfig, name: str = "embedding"
    ) -> FlexEmbedding:
        for attr, bad in (("sparse", True), ("scale_grad_by_freq", True)):
            if getattr(mod, attr) == bad:
                raise FlexConversionError(
                    f"cannot convert Embedding '{name}': {attr}=True is not supported; "
                    "exclude it with module_filter_fn"
                )
        if mod.max_norm is not None:
            raise FlexConversionError(
                f"cannot convert Embedding '{name}': max_norm renormalises weights in place, "
                "which a flex weight cannot do silently; exclude it with module_filter_fn"
            )
        new = _bare(cls)
        new.num_embeddings, new.embedding_dim = mod.num_embeddings, mod.embedding_dim
        new.padding_idx, new.max_norm, new.norm_type = mod.padding_idx, None, mod.norm_type
        new.scale_grad_by_freq, new.sparse = False, False
        new._init_flex(name, config)
        new.weight = new._to_flex_param(mod.weight, "weight")
        return new

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if not self.flex_enabled:
            return nn.functional.embedding(idx, self.float_param("weight"), self.padding_idx)
        return flex_embedding(idx, self.weight, self.op, self.padding_idx)


class FlexMatmul(FlexModule):
    """A matmul call site (e.g. attention's ``q @ k^T``) whose states live in ``state_dict``."""

    def __init__(self, name: str = "matmul", config: FlexConfig | None = None) -> None:
        super().__init__()
        self._init_flex(name, config or FlexConfig())

    @classmethod
    def from_float(cls, mod: nn.Module, config: FlexConfig, name: str = "matmul") -> FlexMatmul:
        return cls(name, config)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if not self.flex_enabled:
            return torch.matmul(a, b)
        return flex_matmul(a, b, self.op)

    def extra_repr(self) -> str:
        return f"{self.flex_config.format.name}"
