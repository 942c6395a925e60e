"""Count host synchronisations: the places where the host reads a tensor's value.

On a GPU the host queues kernels and runs ahead of them; reading a value back (``.item()``,
``.tolist()``, ``.cpu()``, ``bool(t)`` in an ``if``, ``float(t)``…) makes it wait until every
queued kernel has finished, and a graph capture (CUDA graphs, ``torch.compile`` without graph
breaks) cannot contain such a read at all. On a CPU nothing waits, but the same calls sit in
the same places, so counting them on a CPU machine measures what a GPU would stall on.

``count_host_syncs()`` patches those reads on ``torch.Tensor`` (and the few ``torch``
functions that return a Python value) for the duration of a block and counts the calls, by
kind and by call site; a read made inside another (``float(t)`` calling ``item``) counts once.
On CUDA, ``torch.cuda.set_sync_debug_mode("warn")`` is the device's own check of the same thing.

Example::

    with count_host_syncs() as syncs:
        train_step()
    assert syncs.total <= 1, syncs.sites
"""

from __future__ import annotations

import functools
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["HostSyncCounter", "count_host_syncs"]

#: ``torch.Tensor`` methods that return host values (or a host copy) of device data.
#: ``nonzero`` is here because its output's size depends on the data: CUDA reads it back.
_TENSOR_METHODS = (
    "item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__",
    "__complex__", "equal", "allclose", "nonzero",
)  # fmt: skip
_TORCH_FUNCTIONS = ("equal", "allclose", "nonzero", "is_nonzero")


@dataclass
class HostSyncCounter:
    """Host reads seen inside one ``count_host_syncs`` block."""

    total: int = 0
    kinds: Counter[str] = field(default_factory=Counter)  # e.g. {"item": 40, "tolist": 2}
    sites: Counter[str] = field(default_factory=Counter)  # "path/file.py:123 (function)"

    def add(self, kind: str, site: str) -> None:
        self.total += 1
        self.kinds[kind] += 1
        self.sites[site] += 1


_active: list[HostSyncCounter] = []
_MISSING = object()
_saved: dict[tuple[Any, str], Any] = {}
_lock = threading.Lock()
_depth = threading.local()


def _to_cpu_from_device(self: torch.Tensor, *args: Any, **kwargs: Any) -> bool:
    """Whether ``self.to(*args, **kwargs)`` copies device data to the host."""
    if self.device.type == "cpu":
        return False
    for arg in (*args, kwargs.get("device"), kwargs.get("other")):
        if isinstance(arg, torch.Tensor):
            return arg.device.type == "cpu"
        if isinstance(arg, str | torch.device):
            try:
                return torch.device(arg).type == "cpu"
            except RuntimeError:
                continue
    return False


def _counting(kind: str, original: Callable[..., Any], only_if: Callable[..., bool] | None):
    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        depth = getattr(_depth, "n", 0)
        if depth == 0 and _active and (only_if is None or only_if(*args, **kwargs)):
            frame = sys._getframe(1)
            code = frame.f_code
            site = f"{code.co_filename}:{frame.f_lineno} ({code.co_name})"
            for counter in _active:
                counter.add(kind, site)
        _depth.n = depth + 1
        try:
            return original(*args, **kwargs)
        finally:
            _depth.n = depth

    return wrapper


def _install() -> None:
    targets: list[tuple[Any, str, str, Callable[..., bool] | None]] = [
        (torch.Tensor, name, name, None) for name in _TENSOR_METHODS
    ]
    targets.append((torch.Tensor, "to", "to(cpu)", _to_cpu_from_device))
    targets += [(torch, name, f"torch.{name}", None) for name in _TORCH_FUNCTIONS]
    for owner, name, kind, only_if in targets:
        original = getattr(owner, name)
        _saved[(owner, name)] = owner.__dict__.get(name, _MISSING)
        setattr(owner, name, _counting(kind, original, only_if))


def _uninstall() -> None:
    for (owner, name), original in _saved.items():
        if original is _MISSING:
            delattr(owner, name)  # the method lives on a base class again
        else:
            setattr(owner, name, original)
    _saved.clear()


@contextmanager
def count_host_syncs() -> Iterator[HostSyncCounter]:
    """Count host reads of tensor data inside the block (every thread; blocks may nest)."""
    counter = HostSyncCounter()
    with _lock:
        if not _active:
            _install()
        _active.append(counter)
    try:
        yield counter
    finally:
        with _lock:
            _active[:] = [c for c in _active if c is not counter]
            if not _active:
                _uninstall()
