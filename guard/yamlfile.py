"""Read YAML while remembering where every value came from.

Rules files are written by people; when one is wrong the error must say which line.
PyYAML keeps line numbers on its node tree, so we build plain Python values from the
nodes ourselves and return, beside them, a map from each mapping/sequence (by ``id``)
to the lines of its entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from guard.errors import ConfigError


@dataclass
class Located:
    """Parsed YAML plus line numbers (1-based) of containers and their entries."""

    file: str
    data: Any
    _lines: dict[int, tuple[int, dict[Any, int]]] = field(default_factory=dict)

    def line(self, container: Any, key: Any = None) -> int | None:
        """Line of ``container`` itself, or of its entry ``key`` (a dict key or list index)."""
        entry = self._lines.get(id(container))
        if entry is None:
            return None
        own, entries = entry
        if key is None:
            return own
        return entries.get(key, own)

    def error(self, container: Any, key: Any, reason: str) -> ConfigError:
        """A ConfigError pointing at ``container[key]``."""
        return ConfigError(self.file, self.line(container, key), reason)


def load_yaml(path: str | Path) -> Located:
    """Parse ``path``; syntax errors become ConfigError with the line PyYAML reports."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(name, None, f"cannot read file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(name, None, f"not UTF-8 text: {exc.reason}") from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str = "<string>") -> Located:
    """Parse YAML text, keeping line numbers (see :class:`Located`)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = f"YAML syntax: {exc.problem or exc.context}"
        if exc.context and exc.context_mark is not None and exc.problem:
            reason += f" ({exc.context} started on line {exc.context_mark.line + 1})"
        raise ConfigError(name, line, reason) from None
    except yaml.YAMLError as exc:
        raise ConfigError(name, None, f"YAML syntax: {exc}") from None
    located = Located(name, None)
    located.data = _build(node, located) if node is not None else None
    return located


_constructor = yaml.SafeLoader(stream="")


def _build(node: yaml.Node, located: Located) -> Any:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        lines: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = _build(key_node, located)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise ConfigError(located.file, key_node.start_mark.line + 1, "mapping keys must be plain values")
            if key in out:
                raise ConfigError(located.file, key_node.start_mark.line + 1, f"duplicate key {key!r}")
            out[key] = _build(value_node, located)
            lines[key] = key_node.start_mark.line + 1
        located._lines[id(out)] = (line, lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = [_build(child, located) for child in node.value]
        located._lines[id(items)] = (line, {i: child.start_mark.line + 1 for i, child in enumerate(node.value)})
        return items
    try:
        return _constructor.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise ConfigError(located.file, line, f"bad value: {exc}") from None
