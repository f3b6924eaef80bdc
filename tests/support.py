"""Helpers shared by the tests: an injectable clock, UA data, in-process visitors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import httpx

from guard.sessions.challenge import solves
from guard.sessions.tokens import Session, platform_of
from guard.testing import free_port, http_scope, status_and_cookie, wait_for_http

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules" / "default.yaml"
DATA = Path(__file__).resolve().parent / "data"

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
GPTBOT = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)"


class FakeClock:
    """A clock the test moves by hand: no sleeping to wait out windows."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def browser_user_agents() -> list[str]:
    lines = (DATA / "browser_user_agents.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def device_session(ip: str, user_agent: str | None, *, state: str = "page", issued_at: float = 0.0) -> Session:
    """The session a device (one address and User-Agent) holds once its browser loaded a page.

    For tests that call the engine (``Guard.facts(..., session=...)``) with no middleware
    to issue one: the same device always gets the same session id, as a browser keeps its
    cookie, and two devices never share one.
    """
    sid = hashlib.blake2s(f"{ip} {user_agent}".encode(), digest_size=12).hexdigest()
    return Session(sid, issued_at, state, platform=platform_of(user_agent))


class Visitor:
    """Sends requests into an ASGI app as one client address (in process, no network).

    Like a browser, it keeps cookies (the session), and loads documents as navigations
    while audio and API calls are the page's own fetches. A listener's player lives on a
    page: audio asked for without a session cookie first loads the track's page, which
    issues one (``pages_first=False``: straight for the audio). ``cookies=False`` makes a
    client that keeps none.
    """

    def __init__(
        self, app, ip: str, user_agent: str | None = CHROME, *, cookies: bool = True, pages_first: bool = True
    ) -> None:
        self.app = app
        self.ip = ip
        self.user_agent = user_agent
        self.keeps_cookies = cookies
        self.pages_first = pages_first and cookies
        self.cookies = httpx.Cookies()
        self._transport = httpx.ASGITransport(app=app, client=(ip, 40000))

    async def get(
        self, path: str, headers: dict[str, str | bytes] | None = None, method: str = "GET"
    ) -> httpx.Response:
        if self.pages_first and "guard_session" not in self.cookies:
            page = player_page(path)
            if page is not None:
                await self._send(page, None, "GET")
        return await self._send(path, headers, method)

    async def _send(self, path: str, headers: dict[str, str | bytes] | None, method: str) -> httpx.Response:
        sent = {**fetch_headers(path), **(headers or {})}
        jar = self.cookies if self.keeps_cookies else None
        async with httpx.AsyncClient(transport=self._transport, base_url="http://testserver", cookies=jar) as client:
            request = client.build_request(method, path, headers=sent)
            if self.user_agent is None:
                del request.headers["user-agent"]
            elif "user-agent" not in {k.lower() for k in sent}:
                request.headers["user-agent"] = self.user_agent
            response = await client.send(request)
            if self.keeps_cookies:
                self.cookies = client.cookies
            return response


def player_page(path: str) -> str | None:
    """The page whose player fetches the audio at ``path`` (None: ``path`` is not audio)."""
    match = re.match(r"/tracks/([^/?]+)/stream", path)
    if match is not None:
        return f"/tracks/{match.group(1)}"
    return "/" if path.startswith("/audio/") else None


def browser_get(client: httpx.Client, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """GET ``path`` with a cookie-keeping ``client`` as a browser would: audio asked for without a
    session cookie first loads its player's page (a navigation), which issues the session."""
    if "guard_session" not in client.cookies:
        page = player_page(path)
        if page is not None:
            client.get(page, headers={**(headers or {}), **NAVIGATE})
    return client.get(path, headers=headers)


def solve_challenge(page: httpx.Response) -> str:
    """The answer URL of a challenge page, found the way the page's script finds it."""
    assert page.status_code == 403 and page.headers["x-guard-challenge"] == "proof-of-work", page.text[:300]
    match = re.search(r"var C = (\{.*?\});", page.text)
    assert match, page.text[:300]
    config = json.loads(match.group(1))
    counter = 0
    while not solves(config["token"], str(counter), config["bits"]):
        counter += 1
    return f"{config['base']}&n={counter}"


def fetch_headers(path: str) -> dict[str, str]:
    """What a browser says about a request: a document load, or the player's or a script's fetch."""
    if "/stream" in path or "/audio/" in path:
        return {"sec-fetch-mode": "no-cors", "sec-fetch-dest": "audio", "accept": "*/*"}
    if path.startswith("/api/"):
        return {"sec-fetch-mode": "cors", "sec-fetch-dest": "empty", "accept": "application/json"}
    return {"sec-fetch-mode": "navigate", "sec-fetch-dest": "document", "accept": "text/html,*/*;q=0.8"}


def run(coro):
    """Run a coroutine to completion (tests are plain functions; no plugin needed)."""
    return asyncio.run(coro)


class FakeResolver:
    """DNS answers from a table, instantly: tests never touch a real resolver."""

    def __init__(self, ptr: dict[str, str] | None = None, a: dict[str, list[str]] | None = None) -> None:
        self.ptr = ptr or {}
        self.a = a or {}
        self.questions: list[str] = []

    async def reverse(self, ip: str) -> str | None:
        self.questions.append(f"PTR {ip}")
        return self.ptr.get(ip)

    async def forward(self, host: str) -> list[str]:
        self.questions.append(f"A {host}")
        return self.a.get(host, [])


@contextmanager
def serving(app) -> Iterator[str]:
    """``app`` under uvicorn on a free loopback port, in a thread of this process (so the test
    keeps its clock and store); yields the base URL. Uvicorn's own proxy-header handling is
    off: the guard alone decides what a forwarded header means."""
    import threading

    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base + "/healthz")
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


NAVIGATE = {"sec-fetch-mode": "navigate", "accept": "text/html,application/xhtml+xml"}


class Site:
    """The guarded demo under uvicorn, and browsers that talk to it from any address."""

    def __init__(self, base: str, clock: FakeClock, app) -> None:
        self.base = base
        self.clock = clock
        self.app = app

    def browser(self, user_agent: str = CHROME, ip: str = "198.51.100.7") -> Browser:
        return Browser(self.base, user_agent, ip)


class Browser:
    """A cookie-keeping client at one address (sent as X-Forwarded-For)."""

    def __init__(self, base: str, user_agent: str, ip: str) -> None:
        self.client = httpx.Client(base_url=base, timeout=10)
        self.user_agent = user_agent
        self.ip = ip

    def get(
        self, path: str, user_agent: str | None = None, ip: str | None = None, params=None, **headers: str
    ) -> httpx.Response:
        sent = {"user-agent": user_agent or self.user_agent, "x-forwarded-for": ip or self.ip}
        sent.update({k.replace("_", "-"): v for k, v in headers.items()})
        return self.client.get(path, headers=sent, params=params)

    def page(self, path: str = "/tracks/7", **kwargs) -> httpx.Response:
        return self.get(path, **NAVIGATE, **kwargs)

    def audio(self, track: int = 7, **kwargs) -> httpx.Response:
        return self.get(f"/tracks/{track}/stream", range="bytes=0-1023", **kwargs)

    @property
    def token(self) -> str | None:
        return self.client.cookies.get("guard_session")


# -- Web Bot Auth: requests signed by the http-message-signatures library (not guard's code) --

#: RFC 9421 appendix B.1.4's Ed25519 key (test-key-ed25519): private seed and public x.
RFC_SEED = "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU"
RFC_X = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"


def web_bot_auth(
    created: float,
    *,
    authority: str = "testserver",
    agent: str | None = "https://crawler.search.example",
    form: str = "dictionary",
    key: str = RFC_SEED,
    keyid: str | None = None,
    lifetime: int = 300,
    label: str = "sig1",
    components: tuple[str, ...] = (),
    extra: dict[str, str] | None = None,
    nonce: str | None = None,
    method: str = "GET",
    path: str = "/",
) -> dict[str, str]:
    """Headers of a request signed the Web Bot Auth way by an independent RFC 9421 signer.

    ``form``: ``dictionary`` (draft-ietf-webbotauth-httpsig-protocol-01: the member keyed by
    the label is covered), ``string`` (the older bare-string Signature-Agent, covered whole),
    ``whole`` (a dictionary covered whole) or ``absent`` (no Signature-Agent at all).
    ``extra`` headers are sent and covered (``components`` adds more covered names).
    """
    import base64
    import datetime

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

    private = Ed25519PrivateKey.from_private_bytes(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)))
    if keyid is None:
        import hashlib
        import json

        x = base64.urlsafe_b64encode(private.public_key().public_bytes_raw()).rstrip(b"=").decode()
        canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
        keyid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    headers: dict[str, str] = {"host": authority, **(extra or {})}
    covered = ["@authority", *components, *(extra or {})]
    if form == "dictionary":
        headers["signature-agent"] = f'{label}="{agent}"'
        covered.append(f'"signature-agent";key="{label}"')
    elif form == "string":
        headers["signature-agent"] = f'"{agent}"'
        covered.append("signature-agent")
    elif form == "whole":
        headers["signature-agent"] = f'{label}="{agent}"'
        covered.append("signature-agent")

    class Message:
        def __init__(self) -> None:
            self.method, self.headers = method, headers
            self.url = f"https://{authority}{path}"

    message = Message()
    moment = datetime.datetime.fromtimestamp(created, tz=datetime.UTC)
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={keyid: private}),
    )
    signer.sign(
        message,
        key_id=keyid,
        created=moment,
        expires=moment + datetime.timedelta(seconds=lifetime),
        nonce=nonce,
        label=label,
        tag="web-bot-auth",
        covered_component_ids=covered,
    )
    out = {name.lower(): value for name, value in message.headers.items()}
    out.pop("host")
    return out


