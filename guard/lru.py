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
