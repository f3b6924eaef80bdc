"""Who is asking: the User-Agent matched against the catalogue, and claims verified.

The catalogue match is cached per User-Agent string (bounded), so a returning browser
costs one dictionary lookup. The ``user-agents`` parser (browser, OS and device family)
is slow (hundreds of microseconds per new string) and is therefore never called on the
request path: :func:`describe_browser` serves ``guard explain`` and logs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from guard.catalogue import Agent, Catalogue
from guard.clientaddr import IPAddress
from guard.lru import LRU
from guard.verify import RangeVerifier

#: Longer User-Agent strings are matched on their first this-many characters.
MAX_UA_CHARS = 4096


@dataclass(frozen=True, slots=True)
class UAInfo:
    """What the User-Agent string alone says (cached per string)."""

    agent: Agent | None
    token: str | None
    ua_hash: str


@dataclass(frozen=True, slots=True)
class Identity:
    """The category a request is judged as, and how it got there."""

    category: str
    agent: Agent | None = None
    token: str | None = None
    ua_missing: bool = False
    ua_hash: str = "-"
    verified: bool | None = None  # None: the category's claims are not checked

    @property
    def claimed(self) -> str | None:
        """The category the User-Agent claims (differs from ``category`` when spoofed)."""
        return self.agent.category if self.agent else None


class Identifier:
    """Turns a User-Agent and an address into an :class:`Identity`."""

    def __init__(
        self,
        catalogue: Catalogue,
        verify_categories: frozenset[str] = frozenset(),
        verifier: RangeVerifier | None = None,
        cache_size: int = 16384,
    ) -> None:
        self.catalogue = catalogue
        self.verify_categories = verify_categories
        self.verifier = verifier or RangeVerifier()
        self._cache: LRU[str, UAInfo] = LRU(cache_size)

    def ua_info(self, user_agent: str) -> UAInfo:
        """Catalogue match and stable hash of a User-Agent string, cached."""
        info = self._cache.get(user_agent)
        if info is None:
            text = user_agent[:MAX_UA_CHARS]
            hit = self.catalogue.match(text)
            digest = hashlib.blake2b(user_agent.encode("utf-8", "surrogateescape"), digest_size=6).hexdigest()
            info = UAInfo(hit.agent if hit else None, hit.token if hit else None, digest)
            self._cache.put(user_agent, info)
        return info

    def identify(self, user_agent: str | None, address: IPAddress | None) -> Identity:
        """The identity of a request with this User-Agent from this address."""
        if not user_agent or not user_agent.strip():
            return Identity("unknown", ua_missing=True)
        info = self.ua_info(user_agent)
        agent = info.agent
        if agent is None:
            return Identity("unknown", ua_hash=info.ua_hash)
        if agent.category not in self.verify_categories:
            return Identity(agent.category, agent, info.token, ua_hash=info.ua_hash)
        if self.verifier.verify(agent.name, address):
            return Identity(agent.category, agent, info.token, ua_hash=info.ua_hash, verified=True)
        return Identity("spoofed", agent, info.token, ua_hash=info.ua_hash, verified=False)


@lru_cache(maxsize=4096)
def describe_browser(user_agent: str) -> str:
    """Browser, OS and device family, e.g. ``"Chrome 131 / Windows 10 / PC"`` (slow; cached)."""
    from user_agents import parse

    ua = parse(user_agent[:MAX_UA_CHARS])
    kind = "bot" if ua.is_bot else "mobile" if ua.is_mobile else "tablet" if ua.is_tablet else "PC"
    browser = f"{ua.browser.family} {ua.browser.version_string}".strip()
    os = f"{ua.os.family} {ua.os.version_string}".strip()
    return f"{browser} / {os} / {kind}"
