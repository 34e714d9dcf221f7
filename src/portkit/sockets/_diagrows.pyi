# The C module portkit.sockets._diagrows (see _diagrows.c); optional, so imported in a try.
def uniform_family(buf: bytes, size: int, mtype: int = ..., /) -> int: ...
def socket_heads(buf: bytes, mtype: int = ..., /) -> tuple[bytes, int, int]: ...
def json_text(
    body: bytes,
    size: int,
    count: int,
    version: int,
    head: str,
    state_text: list[str],
    tail: str | list[str],
    /,
) -> str: ...
