"""Exceptions raised by ``omniflex.flex``; each names the tensor, the module and the fix."""

from __future__ import annotations

__all__ = ["FlexConversionError", "FlexError", "FlexNonFiniteError", "FlexTypeError"]


class FlexError(Exception):
    """Base class of every error raised by the Flexpoint layer."""


class FlexTypeError(FlexError, TypeError):
    """A tensor of a dtype Flexpoint cannot hold (integer, bool, complex) reached a flex op."""


class FlexNonFiniteError(FlexError, FloatingPointError):
    """NaN or Inf reached a flex op: Flexpoint has no encoding for them."""


class FlexConversionError(FlexError, ValueError):
    """``convert_to_flex`` was asked to convert something it cannot."""
