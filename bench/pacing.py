"""Cost of playback pacing and Private Access Tokens, and what a fresh identity per track pays.

Usage: python bench/pacing.py [--save | --out FILE]

1. Microseconds per audio request through GuardMiddleware (in process, the shipped rules,
   sessions off, a 256 KiB body of 64 KiB chunks as the demo sends it) with pacing off and on.
   The pacer's wait is not slept here (the body's pieces are still split and budgeted): the
   figure is the CPU the pacing code adds, not the wait it imposes.
2. Microseconds to verify one type 0x0002 token (RSA-2048, PSS, SHA-384).
3. Seconds of connection a fresh identity pays per track at the shipped pace, for tracks of
   2 to 6 minutes, and what 100,000 tracks a day then cost in connections held all day.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import os
import struct
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import saving  # bench/saving.py: --save and --out

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guard.middleware import GuardMiddleware  # noqa: E402
from guard.pacing import Pacer  # noqa: E402
from guard.policy.rules import load_rules  # noqa: E402
from guard.privatetoken import PSS, PrivateTokens, TokenSettings, issuer  # noqa: E402
from guard.testing import http_scope  # noqa: E402

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
BODY = [bytes(65536)] * 4


async def audio_app(scope, receive, send) -> None:
    size = sum(map(len, BODY))
    headers = [(b"content-type", b"audio/mpeg"), (b"content-length", str(size).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i, chunk in enumerate(BODY):
        await send({"type": "http.response.body", "body": chunk, "more_body": i < len(BODY) - 1})


async def no_wait(seconds: float) -> None:
    return None


def per_request(paced: bool, n: int) -> float:
    """Microseconds per audio request, the best of 3 runs of n (a shared machine's noise only adds)."""
    rules = Path(tempfile.mkdtemp()) / "bench.yaml"
    rules.write_text(f"version: 1\nextends: {ROOT / 'rules' / 'default.yaml'}\nsessions: null\nrules: []\n")
    policy = load_rules(rules)
    if not paced:
        policy = replace(policy, pacing=None)
    middleware = GuardMiddleware(audio_app, policy, reload_interval=0)
    middleware.pacer = Pacer(sleep=no_wait)

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def sink(message: dict) -> None:
        return None

    async def run(first: int) -> float:
        scopes = [
            http_scope(
                f"/tracks/{i % 1000 + 1}/stream", f"198.18.{i >> 8}.{i & 255}", [(b"user-agent", CHROME.encode())]
            )
            for i in range(first, first + n)
        ]
        start = time.perf_counter()
        for scope in scopes:
            await middleware(scope, receive, sink)
        return (time.perf_counter() - start) / n * 1e6

    asyncio.run(run(60_000))  # warm-up, on addresses the runs do not use
    return min(asyncio.run(run(run_number * n)) for run_number in range(3))


def pacing_code_us(n: int, past_budget: bool) -> float:
    """Microseconds of pacing code per 256 KiB response (4 messages): of a new session each time
    (within its budget: the messages pass whole), or of one session past its budget (split into
    pieces, each budgeted; the wait itself not slept)."""
    from guard.pacing import _PacedSend

    settings = load_rules(ROOT / "rules" / "default.yaml").pacing
    assert settings is not None
    pacer = Pacer(sleep=no_wait)
    fresh = itertools.count()
    start_message = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"262144")]}
    bodies = [{"type": "http.response.body", "body": c, "more_body": i < 3} for i, c in enumerate(BODY)]

    async def sink(message: dict) -> None:
        return None

    async def run() -> float:
        start = time.perf_counter()
        for _ in range(n):
            paced = _PacedSend(pacer, sink, settings, "s:one" if past_budget else f"s:{next(fresh)}")
            await paced(start_message)
            for body in bodies:
                await paced(body)
        return (time.perf_counter() - start) / n * 1e6

    result = min(asyncio.run(run()) for _ in range(5))
    assert (pacer.stats.waits > 0) is past_budget
    return result


def token_verify_us(n: int) -> float:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    import base64

    accepted = issuer("issuer.test", base64.urlsafe_b64encode(spki).decode())
    tokens = PrivateTokens(TokenSettings((accepted,), frozenset({"audio"}), origin="music.test"), max_nonces=n + 10)
    challenge = tokens.challenges(1000.0)[0][1]
    headers = []
    for _ in range(n):
        token_input = struct.pack("!H", 2) + os.urandom(32) + hashlib.sha256(challenge).digest() + accepted.key_id
        token = token_input + key.sign(token_input, PSS, hashes.SHA384())
        headers.append(b'PrivateToken token="' + base64.urlsafe_b64encode(token) + b'"')
    start = time.perf_counter()
    assert all(tokens.verify(h, 1000.0) for h in headers)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    saving.add_options(parser, "pacing")
    args = parser.parse_args()

    shipped = load_rules(ROOT / "rules" / "default.yaml").pacing
    assert shipped is not None
    off, on = min(per_request(False, args.n) for _ in range(2)), min(per_request(True, args.n) for _ in range(2))
    verify = token_verify_us(min(args.n, 2000))
    pays = {
        f"{minutes} min": round(max(0.0, minutes * 60 - shipped.buffer) / shipped.multiple, 1)
        for minutes in range(2, 7)
    }
    typical = max(0.0, 210 - shipped.buffer) / shipped.multiple  # a 3.5-minute track
    report = {
        "python": sys.version.split()[0],
        "requests": args.n,
        "body": "256 KiB in 4 chunks, 320 kbps (no duration header); one client address per request",
        "us_per_audio_request_pacing_off": round(off, 1),
        "us_per_audio_request_pacing_on": round(on, 1),
        "us_added_by_pacing_within_budget": round(on - off, 1),
        "us_of_pacing_code_per_response_within_budget": round(pacing_code_us(args.n, False), 1),
        "us_of_pacing_code_per_response_past_budget": round(pacing_code_us(args.n, True), 1),
        "us_per_token_verification": round(verify, 1),
        "multiple": shipped.multiple,
        "buffer_s": shipped.buffer,
        "seconds_of_connection_per_fresh_identity_track": pays,
        "connections_held_all_day_for_100000_tracks_of_3_5_min": round(100_000 * typical / 86400, 1),
        "connection_hours_per_day_for_100000_tracks_of_3_5_min": round(100_000 * typical / 3600, 1),
    }
    for key, value in report.items():
        print(f"{key:>58}: {value}")
    saving.save(args, report)


if __name__ == "__main__":
    main()
