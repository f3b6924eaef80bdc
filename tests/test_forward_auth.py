"""Forward-auth: guard as the auth service of a reverse proxy.

In process: the headers each proxy sets (nginx, Traefik/Caddy, Envoy), and who may ask.
Through a real nginx (Debian package; CI installs it): nginx on a loopback port in front of
a static audio upstream, with ``guard serve --forward-auth`` as its auth service and the
shipped snippet ``deploy/nginx/guard.conf`` included as the docs say.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from support import CHROME, GPTBOT, NAVIGATE, ROOT, RULES, FakeClock, free_port, run, solve_challenge, wait_for_http

from guard.forwardauth import AUTH_PATH, NGINX_PATH, ForwardAuth
from guard.stores.memory import MemoryStore

PROXY = "127.0.0.1"


def ask(app: ForwardAuth, headers: dict[str, str], path: str = NGINX_PATH, peer: str = PROXY) -> httpx.Response:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://guard") as client:
            return await client.get(path, headers=headers)

    return run(main())


@pytest.fixture
def auth(policy) -> ForwardAuth:
    return ForwardAuth(policy, trusted_proxies=["127.0.0.1/32"], clock=FakeClock())


def nginx_asks(uri: str, user_agent: str, client: str = "198.51.100.20", method: str = "GET") -> dict[str, str]:
    return {"x-original-uri": uri, "x-original-method": method, "x-forwarded-for": client, "user-agent": user_agent}


def session_cookie(answer: httpx.Response) -> dict[str, str]:
    """The Cookie header a browser sends after a page whose auth answer set the session (the
    proxy relays guard's Set-Cookie with the page)."""
    assert answer.status_code == 200 and answer.headers["set-cookie"].startswith("guard_session=")
    return {"cookie": answer.headers["set-cookie"].split(";", 1)[0]}


def test_nginx_subrequests_allow_a_browser_with_the_signals_and_deny_gptbot(auth) -> None:
    cookie = session_cookie(ask(auth, {**nginx_asks("/tracks/1", CHROME), **NAVIGATE}))  # the player's page
    allowed = ask(auth, {**nginx_asks("/tracks/1/stream", CHROME), **cookie})
    assert allowed.status_code == 200
    assert allowed.headers["content-usage"] == "train-ai=n"
    denied = ask(auth, nginx_asks("/tracks/1/stream", GPTBOT))
    assert denied.status_code == 403
    assert denied.headers["x-guard-status"] == "403"
    assert "ai-training" in denied.headers["x-guard-reason"] and "ai-training" in denied.text


def test_a_throttle_reaches_nginx_as_403_with_the_real_status_and_retry_after(auth) -> None:
    answers = [ask(auth, nginx_asks(f"/api/tracks/{t}", CHROME)) for t in range(1, 61)]
    assert {r.status_code for r in answers} == {200, 403}  # nginx would turn a 429 into a 500
    throttled = [r for r in answers if r.headers.get("x-guard-status") == "429"]
    assert throttled and all(int(r.headers["retry-after"]) >= 1 for r in throttled)


def test_traefik_and_caddy_headers_get_the_real_status(auth) -> None:
    def forwarded(t: int) -> dict[str, str]:
        return {
            "x-forwarded-method": "GET",
            "x-forwarded-uri": f"/api/tracks/{t}?page=1",
            "x-forwarded-host": "music.example",
            "x-forwarded-for": "198.51.100.21",
            "user-agent": CHROME,
        }

    statuses = [ask(auth, forwarded(t), path=AUTH_PATH).status_code for t in range(1, 61)]
    assert statuses[0] == 200 and 429 in statuses
    assert ask(auth, {**forwarded(1), "user-agent": GPTBOT}, path=AUTH_PATH).status_code == 403


def test_envoy_sends_the_original_path_after_the_prefix(auth) -> None:
    headers = {"x-forwarded-for": "198.51.100.22", "user-agent": GPTBOT}
    assert ask(auth, headers, path=AUTH_PATH + "/tracks/1/stream").status_code == 403
    browser = {**headers, "user-agent": CHROME}
    cookie = session_cookie(ask(auth, {**browser, **NAVIGATE}, path=AUTH_PATH + "/tracks/1"))  # the player's page
    assert ask(auth, {**browser, **cookie}, path=AUTH_PATH + "/tracks/1/stream").status_code == 200


def test_only_trusted_proxies_may_ask(auth) -> None:
    stranger = ask(auth, nginx_asks("/tracks/1/stream", CHROME), peer="203.0.113.5")
    assert stranger.status_code == 403 and stranger.headers["x-guard-reason"] == "not a trusted proxy"


def test_the_client_is_the_proxy_s_forwarded_address_not_one_the_scraper_adds(auth) -> None:
    # A scraper that adds its own X-Forwarded-For entries cannot spread over addresses:
    # guard walks from the right and the proxy's own entry (the real peer) comes last.
    answers = [
        ask(auth, nginx_asks(f"/api/tracks/{t}", CHROME, client=f"203.0.113.{t}, 198.51.100.23")) for t in range(1, 61)
    ]
    assert "429" in {r.headers.get("x-guard-status") for r in answers}


def test_the_directive_files_are_served_and_nothing_else(auth) -> None:
    robots = ask(auth, {}, path="/robots.txt", peer="203.0.113.9")
    assert robots.status_code == 200 and "User-agent: GPTBot" in robots.text
    assert ask(auth, {}, path="/tracks/1", peer=PROXY).status_code == 404


# -- hostile requests and guard's own errors -------------------------------------------------------


def test_a_path_beyond_latin_1_after_the_envoy_prefix_is_judged_not_a_500(auth) -> None:
    """Was: the decoded path was encoded as Latin-1 outside any error handling: 500, which
    Envoy (failure_mode_allow) took as "let it through"."""
    headers = {"x-forwarded-for": "198.51.100.30", "user-agent": GPTBOT}
    for path in ("/tracks/%D9%A5/stream", "/tracks/5/%E2%80%AEstream", "/%F0%9F%8E%B5", "/tracks/%FF/stream"):
        r = ask(auth, headers, path=AUTH_PATH + path)
        assert r.status_code == 403 and "ai-training" in r.headers["x-guard-reason"], path
    browser = {**headers, "user-agent": CHROME}
    assert ask(auth, browser, path=AUTH_PATH + "/tracks/%D9%A5/stream").status_code == 401  # audio: needs a session


def test_an_original_uri_that_is_no_path_is_refused_with_400_and_an_absolute_one_judged_by_its_path(auth) -> None:
    def asks(uri: str, user_agent: str = CHROME) -> dict[str, str]:
        return {
            "x-forwarded-uri": uri,
            "x-forwarded-method": "GET",
            "x-forwarded-for": "198.51.100.31",
            "user-agent": user_agent,
        }

    for uri in ("*", "tracks/1/stream", "", "ftp://music.example/tracks/1/stream"):
        r = ask(auth, asks(uri), path=AUTH_PATH)
        assert r.status_code == 400 and r.headers["x-guard-reason"] == "the original URI is not a path", uri
    nginx = ask(auth, nginx_asks("*", CHROME))
    assert nginx.status_code == 403 and nginx.headers["x-guard-status"] == "400"  # nginx relays 401 and 403 only
    # Was: "/" was put before it, and "/http://music.example/tracks/1/stream" is no audio path.
    absolute = ask(auth, asks("http://music.example/tracks/1/stream"), path=AUTH_PATH)
    assert absolute.status_code == 401  # judged as /tracks/1/stream: audio needs a session
    assert ask(auth, asks("HTTPS://music.example/tracks/1/stream", GPTBOT), path=AUTH_PATH).status_code == 403


class _Broken(MemoryStore):
    async def apply(self, now, checks):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")


def test_an_error_inside_guard_refuses_the_request(policy, caplog) -> None:
    """Forward-auth fails closed: a 200 here opens the site, and a 5xx opens it behind Envoy."""
    app = ForwardAuth(policy, trusted_proxies=["127.0.0.1/32"], clock=FakeClock(), store=_Broken())
    for path, headers in (
        (NGINX_PATH, nginx_asks("/api/tracks/1", CHROME)),
        (AUTH_PATH + "/api/tracks/1", {"user-agent": CHROME}),
    ):
        r = ask(app, headers, path=path)
        assert r.status_code == 403 and r.headers["x-guard-reason"] == "guard could not check this request", path
    assert "refusing it" in caplog.text


def test_an_error_inside_guard_allows_the_request_when_the_operator_chose_fail_open(policy) -> None:
    app = ForwardAuth(policy, trusted_proxies=["127.0.0.1/32"], clock=FakeClock(), store=_Broken(), fail_open=True)
    assert ask(app, nginx_asks("/api/tracks/1", CHROME)).status_code == 200
    assert ask(app, {"user-agent": CHROME}, path=AUTH_PATH + "/api/tracks/1").status_code == 200


def test_guard_serve_takes_fail_open_from_its_flag(monkeypatch) -> None:
    from guard.forwardauth import app_from_env

    monkeypatch.setenv("GUARD_FAIL_OPEN", "1")
    assert app_from_env().fail_open is True
    monkeypatch.setenv("GUARD_FAIL_OPEN", "")
    assert app_from_env().fail_open is False


# -- through a real nginx ---------------------------------------------------------------------------


def nginx_binary() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is not installed; scripts/test installs it (Debian package nginx)")
        pytest.skip("nginx is not installed (bash scripts/test installs it)")
    return path


NGINX_CONF = """\
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    default_type audio/mpeg;

    upstream guard {{ server 127.0.0.1:{guard}; keepalive 4; }}

    server {{  # the static audio upstream
        listen 127.0.0.1:{upstream};
        root {dir}/static;
    }}

    server {{  # the site: nginx in front, guard as its auth service
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
        }}
        include {snippet};
    }}
}}
"""


def guard_serve(port: int, folder: Path) -> subprocess.Popen:
    """``guard serve --forward-auth`` on ``port``, trusting the proxy on loopback; its log in ``folder``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    serve = ["serve", "--forward-auth", "--port", str(port), "--rules", str(RULES), "--trusted-proxy", PROXY]
    return subprocess.Popen(
        [sys.executable, "-m", "guard.ops.cli", *serve, "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "guard.log").open("w"),
        env=env,
    )


def guard_log(folder: Path) -> str:
    return (folder / "guard.log").read_text(errors="replace")


@contextmanager
def nginx_in_front_of_guard(folder: Path) -> Iterator[tuple[str, str, bytes, subprocess.Popen]]:
    """nginx on a free loopback port, guard serve --forward-auth behind it; yields (site URL, guard URL, audio)."""
    binary = nginx_binary()
    audio = bytes(range(256)) * 400
    (folder / "static" / "tracks" / "1").mkdir(parents=True)
    (folder / "static" / "tracks" / "1" / "stream").write_bytes(audio)
    guard_port, upstream, port = free_port(), free_port(), free_port()
    (folder / "nginx.conf").write_text(
        NGINX_CONF.format(
            user="user root;" if os.geteuid() == 0 else "",
            dir=folder,
            guard=guard_port,
            upstream=upstream,
            port=port,
            snippet=ROOT / "deploy" / "nginx" / "guard.conf",
        )
    )
    guard = guard_serve(guard_port, folder)
    nginx = subprocess.Popen(
        [binary, "-p", f"{folder}/", "-c", "nginx.conf", "-e", "error.log", "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base, guard_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{guard_port}"
    try:
        wait_for_http(guard_base + "/robots.txt", process=guard)
        try:
            wait_for_http(base + "/robots.txt", process=nginx)
        except RuntimeError:
            pytest.fail(f"nginx did not start: {nginx.communicate()[1]}{(folder / 'error.log').read_text()}")
        yield base, guard_base, audio, guard
    finally:
        for process in (nginx, guard):
            process.send_signal(signal.SIGQUIT if process is nginx else signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[tuple[str, str, bytes]]:
    """One nginx and guard for the tests that trip no limit (every request comes from 127.0.0.1)."""
    with nginx_in_front_of_guard(tmp_path_factory.mktemp("nginx")) as (base, guard_base, audio, _):
        yield base, guard_base, audio


def test_through_nginx_gptbot_gets_403(site) -> None:
    base, _, _ = site
    r = httpx.get(base + "/tracks/1/stream", headers={"user-agent": GPTBOT})
    assert r.status_code == 403
    assert "guard rule 'ai-training'" in r.text


def test_through_nginx_chrome_gets_the_audio_and_a_range_gets_206(site) -> None:
    base, _, audio = site
    with httpx.Client(base_url=base, headers={"user-agent": CHROME}) as browser:
        browser.get("/tracks/1", headers=NAVIGATE)  # the player's page (the static site redirects to a folder)
        assert "guard_session" in browser.cookies  # nginx relays the session guard set on the page
        whole = browser.get("/tracks/1/stream")
        assert whole.status_code == 200 and whole.content == audio
        assert whole.headers["content-usage"] == "train-ai=n"
        part = browser.get("/tracks/1/stream", headers={"range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == audio[100:200]


def test_through_nginx_robots_txt_comes_from_guard(site) -> None:
    base, guard_base, _ = site
    through = httpx.get(base + "/robots.txt")
    assert through.status_code == 200 and "User-agent: GPTBot" in through.text
    assert through.text == httpx.get(guard_base + "/robots.txt").text
    assert httpx.get(base + "/ai.txt").text == httpx.get(guard_base + "/ai.txt").text


def test_through_nginx_a_header_the_scraper_sends_cannot_change_what_guard_sees(site) -> None:
    base, _, _ = site
    tricks = {"user-agent": GPTBOT, "x-original-uri": "/robots.txt", "x-original-method": "OPTIONS"}
    assert httpx.get(base + "/tracks/1/stream", headers=tricks).status_code == 403


def test_through_nginx_a_throttle_is_a_429_with_retry_after(tmp_path: Path) -> None:
    with nginx_in_front_of_guard(tmp_path) as (base, _, _, _):
        _scrape_through(base)


def _scrape_through(base: str) -> None:
    with httpx.Client(base_url=base, headers={"user-agent": CHROME}) as client:
        spoofed = [{"x-forwarded-for": f"203.0.113.{t}"} for t in range(1, 61)]  # nginx replaces it
        responses = [client.get(f"/api/tracks/{t}", headers=headers) for t, headers in enumerate(spoofed, 1)]
    throttled = [r for r in responses if r.status_code == 429]
    assert throttled, [r.status_code for r in responses]
    assert responses[0].status_code == 404  # allowed: the static upstream has no API
    assert int(throttled[0].headers["retry-after"]) >= 1
    assert "429 Too Many Requests: guard rule" in throttled[0].text


def test_through_nginx_a_challenged_page_load_gets_the_challenge_and_its_answer_sets_the_session(site) -> None:
    base, _, audio = site
    with httpx.Client(base_url=base, headers={"user-agent": CHROME}) as browser:
        # Straight to the audio URL as a page load, with no session: the challenge page, from
        # guard through the snippet's @guard_denied, with its reason as a line of its own.
        page = browser.get("/tracks/1/stream", headers=NAVIGATE)
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["x-guard-reason"] == "challenge: a session is required"
        answer = browser.get(solve_challenge(page), headers=NAVIGATE)  # /.guard/challenge, routed to guard
        assert answer.status_code == 303 and answer.headers["location"] == "/tracks/1/stream"
        assert "guard_session" in browser.cookies
        played = browser.get("/tracks/1/stream", headers={"range": "bytes=0-99"})
        assert played.status_code == 206 and played.content == audio[:100]


def test_a_challenge_answers_forward_auth_with_a_reason_line_not_its_html(auth) -> None:
    page = ask(auth, {**nginx_asks("/tracks/1/stream", CHROME), **NAVIGATE})
    assert page.status_code == 403 and page.headers["x-guard-status"] == "403"
    assert page.headers["x-guard-challenge"] == "proof-of-work"
    assert page.headers["x-guard-reason"] == "challenge: a session is required"


# -- hostile paths through a real proxy --------------------------------------------------------------

#: Paths a scraper tries on a proxy: each must be refused by guard or miss the audio, never crash it.
HOSTILE_PATHS = [
    "/tracks/%D9%A5/stream",  # an Arabic-Indic five
    "/tracks/%31/stream",  # an encoded 1
    "/tracks/1/stream%00",
    "/tracks/%FF/stream",
    "/tracks/1/./stream",
    "/tracks//1/stream",
    "/tracks/1/%2e/stream",
    "/tracks/1/stream/../stream",
    "/%F0%9F%8E%B5/../tracks/1/stream",
    "/tracks/1/stream;x=1",
    "/tracks/1/stream?%D9%A5=%FF",
]


def assert_hostile_paths_refused(base: str, guard_base: str, audio: bytes, log: str) -> None:
    for path in HOSTILE_PATHS:
        for ua in (GPTBOT, CHROME):  # GPTBot is refused; Chrome has no session, so no audio either
            with httpx.Client(base_url=base) as client:
                r = client.send(client.build_request("GET", base + path, headers={"user-agent": ua}))
            assert r.status_code < 500, (path, ua, r.status_code, r.text[:200])
            assert r.content != audio and r.status_code not in (200, 206), (path, ua, r.status_code)
            if ua == GPTBOT:
                assert r.status_code in (400, 403), (path, r.status_code)
    assert httpx.get(guard_base + "/robots.txt").status_code == 200  # still up
    assert "Traceback" not in log and "Exception" not in log, log[-2000:]


def test_through_nginx_a_hostile_path_neither_crashes_guard_nor_passes(site, tmp_path_factory) -> None:
    base, guard_base, audio = site
    assert_hostile_paths_refused(base, guard_base, audio, "")


# -- through a real Caddy ----------------------------------------------------------------------------


def caddy_binary() -> str:
    path = shutil.which("caddy")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("caddy is not installed; scripts/test installs it (Debian package caddy)")
        pytest.skip("caddy is not installed (bash scripts/test installs it)")
    return path


#: What the test puts around the shipped Caddyfile: no admin endpoint, no certificates, no
#: network (http:// addresses on loopback), its state in the test's folder.
CADDY_GLOBAL = """\
{{
	admin off
	auto_https off
	storage file_system {dir}/data
}}

http://127.0.0.1:{upstream} {{
	root * {dir}/static
	file_server
}}

