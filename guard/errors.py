"""Errors raised while loading configuration: each names the file, the line and the reason."""

from __future__ import annotations


class ConfigError(ValueError):
    """A rules or catalogue file is invalid.

    ``str(error)`` reads ``file:line: reason`` so that ops can jump straight to the line.
    """

    def __init__(self, file: str, line: int | None, reason: str) -> None:
        self.file = file
        self.line = line
        self.reason = reason
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {reason}")
