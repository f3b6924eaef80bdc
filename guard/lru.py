"""A small bounded mapping that forgets its least recently used entries."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

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


class SizedLRU(LRU[K, V]):
    """An :class:`LRU` bounded in bytes as well: its keys' ``weigh`` (``len``) plus ``overhead`` each.

    For keys a client chooses (a User-Agent): a bound on entries alone lets long keys take
    ``size`` times the longest key. Callers still keep out keys too long to be worth a slot.
    """

    __slots__ = ("max_bytes", "overhead", "used", "weigh")

    def __init__(self, size: int, max_bytes: int, overhead: int = 0, weigh: Callable[[Any], int] = len) -> None:
        super().__init__(size)
        self.max_bytes = max_bytes
        self.overhead = overhead
        self.weigh = weigh
        self.used = 0  # bytes of the keys held, with their overhead

    def put(self, key: K, value: V) -> None:
        data = self._data
        if key not in data:
            self.used += self.weigh(key) + self.overhead
        data[key] = value
        data.move_to_end(key)
        while len(data) > self.size or (self.used > self.max_bytes and len(data) > 1):
            old, _ = data.popitem(last=False)
            self.used -= self.weigh(old) + self.overhead

    def pop(self, key: K) -> V | None:
        if key in self._data:
            self.used -= self.weigh(key) + self.overhead
        return self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()
        self.used = 0


class CheapestFirst(Generic[K, V]):
    """At most ``size`` entries and ``units`` units of memory, each entry put with a weight, a
    size in units and an expiry; ``peek`` reads without refreshing.

    When over either bound, it evicts an entry past its expiry if one is found (the oldest
    written of each weight level is looked at), else the lightest entry, the longest
    unwritten among equally light ones, never the entry just put. The weight is what
    forgetting the entry gives back (a counter's count), so a flood of new keys, each of
    weight one, evicts its own kind and never a heavier entry. Weights are grouped by bit
    length: 1, 2-3, 4-7, ...
    """

    __slots__ = ("_levels", "_units", "_values", "_where", "peek", "size", "units")

    LEVELS = 16

    def __init__(self, size: int, units: int) -> None:
        self.size, self.units = size, units
        self._units = 0
        self._values: dict[K, V] = {}
        self._where: dict[K, tuple[int, int]] = {}  # key -> its level and size in units
        # Per level, the keys (with their expiry) in the order they were last written.
        self._levels: list[OrderedDict[K, int]] = [OrderedDict() for _ in range(self.LEVELS)]
        self.peek = self._values.get

    def put(self, key: K, value: V, weight: int, units: int, expires: int, now: int) -> None:
        """Store ``value`` at ``key``: forgetting it would give back ``weight``, it takes ``units``
        of memory, and it is dead after ``expires``."""
        level = min(weight.bit_length(), self.LEVELS - 1)
        old = self._where.get(key)
        if old is not None:
            del self._levels[old[0]][key]
            self._units -= old[1]
        self._values[key] = value
        self._where[key] = (level, units)
        self._levels[level][key] = expires
        self._units += units
        while (len(self._values) > self.size or self._units > self.units) and len(self._values) > 1:
            self._evict(now, key)

    def pop(self, key: K) -> V | None:
        where = self._where.pop(key, None)
        if where is None:
            return None
        del self._levels[where[0]][key]
        self._units -= where[1]
        return self._values.pop(key)

    def _evict(self, now: int, keep: K) -> None:
        for keys in self._levels:
            for key, expires in keys.items():
                if key != keep and expires <= now:
                    self.pop(key)
                    return
                break  # only the oldest written of each level (or the one after ``keep``) is looked at
        for keys in self._levels:
            for key in keys:
                if key != keep:
                    self.pop(key)
                    return

    def clear(self) -> None:
        self._values.clear()
        self._where.clear()
        self._units = 0
        for keys in self._levels:
            keys.clear()

    def __len__(self) -> int:
        return len(self._values)
