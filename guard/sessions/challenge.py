"""The challenge: a proof-of-work interstitial that sets or upgrades the session.

The page carries a signed challenge token (a random nonce, the time, the difficulty, and
the client it was issued to: network, platform family and session id). The browser
finds a counter such that SHA-256(``token:counter``) starts with ``difficulty`` zero
bits and navigates to the answer URL; the server checks it with one hash. Without
JavaScript, a meta refresh asks for the same URL with ``wait=1`` after the configured
delay, which the server checks against the time in the token.

Why a scraper gains little from cheating:

* precomputing: the nonce is the server's, random, and only valid for ``ttl`` seconds;
* replaying an answer: each nonce is accepted once (a single-use entry in the store);
* solving on one machine for a farm: the token names the network, platform and session
  it was issued to, and the answer is refused anywhere else;
* solving many: each answer mints at most one session, and minting is limited per
  address and per subnet;
* waiting instead of hashing: the wait doubles with each bit of difficulty above 16 (as
  the hashing does), and one network redeems at most ``waits_at_once`` waits at once, then
  one per wait: waiting out many in parallel gains nothing (the service checks this);
* asking for many: each process keeps at most ``open_per_address`` and
  ``open_per_network`` challenges outstanding (issued within ``ttl``).
"""

from __future__ import annotations

import hashlib
import html
import json
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, quote

from itsdangerous import BadSignature

from guard.policy.limits import Check, DistinctLimit
from guard.sessions.gate import Reading
from guard.sessions.settings import ChallengeSettings
from guard.sessions.tokens import MAX_TOKEN, SessionKeys
from guard.stores.memory import MemoryStore

MAX_COUNTER = 20  # digits of an answer's counter
MAX_DIFFICULTY = 32
BASE_BITS = 16  # the difficulty the configured wait is the price of


@dataclass(frozen=True, slots=True)
class Answer:
    """A checked answer: the nonce to spend, or why it was refused."""

    nonce: str | None
    problem: str | None
    next: str
    waited: float = 0.0  # a no-JavaScript answer: the wait it stood for (seconds); 0: proof of work


def leading_zero_bits(digest: bytes) -> int:
    """How many zero bits ``digest`` starts with."""
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def solves(token: str, counter: str, difficulty: int) -> bool:
    """Whether SHA-256(``token:counter``) starts with ``difficulty`` zero bits."""
    digest = hashlib.sha256(f"{token}:{counter}".encode("ascii")).digest()
    return leading_zero_bits(digest[:8]) >= difficulty


