"""The request headers the guard reads, gathered in one pass over an ASGI scope's headers.

Client resolution, the session cookie and the User-Agent each used to walk the header
list on their own; the middleware now reads it once (:func:`request_headers`) and hands
the result to each of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Headers the guard reads whole when a request sends them on several lines, and the
#: separator their lines are joined with (any other name: its last line, as before).
JOINED = {
    b"user-agent": b" ",  # a name split over two lines is still the name
    b"cookie": b"; ",  # HTTP/2 sends each cookie on its own line
    b"x-forwarded-for": b",",  # several proxies' lines are one chain, in order
    b"forwarded": b",",
    b"x-real-ip": b",",
}


def request_headers(scope: Mapping[str, Any]) -> dict[bytes, bytes]:
    """The scope's headers by (lower-case) name; see :data:`JOINED` for names sent several times.

    The usual request names each header once: one ``dict`` built in C, no loop in Python.
    """
    raw = scope.get("headers") or ()
    if not isinstance(raw, list | tuple):
        raw = list(raw)
    headers = dict(raw)
    if len(headers) != len(raw):  # some name came on several lines
        for name, separator in JOINED.items():
            lines = [value for key, value in raw if key == name]
            if len(lines) > 1:
                headers[name] = separator.join(lines)
    return headers