"""


def caddyfile(folder: Path, port: int, guard: int, upstream: int) -> str:
    """The shipped deploy/Caddyfile on loopback ports, after the test's global options."""
    shipped = (ROOT / "deploy" / "Caddyfile").read_text()
    site = shipped.replace("music.example {", f"http://127.0.0.1:{port} {{")
    site = site.replace("127.0.0.1:9000", f"127.0.0.1:{guard}").replace("127.0.0.1:8080", f"127.0.0.1:{upstream}")
    assert site.count(f"127.0.0.1:{port} {{") == 1 and f"127.0.0.1:{guard}" in site and f":{upstream}" in site
    return CADDY_GLOBAL.format(dir=folder, upstream=upstream) + site


@contextmanager
def caddy_in_front_of_guard(folder: Path) -> Iterator[tuple[str, str, bytes, subprocess.Popen]]:
    """Caddy on a free loopback port with the shipped Caddyfile, guard serve --forward-auth behind it."""
    binary = caddy_binary()
    audio = bytes(range(256)) * 400
    (folder / "static" / "tracks" / "1").mkdir(parents=True)
    (folder / "static" / "tracks" / "1" / "stream").write_bytes(audio)
    (folder / "static" / "tracks" / "1" / "index.html").write_text("<!doctype html><title>track 1</title>")
    guard_port, upstream, port = free_port(), free_port(), free_port()
    (folder / "Caddyfile").write_text(caddyfile(folder, port, guard_port, upstream))
    guard = guard_serve(guard_port, folder)
    home = {"HOME": str(folder), "XDG_DATA_HOME": str(folder / "data"), "XDG_CONFIG_HOME": str(folder / "config")}
    caddy = subprocess.Popen(
        [binary, "run", "--config", str(folder / "Caddyfile"), "--adapter", "caddyfile"],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "caddy.log").open("w"),
        env={**os.environ, **home},
    )
    base, guard_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{guard_port}"
    try:
        wait_for_http(guard_base + "/robots.txt", process=guard)
        try:
            wait_for_http(base + "/robots.txt", process=caddy)
        except RuntimeError:
            pytest.fail(f"caddy did not start: {(folder / 'caddy.log').read_text()}")
        yield base, guard_base, audio, guard
    finally:
        for process in (caddy, guard):
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def caddy_site(tmp_path_factory) -> Iterator[tuple[str, str, bytes, Path]]:
    folder = tmp_path_factory.mktemp("caddy")
    with caddy_in_front_of_guard(folder) as (base, guard_base, audio, _):
        yield base, guard_base, audio, folder


