"""``FlexWeight``: a parameter stored only as flex mantissas and one exponent (paper mode).

The paper trains with no float32 copy of the weights. ``FlexWeight`` is a tensor subclass whose
storage is the integer mantissa tensor; it reports dtype float32 so that ``nn.Module``, autograd
and any ``torch.optim`` optimizer accept it. Flex ops read the mantissas directly. Any other
aten op sees the exact float32 value (``mantissa * 2**exponent``); an op that writes into the
weight (``add_``, ``addcdiv_``, ``copy_``…) computes in float32 and re-quantises the result
through the weight's own Autoflex state, so the weight never stops being flex.

Layout ops (``view``, ``split``, ``slice``, ``as_strided``), ``new_zeros``/``new_empty`` and
``copy_`` from another flex weight of the same format keep the flex storage: they act on the
mantissas, and the results share the exponent (a view) or take it over (a copy). That is what
FSDP2 does to a parameter when it splits it into shards; ``fsdp_pre_all_gather`` and
``fsdp_post_all_gather`` then make FSDP2 all-gather the int16 mantissas, not float32 values
(see ``omniflex.flex.sharding`` for the exponent every shard shares).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.utils._pytree import tree_map

from omniflex.flex.autoflex_device import AnyAutoflexState
from omniflex.flex.format import FlexTensor

__all__ = ["FlexWeight"]

aten = torch.ops.aten


class _Store:
    """Storage shared by a weight and its detached aliases (``nn.Parameter`` detaches once).

    A view of the mantissas (a shard, a reshape) gets its own store over the viewed mantissas
    that shares the exponent ``cell`` with its base: one exponent for all views of one tensor."""

    def __init__(
        self,
        mantissa: torch.Tensor,
        exponent: int | torch.Tensor,  # a 0-d device tensor with a device-resident state
        state: AnyAutoflexState,
        stochastic: bool,
        cell: list[int | torch.Tensor] | None = None,
    ):
        self.mantissa = mantissa
        self._cell = [exponent] if cell is None else cell
        self.state = state
        self.stochastic = stochastic

    @property
    def exponent(self) -> int | torch.Tensor:
        return self._cell[0]

    @exponent.setter
    def exponent(self, value: int | torch.Tensor) -> None:
        self._cell[0] = value

    def view(self, mantissa: torch.Tensor) -> _Store:
        """A store over ``mantissa`` (a view of this one's) sharing the exponent and state."""
        return _Store(mantissa, self.exponent, self.state, self.stochastic, self._cell)

    def like(self, mantissa: torch.Tensor) -> _Store:
        """A store over new ``mantissa`` with a copy of the exponent and the same state."""
        exponent = self.exponent
        if isinstance(exponent, torch.Tensor):
            exponent = exponent.clone()
        return _Store(mantissa, exponent, self.state, self.stochastic)


class FlexWeight(torch.Tensor):
    """A float32-looking tensor whose only storage is ``mantissa`` (int16) and ``exponent``."""

    _store: _Store

    @staticmethod
    def __new__(cls, store: _Store, requires_grad: bool = False) -> FlexWeight:
        m = store.mantissa
        weight = torch.Tensor._make_wrapper_subclass(
            cls, m.shape, dtype=torch.float32, device=m.device, requires_grad=requires_grad
        )
        weight._store = store
        return weight

    def __init__(self, store: _Store, requires_grad: bool = False) -> None:
        super().__init__()

    @classmethod
    def from_float(
        cls, x: torch.Tensor, state: AnyAutoflexState, *, stochastic: bool = False
    ) -> FlexWeight:
        """Quantise float ``x`` with ``state`` (Algorithm 1 on first use) into a new weight."""
        flex = state.to_flex(x.detach().float(), stochastic=stochastic)
        return cls(_Store(flex.mantissa, flex.exponent, state, stochastic))

    # ------------------------------------------------------------------ views
    @property
    def mantissa(self) -> torch.Tensor:
        return self._store.mantissa

    @property
    def exponent(self) -> int | torch.Tensor:
        """The shared exponent: an int, or a 0-d tensor on the weight's device when its
        Autoflex state lives there (updated in place, so graphs may hold it)."""
        return self._store.exponent

    @property
    def state(self) -> AnyAutoflexState:
        return self._store.state

    @property
    def stochastic(self) -> bool:
        """Whether re-quantisation after an update rounds stochastically."""
        return self._store.stochastic

    def flex(self) -> FlexTensor:
        """The storage as a ``FlexTensor`` (shares the mantissa tensor)."""
        return FlexTensor(self._store.mantissa, self._store.exponent, self._store.state.format)

    def dequantize(self) -> torch.Tensor:
        """Exact float32 value as a plain tensor."""
        return self.flex().to_float()

    @torch.no_grad()
    def assign_(self, values: torch.Tensor) -> FlexWeight:
        """Re-quantise float ``values`` into this weight in place (its Autoflex state picks
        the exponent)."""
        store = self._store
        flex = store.state.to_flex(values.detach().float(), stochastic=store.stochastic)
        store.mantissa.copy_(flex.mantissa)
        self._set_exponent(flex.exponent)
        return self

    @torch.no_grad()
    def load_flex_(self, mantissa: torch.Tensor, exponent: int | torch.Tensor) -> None:
        """Set mantissas and exponent exactly (checkpoint loading)."""
        self._store.mantissa.copy_(mantissa)
        self._set_exponent(exponent)

    def _set_exponent(self, exponent: int | torch.Tensor) -> None:
        store = self._store
        if isinstance(store.exponent, torch.Tensor):
            store.exponent.copy_(torch.as_tensor(exponent))  # in place: no read-back
        elif isinstance(exponent, torch.Tensor):
            store.exponent = exponent.clone()
        else:
            store.exponent = int(exponent)

    @property
    def nbytes_stored(self) -> int:
        return self.flex().nbytes

    def __repr__(self, *, tensor_contents: Any = None) -> str:
        s = self._store
        return (
            f"FlexWeight({s.state.format.name}, shape={tuple(self.shape)}, exponent={s.exponent}, "
            f"requires_grad={self.requires_grad})"
        )

    __torch_function__ = torch._C._disabled_torch_function_impl

    # ------------------------------------------------------------------ FSDP2
    def fsdp_pre_all_gather(
        self,
        mesh: Any,
        outer_size: torch.Size,
        outer_stride: tuple[int, ...],
        module: torch.nn.Module,
        mp_policy: Any,
    ) -> tuple[tuple[torch.Tensor, ...], Any]:
        """What FSDP2 all-gathers for this shard of a weight: its mantissas (int16 for
        flex16+5, half the bytes of float32), padded to FSDP's shard size (dim 0 split in
        ``ceil(rows / ranks)``). The exponent rides along as metadata: every shard holds the
        same one (``omniflex.flex.sharding``), so it needs no bytes on the wire."""
        mantissa = self.mantissa
        rows = -(-outer_size[0] // mesh.size()) if len(outer_size) else 0
        padded = torch.Size([rows, *outer_size[1:]])
        if mantissa.shape != padded:  # the last ranks' shards are short (or empty)
            full = mantissa.new_zeros(padded)
            full[: mantissa.shape[0]].copy_(mantissa)
            mantissa = full
        store = self._store
        return (mantissa,), (store.exponent, store.state, store.stochastic)

    def fsdp_post_all_gather(
        self,
        all_gather_outputs: tuple[torch.Tensor, ...],
        metadata: Any,
        param_dtype: torch.dtype,
        *,
        out: torch.Tensor | None = None,
    ) -> tuple[FlexWeight, tuple[torch.Tensor, ...]] | None:
        """The whole weight from the gathered mantissas: a ``FlexWeight`` over FSDP's
        all-gather buffer (``param_dtype`` does not apply: a flex weight stays flex). On later
        all-gathers FSDP refills that buffer in place and passes the weight as ``out``."""
        (mantissa,) = all_gather_outputs
        exponent, state, stochastic = metadata
        if out is not None:
            if not isinstance(out, FlexWeight):
                raise TypeError(
                    f"FSDP passed a {type(out).__name__} to refill; expected FlexWeight"
                )
            out._set_exponent(exponent)
            return None
        if isinstance(exponent, torch.Tensor):
            exponent = exponent.clone()
        return FlexWeight(_Store(mantissa, exponent, state, stochastic)), (mantissa,)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func in (aten.detach.default, aten.alias.default):
            return FlexWeight(args[0]._store)
        if func in _LAYOUT_OPS and isinstance(args[0], FlexWeight):
            # The same op on the mantissas; the results share the exponent (views, shards).
            store = args[0]._store
            out = func(store.mantissa, *args[1:], **kwargs)
            if isinstance(out, list | tuple):
                return [FlexWeight(store.view(m)) for m in out]
            return FlexWeight(store.view(out))
        if func in _NEW_OPS and kwargs.get("dtype") in (None, torch.float32):
            # A new tensor in the weight's format, state and exponent (FSDP pads shards so).
            store = args[0]._store
            mantissa = func(store.mantissa, *args[1:], **{**kwargs, "dtype": None})
            return FlexWeight(store.like(mantissa))
        if func is aten.copy_.default and _same_format(args[0], args[1]):
            # Flex to flex: the mantissas and exponent as they are, nothing re-quantised.
            args[0].load_flex_(args[1].mantissa, args[1].exponent)
            return args[0]
        if func is aten.clone.default:  # deepcopy and clone keep the flex storage
            src = args[0]._store
            exponent = src.exponent
            if isinstance(exponent, torch.Tensor):
                exponent = exponent.clone()
            store = _Store(src.mantissa.clone(), exponent, copy.deepcopy(src.state), src.stochastic)
            return FlexWeight(store)

        def unwrap(t: Any) -> Any:
            return t.dequantize() if isinstance(t, FlexWeight) else t

        u_args, u_kwargs = tree_map(unwrap, (args, kwargs))
        out = func(*u_args, **u_kwargs)
        mutated = False
        for i, arg in enumerate(func._schema.arguments):
            if arg.alias_info is None or not arg.alias_info.is_write:
                continue
            orig = args[i] if i < len(args) else kwargs.get(arg.name)
            new = u_args[i] if i < len(u_args) else u_kwargs.get(arg.name)
            pairs = zip(orig, new, strict=True) if isinstance(orig, list | tuple) else [(orig, new)]
            for o, n in pairs:
                if isinstance(o, FlexWeight):
                    o.assign_(n)
                    mutated = True
        if mutated and func._schema.returns and len(func._schema.returns) == 1:
            # An in-place op returns its (now re-quantised) first argument.
            return args[0]
        return out


#: Ops that only rearrange or select elements: applied to the mantissas, they give a flex view.
_LAYOUT_OPS = frozenset(
    {
        aten.view.default, aten._unsafe_view.default, aten.as_strided.default,
        aten.slice.Tensor, aten.split.Tensor, aten.split_with_sizes.default,
    }
)  # fmt: skip
#: Ops that make a new tensor "like" the weight: in its format, with its state and exponent.
_NEW_OPS = frozenset({aten.new_zeros.default, aten.new_empty.default})


def _same_format(a: Any, b: Any) -> bool:
    return (
        isinstance(a, FlexWeight)
        and isinstance(b, FlexWeight)
        and a.state.format == b.state.format
        and a.shape == b.shape
    )
