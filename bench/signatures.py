"""Web Bot Auth check cost: microseconds per signed request, by outcome.

Usage: python bench/signatures.py [--n 3000] [--out bench/results/signatures.json]
       [--baseline FILE]   (an older guard/identity/signatures.py to time the same requests with)

Requests are signed by the http-message-signatures library (tests/support.py). Only requests
that carry ``Signature-Input`` pay any of this; the others skip the check entirely.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import RFC_SEED, RFC_X, web_bot_auth  # noqa: E402

from guard.identity.signatures import SignatureVerifier, SignedRequest, Signer, ed25519_key  # noqa: E402

AGENT = "https://crawler.search.example"
NOW = 1_800_000_000.0


def cases() -> dict[str, dict[str, str]]:
    signed = web_bot_auth(NOW, agent=AGENT, key=RFC_SEED, nonce=None)
    return {
        "verified (draft form)": signed,
        "verified (legacy string form)": web_bot_auth(NOW, agent=AGENT, form="string"),
        "unknown directory (no crypto)": web_bot_auth(NOW, agent="https://unknown.example"),
        "forged, known key (full check)": {**signed, "signature": "sig1=:" + "A" * 86 + "==:"},
        "oversized headers": {**signed, "signature-input": "x" * 5000},
    }


def timed(check: Callable[[], object], n: int) -> float:
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            check()
        runs.append((time.perf_counter() - start) / n * 1e6)
    return round(statistics.median(runs), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "signatures.json"))
    parser.add_argument("--baseline", help="an older signatures.py to time on the legacy string form")
    args = parser.parse_args()

    parsed = ed25519_key({"kty": "OKP", "crv": "Ed25519", "x": RFC_X})
    assert parsed is not None
    verifier = SignatureVerifier({AGENT: Signer("Googlebot", dict([parsed]))})
    figures: dict[str, float] = {}
    results: dict[str, object] = {"date": time.strftime("%Y-%m-%d"), "requests": args.n, "us_per_check": figures}
    for name, headers in cases().items():
        request = SignedRequest([("host", "testserver"), *headers.items()], "GET", "testserver", "/", "")
        outcome = verifier.check(request, NOW)
        figures[name] = timed(lambda r=request: verifier.check(r, NOW), args.n)
        print(f"{name:34} {figures[name]:8.1f} us  ({outcome.outcome.value}: {outcome.reason[:40]})")
    if args.baseline:
        spec = importlib.util.spec_from_file_location("baseline_signatures", args.baseline)
        assert spec is not None and spec.loader is not None
        old = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = old  # its dataclasses look their module up
        spec.loader.exec_module(old)
        old_verifier = old.SignatureVerifier({AGENT: old.Signer("Googlebot", {parsed[0]: parsed[1].key})})
        legacy = cases()["verified (legacy string form)"]
        lines = {k: [v] for k, v in legacy.items()}
        check = old_verifier.verify(lines, method="GET", authority="testserver", path="/", query="", now=NOW)
        assert check.ok, check
        old_us = timed(
            lambda: old_verifier.verify(lines, method="GET", authority="testserver", path="/", query="", now=NOW),
            args.n,
        )
        results["baseline_us_verified_legacy_string_form"] = old_us
        print(f"{'baseline (hand-written), legacy':34} {old_us:8.1f} us")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
