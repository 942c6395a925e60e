"""What every route of the server reads: ``ServerState`` (the model, the settings, the capacity
pools, per-turn timings) and ``Capacity``, a counted pool of places."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from omniflex.model.assistant import Assistant
from omniflex.serve.settings import ServeSettings

__all__ = ["Capacity", "ServerState"]


class Capacity:
    """At most ``limit`` concurrent holders (one pool for Realtime sessions, one for REST
    requests, so open websockets never lock REST clients out)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self.used >= self.limit:
                return False
            self.used += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.used = max(0, self.used - 1)


@dataclass
class ServerState:
    """What every route reads: the model, the settings, the two capacity pools (Realtime
    sessions, REST requests), and per-turn timings."""

    assistant: Assistant
    settings: ServeSettings
    sessions: Capacity
    requests: Capacity
    ready: threading.Event = field(default_factory=threading.Event)
    turn_log: list[dict[str, Any]] = field(default_factory=list)  # Realtime turns (bench)
    model_name: str = "omniflex-tiny"

    def record_turn(self, entry: dict[str, Any]) -> None:
        self.turn_log.append(entry)
        del self.turn_log[:-1000]
