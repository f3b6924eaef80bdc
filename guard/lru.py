"""A small bounded mapping that forgets its least recently used entries."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most ``size`` entries; ``get`` refreshes, ``peek`` does not, ``put`` evicts the stalest."""

    __slots__ = ("_data", "peek", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[K, V] = OrderedDict()
        #: Read without refreshing: the plain dict lookup, for hot paths.
        self.peek = self._data.get

    def get(self, key: K) -> V | None:
        data = self._data
        value = data.get(key)
        if value is not None:
            data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        data = self._data
        data[key] = value
        data.move_to_end(key)
        if len(data) > self.size:
            data.popitem(last=False)

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class CheapestFirst(Generic[K, V]):
    """At most ``size`` entries, each put with a weight and an expiry; ``peek`` reads without refreshing.

    A new key, when the table is full, evicts an entry past its expiry if one is found
    (the oldest written of each weight level is looked at), else the lightest entry, the
    longest unwritten among equally light ones. The weight is what forgetting the entry
    gives back (a counter's count), so a flood of new keys, each of weight one, evicts its
    own kind and never a heavier entry. Weights are grouped by bit length: 1, 2-3, 4-7, ...
    """

    __slots__ = ("_levels", "_values", "_where", "peek", "size")

    LEVELS = 16

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: dict[K, V] = {}
        self._where: dict[K, int] = {}  # key -> its level
        # Per level, the keys (with their expiry) in the order they were last written.
        self._levels: list[OrderedDict[K, int]] = [OrderedDict() for _ in range(self.LEVELS)]
        self.peek = self._values.get

    def put(self, key: K, value: V, weight: int, expires: int, now: int) -> None:
        """Store ``value`` at ``key``: forgetting it would give back ``weight``, it is dead after ``expires``."""
        level = min(weight.bit_length(), self.LEVELS - 1)
        old = self._where.get(key)
        if old is not None:
            del self._levels[old][key]
        elif len(self._values) >= self.size:
            self._evict(now)
        self._values[key] = value
        self._where[key] = level
        self._levels[level][key] = expires

    def pop(self, key: K) -> V | None:
        level = self._where.pop(key, None)
        if level is None:
            return None
        del self._levels[level][key]
        return self._values.pop(key)

    def _evict(self, now: int) -> None:
        for keys in self._levels:
            if keys:
                key, expires = next(iter(keys.items()))
                if expires <= now:
                    self.pop(key)
                    return
        lightest = next(keys for keys in self._levels if keys)
        self.pop(next(iter(lightest)))

    def clear(self) -> None:
        self._values.clear()
        self._where.clear()
        for keys in self._levels:
            keys.clear()

    def __len__(self) -> int:
        return len(self._values)
