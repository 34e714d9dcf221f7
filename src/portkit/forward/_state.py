"""The life of one forwarded TCP connection, as a pure state machine.

Theory of operation
-------------------
A forwarded connection is two sockets (client side, target side) and two directions of
flow: *up* (client -> target) and *down* (target -> client). The I/O layer (the splice
engine or the asyncio engine) moves bytes; it tells this machine only about the things
that change a connection's shape, and does exactly what the machine answers:

- an end-of-file read from one side (the peer sent FIN) is passed on as a FIN to the
  other side with shutdown(SHUT_WR), *after* the bytes already read have been written; the
  other direction keeps flowing. The connection closes when both directions have ended.
- a reset from one side (ECONNRESET while reading or writing, EPIPE) is passed on as a
  reset to the other side (SO_LINGER 0, then close), never as a polite FIN.
- a target that cannot be reached (refused, unreachable, connect timeout) resets the
  client at once, so it learns in milliseconds rather than hanging.
- the idle timeout and the end of a drain close both sides.

Rule 1 (after h11): everything that decides a transition lives in TRANSITIONS below.
Events that make no sense in a state are ignored (a late EOF after a reset, say); the
I/O layer never has to guard against them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    CONNECTING = "connecting"  # client accepted, target connect in progress
    OPEN = "open"  # both directions flowing
    CLIENT_DONE = "client-done"  # client sent FIN, passed on; target -> client still flows
    TARGET_DONE = "target-done"  # target sent FIN, passed on; client -> target still flows
    CLOSED = "closed"  # both directions ended (or closed by idle timeout / drain)
    RESET = "reset"  # a reset or failure ended it

    @property
    def finished(self) -> bool:
        return self in (State.CLOSED, State.RESET)


class Event(enum.Enum):
    CONNECTED = "connected"  # the target accepted
    CONNECT_FAILED = "connect-failed"  # refused, unreachable or timed out
    CLIENT_EOF = "client-eof"  # read 0 bytes from the client and everything read is written
    TARGET_EOF = "target-eof"
    CLIENT_RESET = "client-reset"  # the client side reset (or failed hard)
    TARGET_RESET = "target-reset"
    IDLE = "idle"  # no byte either way for the idle timeout
    CLOSE = "close"  # the forwarder is going away (end of a drain)


class ForwardAction(enum.Enum):
    START_RELAY = "start-relay"  # begin moving bytes both ways
    SHUT_TARGET_WR = "shut-target-wr"  # send FIN to the target
    SHUT_CLIENT_WR = "shut-client-wr"  # send FIN to the client
    RESET_CLIENT = "reset-client"  # SO_LINGER 0 + close: the client sees RST
    RESET_TARGET = "reset-target"
    CLOSE_BOTH = "close-both"  # release both sockets (FIN where not yet sent)


_A = ForwardAction  # one letter keeps each transition of the table on one line
_LIVE = (State.OPEN, State.CLIENT_DONE, State.TARGET_DONE)

TRANSITIONS: dict[tuple[State, Event], tuple[State, tuple[ForwardAction, ...]]] = {
    (State.CONNECTING, Event.CONNECTED): (State.OPEN, (_A.START_RELAY,)),
    (State.CONNECTING, Event.CONNECT_FAILED): (State.RESET, (_A.RESET_CLIENT, _A.CLOSE_BOTH)),
    (State.CONNECTING, Event.CLIENT_RESET): (State.RESET, (_A.RESET_TARGET, _A.CLOSE_BOTH)),
    (State.CONNECTING, Event.CLOSE): (State.CLOSED, (_A.CLOSE_BOTH,)),
    (State.CONNECTING, Event.IDLE): (State.RESET, (_A.RESET_CLIENT, _A.CLOSE_BOTH)),
    (State.OPEN, Event.CLIENT_EOF): (State.CLIENT_DONE, (_A.SHUT_TARGET_WR,)),
    (State.OPEN, Event.TARGET_EOF): (State.TARGET_DONE, (_A.SHUT_CLIENT_WR,)),
    (State.CLIENT_DONE, Event.TARGET_EOF): (State.CLOSED, (_A.SHUT_CLIENT_WR, _A.CLOSE_BOTH)),
    (State.TARGET_DONE, Event.CLIENT_EOF): (State.CLOSED, (_A.SHUT_TARGET_WR, _A.CLOSE_BOTH)),
    **{(s, Event.CLIENT_RESET): (State.RESET, (_A.RESET_TARGET, _A.CLOSE_BOTH)) for s in _LIVE},
    **{(s, Event.TARGET_RESET): (State.RESET, (_A.RESET_CLIENT, _A.CLOSE_BOTH)) for s in _LIVE},
    **{(s, Event.IDLE): (State.CLOSED, (_A.CLOSE_BOTH,)) for s in _LIVE},
    **{(s, Event.CLOSE): (State.CLOSED, (_A.CLOSE_BOTH,)) for s in _LIVE},
}


@dataclass
class ConnectionState:
    """The state of one connection; `handle(event)` returns what the I/O layer must do, in order."""

    state: State = State.CONNECTING

    def handle(self, event: Event) -> tuple[ForwardAction, ...]:
        step = TRANSITIONS.get((self.state, event))
        if step is None:
            return ()
        self.state, actions = step
        return actions

    @property
    def finished(self) -> bool:
        return self.state.finished

    def reading_from(self, side: str) -> bool:
        """Whether bytes from `side` ('client' or 'target') may still arrive and be relayed."""
        if side == "client":
            return self.state in (State.OPEN, State.TARGET_DONE)
        return self.state in (State.OPEN, State.CLIENT_DONE)
