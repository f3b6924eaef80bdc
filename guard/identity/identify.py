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

import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

from guard.identity.address import Client
from guard.identity.catalogue import GENERIC_CATEGORIES, Agent, Catalogue, Match, words
from guard.identity.crawlerlists import CRAWLER, PREVIEW
from guard.identity.kinds import (
    APP_WORDS,
    BROWSER,
    PADDED,
    UNKNOWN_BOT,
    UNKNOWN_PREVIEW,
    browser_platform_end,
    declares_bot,
    kind_of,
    plain_browser_platform,
    self_declared_name,
)
from guard.identity.lookalike import fold
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
    def agent_key(self) -> str:
        """Who a limit keyed ``agent`` counts: the catalogue agent's name, the name a
        self-declared bot gives, else the User-Agent string itself (its hash)."""
        if self.agent is not None:
            return "n:" + self.agent.name.lower()
        return "n:" + self.token if self.token else "ua:" + self.ua_hash

    @property
    def claimed(self) -> str | None:
        """The category the User-Agent claims (differs from ``category`` when spoofed)."""
        return self.agent.category if self.agent else None


MISSING_UA = Identity("unknown", ua_missing=True)
_SELF_DECLARED = frozenset({UNKNOWN_BOT, UNKNOWN_PREVIEW})


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
                if hit is not None and (
                    hit.agent.category in GENERIC_CATEGORIES or not stands(hit, user_agent, self.catalogue)
                ):
                    hit = None  # a device's name that folds to a tool's ("CURI LITE"): tools are not in here
                category = BROWSER
            else:
                hit, ua_words = self.catalogue.lookup(raw)
                if hit is not None and not stands(hit, user_agent, self.catalogue):
                    hit = None
                # Not named: a browser by its structure, a bot by its own words, else a program.
                category = kind_of(user_agent, ua_words) if hit is None else ""
            if hit is None:
                # A self-declared bot or previewer is counted under the name it gives (key: agent).
                named = self_declared_name(user_agent) or None if category in _SELF_DECLARED else None
                identity = Identity(category, None, named, False, digest)
            else:
                identity = Identity(hit.agent.category, hit.agent, hit.token, ua_hash=digest)
            self._cache.put(key, identity)
        return identity

    def _padded(self, raw: bytes, digest: str) -> Identity:
        """A User-Agent longer than :data:`MAX_UA_CHARS`: named by its ends, else a bot (not cached)."""
        half = MAX_UA_CHARS // 2
        hit = self.catalogue.lookup(raw[:half] + b" " + raw[-half:])[0]
        if hit is None:
            # Its own category: a self-declared bot's page budget is per name, and padding
            # names nothing, so a rule refuses it outright (no client sends such a string).
            return Identity(PADDED, None, None, False, digest)
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


# A device platform named the way apps do ("Android/6.0 Device/Meizu-M5_Note", "iPhone_OS/4.3.3").
_APP_PLATFORM = re.compile(r"\b(?:Android|iPhone_OS|iOS|Device|Darwin|CFNetwork|Electron)/", re.IGNORECASE)
# Listed categories whose names are also apps' names (Viber, Notion, Tumblr; Coc Coc's browser).
_APP_NAMED = frozenset({PREVIEW, CRAWLER})
# AI agents' names stand wherever they are (lookalike-proof), whatever the list they come from.
_AI = frozenset({"ai_training", "ai_search", "ai_assistant"})
# The first product of a User-Agent: its name up to a slash, a space or a comment.
_FIRST_PRODUCT = re.compile(r"\s*([^\s/;()]+)")
# Products that open browsers' strings, never an app's own name.
_BROWSER_LEADS = frozenset({"mozilla", "opera", "dalvik"})


