"""The documentation site reads offline: headless Chromium, with every host but loopback
unreachable, draws the architecture page's diagram as an SVG, and wide code blocks fit.

The site is built as CI builds it (``bash scripts/docs``: mermaid's script taken from its
npm package at build time). Needs mkdocs-material (the dev extra), npm, and Debian's
``chromium`` and ``chromium-driver``: missing, skipped on a developer machine, a failure
in CI (CI=true).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ROOT
from test_chromium import CHROMEDRIVER, CHROMIUM, FLAGS, _missing

OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"  # no CDN, no font service


def _need(what: str | None) -> None:
    if what is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is not installed")
    pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _need(None if shutil.which("mkdocs") else "mkdocs (pip install -e '.[dev]')")
    _need(None if shutil.which("npm") else "npm")
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        ["bash", str(ROOT / "scripts" / "docs"), "--quiet", "--site-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    handler = functools.partial(_QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def offline_browser() -> Iterator:
    _need(_missing())
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="guard-docs-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, OFFLINE, "--window-size=1024,900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait_for(driver, script: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    return driver.execute_script(script)


#: The theme draws each diagram into a closed shadow root; opened, the test can look inside.
OPEN_SHADOWS = """
const attach = Element.prototype.attachShadow;
Element.prototype.attachShadow = function (init) { return attach.call(this, {...init, mode: 'open'}); };
"""
DRAWN = """
return [...document.querySelectorAll('.mermaid')]
  .filter(d => (d.shadowRoot || d).querySelector('svg g')).length
"""


def test_the_architecture_diagram_is_drawn_offline(site: str, offline_browser, tmp_path: Path) -> None:
    offline_browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": OPEN_SHADOWS})
    offline_browser.get(site + "/architecture/")
    drawn = _wait_for(offline_browser, DRAWN)
    shot = tmp_path / "architecture.png"
    offline_browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn >= 1, "the diagram is still text: " + offline_browser.execute_script(
        "const d = document.querySelector('.mermaid'); return d ? d.textContent.slice(0, 80) : 'no .mermaid element'"
    )
    text = offline_browser.execute_script("return document.querySelector('article').innerText")
    assert "flowchart TD" not in text


def test_wide_code_blocks_fit_the_page(site: str, offline_browser) -> None:
    offline_browser.get(site + "/")  # the Quickstart's curl lines are wider than the column
    widths = offline_browser.execute_script(
        "return [...document.querySelectorAll('article pre > code')].map(c => [c.scrollWidth, c.clientWidth])"
    )
    assert widths, "no code blocks on the home page"
    assert all(scroll <= client + 1 for scroll, client in widths), widths
