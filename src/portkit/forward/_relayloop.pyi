"""Typing for the optional C module built from _relayloop.c (see its header comment)."""

BUDGET: int
IDLE: int
EOF: int
BLOCKED: int
SRC_ERROR: int
DST_ERROR: int

def relay(
    src: int,
    dst: int,
    pipe_r: int,
    pipe_w: int,
    pending: int,
    chunk: int,
    max_bytes: int,
    max_seconds: float,
    /,
) -> tuple[int, int, int, int]: ...
