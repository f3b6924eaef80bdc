"""What a User-Agent that the catalogue does not name says about its sender.

Being unrecognised is no verdict: only a string that names itself automated is treated as
a program by identity alone. Four kinds, tested in this order:

* ``unknown_preview``: it calls itself a link previewer, in the words previewers use
  (preview, unfurl, onebox, link expander, meta tag fetcher, rich link), outside a
  browser's platform comment: "SnapURLPreview", "ClickUpLinkUnfurler", "Discourse Forum
  Onebox", "Mediumbot-MetaTagFetcher". The rules give it pages, never audio or the API.
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
* ``http_client``: anything else: not shaped like a mainstream browser, and not naming
  itself either. Smart TVs, set-top boxes, IPTV and podcast apps, e-readers, consoles,
  in-app browsers and new engines land here as well as unnamed programs, so the rules
  treat it as a visitor (a session for audio, counted, challenged when it misbehaves),
  with budgets of its own. Named libraries and tools are in the catalogue.

A self-declared bot or previewer is counted under its own name (:func:`self_declared_name`),
across the platform (limit key ``agent``).
"""

from __future__ import annotations

import itertools
import re

from guard.identity.lookalike import fold, fold_text, plain_words

#: Categories given to User-Agents the catalogue does not name.
UNKNOWN_BOT = "unknown_bot"
UNKNOWN_PREVIEW = "unknown_preview"
#: A User-Agent too long for any client, naming nothing at its ends (see identify.MAX_UA_CHARS).
PADDED = "padded"
HTTP_CLIENT = "http_client"
BROWSER = "unknown"

_BOT_WORDS = (
    "bot",
    "bots",
    "robot",
    "robots",
    "crawler",
    "crawlers",
    "crawl",
    "spider",
    "spiders",
    "scraper",
    "fetcher",
)
#: The bot words in the matching alphabet (``spider`` folds to ``splder``).
BOT_WORDS = frozenset(fold_text(w) for w in _BOT_WORDS)

#: Words that end in a bot word are bots' names too ("KimiBot", "moatbot", "ExteContextCrawl").
_BOT_SUFFIXES = tuple(fold_text(w) for w in ("bot", "crawler", "crawl", "spider", "scraper", "fetcher"))
#: What previewers call themselves, in the matching alphabet, looked for inside words
#: ("SnapURLPreview", "LinkUnfurler", "MetaTagFetcher", "EvernoteRichLinkBot").
_PREVIEW_STEMS = tuple(fold_text(w) for w in ("preview", "unfurl", "onebox", "linkexpand", "metatag", "richlink"))
#: Their two-word spellings ("Link Expander", "Meta Tag Fetcher", "Rich Link").
_PREVIEW_PAIRS = frozenset(
    (fold_text(a), fold_text(b))
    for a, b in (("link", "expander"), ("link", "expanding"), ("meta", "tag"), ("rich", "link"))
)
# A contact address: a URL or an e-mail address.
_CONTACT = re.compile(r"https?://|\bwww\.[a-z0-9-]+\.|[\w.+-]@[a-z0-9-]+\.[a-z]", re.IGNORECASE)

# How feed fetchers report the readers they fetch for.
_SUBSCRIBERS = re.compile(r"\d+\s+subscribers?\b", re.IGNORECASE)
#: What a listener's app says of itself beside its home page (outside a browser's platform comment).
APP_WORDS = re.compile(
    r"(?<![\w.-])(?:podcast|podcatcher|player|app|android|ios|iphone|ipad|watchos)(?![\w.-])", re.IGNORECASE
)

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
    # Digits folded too, or "Foob0t" and "crawl3r" would pass the quick test unread.
    folded = b" ".join(ua_words).decode() if ua_words else fold_text(user_agent).decode()
    if (
        "bot" in folded or "crawl" in folded or "splder" in folded or "scrap" in folded or "fetch" in folded
    ) and _has_bot_word(user_agent[names_from:]):
        return True
    if "subscriber" in text and _SUBSCRIBERS.search(user_agent) is not None:
        return True  # a feed fetcher reporting its readers ("Feedbin - 9 subscribers")
    if not ("//" in text or "@" in text or "www." in text) or _CONTACT.search(user_agent) is None:
        return False
    # A listener's app gives its home page too ("Overcast/3.0 (+http://overcast.fm/; iOS podcast
    # app)", "Jam/2.0.4 iOS/16.3.1 (www.listentojam.com)"): a contact with an app's own words is no bot.
    return APP_WORDS.search(user_agent, names_from) is None


