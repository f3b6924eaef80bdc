"""What a User-Agent that the catalogue does not name says about its sender.

Three kinds, tested in this order:

* ``unknown_bot``: it declares itself automated. One of the words bot, crawler, spider,
  scraper, fetcher (or robot) as a word of its own or closing a name ("KimiBot",
  "moatbot", "ExteContextCrawl"), outside a browser's platform comment (which names
  devices: "M bot Tab 10"); a contact URL or e-mail address, as in the
  ``compatible; Name/x.y; +http...`` form. Browsers carry none of these.
* a browser (category ``unknown``): the structure every browser engine gives its
  User-Agent, recognised by product and engine tokens, not by a list of browser names:
  ``Mozilla/5.0 (platform) AppleWebKit/n (KHTML, like Gecko) ... Safari/n`` (Chrome,
  Edge, Opera, Samsung Internet, in-app WebViews ending ``Mobile/...``),
  ``Mozilla/5.0 (platform) Gecko/n ... Firefox/n``, Internet Explorer's Trident forms and
  Presto Opera.
* ``http_client``: anything else (``lwp-trivial``, ``PostmanRuntime/7.43.2``,
  ``Dart/3.5 (dart:io)``, ``node``): a program, not a person's browser.

Media players and apps are named in the catalogue (category ``media_player``) and the
rules' ``apps:``, so they never get here.
"""

from __future__ import annotations

import re

from guard.identity.lookalike import fold, fold_text, plain_words

#: Categories given to User-Agents the catalogue does not name.
UNKNOWN_BOT = "unknown_bot"
HTTP_CLIENT = "http_client"
BROWSER = "unknown"

_BOT_WORDS = ("bot", "bots", "robot", "crawler", "crawlers", "crawl", "spider", "spiders", "scraper", "fetcher")
#: The bot words in the matching alphabet (``spider`` folds to ``splder``).
BOT_WORDS = frozenset(fold_text(w) for w in _BOT_WORDS)

#: Words that end in a bot word are bots' names too ("KimiBot", "moatbot", "ExteContextCrawl").
_BOT_SUFFIXES = tuple(fold_text(w) for w in ("bot", "crawler", "crawl", "spider", "scraper", "fetcher"))
# A contact address: a URL or an e-mail address.
_CONTACT = re.compile(r"https?://|\bwww\.[a-z0-9-]+\.|[\w.+-]@[a-z0-9-]+\.[a-z]", re.IGNORECASE)

# "Mozilla/5.0 (platform) " and an engine: WebKit/Blink or Gecko. The platform comment may
# nest one level ("(Linux; Android 11; moto g power (2022))").
_ENGINE = re.compile(
    r"Mozilla/5\.0 (?P<platform>\([^()]*+(?:\([^()]*+\)[^()]*+)*+\)) +"
    r"(?:(?P<webkit>AppleWebKit/[\d.+]++ +\(KHTML, like Gecko\))|(?P<gecko>Gecko/[\d.]++ ))"
)
# Internet Explorer (nothing after its comment) and Presto Opera.
_OLD_BROWSER = re.compile(
    r"Mozilla/5\.0 \([^()]*Trident/\d[^()]*\) like Gecko$|Mozilla/4\.0 \(compatible; MSIE [\d.]++;[^()]*\)$"
    r"|Opera/9\.80 \([^()]++\) Presto/"
)


# A mainstream browser's User-Agent exactly: after the platform comment, the engine and then
# only the products browsers send. Such a string can hide a name only in its platform
# comment, so identification looks there alone (a fast path for nine requests in ten);
# anything else takes the full path, which alone decides what a string is.
_PLAIN_BROWSER = re.compile(
    r"Mozilla/5\.0 (?P<platform>\([^()]*+(?:\([^()]*+\)[^()]*+)*+\)) "
    r"(?:AppleWebKit/[\d.]++ \(KHTML, like Gecko\)|Gecko/[\d.]++)"
    r"(?: (?:(?:Chrome|CriOS|Version|Mobile|Safari|Edg|EdgA|EdgiOS|OPR|OPT|GSA|Firefox|FxiOS|SamsungBrowser"
    r"|YaBrowser|Ddg)/[\w.]++|Mobile))++"
)


def plain_browser_platform(user_agent: str) -> str | None:
    """The platform comment of a mainstream browser's User-Agent with no contact address in it."""
    m = _PLAIN_BROWSER.fullmatch(user_agent)
    if m is None:
        return None
    platform = m.group("platform")
    return None if "//" in platform or "@" in platform or "www." in platform else platform


def declares_bot(user_agent: str, ua_words: list[bytes], names_from: int = 0) -> bool:
    """Whether the User-Agent says it is automated (see the module docstring).

    Bot words count only from ``names_from`` on (a browser's platform comment names
    devices, and some are called "M bot Tab 10" or "Spider 8"); contact addresses
    count anywhere.
    """
    # (str operations: several times faster than the same on bytes)
    text = user_agent.lower() if user_agent.isascii() else b" ".join(ua_words).decode()  # lookalikes folded
    if (
        "bot" in text or "crawl" in text or "spider" in text or "splder" in text or "scrap" in text or "fetch" in text
    ) and _has_bot_word(user_agent[names_from:]):
        return True
    return ("//" in text or "@" in text or "www." in text) and _CONTACT.search(user_agent) is not None


def _has_bot_word(user_agent: str) -> bool:
    # Numbers fold to letters too ("807" reads "bot"): only words that are not numbers count.
    for word in plain_words(user_agent.encode("latin-1", "replace")):
        if not word.isdigit():
            folded = fold(word)
            if folded in BOT_WORDS or folded.endswith(_BOT_SUFFIXES):
                return True
    return False


def browser_platform_end(user_agent: str) -> int | None:
    """Where a browser-shaped User-Agent's platform comment ends; None if it is no browser's."""
    m = _ENGINE.match(user_agent)
    if m is not None:
        if m.group("webkit"):
            # Safari, Chrome, Edge, ... end in Safari/n; iOS WebViews in Mobile/x; macOS
            # WebViews stop after the engine.
            shaped = "Safari/" in user_agent or "Mobile/" in user_agent or m.end() == len(user_agent)
        else:
            shaped = " Firefox/" in user_agent
        return m.end("platform") if shaped else None
    return len(user_agent) if _OLD_BROWSER.match(user_agent) else None


def kind_of(user_agent: str, ua_words: list[bytes]) -> str:
    """The category of a User-Agent the catalogue does not name."""
    browser_end = browser_platform_end(user_agent)
    if declares_bot(user_agent, ua_words, browser_end or 0):
        return UNKNOWN_BOT
    return HTTP_CLIENT if browser_end is None else BROWSER
