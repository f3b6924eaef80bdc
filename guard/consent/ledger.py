"""Accounting: every AI access to opted-in content, written before the content is served.

With Redis, records go to a capped stream (``<ns>:{consent}:ledger``, ``XADD MAXLEN ~``);
with the embedded store, to a JSON-lines file, appended with one ``write`` on an
``O_APPEND`` descriptor in a worker thread (several processes may share the file: each
line lands whole). A request whose record cannot be written is not served: content that
cannot be accounted for is not given away.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

#: Default bound of the Redis stream (oldest records are trimmed beyond it).
STREAM_MAX = 10_000_000
#: KEYS: the artist's consent record, the stream. ARGV: the record as last read, the stream
#: bound, then the access's fields. Records only if the consent is still what was read.
RECORD_IF_UNCHANGED = """
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
return 1
"""


@dataclass(frozen=True, slots=True)
class Access:
    """One served AI request on opted-in content."""

    time: float
    artist: str
    track: str | None
    operator: str
    agent: str
    usage: str
    licence: str | None = None  # licence id, for a licensed access
    price: str | None = None  # "USD 0.01", for a paid access
    path: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> Access:
        def text(key: str) -> str | None:
            value = raw.get(key)
            if isinstance(value, bytes):
                value = value.decode()
            return None if value in (None, "") else str(value)

        return cls(
            float(text("time") or 0),
            text("artist") or "",
            text("track"),
            text("operator") or "",
            text("agent") or "",
            text("usage") or "",
            text("licence"),
            text("price"),
            text("path") or "",
        )


class Ledger(Protocol):
    """Where accesses are recorded, and read back for reports."""

    name: str

    async def record(self, access: Access, condition: tuple[str, str] | None = None) -> bool:
        """Write ``access``; with a ``condition`` (Redis key, raw value), only if the key still
        holds that value, atomically (False: it changed, nothing was written)."""

    async def read(self, since: float = 0.0) -> list[Access]: ...


class FileLedger:
    """JSON lines in a file (the embedded store's ledger)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"file {self.path}"
        self._fd: int | None = None

    async def record(self, access: Access, condition: tuple[str, str] | None = None) -> bool:
        await asyncio.to_thread(self._append, (access.to_json() + "\n").encode())
        return True

    def _append(self, line: bytes) -> None:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        os.write(self._fd, line)

    async def read(self, since: float = 0.0) -> list[Access]:
        return await asyncio.to_thread(lambda: [a for a in read_lines(self.path) if a.time >= since])

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_lines(path: Path) -> Iterator[Access]:
    """The accesses of a ledger file; a torn or foreign line is skipped."""
    if not path.exists():
        return
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                yield Access.from_mapping(json.loads(line))
            except (ValueError, TypeError, AttributeError):
                continue


class RedisLedger:
    """A capped Redis stream (shared by every instance)."""

    def __init__(self, client: Any, namespace: str = "guard", maxlen: int = STREAM_MAX, timeout: float = 0.5) -> None:
        self.client = client
        self.key = f"{namespace}:{{consent}}:ledger"
        self.maxlen = maxlen
        self.timeout = timeout
        self.name = f"redis stream {self.key}"

    async def record(self, access: Access, condition: tuple[str, str] | None = None) -> bool:
        fields = {k: ("" if v is None else str(v)) for k, v in asdict(access).items()}
        if condition is None:
            call = self.client.xadd(self.key, fields, maxlen=self.maxlen, approximate=True)
            await asyncio.wait_for(call, self.timeout)
            return True
        # The consent check and the record in one round trip: both keys carry {consent}.
        pairs = [part for item in fields.items() for part in item]
        call = self.client.eval(RECORD_IF_UNCHANGED, 2, condition[0], self.key, condition[1], self.maxlen, *pairs)
        return bool(await asyncio.wait_for(call, self.timeout))

    async def read(self, since: float = 0.0) -> list[Access]:
        """Every record from ``since`` on, by its own time (stream ids carry Redis's clock)."""
        out: list[Access] = []
        start = "-"
        while True:
            batch = await self.client.xrange(self.key, min=start, max="+", count=10_000)
            for _, fields in batch:
                access = Access.from_mapping({_text(k): v for k, v in fields.items()})
                if access.time >= since:
                    out.append(access)
            if len(batch) < 10_000:
                return out
            start = "(" + _text(batch[-1][0])


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class Total:
    """One line of a report: accesses of one artist, usage and operator."""

    artist: str
    usage: str
    operator: str
    accesses: int = 0
    licensed: int = 0
    paid: int = 0
    charged: dict[str, Decimal] | None = None

    def add(self, access: Access) -> None:
        self.accesses += 1
        if access.licence:
            self.licensed += 1
        if access.price:
            self.paid += 1
            currency, _, amount = access.price.partition(" ")
            charged = self.charged if self.charged is not None else {}
            charged[currency] = charged.get(currency, Decimal(0)) + Decimal(amount or "0")
            self.charged = charged

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["charged"] = {c: f"{a:f}" for c, a in sorted((self.charged or {}).items())}
        return out


def totals(accesses: Iterable[Access], artist: str | None = None) -> list[Total]:
    """Accesses totalled per (artist, usage, operator), sorted; optionally one artist's only."""
    by_key: dict[tuple[str, str, str], Total] = {}
    for access in accesses:
        if artist is not None and access.artist != artist:
            continue
        key = (access.artist, access.usage, access.operator)
        total = by_key.get(key)
        if total is None:
            total = by_key[key] = Total(*key)
        total.add(access)
    return [by_key[k] for k in sorted(by_key)]