def _has_bot_word(user_agent: str) -> bool:
    # Numbers fold to letters too ("807" reads "bot"): only words that are not numbers count.
    for word in plain_words(user_agent.encode("latin-1", "replace")):
        if not word.isdigit():
            folded = fold(word)
            if folded in BOT_WORDS and _one_digit_at_most(word):
                return True
            suffix = next((s for s in _BOT_SUFFIXES if folded.endswith(s)), None)
            if suffix is not None and _one_digit_at_most(word[-len(suffix) :]):
                return True
    return False


def _one_digit_at_most(word: bytes) -> bool:
    # One digit for a letter is a disguise ("Foob0t"); more are a model number ("ZTE U807", "TAB07").
    return sum(c in b"0123456789" for c in word) <= 1


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


def declares_preview(user_agent: str, names_from: int = 0) -> bool:
    """Whether the User-Agent calls itself a link previewer (outside a browser's platform comment)."""
    text = user_agent[names_from:]
    lowered = text.lower()
    if not any(w in lowered for w in ("preview", "unfurl", "onebox", "expand", "meta", "rich")):
        return False  # the common case, decided without folding
    words = [fold(w) for w in plain_words(text.encode("latin-1", "replace")) if not w.isdigit()]
    if any(stem in word for word in words for stem in _PREVIEW_STEMS):
        return True
    return any(pair in _PREVIEW_PAIRS for pair in itertools.pairwise(words))


def kind_of(user_agent: str, ua_words: list[bytes]) -> str:
    """The category of a User-Agent the catalogue does not name."""
    browser_end = browser_platform_end(user_agent)
    if declares_preview(user_agent, browser_end or 0):
        return UNKNOWN_PREVIEW
    if declares_bot(user_agent, ua_words, browser_end or 0):
        return UNKNOWN_BOT
    return HTTP_CLIENT if browser_end is None else BROWSER


# Contact addresses and what follows a product's slash: not part of a name.
_NOT_NAMES = re.compile(r"\+?https?://\S*|\bwww\.\S*|\S+@\S+|/\S*")
_SEPARATORS = re.compile(r"[\s;(),\[\]{}<>+\"']+")
#: Words of browsers' and platforms' own products: never a bot's name.
_GENERIC = frozenset(
    fold_text(w)
    for w in (
        "mozilla",
        "compatible",
        "applewebkit",
        "khtml",
        "like",
        "gecko",
        "chrome",
        "safari",
        "version",
        "mobile",
        "windows",
        "linux",
        "android",
        "x11",
        "macintosh",
        "u",
        "en",
        "us",
        "bot",
        "robot",
        "crawler",
        "spider",
        "preview",
    )
)
_MAX_NAME = 64


def self_declared_name(user_agent: str) -> str:
    """The name a self-declared bot or previewer goes by, in the matching alphabet ("" if none).

    The product whose name holds a bot or preview word ("HarmonyIndexBot/0.9" ->
    ``harmonlndexbot``), else its first product that is no browser's, else the host of
    its contact address. Folded, so that case, lookalike letters and separators do not
    make new names: counted per name (limit key ``agent``), a bot cannot start over by
    spelling itself differently.
    """
    hosts = re.findall(r"(?:https?://|@|\bwww\.)(?:www\.)?([A-Za-z0-9.-]+)", user_agent)
    # A browser-shaped string's platform comment names a device, not the bot.
    text = _NOT_NAMES.sub(" ", user_agent[browser_platform_end(user_agent) or 0 :])
    fallback = ""
    for product in _SEPARATORS.split(text):
        words = fold_text(product).split()
        if not words or all(w.isdigit() or w in _GENERIC for w in words):
            continue
        name = b"-".join(words).decode()[:_MAX_NAME]
        joined = b"".join(words)
        if (
            joined.endswith(_BOT_SUFFIXES)
            or any(w in BOT_WORDS for w in words)
            or any(stem in joined for stem in _PREVIEW_STEMS)
        ):
            return name
        fallback = fallback or name
    if fallback:
        return fallback
    return b"-".join(fold_text(hosts[0]).split()).decode()[:_MAX_NAME] if hosts else ""
