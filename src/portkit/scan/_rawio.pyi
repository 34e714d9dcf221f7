"""Typing for the optional C module built from _rawio.c (see its header comment)."""

def cookie(lane: int, port: int, /) -> int: ...
def build_tcp(
    keys: list[int],
    ports: bytes,
    offset: int,
    lane: int,
    hsum: int,
    sport: int,
    flags: int,
    with_ack: bool,
    /,
) -> bytes: ...
def send_tcp(
    fd: int,
    sockaddr: bytes,
    keys: list[int],
    ports: bytes,
    offset: int,
    lane: int,
    hsum: int,
    sport: int,
    flags: int,
    with_ack: bool,
    /,
) -> int: ...
def drain(
    fd: int,
    kind: int,
    address: bytes,
    index_of: bytes,
    offset: int,
    lane: int,
    base: int,
    rst: int,
    syn_ack: int,
    icmp: bytes,
    /,
) -> tuple[list[int], bytes, bytes, bytes]: ...
