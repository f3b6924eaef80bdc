"""Sessions on the request path: what the middleware asks and what it sends back.

The middleware calls :meth:`Sessions.read` before the rules are consulted (the session
goes into the request's facts), :meth:`Sessions.cookie` after an allowed request (a
new or updated token rides on the response), :meth:`Sessions.refusal` when the decision
is a challenge, and :meth:`Sessions.answer` for the challenge's own URL.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import quote

from starlette.types import Scope

from guard.headers import request_headers
from guard.identity.address import Client
from guard.policy.engine import Decision, Facts, Guard
from guard.policy.limits import Check, RateLimit
from guard.sessions.challenge import Challenges
from guard.sessions.gate import Reading, SessionGate
from guard.sessions.settings import SessionSettings
from guard.sessions.tokens import SessionKeys

log = logging.getLogger("guard")
HTML = b"text/html; charset=utf-8"
TEXT = b"text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Reply:
    """A response the guard answers with itself."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    content_type: bytes = TEXT


def load_keys(settings: SessionSettings) -> SessionKeys:
    """The signing keys: the rules' key file, else the environment, else a random key for this process."""
    if settings.key_file:
        return SessionKeys.from_file(settings.key_file)
    keys = SessionKeys.from_env(settings.key_env)
    if keys is None:
        log.warning(
            "guard: no session key in $%s: using a random key; sessions end when this process does "
            "and are not shared with other processes",
            settings.key_env,
        )
        keys = SessionKeys.generate()
    return keys


class Sessions:
    """Session cookies, signed URLs and challenges for one policy."""

    def __init__(self, settings: SessionSettings, keys: SessionKeys, follow: bool = True) -> None:
        self.settings = settings
        self.keys = keys
        self.gate = SessionGate(settings, keys, follow)  # follow: see SessionGate
        self.challenges = Challenges(settings.challenge, keys)

    def read(
        self,
        scope: Scope,
        client: Client,
        user_agent: str | None,
        now: float,
        headers: Mapping[bytes, bytes] | None = None,
    ) -> Reading:
        """The session a request carries (cookie or signed URL), checked against its client.

        ``headers``: the scope's headers as :func:`guard.headers.request_headers` reads them,
        when the caller already has them (else they are read here)."""
        request = self.gate.request(scope, headers if headers is not None else request_headers(scope))
        query = scope.get("query_string")
        path = scope.get("path", "") or "/"
        return self.gate.read(request, client, user_agent, path, query.decode("latin-1") if query else "", now)

    def respond(
        self, reading: Reading, decision: Decision, facts: Facts, shadow: bool = False
    ) -> tuple[list[tuple[bytes, bytes]], Reply | None]:
        """What the response needs: a Set-Cookie header (allowed) or the challenge's reply."""
        if decision.action == "allow" or shadow:
            return self.cookie(reading, decision, facts.where.group), None
        if decision.action == "challenge":
            return [], self.refusal(reading, decision, facts.path, facts.query, facts.client.key)
        return [], None

    def cookie(self, reading: Reading, decision: Decision, group: str) -> list[tuple[bytes, bytes]]:
        """The Set-Cookie header for an allowed response, when its session is new or changed."""
        request, now = reading.request, reading.now
        session = self.gate.outgoing(reading, decision.mint, group, request.navigation, now)
        if session is None:
            return []
        return [(b"set-cookie", self.gate.set_cookie(session, request.https, now))]

    def refusal(self, reading: Reading, decision: Decision, path: str, query: str, address: str = "") -> Reply:
        """The answer to a ``challenge`` decision: the interstitial for a page load, else 401 or 429.

        ``address``: the client's (its counting key), for the limit on challenges outstanding."""
        why = reading.problem or decision.reason or "a session is required"
        if reading.request.navigation:
            here = path + ("?" + query if query else "")
            wait = self.challenges.admit(address or reading.tag, reading.tag, reading.now)
            if wait:  # too many challenges outstanding here: come back when one has run out
                return self._wait_more(here, wait)
            token = self.challenges.issue(reading, reading.now)
            body = self.challenges.page(token, here)
            reason = f"challenge: {why}"[:300].encode("latin-1", "replace")  # the page's body is HTML
            return Reply(403, body, ((b"x-guard-challenge", b"proof-of-work"), (b"x-guard-reason", reason)), HTML)
        if decision.retry_after is not None:  # a challenge over a soft limit: slow down
            text = f"429 Too Many Requests: {why}; open this site's page in a browser to continue.\n"
            return Reply(429, text.encode(), ((b"retry-after", (decision.retry_after_header or "1").encode()),))
        text = f"401 Unauthorized: {why}; {self.settings.how_to}.\n"
        return Reply(401, text.encode(), ((b"www-authenticate", b'Cookie realm="guard"'),))

    async def answer(self, guard: Guard, scope: Scope) -> Reply:
        """The challenge URL: check the answer, spend its nonce, and set the proven session."""
        client = guard.resolver.resolve(scope)
        user_agent = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"user-agent"), None)
        now = guard.clock()
        query = scope.get("query_string", b"").decode("latin-1")
        reading = self.read(scope, client, user_agent, now)
        request = reading.request
        answer = self.challenges.check(query, reading, now)
        if answer.problem is not None or answer.nonce is None:
            return _retry(f"403 Forbidden: {answer.problem}", answer.next)
        checks = [guard.once_check(client, answer.nonce, self.settings.challenge.ttl)]
        if answer.waited:  # first: a network's waits are redeemed a few at once, then one per wait
            checks.insert(0, self._wait_check(guard, client, reading, answer.waited))
        if reading.session is None:
            checks += guard.mint_checks(client)
        verdict = await guard.store.apply(now, checks)
        if answer.waited and verdict.denied == 0:  # the network's waits are taken: this answer, again later
            return self._wait_more(self.settings.challenge.path + "?" + query, max(1.0, verdict.retry_after or 1.0))
        if verdict.denied is not None:
            return _retry("403 Forbidden: this challenge was already answered", answer.next)
        if verdict.shadowed:
            text = "429 Too Many Requests: too many new sessions from this network; try again later.\n"
            return Reply(429, text.encode(), ((b"retry-after", b"60"),))
        session = reading.session or self.gate.codec.new(now, reading.platform, reading.family, reading.tag)
        session = replace(session, state="page", proven_until=float(int(now + self.settings.challenge.proof_ttl)))
        headers = (
            (b"location", quote(answer.next, safe="/?&=%:@!$'()*+,;~-._").encode("ascii")),
            (b"set-cookie", self.gate.set_cookie(session, request.https, now)),
        )
        return Reply(303, b"", headers)

    def _wait_more(self, url: str, wait: float) -> Reply:
        """429 with ``Retry-After``, and a page that asks for ``url`` again by itself then."""
        body = self.challenges.wait_more(url, wait)
        return Reply(429, body, ((b"retry-after", str(int(wait + 0.999)).encode()),), HTML)

    def _wait_check(self, guard: Guard, client: Client, reading: Reading, waited: float) -> Check:
        """The no-JavaScript answers of the client's network: ``waits_at_once`` at once, then one per ``waited``."""
        key = f"{guard.namespace}:{{{client.tag}}}:waits:{reading.tag}"  # the hash tag of the request's other keys
        return Check(key, RateLimit(1, waited, self.settings.challenge.waits_at_once))


def _retry(first_line: str, next_path: str) -> Reply:
    """A refused answer: one line, and a link back to where the visitor was going."""
    text = f"{first_line}. Go back to {next_path} to get a new challenge.\n"
    return Reply(403, text.encode())