def corpus(name: str) -> list[str]:
    """The User-Agents of ``tests/data/corpora/<name>.txt`` (one a line, ``#`` comments)."""
    text = (DATA / "corpora" / f"{name}.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


class Walk(NamedTuple):
    """What one client got: its track page, the track's API record, and the audio with its cookie."""

    page: int
    api: int
    audio: int

    @property
    def served(self) -> bool:
        return self.page == 200 and self.api == 200 and self.audio in (200, 206)

    @property
    def refused_content(self) -> bool:
        """Refused the audio and the API: never a byte of either (403, 401, or 429 while a claim is checked)."""
        return self.api != 200 and self.audio not in (200, 206)


async def walk(app, user_agent: str, n: int) -> Walk:
    """Client ``n`` (an address of its own, in a /24 of its own) loads track ``n``'s page, then
    its API record, then its audio with the session cookie the page gave it, as a browser does."""
    ip = f"100.{64 + n % 50}.{n // 50 % 250 + 1}.{n // 12500 % 250 + 1}"
    track = n % 5000 + 1
    headers = [(b"host", b"music.example"), (b"user-agent", user_agent.encode("utf-8"))]
    page, cookie = await _call(app, http_scope(f"/tracks/{track}", ip, [*headers, *_NAVIGATE]))
    jar = [(b"cookie", cookie.split(b";", 1)[0])] if cookie else []
    api, _ = await _call(app, http_scope(f"/api/tracks/{track}", ip, [*headers, *_FETCH, *jar]))
    audio, _ = await _call(app, http_scope(f"/tracks/{track}/stream", ip, [*headers, *_MEDIA, *jar]))
    return Walk(page, api, audio)


_NAVIGATE = [(b"sec-fetch-mode", b"navigate"), (b"sec-fetch-dest", b"document"), (b"accept", b"text/html")]
_FETCH = [(b"sec-fetch-mode", b"cors"), (b"sec-fetch-dest", b"empty"), (b"accept", b"application/json")]
_MEDIA = [(b"sec-fetch-mode", b"no-cors"), (b"sec-fetch-dest", b"audio"), (b"range", b"bytes=0-1023")]


_call = status_and_cookie  # guard.testing's
