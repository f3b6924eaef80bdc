"""What ``guard consent`` and ``guard license`` do: read and change consents, issue licences,
total the ledger. Changes land in the file or in Redis, where running instances pick
them up without a restart (the file within seconds, Redis on the next request)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from guard.consent.ledger import FileLedger, Ledger, RedisLedger, Total, totals
from guard.consent.licences import Licences, load_key
from guard.consent.model import USAGES, ArtistConsent, ConsentError, parse_artist, parse_consent
from guard.consent.sources import RedisSource, load_file, save_file
from guard.identity.signatures import check_signature
from guard.policy.rules import parse_duration


class Registry:
    """A consent source opened for reading and writing: a file, or Redis."""

    def __init__(self, file: str | Path | None = None, redis_url: str | None = None, namespace: str = "guard"):
        if (file is None) == (redis_url is None):
            raise ConsentError("give a consent file or a Redis URL")
        self.file = Path(file) if file is not None else None
        self.redis_url = redis_url
        self.namespace = namespace
        self._client: Any = None

    @property
    def name(self) -> str:
        return f"file {self.file}" if self.file is not None else f"redis {self.redis_url}"

    def _redis(self) -> RedisSource:
        from guard.stores.redis import redis_client

        if self._client is None:
            assert self.redis_url is not None
            self._client = redis_client(self.redis_url)
        return RedisSource(self._client, self.namespace)

    async def records(self) -> dict[str, ArtistConsent]:
        if self.file is not None:
            return load_file(self.file) if self.file.exists() else {}
        source = self._redis()
        await source.refresh()
        return dict(source.listing())

    async def put(self, record: ArtistConsent) -> None:
        if self.file is not None:
            records = load_file(self.file) if self.file.exists() else {}
            records[record.artist] = record
            save_file(self.file, records)
        else:
            await self._redis().put(record)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


async def set_consent(registry: Registry, artist: str, usage: str, **fields: Any) -> ArtistConsent:
    """Add (or replace) the artist's consent for ``usage`` with ``fields`` (operators, tracks,
    from, until, price); returns the new record."""
    consent = parse_consent(artist, {"usage": usage, **{k: v for k, v in fields.items() if v not in (None, [])}})
    record = (await registry.records()).get(artist) or parse_artist(artist, [])
    kept = tuple(c for c in record.consents if not (c.usage == usage and c.operators == consent.operators))
    updated = ArtistConsent(artist, (*kept, consent))
    await registry.put(updated)
    return updated


async def revoke(registry: Registry, artist: str, usage: str | None = None) -> ArtistConsent:
    """Withdraw the artist's consents (for one usage, or all); returns what remains."""
    if usage is not None and usage not in USAGES:
        raise ConsentError(f"usage {usage!r} is not one of {', '.join(USAGES)}")
    record = (await registry.records()).get(artist) or parse_artist(artist, [])
    remaining = ArtistConsent(artist, tuple(c for c in record.consents if usage is not None and c.usage != usage))
    await registry.put(remaining)
    return remaining


def issue_licence(
    operator: str, artists: Iterable[str], usages: Iterable[str], days: float, key: str | None, issuer: str = "guard"
) -> str:
    """A licence token signed with the platform's key (created on first use)."""
    usages = list(usages)
    for usage in usages:
        if usage not in USAGES:
            raise ConsentError(f"usage {usage!r} is not one of {', '.join(USAGES)}")
    for artist in artists:
        parse_artist(artist, [])  # the id is well-formed
    if not operator.strip():
        raise ConsentError("--operator names the operator (as in the catalogue, e.g. OpenAI)")
    if not 0 < days <= 3660:
        raise ConsentError("--days is between 0 and 3660")
    licences = Licences(load_key(Path(key).expanduser() if key else None), issuer)
    return licences.issue(operator, artists, usages, now=time.time(), days=days)


def parse_since(text: str | None, now: float | None = None) -> float:
    """Epoch seconds from ``2026-01-31``, an ISO 8601 time, or a duration ago (``24h``, ``7d``)."""
    if not text:
        return 0.0
    seconds = parse_duration(text)
    if seconds is not None and not text.strip().isdigit():
        return (now if now is not None else time.time()) - seconds
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConsentError(f"--since {text!r}: a date (2026-01-31), an ISO time or a duration ago (24h, 7d)") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def open_ledger(file: str | None, redis_url: str | None, namespace: str = "guard") -> tuple[Any, Any]:
    """The ledger to report on, and the Redis client to close afterwards (or None)."""
    if redis_url:
        from guard.stores.redis import redis_client

        client = redis_client(redis_url)
        return RedisLedger(client, namespace), client
    assert file is not None
    return FileLedger(Path(file).expanduser()), None


def format_report(lines: list[Total], source: str) -> str:
    """A report as a table, with a grand total."""
    grand = Total("total", "", "")
    for t in lines:
        grand.accesses += t.accesses
        grand.licensed += t.licensed
        grand.paid += t.paid
        for currency, amount in (t.charged or {}).items():
            grand.charged = grand.charged or {}
            grand.charged[currency] = grand.charged.get(currency, 0) + amount
    out = [f"accounting from {source}", _row("artist", "usage", "operator", "accesses", "licensed", "paid", "charged")]
    for t in [*lines, grand]:
        charged = ", ".join(f"{c} {a:f}" for c, a in sorted((t.charged or {}).items())) or "-"
        out.append(_row(t.artist, t.usage, t.operator, t.accesses, t.licensed, t.paid, charged))
    return "\n".join(out) + "\n"


def _row(artist: str, usage: str, operator: str, *numbers: object) -> str:
    *counts, charged = numbers
    return f"{artist:<10} {usage:<9} {operator:<20} " + " ".join(f"{n:>8}" for n in counts) + f"  {charged}"


async def report(ledger: Ledger, artist: str | None, since: float) -> list[Total]:
    return totals(await ledger.read(since), artist)


async def explain_request(
    middleware: Any, *, user_agent: str | None, ip: str, path: str, headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any] | None:
    """Which artist, consent and licence apply to the request (None without a consent gate)."""
    gate = middleware.consent
    if gate is None:
        return None
    path, _, query = path.partition("?")
    all_headers = list(headers or [])
    if user_agent is not None:
        all_headers.append((b"user-agent", user_agent.encode("latin-1", "replace")))
    scope: dict[str, Any] = {"type": "http", "method": "GET", "scheme": "http", "path": path, "client": (ip, 0)}
    scope.update(raw_path=path.encode(), query_string=query.encode(), headers=all_headers)
    guard = middleware.guard
    signed = check_signature(guard.signatures, scope, guard.clock)
    facts = guard.facts(guard.resolver.resolve(scope), user_agent, path, signed, query)
    return await gate.explain(scope, facts, signed)


def consent_lines(report: dict[str, Any] | None) -> list[str]:
    """``guard explain``'s consent section, as text lines (none without a consent gate)."""
    if not report:
        return []
    artist, usage = report["artist"] or "-", report["usage"] or "not AI use"
    lines = [f"consent:  source {report['source']}, artist {artist}, usage {usage}"]
    if report.get("consents") is not None:
        lines.append(f"          the artist's consents: {report['consents'] or 'none (no AI use)'}")
    verdict = report.get("verdict")
    if verdict:
        lines.append(f"          consent applied: {report.get('consent') or 'none'}")
        lines.append(f"          licence: {report.get('licence') or '-'}")
        lines.append(f"          verdict: {verdict['status']} {verdict['outcome']} ({verdict['reason']})")
    return lines
