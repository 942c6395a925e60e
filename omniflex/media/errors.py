"""``MediaError``: a media file could not be read or written; the message names the file."""

from __future__ import annotations

__all__ = ["MediaError"]


class MediaError(ValueError):
    """A media file is missing, corrupt, truncated, too large, or of the wrong kind."""