def safe_next(value: str | None) -> str:
    """A local path to return to (never another site: no scheme, no ``//host``)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or len(value) > 2048:
        return "/"
    if any(ord(ch) < 0x21 for ch in value):
        return "/"
    return value


class Challenges:
    """Issues challenge tokens and checks answers (no I/O: spending a nonce is the store's)."""

    def __init__(self, settings: ChallengeSettings, keys: SessionKeys) -> None:
        self.settings = settings
        self._signer = keys.signer("guard.challenge")
        self._open = MemoryStore(max_entries=20_000)  # challenges outstanding, in this process
        self._issued = 0

    def wait_for(self, bits: int) -> float:
        """The no-JavaScript wait for a challenge of ``bits``: ``wait`` up to 16 bits, doubling
        with each bit above (as the hashing does)."""
        return self.settings.wait * 2 ** max(0, bits - BASE_BITS)

    def admit(self, address: str, network: str, now: float) -> float:
        """Count one more challenge outstanding for ``address`` and ``network``: 0.0 when it may
        be issued, else the seconds until one of theirs runs out."""
        s = self.settings
        self._issued += 1
        item = str(self._issued)
        checks = [
            Check(f"address:{address}", DistinctLimit("challenge", s.open_per_address, s.ttl), item),
            Check(f"network:{network}", DistinctLimit("challenge", s.open_per_network, s.ttl), item),
        ]
        verdict = self._open.apply_sync(now, checks)
        return 0.0 if verdict.denied is None else max(1.0, verdict.retry_after or 1.0)

    def issue(self, reading: Reading, now: float, difficulty: int | None = None) -> str:
        """A new challenge token for the client of ``reading``."""
        bits = self.settings.difficulty if difficulty is None else difficulty
        sid = reading.session.id if reading.session is not None else "-"
        nonce = secrets.token_urlsafe(12)
        payload = f"1~{nonce}~{int(now)}~{bits}~{reading.tag}~{reading.platform}~{sid}"
        return self._signer.sign(payload).decode("ascii")

    def check(self, query: str, reading: Reading, now: float) -> Answer:
        """Check the answer in a challenge URL's query string against the client sending it."""
        params = {k: v[0] for k, v in parse_qs(query, max_num_fields=8).items() if v}
        nxt = safe_next(params.get("next"))
        token = params.get("t", "")
        if not token or len(token) > MAX_TOKEN:
            return Answer(None, "no challenge to answer", nxt)
        try:
            payload = self._signer.unsign(token).decode("ascii")
        except (BadSignature, UnicodeDecodeError, ValueError):
            return Answer(None, "not a challenge of this site", nxt)
        fields = payload.split("~")
        if len(fields) != 7 or fields[0] != "1":
            return Answer(None, "not a challenge of this site", nxt)
        _, nonce, issued_text, bits_text, tag, platform, sid = fields
        issued, bits = int(issued_text), int(bits_text)
        if now - issued > self.settings.ttl or issued > now + 5:
            return Answer(None, "the challenge has expired", nxt)
        if tag != reading.tag or platform != reading.platform:
            return Answer(None, "the challenge was issued to another client", nxt)
        if sid != "-" and (reading.session is None or reading.session.id != sid):
            return Answer(None, "the challenge was issued to another session", nxt)
        counter = params.get("n")
        if counter is not None:
            digits = counter.isascii() and counter.isdigit()  # not "٣" or "²", which isdigit() takes
            if len(counter) > MAX_COUNTER or not digits or not solves(token, counter, bits):
                return Answer(None, "the proof of work is wrong", nxt)
        elif params.get("wait") == "1" and self.settings.wait > 0:
            if now - issued < self.wait_for(bits):
                return Answer(None, "answered before the wait was over", nxt)
            return Answer(nonce, None, nxt, self.wait_for(bits))
        else:
            return Answer(None, "no answer given", nxt)
        return Answer(nonce, None, nxt)

    def page(self, token: str, next_path: str, difficulty: int | None = None) -> bytes:
        """The interstitial HTML: solve in the browser, or wait and follow the meta refresh."""
        s = self.settings
        bits = s.difficulty if difficulty is None else difficulty
        base = f"{s.path}?t={quote(token, safe='')}&next={quote(next_path, safe='')}"
        refresh = note = ""
        if s.wait > 0:
            wait = int(self.wait_for(bits) + 0.999)
            url = html.escape(f"{base}&wait=1")
            refresh = f'<noscript><meta http-equiv="refresh" content="{wait};url={url}"></noscript>'
            note = f"<noscript><p>Without JavaScript this page goes on by itself in {wait} seconds.</p></noscript>"
        config = json.dumps({"base": base, "token": token, "bits": bits}).replace("<", "\\u003c")
        page = PAGE.replace("{refresh}", refresh).replace("{note}", note)
        return page.replace("{config}", config).encode("utf-8")

    def wait_more(self, url: str, seconds: float) -> bytes:
        """The page for a no-JavaScript answer its network must wait longer for: it comes back by itself."""
        wait = int(seconds + 0.999)
        target = html.escape(url)
        return WAIT_PAGE.replace("{wait}", str(wait)).replace("{url}", target).encode("utf-8")


# Too many of a network's visitors are waiting at once: this page asks again by itself.
WAIT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta http-equiv="refresh" content="{wait};url={url}">
<title>One moment</title></head><body><h1>One moment</h1>
<p role="status">Many visitors from your network are being checked right now. This page goes on by
itself in {wait} seconds (or <a href="{url}">try again then</a>).</p>
</body></html>
"""

# The interstitial. Plain JavaScript SHA-256 (crypto.subtle is missing outside secure
# contexts), a few hundred thousand hashes a second: difficulty 16 takes a moment.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>One moment</title>{refresh}
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:32em;margin:4em auto;padding:0 1em}</style>
</head><body><h1>One moment</h1>
<p id="status" role="status">Checking your browser before the music starts.</p>{note}
<script>
(function () {
  "use strict";
  var C = {config};
  var K = new Uint32Array([
    0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,
    0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,
    0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,
    0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,
    0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,
    0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,
    0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,
    0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2]);
  var W = new Uint32Array(64);
  function first64(text) {  // the first two words of SHA-256(text), text in ASCII
    var n = text.length, size = ((n + 9 + 63) >> 6) << 6, m = new Uint8Array(size), i, o;
    for (i = 0; i < n; i++) m[i] = text.charCodeAt(i);
    m[n] = 0x80;
    var bits = n * 8;
    m[size - 4] = bits >>> 24; m[size - 3] = bits >>> 16; m[size - 2] = bits >>> 8; m[size - 1] = bits;
    var h0 = 0x6a09e667, h1 = 0xbb67ae85, h2 = 0x3c6ef372, h3 = 0xa54ff53a,
        h4 = 0x510e527f, h5 = 0x9b05688c, h6 = 0x1f83d9ab, h7 = 0x5be0cd19;
    for (o = 0; o < size; o += 64) {
      for (i = 0; i < 16; i++) {
        W[i] = (m[o + 4 * i] << 24) | (m[o + 4 * i + 1] << 16) | (m[o + 4 * i + 2] << 8) | m[o + 4 * i + 3];
      }
      for (i = 16; i < 64; i++) {
        var x = W[i - 15], y = W[i - 2];
        var s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
        var s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
        W[i] = (W[i - 16] + s0 + W[i - 7] + s1) | 0;
      }
      var a = h0, b = h1, c = h2, d = h3, e = h4, f = h5, g = h6, h = h7;
      for (i = 0; i < 64; i++) {
        var S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
        var t1 = (h + S1 + ((e & f) ^ (~e & g)) + K[i] + W[i]) | 0;
        var S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
        var t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
        h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      h0 = (h0 + a) | 0; h1 = (h1 + b) | 0; h2 = (h2 + c) | 0; h3 = (h3 + d) | 0;
      h4 = (h4 + e) | 0; h5 = (h5 + f) | 0; h6 = (h6 + g) | 0; h7 = (h7 + h) | 0;
    }
    return [h0 >>> 0, h1 >>> 0];
  }
  function zeros(words) {
    return words[0] === 0 ? 32 + Math.clz32(words[1]) : Math.clz32(words[0]);
  }
  window.guardSha256First64 = first64;
  var counter = 0, prefix = C.token + ":";
  function work() {
    var stop = counter + 20000;
    for (; counter < stop; counter++) {
      if (zeros(first64(prefix + counter)) >= C.bits) {
        document.getElementById("status").textContent = "Done.";
        location.replace(C.base + "&n=" + counter);
        return;
      }
    }
    setTimeout(work, 0);
  }
  work();
})();
</script>
</body></html>
"""
