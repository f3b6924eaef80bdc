"""Read YAML while remembering where every value came from.

Rules files are written by people; when one is wrong the error must say which line and
column. PyYAML keeps marks on its node tree, so we build plain Python values from the
nodes ourselves and return, beside them, a map from each mapping/sequence (by ``id``)
to the positions of its entries: for a mapping, where each key and each value starts;
for a sequence, where each item starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from guard.errors import ConfigError

#: A 1-based (line, column).
Position = tuple[int, int]


@dataclass
class Located:
    """Parsed YAML plus the positions of containers and their entries."""

    file: str
    data: Any
    # id(container) -> (container's own position, {key or index: (key position, value position)})
    _marks: dict[int, tuple[Position, dict[Any, tuple[Position, Position]]]] = field(default_factory=dict)

    def position(self, container: Any, key: Any = None, *, of_key: bool = False) -> Position | None:
        """Where ``container`` starts, or its entry ``key`` (a dict key or list index).

        For a mapping entry this is where the value starts, or the key itself with
        ``of_key``. An entry that is absent falls back to the container.
        """
        entry = self._marks.get(id(container))
        if entry is None:
            return None
        own, entries = entry
        if key is None or key not in entries:
            return own
        key_position, value_position = entries[key]
        return key_position if of_key else value_position

    def line(self, container: Any, key: Any = None) -> int | None:
        """Line of ``container`` itself, or of its entry ``key`` (the key's line for a mapping)."""
        position = self.position(container, key, of_key=True)
        return position[0] if position else None

    def locate(self, path: Sequence[Any], *, of_key: bool = False) -> Position:
        """Where the value at ``path`` (keys and indexes from the top) is, or the deepest part found.

        With ``of_key``, the last step's key rather than its value (for unknown keys).
        """
        container = self.data
        found = self.position(container) or (1, 1)
        for i, step in enumerate(path):
            if not isinstance(container, dict | list) or not _has(container, step):
                break
            found = self.position(container, step, of_key=of_key and i == len(path) - 1) or found
            container = container[step]
        return found

    def error(self, container: Any, key: Any, reason: str) -> ConfigError:
        """A ConfigError pointing at the key ``container[key]``."""
        line, column = self.position(container, key, of_key=True) or (None, None)
        return ConfigError(self.file, line, reason, column)


def _has(container: dict | list, step: Any) -> bool:
    if isinstance(container, dict):
        return step in container
    return isinstance(step, int) and 0 <= step < len(container)


def load_yaml(path: str | Path) -> Located:
    """Parse ``path``; syntax errors become ConfigError with the position PyYAML reports."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(name, None, f"cannot read file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(name, None, f"not UTF-8 text: {exc.reason}") from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str = "<string>") -> Located:
    """Parse YAML text, keeping positions (see :class:`Located`)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = f"YAML syntax: {exc.problem or exc.context}"
        if exc.context and exc.context_mark is not None and exc.problem:
            reason += f" ({exc.context} started on line {exc.context_mark.line + 1})"
        if mark is None:
            raise ConfigError(name, None, reason) from None
        raise ConfigError(name, mark.line + 1, reason, mark.column + 1) from None
    except yaml.YAMLError as exc:
        raise ConfigError(name, None, f"YAML syntax: {exc}") from None
    located = Located(name, None)
    located.data = _build(node, located) if node is not None else None
    return located


_constructor = yaml.SafeLoader(stream="")


def _at(node: yaml.Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _build(node: yaml.Node, located: Located) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        entries: dict[Any, tuple[Position, Position]] = {}
        for key_node, value_node in node.value:
            key = _build(key_node, located)
            if not isinstance(key, str | int | float | bool) and key is not None:
                line, column = _at(key_node)
                raise ConfigError(located.file, line, "mapping keys must be plain values", column)
            if key in out:
                line, column = _at(key_node)
                reason = f"duplicate key '{key}' (first on line {entries[key][0][0]})"
                raise ConfigError(located.file, line, reason, column)
            out[key] = _build(value_node, located)
            entries[key] = (_at(key_node), _at(value_node))
        located._marks[id(out)] = (_at(node), entries)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = [_build(child, located) for child in node.value]
        located._marks[id(items)] = (_at(node), {i: (_at(c), _at(c)) for i, c in enumerate(node.value)})
        return items
    try:
        return _constructor.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        line, column = _at(node)
        raise ConfigError(located.file, line, f"bad value: {exc}", column) from None
