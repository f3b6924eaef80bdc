"""Attacks on guard as a patient scraper would try them, through real HTTP (uvicorn + httpx).

Each test is one way past a defence that was found open and then closed; the attacks that
held are in the feature's own tests.
"""

from __future__ import annotations

import httpx
import pytest
from support import CHROME, NAVIGATE, FakeClock, serving

from guard.forwardauth import AUTH_PATH, NGINX_PATH, ForwardAuth

SCRAPER = "python-requests/2.32.3"  # a scraping tool: kept off audio and the API, free on pages


@pytest.fixture
def forward_auth(policy):
    app = ForwardAuth(policy, trusted_proxies=["127.0.0.1/32"], clock=FakeClock())
    with serving(app) as base:
        yield base


def test_traefik_or_caddy_cannot_be_told_another_uri_by_the_client(forward_auth: str) -> None:
    # Traefik's ForwardAuth and Caddy's forward_auth copy every header of the client's request
    # into the auth request and set X-Forwarded-Method/-Uri themselves. A scraper adds the
    # nginx-style X-Original-* headers naming a page: guard must judge the audio it asked for.
    proxy_sets = {
        "x-forwarded-method": "GET",
        "x-forwarded-uri": "/tracks/1/stream",
        "x-forwarded-for": "198.51.100.30",
    }
    scraper_adds = {"x-original-uri": "/", "x-original-method": "GET", "user-agent": SCRAPER}
    answer = httpx.get(forward_auth + AUTH_PATH, headers={**scraper_adds, **proxy_sets})
    assert answer.status_code == 403
    assert "scraping-tool-content" in answer.headers["x-guard-reason"]
    # The page itself is still free, and a browser still gets its audio.
    page = {**proxy_sets, "x-forwarded-uri": "/", "user-agent": SCRAPER}
    assert httpx.get(forward_auth + AUTH_PATH, headers=page).status_code == 200
    browser = {**proxy_sets, "user-agent": CHROME}
    with httpx.Client(base_url=forward_auth) as client:  # the proxy relays the page's session cookie
        player_page = {**browser, **NAVIGATE, "x-forwarded-uri": "/tracks/1"}
        assert client.get(AUTH_PATH, headers=player_page).status_code == 200 and "guard_session" in client.cookies
        assert client.get(AUTH_PATH, headers=browser).status_code == 200


def test_nginx_endpoint_reads_only_what_nginx_sets(forward_auth: str) -> None:
    # nginx's snippet sets X-Original-Method/-URI (replacing the client's); a client-sent
    # X-Forwarded-Uri naming a page changes nothing there.
    sets = {"x-original-uri": "/tracks/1/stream", "x-original-method": "GET", "x-forwarded-for": "198.51.100.31"}
    answer = httpx.get(forward_auth + NGINX_PATH, headers={**sets, "x-forwarded-uri": "/", "user-agent": SCRAPER})
    assert answer.status_code == 403 and "scraping-tool-content" in answer.headers["x-guard-reason"]
