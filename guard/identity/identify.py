"""Who is asking: the User-Agent matched against the catalogue, and claims verified.

The catalogue match is cached per User-Agent string (bounded in entries and in bytes), so
a returning browser costs one dictionary lookup. A User-Agent longer than
:data:`MAX_UA_CHARS` is padded: no browser sends one. It is named by its first and last
:data:`MAX_UA_CHARS` / 2 bytes if a catalogue token is there, and otherwise judged a bot
(``unknown_bot``) for the padding itself, whatever it hides in the middle: the work per
request stays bounded whatever the header's length, and hiding a name costs the scraper
more than showing it. The ``user-agents`` parser (browser, OS and device family)
is slow (hundreds of microseconds per new string) and is therefore never called on the
request path: :func:`describe_browser` serves ``guard explain`` and logs.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

from guard.identity.address import Client
from guard.identity.catalogue import Agent, Catalogue
from guard.identity.kinds import BROWSER, UNKNOWN_BOT, kind_of, plain_browser_platform
from guard.identity.ranges import RangeVerifier
from guard.identity.rdns import ReverseDNSVerifier
from guard.lru import SizedLRU

#: Longer User-Agent strings are padded (real browsers' are a few hundred bytes): matched
#: on their first and last halves of this many bytes, judged a bot unless named there, and
#: never cached.
MAX_UA_CHARS = 2048
#: Bytes of User-Agent strings the identity cache may hold (with an entry's own cost, below).
CACHE_BYTES = 8 << 20
ENTRY_BYTES = 200  # the string's header, the Identity and the table slot, roughly


@dataclass(slots=True)
class Identity:
    """The category a request is judged as, and how it got there. Treat as read-only."""

    category: str
    agent: Agent | None = None
    token: str | None = None
    ua_missing: bool = False
    ua_hash: str = "-"
    verified: bool | None = None  # None: the claim was not (or not yet) checked
    evidence: str | None = None  # how the claim was checked: "ip ranges", "reverse dns", ...

    @property
    def claimed(self) -> str | None:
        """The category the User-Agent claims (differs from ``category`` when spoofed)."""
        return self.agent.category if self.agent else None


MISSING_UA = Identity("unknown", ua_missing=True)


class Identifier:
    """Turns a User-Agent and an address into an :class:`Identity`."""

    def __init__(
        self,
        catalogue: Catalogue,
        verify_categories: frozenset[str] = frozenset(),
        verifier: RangeVerifier | None = None,
        cache_size: int = 16384,
        rdns: ReverseDNSVerifier | None = None,
        pending: str = "verifying",
    ) -> None:
        self.catalogue = catalogue
        self.verify_categories = verify_categories
        self.verifier = verifier or RangeVerifier()
        self.rdns = rdns
        self.pending = pending
        self._cache: SizedLRU[str, Identity] = SizedLRU(cache_size, CACHE_BYTES, ENTRY_BYTES)

    def from_user_agent(self, user_agent: str) -> Identity:
        """What the User-Agent string alone says (its claim, unverified), cached per string."""
        key = user_agent
        identity = self._cache.get(key)
        if identity is None:
            try:
                raw = user_agent.encode("latin-1")  # the header's bytes, as ASGI decoded them
            except UnicodeEncodeError:  # text from elsewhere (guard explain --ua): as a client sends it
                raw = user_agent.encode("utf-8")
                user_agent = raw.decode("latin-1")
            # A stable hash (the same in every process) to key per-browser counters.
            digest = format(zlib.crc32(raw), "08x")
            if len(raw) > MAX_UA_CHARS:
                return self._padded(raw, digest)
            platform = plain_browser_platform(user_agent)
            if platform is not None:  # a mainstream browser's string: a name can only hide in here
                hit = self.catalogue.lookup(platform.encode("latin-1"))[0]
                category = BROWSER
            else:
                hit, ua_words = self.catalogue.lookup(raw)
                # Not named: a browser by its structure, a bot by its own words, else a program.
                category = kind_of(user_agent, ua_words) if hit is None else ""
            if hit is None:
                identity = Identity(category, None, None, False, digest)
            else:
                identity = Identity(hit.agent.category, hit.agent, hit.token, ua_hash=digest)
            self._cache.put(key, identity)
        return identity

    def _padded(self, raw: bytes, digest: str) -> Identity:
        """A User-Agent longer than :data:`MAX_UA_CHARS`: named by its ends, else a bot (not cached)."""
        half = MAX_UA_CHARS // 2
        hit = self.catalogue.lookup(raw[:half] + b" " + raw[-half:])[0]
        if hit is None:
            return Identity(UNKNOWN_BOT, None, None, False, digest)
        return Identity(hit.agent.category, hit.agent, hit.token, ua_hash=digest)

    def identify(self, user_agent: str | None, client: Client) -> Identity:
        """The identity of a request with this User-Agent from this client.

        A claim of a verifiable category is checked against the operator's published
        ranges, or else by forward-confirmed reverse DNS: confirmed, it stands
        (``verified=True``); refuted, the request is ``spoofed``. While a DNS check runs the
        request is judged as the ``pending`` category; with nothing to check against, the
        claim earns nothing and the request is ``unknown`` (counted like any visitor).
        """
        if not user_agent or user_agent.isspace():
            return MISSING_UA
        claim = self.from_user_agent(user_agent)
        agent = claim.agent
        if agent is None or claim.category not in self.verify_categories:
            return claim
        verified = self.verifier.verify(agent.name, client)
        evidence = "ip ranges"
        if verified is None and self.rdns is not None and agent.verification and agent.verification.rdns_suffixes:
            verified = self.rdns.verify(agent, client)
            evidence = "reverse dns"
            if verified is None:  # the first request while the lookup runs
                category = self.pending
                return Identity(category, agent, claim.token, ua_hash=claim.ua_hash, evidence="reverse dns pending")
        if verified is None:
            return Identity("unknown", agent, claim.token, ua_hash=claim.ua_hash, evidence="nothing to check against")
        category = claim.category if verified else "spoofed"
        return Identity(category, agent, claim.token, ua_hash=claim.ua_hash, verified=verified, evidence=evidence)


def describe_browser(user_agent: str) -> str:
    """Browser, OS and device family, e.g. ``"Chrome 131 / Windows 10 / PC"`` (slow; cached)."""
    return _describe_browser(user_agent[:MAX_UA_CHARS])  # cached on a bounded key


@lru_cache(maxsize=4096)
def _describe_browser(user_agent: str) -> str:
    from user_agents import parse

    ua = parse(user_agent)
    kind = "bot" if ua.is_bot else "mobile" if ua.is_mobile else "tablet" if ua.is_tablet else "PC"
    browser = f"{ua.browser.family} {ua.browser.version_string}".strip()
    os = f"{ua.os.family} {ua.os.version_string}".strip()
    return f"{browser} / {os} / {kind}"
