"""Typing for the optional C module built from _quickio.c (see its header comment)."""

from array import array

UNTOUCHED: int
READ: int
END: int
RECV_ERROR: int
SEND_ERROR: int
MAX_EVENTS: int

def collect(moved: array[int], /) -> list[tuple[int, int]]: ...
def turn(
    epfd: int,
    timeout_ms: int,
    peers: array[int],
    moved: array[int],
    buffer: bytearray,
    /,
) -> list[tuple[int, int, int, int, bytes | None]]: ...
