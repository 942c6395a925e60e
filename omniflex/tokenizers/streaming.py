"""Streaming modules: state carried across chunks, entered with ``with module.streaming():``.

In the manner of moshi's ``StreamingModule``: a module that processes time in chunks keeps what
it needs from the past (a convolution's last inputs, an overlap-add tail) in a per-stream state.
``streaming(batch_size)`` opens a state on the module *and every streaming child*, and closes them
all on exit, so a parent never has to thread state by hand. Outside ``streaming()`` the same
modules run on a whole sequence at once; tests check that both paths give equal outputs and that
later input never changes earlier output.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

__all__ = ["StreamingModule"]


class StreamingModule(nn.Module):
    """Base class: subclasses read and write ``self._stream`` (a dict) when it is not None."""

    _stream: dict[str, Any] | None = None

    @property
    def is_streaming(self) -> bool:
        return self._stream is not None

    def _stream_children(self) -> Iterator[StreamingModule]:
        return (m for m in self.modules() if isinstance(m, StreamingModule))

    @contextmanager
    def streaming(self, batch_size: int = 1) -> Iterator[StreamingModule]:
        """Process input chunk by chunk inside the block; the state is dropped on exit."""
        modules = list(self._stream_children())
        if any(m._stream is not None for m in modules):
            raise RuntimeError(f"{type(self).__name__} is already streaming; exit the first block")
        for m in modules:
            m._stream = {"batch_size": batch_size}
        try:
            yield self
        finally:
            for m in modules:
                m._stream = None

    def reset_streaming(self) -> None:
        """Forget the past (a new utterance) without leaving the ``streaming()`` block."""
        for m in self._stream_children():
            if m._stream is not None:
                m._stream = {"batch_size": m._stream["batch_size"]}
