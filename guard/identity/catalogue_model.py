"""The crawler catalogue file (rules/agents.yaml) as a typed model.

To add a key: add a field with a ``description=`` to the section it belongs to, then
carry it into :class:`guard.identity.catalogue.Agent` in
:func:`guard.identity.catalogue.parse_catalogue`. Errors are located like the rules
file's (see guard/config.py and guard/policy/model.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationInfo, model_validator

from guard.config import Section, context, fail, problem


def _text(value: str) -> str:
    if not value.strip():
        raise problem("must not be blank")
    return value


#: Text that is not blank.
Text = Annotated[str, AfterValidator(_text)]


def _category(value: str, info: ValidationInfo) -> str:
    known = context(info, "categories")
    if known is not None and value not in known:
        raise problem(f"unknown category '{value}' (known: {', '.join(sorted(known))})")
    return value


def _ua_token(value: str) -> str:
    from guard.identity.catalogue import words

    if not words(value):
        raise problem(f"token '{value}' has no letters or digits to match")
    return value


class Verify(Section):
    """How an operator lets sites check that a request really comes from its crawler."""

    ranges: str | None = Field(None, description="URL of the operator's published IP ranges (JSON).")
    rdns: list[str] = Field([], description="Hostname suffixes for forward-confirmed reverse DNS.")

    @model_validator(mode="after")
    def _something(self) -> Verify:
        if self.ranges is None and not self.rdns:
            fail(([], "'verify' takes 'ranges' (a URL) and/or 'rdns' (hostname suffixes)"))
        return self


class AgentEntry(Section):
    """One known crawler, fetcher or HTTP tool."""

    name: Text = Field(description="Display name, unique (any case).")
    operator: Text = Field(description="Who runs it.")
    category: Annotated[str, AfterValidator(_category)] = Field(
        description="One of `categories`; the rules file decides what each may do."
    )
    ua: list[Annotated[Text, AfterValidator(_ua_token)]] | None = Field(
        None,
        description="Tokens matched in the User-Agent (case-insensitive, whole words). Default: the name. "
        "`[]`: a robots.txt-only token that never appears in a User-Agent.",
    )
    robots: list[Text] | None = Field(
        None,
        description="Tokens this agent obeys in robots.txt. Default: the name. "
        "`[]`: a client that is no crawler (a media player): robots.txt does not apply to it.",
    )
    example: str | None = Field(None, description="A real User-Agent string sent by the agent (for tests and docs).")
    verify: Verify | None = Field(None, description=Verify.__doc__)
    leading: bool = Field(
        False,
        description="Named only as the User-Agent's first product (`Java/17`, `Ruby`), not as a word "
        "elsewhere: for names that are also ordinary words of listeners' strings (`(Java; U; MIDP-2.0)`).",
    )


class CatalogueFile(Section):
    """A crawler catalogue."""

    synced: str | None = Field(
        None,
        description="The synced list of AI agents (ai.robots.txt's robots.json, as written by "
        "`guard update-agents`), relative to this file. Its names that no agent here claims (by name or "
        "robots token) become agents, with a category mapped from the list's `function`; agents here win.",
    )
    crawler_lists: str | None = Field(
        None,
        description="The synced public crawler lists (crawler-user-agents and well-known-bots, as written by "
        "`guard update-agents`), relative to this file. Each listed crawler, previewer or tool whose tokens no "
        "agent here matches becomes an agent, with a category from the list's tags; agents here win.",
    )
    not_synced: dict[str, Text] = Field(
        {},
        description="Names in the synced crawler lists left out, each with the reason (a token real browsers send).",
    )
    categories: dict[str, str] = Field(min_length=1, description="Each category name, with what it means.")
    agents: list[AgentEntry] = Field(min_length=1, description="The known agents.")

    @model_validator(mode="after")
    def _unique_names(self, info: ValidationInfo) -> CatalogueFile:
        seen: set[str] = set()
        problems: list[tuple[list[str | int], str]] = []
        for i, agent in enumerate(self.agents):
            if agent.name.lower() in seen:
                problems.append((["agents", i, "name"], f"duplicate agent name '{agent.name}'"))
            seen.add(agent.name.lower())
        if problems:
            fail(*problems)
        return self


def catalogue_context(data: Any) -> dict[str, Any]:
    """The category names agents may use: the keys of the file's own ``categories``."""
    categories = data.get("categories") if isinstance(data, dict) else None
    return {"categories": [str(k) for k in categories] if isinstance(categories, dict) else None}
