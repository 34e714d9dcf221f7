"""Structured event log of the forwarder: connects, closes, refusals, errors, reloads.

Each event is a name and fields. Written as one JSON object per line (`--log-json`, for
journald and log shippers) or as `time event key=value ...` for people.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

from portkit.forward._sockets import error_name, peer

if TYPE_CHECKING:
    from portkit.forward._rules import ForwardRule

# Per-connection events; `quiet` drops these but keeps refusals, errors and lifecycle events.
CONNECTION_EVENTS = frozenset({"connect", "close", "udp-map", "udp-expire"})


class EventLog:
    def __init__(self, stream: TextIO | None = None, *, as_json: bool = False, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.as_json = as_json
        self.quiet = quiet
        self._lock = threading.Lock()  # two engines may log at once

    def __call__(self, event: str, **fields: Any) -> None:
        if self.quiet and event in CONNECTION_EVENTS:
            return
        now = time.time()
        if self.as_json:
            line = json.dumps({"ts": round(now, 6), "event": event, **fields}, default=str)
        else:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
            parts = [f"{k}={_text(v)}" for k, v in fields.items()]
            line = " ".join([stamp, event, *parts])
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed stderr must not take the forwarder down

    def connect_failed(self, rule: ForwardRule, client_address: Any, exc: BaseException) -> None:
        """A target that could not be reached for a client: one wording for every engine."""
        self(
            "error",
            stage="connect",
            rule=rule.label,
            client=peer(client_address),
            target=str(rule.target),
            error=error_name(exc),
        )


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text
