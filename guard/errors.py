"""Errors raised while loading configuration: each names the file, the line, the column and the reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a configuration file, where it is (1-based line and column) and why."""

    file: str
    line: int | None
    reason: str
    column: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.reason}"


class ConfigError(ValueError):
    """A rules or catalogue file is invalid.

    ``str(error)`` reads ``file:line:col: reason``, one line per problem, so that editors
    and ops can jump straight to each one. ``file``, ``line``, ``column`` and ``reason``
    describe the first problem; ``problems`` lists them all, in file order.
    """

    def __init__(self, file: str, line: int | None, reason: str, column: int | None = None) -> None:
        self.problems: tuple[Problem, ...] = (Problem(file, line, reason, column),)
        self.file, self.line, self.reason, self.column = file, line, reason, column
        super().__init__(str(self.problems[0]))

    @classmethod
    def of(cls, problems: Sequence[Problem]) -> ConfigError:
        """One error reporting every problem (at least one), sorted by position."""
        ordered = sorted(problems, key=lambda p: (p.file, p.line or 0, p.column or 0))
        first = ordered[0]
        error = cls(first.file, first.line, first.reason, first.column)
        error.problems = tuple(ordered)
        error.args = ("\n".join(map(str, ordered)),)
        return error
