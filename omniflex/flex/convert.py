"""``convert_to_flex``: swap a model's layers for their Flexpoint versions, in place."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from omniflex.flex.autoflex_device import AnyAutoflexState, check_states
from omniflex.flex.config import FlexConfig
from omniflex.flex.errors import FlexConversionError
from omniflex.flex.matmul import Matmul
from omniflex.flex.modules import FlexConv2d, FlexEmbedding, FlexLinear, FlexMatmul, FlexModule

__all__ = [
    "check_flex_step",
    "convert_to_flex",
    "flex_disabled",
    "flex_frozen",
    "flex_modules",
    "flex_states",
    "set_flex_frozen",
]

_SWAPS: dict[type[nn.Module], type[FlexModule]] = {
    nn.Linear: FlexLinear,
    nn.Conv2d: FlexConv2d,
    nn.Embedding: FlexEmbedding,
    Matmul: FlexMatmul,
}


def convert_to_flex(
    module: nn.Module,
    *,
    config: FlexConfig | None = None,
    module_filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> nn.Module:
    """Swap every ``nn.Linear``, ``nn.Conv2d``, ``nn.Embedding`` and ``Matmul`` (children first)
    for its Flexpoint version and return ``module``.

    Args:
        module: the model; converted in place (the root itself is swapped too, and returned).
        config: a ``FlexConfig``; default flex16+5 in the paper's weight mode.
        module_filter_fn: ``fn(module, fully_qualified_name) -> bool``; only modules for which
            it returns True are converted. Naming a module it cannot convert (e.g. a
            ``nn.Conv1d``) as convertible raises ``FlexConversionError``.

    In paper mode the weights become ``FlexWeight`` parameters: build the optimizer after
    converting. In master mode the original parameters are reused.
    """
    config = config or FlexConfig()

    def visit(mod: nn.Module, fqn: str) -> nn.Module:
        for child_name, child in list(mod.named_children()):
            new_child = visit(child, f"{fqn}.{child_name}" if fqn else child_name)
            if new_child is not child:
                setattr(mod, child_name, new_child)
        if isinstance(mod, FlexModule):
            return mod
        wanted = module_filter_fn(mod, fqn) if module_filter_fn is not None else None
        cls = _SWAPS.get(type(mod))
        if cls is None:
            if wanted and type(mod) not in _SWAPS and _has_own_params(mod):
                raise FlexConversionError(
                    f"module_filter_fn selected '{fqn or '<root>'}' ({type(mod).__name__}), "
                    f"which has no flex version; convertible types are "
                    f"{[t.__name__ for t in _SWAPS]}. Return False for it in module_filter_fn."
                )
            return mod
        if wanted is False:
            return mod
        return cls.from_float(mod, config, name=fqn or type(mod).__name__.lower())

    return visit(module, "")


def _has_own_params(mod: nn.Module) -> bool:
    return any(True for _ in mod.parameters(recurse=False))


def flex_modules(module: nn.Module) -> Iterator[tuple[str, FlexModule]]:
    """Every flex module in ``module``'s tree, with its name."""
    for name, mod in module.named_modules():
        if isinstance(mod, FlexModule):
            yield name, mod


def flex_states(module: nn.Module) -> Iterator[AnyAutoflexState]:
    """Every Autoflex state in ``module``'s tree."""
    for _, mod in flex_modules(module):
        yield from mod.flex_states().values()


@torch.compiler.disable(reason="reads the step's Autoflex alarms back to the host, once")
def check_flex_step(model: nn.Module, optimizer: Any | None = None) -> None:
    """Once per training step with device-resident Autoflex (``FlexConfig.autoflex_state=
    "device"``): raise ``FlexNonFiniteError`` if a NaN or Inf reached any state of ``model`` or
    ``optimizer`` during the step, and warn on saturation — the checks the host states make at
    every op, here with one read-back for the whole step. Does nothing for host states."""
    states = list(flex_states(model))
    if optimizer is not None and hasattr(optimizer, "flex_states"):
        states.extend(optimizer.flex_states())
    check_states(states)


def set_flex_frozen(module: nn.Module, frozen: bool = True, *, cache_weights: bool = True) -> None:
    """Freeze (or unfreeze) every flex op of ``module`` for inference: under ``torch.no_grad()``
    operands are quantised at fixed exponents, with no Autoflex statistics (``omniflex.flex.ops``).
    ``cache_weights`` keeps each weight's decoded float32 view (faster, more memory)."""
    for _, m in flex_modules(module):
        m.op.frozen, m.op.cache_weights = frozen, cache_weights
        m.op.clear_cache()


@contextmanager
def flex_frozen(module: nn.Module, *, cache_weights: bool = True) -> Iterator[nn.Module]:
    """``set_flex_frozen`` inside the block, the previous modes restored after it."""
    mods = [m for _, m in flex_modules(module)]
    previous = [(m.op.frozen, m.op.cache_weights) for m in mods]
    set_flex_frozen(module, True, cache_weights=cache_weights)
    try:
        yield module
    finally:
        for m, (frozen, cache) in zip(mods, previous, strict=True):
            m.op.frozen, m.op.cache_weights = frozen, cache
            m.op.clear_cache()


@contextmanager
def flex_disabled(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` in plain float32 inside the block (e.g. for evaluation).

    Flex layers compute with the exact float value of their weights and touch no Autoflex state.
    """
    mods = [m for _, m in flex_modules(module)]
    previous = [m.flex_enabled for m in mods]
    for m in mods:
        m.flex_enabled = False
    try:
        yield module
    finally:
        for m, p in zip(mods, previous, strict=True):
            m.flex_enabled = p
