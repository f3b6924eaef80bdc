"""What the rules say about sessions and challenges, as the request path uses it."""

from __future__ import annotations

from dataclasses import dataclass, field

from guard.policy.limits import RateLimit


@dataclass(frozen=True, slots=True)
class CookieSettings:
    """The session cookie's name and attributes.

    ``secure`` is True, False or ``"auto"`` (Secure when the request came over https).
    ``same_site="None"`` (embedded players on other sites) implies Secure and, with
    ``partitioned``, CHIPS: the cookie lives in the embedding site's partition.
    """

    name: str = "guard_session"
    http_only: bool = True
    secure: bool | str = "auto"
    same_site: str = "Lax"
    partitioned: bool = False
    path: str = "/"


@dataclass(frozen=True, slots=True)
class ChallengeSettings:
    """The proof-of-work interstitial: how hard, how long it and its proof last."""

    difficulty: int = 16  # leading zero bits of SHA-256(token ":" counter)
    ttl: float = 300.0  # a challenge must be answered within this
    wait: float = 10.0  # the no-JavaScript fallback's server-checked delay (0: no fallback)
    proof_ttl: float = 86400.0  # a session stays proven this long
    path: str = "/.guard/challenge"
    # What the no-JavaScript path costs (docs/sessions.md): no-JavaScript answers one network
    # (the session's /24 or /48) may redeem at once; past them, one per wait of the difficulty.
    waits_at_once: int = 10
    # Challenges outstanding (issued within ``ttl``) per address and per network, in each process.
    open_per_address: int = 60
    open_per_network: int = 300


HOW_TO = "open this site's page in a browser to get a session, or a desktop player: use the page's .m3u link"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Which path groups issue sessions, which require one, and how sessions are bound."""

    issue: frozenset[str] = frozenset({"pages", "content_api"})
    require: frozenset[str] = frozenset({"audio"})
    ttl: float = 86400.0
    # A session past its ttl by less than this is renewed by its next request (a tab left
    # open overnight plays on); the cookie lives another grace after that (ttl + 2 x grace).
    grace: float = 7 * 86400.0
    ipv4_prefix: int = 24
    ipv6_prefix: int = 48
    # Minting is what rotation costs: new sessions per client address and per subnet.
    mint_per_address: RateLimit = field(default_factory=lambda: RateLimit(30, 3600.0, 30))
    mint_per_subnet: RateLimit = field(default_factory=lambda: RateLimit(300, 3600.0, 100))
    cookie: CookieSettings = field(default_factory=CookieSettings)
    challenge: ChallengeSettings = field(default_factory=ChallengeSettings)
    url_param: str = "guard_sig"  # the query parameter of signed stream URLs
    # The end of a 401 for audio without a session: how to get one (one line).
    how_to: str = HOW_TO
    key_env: str = "GUARD_SESSION_KEY"
    key_file: str | None = None