def stands(hit: Match, user_agent: str, catalogue: Catalogue) -> bool:
    """Whether a catalogue hit names the sender, or is a word of a listener's browser or app.

    * ``leading`` names (Java, Ruby, Python, ...) only as the string's first product.
    * A curated previewer's name in an app's own string (``WhatsApp/2.17 Android/6.0
      Device/...``) is that app; its fetcher sends ``WhatsApp/2.19 A``.
    * A name from the public lists (not an AI agent's), unless the string declares itself
      automated: in a browser's platform comment it is a device's (``Nitro_5X``); after it,
      a previewer's or crawler's name with a version is an in-app browser (``Viber/11.9``),
      without one a fetcher; a monitor's or a tool's name stands; in an app's own string
      (``Android/``, ``CFNetwork/``, "podcast app") it is that app. Spelt with lookalikes on
      a browser string, such a name is not found there and the string is a visitor.
    * A generic library (okhttp, curl, ...) after the product of an app that the catalogue
      does not name is that app's engine (``DS podcast/1.0.5 (...) OkHttp/4.9.1``) when the
      string describes a platform (a ``;`` list, ``Android/``, app words); led by
      ``Mozilla/5.0`` or by a named tool, or after a bare product, it is the tool.
    * Anything else (every AI agent, search engine, curated crawler) stands wherever it is.
    """
    category = hit.agent.category
    if hit.agent.leading:
        return _leads(hit, user_agent, catalogue)
    if category == PREVIEW and not hit.agent.synced:
        # A curated previewer's name in an app's own string is that app.
        return _APP_PLATFORM.search(user_agent) is None or declares_bot(user_agent, [])
    if hit.agent.synced and category not in _AI:
        # A name from the public lists in a browser's or an app's string (a device called
        # "Nitro_5X", Amazon's Silk browser, "Viber/11.9" ending an in-app browser, the
        # Nextcloud app) is that browser or app unless the string declares itself automated.
        end = browser_platform_end(user_agent)
        if declares_bot(user_agent, [], end or 0):
            return True
        if end is not None:
            at = _find(hit.token, user_agent)
            if at is None or at[0] < end:
                return False  # in the platform comment: a device's name ("Nitro_5X", "MY807")
            if category in _APP_NAMED:
                # After the platform comment an in-app browser adds its app's versioned product
                # ("Viber/11.9", "coc_coc_browser/87"); a fetcher its bare name ("Google Favicon").
                return not at[1]
            return True  # a monitor's or a tool's product on a browser string: synthetic checks
        return _APP_PLATFORM.search(user_agent) is None and APP_WORDS.search(user_agent) is None
    if category in GENERIC_CATEGORIES:
        first = _FIRST_PRODUCT.match(user_agent)
        if first is None or first.group(1).lower() in _BROWSER_LEADS:
            return True
        # After an unnamed product a library is that app's engine only if the string describes
        # the app's platform, as apps do ("(be.standaard.audio; build:6; Android 10)"): a bare
        # "Listener/1.0 python-requests/2.32" is the tool with a word in front of it.
        return _leads(hit, user_agent, catalogue) or not _describes_platform(user_agent)
    return True


def _describes_platform(user_agent: str) -> bool:
    """Whether the User-Agent describes a device or platform, as an app's string does and a
    tool's does not: a ``;``-separated list (a platform comment "(x; y)", an updater's
    "Google Update/1.3;winhttp"), a platform product (``Android/``) or an app's own words."""
    return ";" in user_agent or _APP_PLATFORM.search(user_agent) is not None or APP_WORDS.search(user_agent) is not None


def _find(token: str, user_agent: str) -> tuple[int, bool] | None:
    """Where ``token`` is in the User-Agent (any separators, any case), and whether a version follows it."""
    spelt = r"\W*".join(re.escape(w) for w in re.findall(r"[A-Za-z0-9]+", token))
    found = re.search(spelt + r"(?P<version>[\w ]*/\d)?", user_agent, re.IGNORECASE)
    return None if found is None else (found.start(), found.group("version") is not None)


def _leads(hit: Match, user_agent: str, catalogue: Catalogue) -> bool:
    """Whether the User-Agent opens with a named product: the hit's own token, or another tool's."""
    token = words(hit.token)
    if tuple(w.decode() for w in fold(user_agent.encode("latin-1", "replace")).split()[: len(token)]) == token:
        return True
    first = _FIRST_PRODUCT.match(user_agent)
    lead = catalogue.match(first.group(1)) if first is not None else None
    return lead is not None and (lead.agent is hit.agent or not hit.agent.leading)


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