def test_through_caddy_gptbot_gets_403_and_robots_txt_comes_from_guard(caddy_site) -> None:
    base, guard_base, audio, _ = caddy_site
    r = httpx.get(base + "/tracks/1/stream", headers={"user-agent": GPTBOT})
    assert r.status_code == 403 and "guard rule 'ai-training'" in r.text and r.content != audio
    assert httpx.get(base + "/robots.txt").text == httpx.get(guard_base + "/robots.txt").text


def test_through_caddy_a_browser_proves_itself_gets_a_session_and_plays(caddy_site) -> None:
    base, _, audio, _ = caddy_site
    with httpx.Client(base_url=base, headers={"user-agent": CHROME}) as browser:
        assert browser.get("/tracks/1/stream", headers={"range": "bytes=0-99"}).status_code == 401  # no session
        page = browser.get("/tracks/1/stream", headers=NAVIGATE)  # a page load: the challenge, relayed
        answer = browser.get(solve_challenge(page), headers=NAVIGATE)  # /.guard/challenge, routed to guard
        assert answer.status_code == 303 and "guard_session" in browser.cookies
        played = browser.get("/tracks/1/stream", headers={"range": "bytes=100-199"})
        assert played.status_code == 206 and played.content == audio[100:200]


def test_through_caddy_a_hostile_path_neither_crashes_guard_nor_passes(caddy_site) -> None:
    base, guard_base, audio, folder = caddy_site
    assert_hostile_paths_refused(base, guard_base, audio, "")
    assert "Traceback" not in guard_log(folder), guard_log(folder)[-2000:]


