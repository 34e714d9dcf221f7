"""Typing for the optional C module built from _connectio.c (see its header comment)."""

PENDING: int

def connect_batch(
    sockaddr: bytes,
    keys: list[int],
    ports: bytes,
    offset: int,
    spare: int,
    /,
) -> tuple[list[int], list[tuple[int, int, int]], int]: ...
