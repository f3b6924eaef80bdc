"""The few responses guard writes itself: directive files, metrics, denials.

Everything else is the application's response, passed through untouched (at most with
the response signals added to its headers by :func:`with_headers`).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from starlette.types import Message, Send

if TYPE_CHECKING:
    from guard.policy.engine import Decision
    from guard.sessions.service import Reply

TEXT = b"text/plain; charset=utf-8"
JSON = b"application/json"


async def respond(
    send: Send,
    status: int,
    body: bytes,
    *,
    extra: list[tuple[bytes, bytes]] | None = None,
    cache: bool = False,
    head: bool = False,
    content_type: bytes = TEXT,
) -> None:
    """A complete response: ``body`` (none for HEAD) with its length, type and caching."""
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"public, max-age=3600" if cache else b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def deny(send: Send, decision: Decision, head: bool) -> None:
    """403 (block) or 429 (throttle) naming the rule and its reason, with Retry-After where known."""
    if decision.action == "throttle":
        text = f"429 Too Many Requests: guard rule '{decision.rule_id}': {decision.reason}.\n"
        extra = [(b"retry-after", (decision.retry_after_header or "1").encode())]
        await respond(send, 429, text.encode(), extra=extra, head=head)
    else:
        text = f"403 Forbidden: guard rule '{decision.rule_id}': {decision.reason}. See /robots.txt.\n"
        extra = [(b"retry-after", decision.retry_after_header.encode())] if decision.retry_after_header else []
        await respond(send, 403, text.encode(), extra=extra, head=head)


async def reply(send: Send, answer: Reply, head: bool) -> None:
    """A session's own answer (the challenge page, its verdict)."""
    extra = list(answer.headers)
    await respond(send, answer.status, answer.body, extra=extra, head=head, content_type=answer.content_type)


def with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    """``send`` that adds ``extra`` headers to the response start; the body passes untouched.

    A plain function handing back what ``send`` returns for the caller to await: no
    coroutine of its own per message (a streamed response sends many). The start message
    is copied, never changed: an application may send the same dict every time.
    """

    def sender(message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        return send(message)

    return sender
