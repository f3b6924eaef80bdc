"""The fingerprint catalogue (rules/fingerprints.yaml): known JA4 values and what sends them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import Field, field_validator

from guard.config import Section, problem, validate
from guard.yamlfile import load_yaml

#: The shape of a JA4 (TLS client) fingerprint: ``t13d1516h2_8daaf6152771_02713d6af862``.
JA4 = re.compile(r"^[tqd][0-9a-z]{2}[di][0-9]{4}[0-9a-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}$")
Kind = Literal["browser", "library", "tool", "device"]
#: Kinds whose fingerprint under a browser's User-Agent is automation.
AUTOMATION: frozenset[str] = frozenset({"library", "tool"})


class Known(NamedTuple):
    """What the catalogue says of one fingerprint."""

    kind: str
    name: str


class _Entry(Section):
    kind: Kind = Field(description="browser, library, tool or device.")
    name: str = Field(min_length=1, description="What sends it.")


class _File(Section):
    version: Literal[1] = Field(description="1.")
    source: str = Field(min_length=1, description="Where the fingerprints come from.")
    date: str = Field(min_length=1, description="The source's date.")
    fingerprints: dict[str, _Entry] = Field(description="JA4 -> kind and name.")

    @field_validator("fingerprints")
    @classmethod
    def _ja4(cls, value: dict[str, _Entry]) -> dict[str, _Entry]:
        for ja4 in value:
            if not JA4.match(ja4):
                raise problem(f"'{ja4}' is not a JA4 fingerprint (such as t13d1516h2_8daaf6152771_02713d6af862)")
        return value


@dataclass(frozen=True, slots=True)
class FingerprintCatalogue:
    """Known fingerprints; everything else is rare."""

    known: dict[str, Known] = field(default_factory=dict)
    source: str = ""

    def lookup(self, ja4: str) -> Known | None:
        return self.known.get(ja4)

    def is_rare(self, ja4: str) -> bool:
        """Not a mainstream browser's: counted by limits keyed ``fingerprint``."""
        known = self.known.get(ja4)
        return known is None or known.kind != "browser"


def load_fingerprints(path: str | Path) -> FingerprintCatalogue:
    """Load and validate a fingerprint catalogue (a :class:`guard.errors.ConfigError` names the line)."""
    doc = load_yaml(path)
    spec = validate(_File, doc, {})
    known = {ja4: Known(entry.kind, entry.name) for ja4, entry in spec.fingerprints.items()}
    return FingerprintCatalogue(known, str(path))
