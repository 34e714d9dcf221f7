"""What an HTTP response says about its server: status, Server header, page title, redirect."""

from __future__ import annotations

import html
import re

from portkit.model.services import HttpInfo

_STATUS = re.compile(rb"^HTTP/\d(?:\.\d)? (\d{3})")
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)


def parse_http_response(reply: bytes) -> HttpInfo | None:
    """The HTTP facts of a raw response, or None when it is not an HTTP/1 response."""
    status = _STATUS.match(reply)
    if status is None:
        return None
    head, _, body = reply.partition(b"\r\n\r\n")
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers.setdefault(name.strip().lower().decode("latin-1"), value.strip().decode("latin-1"))
    title = ""
    found = _TITLE.search(body)
    if found:
        title = " ".join(html.unescape(found.group(1).decode("utf-8", "replace")).split())[:200]
    return HttpInfo(
        status=int(status.group(1)),
        server=headers.get("server", ""),
        title=title,
        location=headers.get("location", ""),
    )