@pytest.mark.parametrize("proxy", ["nginx", "caddy"])
def test_with_guard_down_the_proxy_refuses_instead_of_opening_the_site(proxy: str, tmp_path: Path) -> None:
    """nginx answers 500 and Caddy 502 when its auth service cannot answer: the site stays closed."""
    front = nginx_in_front_of_guard if proxy == "nginx" else caddy_in_front_of_guard
    with front(tmp_path) as (base, _, audio, guard):
        guard.send_signal(signal.SIGINT)
        guard.wait(timeout=20)
        r = httpx.get(base + "/tracks/1/stream", headers={"user-agent": CHROME})
        assert r.status_code == (500 if proxy == "nginx" else 502) and r.content != audio


def test_through_caddy_a_listener_gets_the_session_with_the_page_and_plays(caddy_site) -> None:
    base, _, audio, _ = caddy_site
    with httpx.Client(base_url=base, headers={"user-agent": CHROME}) as browser:
        page = browser.get("/tracks/1/", headers=NAVIGATE)  # the player's page (a folder of the static site)
        assert page.status_code == 200 and "guard_session" in browser.cookies, page.headers
        played = browser.get("/tracks/1/stream", headers={"range": "bytes=0-99"})
        assert played.status_code == 206 and played.content == audio[:100]


def test_the_shipped_envoy_config_refuses_when_guard_errs() -> None:
    """Was: ``failure_mode_allow: true``, so a 5xx from guard, or guard too slow or down, opened the site."""
    import yaml

    config = yaml.safe_load((ROOT / "deploy" / "envoy.yaml").read_text())
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (authz,) = [f["typed_config"] for f in manager["http_filters"] if f["name"] == "envoy.filters.http.ext_authz"]
    assert authz["failure_mode_allow"] is False
    assert authz["status_on_error"]["code"] == "ServiceUnavailable"
