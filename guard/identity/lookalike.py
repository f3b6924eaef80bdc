"""The alphabet User-Agents and catalogue tokens are matched in: lookalikes fold together.

A crawler that wants to slip past a list of names without lying outright writes its
name so that a person still reads it but a byte comparison does not: a Cyrillic ``\u043e``
in ``GPTB\u043et``, a soft hyphen or zero-width joiner inside the token, fullwidth or
mathematical letters, combining accents, ``C1audeBot``, ``G P T B o t``. Folding undoes
all of these before matching, on both sides:

1. Text that is not plain ASCII is decoded (UTF-8, else Latin-1), put through the
   Unicode compatibility decomposition (NFKD: the "K" half of NFKC turns fullwidth,
   ligature and mathematical forms into plain letters, the "D" half splits accents off),
   and then format characters (category Cf: soft hyphen, zero-width space and joiners,
   bidi marks, tag characters) and combining marks (Mn, Me) are dropped and every
   confusable character is replaced by its Latin skeleton (Unicode's confusables data,
   from the ``confusable_homoglyphs`` package).
2. The ASCII result is lower-cased, digits that stand for letters are folded to them
   (``0``→o, ``1``→l, ``3``→e, ...) and ``i`` to ``l`` (the skeleton of both ``I``
   and ``l``); anything that is not a letter or digit separates words.

Plain ASCII User-Agents (nearly all of them) take step 2 only: one ``bytes.translate``.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

# Digits read as the letters they look like, and "i" as "l" (the skeleton of I, l and 1).
_DIGIT_LETTERS = {"0": "o", "1": "l", "2": "z", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t", "8": "b", "9": "g"}
#: Letters a folded digit can become: a token spelt only with these could be a number.
DIGIT_IMAGES = frozenset(_DIGIT_LETTERS.values())


def _fold_byte(c: int) -> int:
    ch = chr(c)
    if not (ch.isascii() and ch.isalnum()):
        return 32
    ch = _DIGIT_LETTERS.get(ch, ch.lower())
    return ord("l" if ch == "i" else ch)


#: bytes.translate table: ASCII letters and digits folded, everything else a space.
FOLD_TABLE = bytes(_fold_byte(c) for c in range(256))
#: bytes.translate table: ASCII letters and digits lower-cased (not folded), everything else a space.
PLAIN_TABLE = bytes(ord(chr(c).lower()) if chr(c).isascii() and chr(c).isalnum() else 32 for c in range(256))


def _shape_byte(c: int) -> int:
    ch = chr(c)
    return ord("a") if ch.isascii() and ch.isalpha() else ord("0") if ch.isascii() and ch.isdigit() else 32


#: bytes.translate table: letters to "a", digits to "0", everything else a space.
SHAPE_TABLE = bytes(_shape_byte(c) for c in range(256))


# Two one-letter words in a row, or with one digit between them ("C 1 a u d e").
_SPELT_SHAPE = re.compile(rb" a +(?:0 +)?a ")


def maybe_spelt_out(raw: bytes) -> bool:
    """Whether ``raw`` may spell a word letter by letter ("G P T", "G.P.T", "G - P - T").

    A cheap test on the letter/digit shape, so that ordinary User-Agents, whose
    one-character words are digits ("5.0"), skip the search for spelt-out tokens.
    """
    if not raw.isascii():
        return True
    return _SPELT_SHAPE.search((b" " + raw + b" ").translate(SHAPE_TABLE)) is not None


# Planes with letters, marks and format characters worth folding (the rest is unassigned,
# private use, or ideographs with no Latin lookalike).
_SCANNED = (range(0x80, 0x20000), range(0xE0000, 0xE01F0))
_DROPPED_CATEGORIES = frozenset({"Cf", "Mn", "Me"})
_SMALL_CAPITAL = "LATIN LETTER SMALL CAPITAL "


@cache
def unicode_table() -> dict[int, str | None]:
    """str.translate table: format characters and marks dropped, confusables to Latin.

    Built once (about 50 ms) the first time a non-ASCII User-Agent is folded; the
    middleware builds it at start-up so no request pays for it.
    """
    from confusable_homoglyphs.confusables import confusables_data  # type: ignore[import-untyped]

    table: dict[int, str | None] = {}
    for char, homoglyphs in confusables_data.items():
        if len(char) != 1 or char.isascii():
            continue
        for glyph in homoglyphs:
            latin = glyph["c"].strip("\u200e\u200f")
            if len(latin) == 1 and latin.isascii() and latin.isalnum():
                table[ord(char)] = latin
                break
    for block in _SCANNED:
        for code in block:
            char = chr(code)
            if unicodedata.category(char) in _DROPPED_CATEGORIES:
                table[code] = None
            elif code not in table:
                name = unicodedata.name(char, "")
                if name.startswith(_SMALL_CAPITAL) and len(name) == len(_SMALL_CAPITAL) + 1:
                    table[code] = name[-1].lower()  # small capitals: not in the confusables data
    return table


def fold(raw: bytes) -> bytes:
    """``raw`` (a header value as sent) in the matching alphabet: folded words, spaces between."""
    if raw.isascii():
        return raw.translate(FOLD_TABLE)
    return fold_text(_decode(raw))


def fold_text(text: str) -> bytes:
    """Text (a catalogue token, or a decoded header) in the matching alphabet."""
    return skeleton(text).translate(FOLD_TABLE)


def skeleton(text: str) -> bytes:
    """``text`` as plain ASCII: lookalikes replaced, invisible characters and marks dropped."""
    if not text.isascii():
        # Skeleton first (a lookalike may have a compatibility form that is not one), then
        # the decomposition, then the skeleton of what it decomposed to.
        table = unicode_table()
        text = unicodedata.normalize("NFKD", text.translate(table)).translate(table)
    return text.encode("ascii", "replace")


def plain_words(raw: bytes) -> list[bytes]:
    """The lower-case ASCII words of ``raw`` without folding (to tell a number from a word)."""
    if not raw.isascii():
        raw = skeleton(_decode(raw))
    return raw.translate(PLAIN_TABLE).split()


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
