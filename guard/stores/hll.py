"""Redis-compatible HyperLogLog for the memory store's hour and day budgets.

The memory store must reach the same verdicts as Redis's PFADD/PFCOUNT, so this is
Redis's own algorithm step for step (src/hyperloglog.c): MurmurHash64A with Redis's seed,
16384 registers (P = 14), each holding the length of the run of zero bits that ends in
the first one bit, and Otmar Ertl's estimator over the register histogram ("New
cardinality estimation algorithms for HyperLogLog sketches", arXiv:1702.01284), with the
same floating-point operations in the same order. Same registers, same histogram, same
estimate: the parity tests compare both stores request by request.

A :class:`SlicedSketch` is one budget's sliding window: ``SLICES`` slices (one register
set each, sparse: only registers that are not zero), and their union kept up to date with
its histogram, so a count costs a few dozen float operations, not a pass over registers.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence

from guard.lru import LRU

P = 14  # register index bits (Redis HLL_P)
REGISTERS = 1 << P  # Redis HLL_REGISTERS
Q = 64 - P  # Redis HLL_Q: bits left for the run length
ALPHA_INF = 0.721347520444481703680  # Redis HLL_ALPHA_INF, 1 / (2 ln 2)
SEED = 0xADC83B19
_M64 = (1 << 64) - 1
_MURMUR_M = 0xC6A4A7935BD1E995

#: A budget's window is this many slices: a day in hours, an hour in 2.5-minute steps.
SLICES = 24


#: A sketch's register histogram is kept as Q + 2 little-endian 16-bit counts in a bytearray:
#: changed in place (no new object per change), and nothing the garbage collector watches.
_HISTOGRAM = struct.Struct(f"<{Q + 2}H")
_COUNT = struct.Struct("<H")


def new_histogram(empty: int) -> bytearray:
    """A register histogram (``histogram[v]``: registers holding ``v``) with ``empty`` registers at 0."""
    histogram = bytearray(_HISTOGRAM.size)
    _COUNT.pack_into(histogram, 0, empty)
    return histogram


def histogram_counts(histogram: bytearray) -> list[int]:
    """The counts of a histogram kept by :func:`new_histogram`."""
    return list(_HISTOGRAM.unpack(histogram))


def _shift(histogram: bytearray, old: int, value: int) -> None:
    """One register moves from ``old`` to ``value``."""
    _COUNT.pack_into(histogram, 2 * old, _COUNT.unpack_from(histogram, 2 * old)[0] - 1)
    _COUNT.pack_into(histogram, 2 * value, _COUNT.unpack_from(histogram, 2 * value)[0] + 1)


def murmurhash64a(data: bytes, seed: int = SEED) -> int:
    """MurmurHash64A (Austin Appleby) as Redis computes it, little-endian."""
    m, r = _MURMUR_M, 47
    length = len(data)
    h = (seed ^ (length * m)) & _M64
    end = length - (length & 7)
    for i in range(0, end, 8):
        k = int.from_bytes(data[i : i + 8], "little")
        k = (k * m) & _M64
        k ^= k >> r
        k = (k * m) & _M64
        h ^= k
        h = (h * m) & _M64
    tail = length & 7
    if tail:
        for j in range(tail - 1, -1, -1):
            h ^= data[end + j] << (8 * j)
        h = (h * m) & _M64
    h ^= h >> r
    h = (h * m) & _M64
    h ^= h >> r
    return h


_registers: LRU[str, tuple[int, int]] = LRU(65536)


def register_of(item: str) -> tuple[int, int]:
    """``(register index, run length)`` that adding ``item`` sets (Redis hllPatLen), cached."""
    found = _registers.peek(item)
    if found is None:
        h = murmurhash64a(item.encode("utf-8"))
        index = h & (REGISTERS - 1)
        h = (h >> P) | (1 << Q)  # the run ends at bit Q at the latest
        found = (index, (h & -h).bit_length())
        _registers.put(item, found)
    return found


@functools.cache
def _sigma_of(zeros: int) -> float:
    """``m * sigma(zeros / m)``: depends on the count of empty registers alone (memoised)."""
    m = float(REGISTERS)
    return m * _sigma(zeros / m)


@functools.cache
def _tau_of(full: int) -> float:
    """``m * tau((m - full) / m)`` for ``full`` registers at the largest value (memoised)."""
    m = float(REGISTERS)
    return m * _tau((m - full) / m)


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y = 1.0
    z = x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if previous == z:
            return z


def _tau(x: float) -> float:
    if x == 0.0 or x == 1.0:
        return 0.0
    y = 1.0
    z = 1 - x
    while True:
        x = math.sqrt(x)
        previous = z
        y *= 0.5
        z -= (1 - x) ** 2 * y
        if previous == z:
            return z / 3


def estimate(histogram: Sequence[int], top: int = Q) -> int:
    """Cardinality from the register histogram (``histogram[v]``: registers holding ``v``), as Redis hllCount.

    ``top``: no register holds more (the buckets above it are empty and are skipped).
    """
    m = float(REGISTERS)
    z = _tau_of(histogram[Q + 1])
    if z != 0.0:
        top = Q
    # Leading empty buckets leave z at exactly 0.0: starting below them gives the same result.
    for count in histogram[top:0:-1]:
        z += count
        z *= 0.5
    z += _sigma_of(histogram[0])
    e = ALPHA_INF * m * m / z
    return math.floor(e + 0.5)  # llroundl: half away from zero (e >= 0)


class SlicedSketch:
    """Distinct values over a sliding window of ``SLICES`` slices (one budget's counter).

    ``registers`` holds every slice's sparse registers in one flat table (key: slice number
    times :data:`REGISTERS` plus register index), ``slices`` how many each slice has;
    ``union`` and ``histogram`` describe the union of the slices in the window as of slice
    ``current``. Only numbers in dicts and bytes: apart from the sketch itself the garbage
    collector has nothing to watch (a full collection walks every object it watches).
    """

    __slots__ = ("count", "current", "histogram", "probe", "registers", "slices", "top", "union")

    def __init__(self) -> None:
        self.registers: dict[int, int] = {}
        self.slices: dict[int, int] = {}
        self.union: dict[int, int] = {}
        self.histogram = new_histogram(REGISTERS)
        self.current = -1
        self.count: int | None = 0  # estimate of the union (None: not computed since it changed)
        self.top = 0  # the largest register value in the union
        # The last count_with that would change the union: (register, value, estimate with it),
        # so that adding that item next sets the count without estimating again.
        self.probe: tuple[int, int, int] | None = None

    def advance(self, current: int) -> None:
        """Move the window to end at slice ``current`` (slices that left it are dropped)."""
        if current == self.current:
            return
        oldest = current - SLICES + 1
        self.current = current
        if not any(s < oldest for s in self.slices):
            return
        self.slices = {s: n for s, n in self.slices.items() if s >= oldest}
        first = oldest * REGISTERS
        self.registers = {key: value for key, value in self.registers.items() if key >= first}
        union: dict[int, int] = {}
        for key, value in self.registers.items():
            index = key % REGISTERS
            if value > union.get(index, 0):
                union[index] = value
        counts = [REGISTERS - len(union)] + [0] * (Q + 1)
        for value in union.values():
            counts[value] += 1
        self.union, self.histogram, self.count, self.probe = union, bytearray(_HISTOGRAM.pack(*counts)), None, None
        self.top = max(union.values(), default=0)

    def copy(self) -> SlicedSketch:
        """An independent copy (to look ahead without changing this one)."""
        other = SlicedSketch()
        other.registers, other.slices, other.union = dict(self.registers), dict(self.slices), dict(self.union)
        other.histogram = bytearray(self.histogram)
        other.current, other.count, other.top = self.current, self.count, self.top
        return other

    def total(self) -> int:
        """The estimate of the window's distinct values."""
        if self.count is None:
            self.count = estimate(histogram_counts(self.histogram), self.top)
        return self.count

    def count_with(self, item: str) -> int:
        """The estimate of the window's distinct values if ``item`` were added (nothing changes)."""
        return self.count_with_register(*register_of(item))

    def count_with_register(self, index: int, value: int) -> int:
        """:meth:`count_with` for the register ``item`` sets (see :func:`register_of`)."""
        union = self.union
        if not union:
            return 1  # one register set: the estimate is 1 whatever its value (tests/test_budgets.py)
        old = union.get(index, 0)
        if value <= old:
            count = self.count
            return count if count is not None else self.total()
        counts = histogram_counts(self.histogram)
        counts[old] -= 1
        counts[value] += 1
        count = estimate(counts, max(self.top, value))
        self.probe = (index, value, count)
        return count

    def add(self, item: str) -> None:
        """Record ``item`` in the current slice."""
        self.add_register(*register_of(item))

    def add_register(self, index: int, value: int) -> None:
        """:meth:`add` for the register ``item`` sets."""
        key = self.current * REGISTERS + index
        registers = self.registers
        held = registers.get(key)
        if held is None:
            self.slices[self.current] = self.slices.get(self.current, 0) + 1
        elif value <= held:
            return  # in this slice already: the union holds it too
        registers[key] = value
        old = self.union.get(index, 0)
        if value > old:
            self.union[index] = value
            _shift(self.histogram, old, value)
            probe, self.probe = self.probe, None
            # The same histogram count_with just estimated: its figure, else estimated when asked.
            self.count = probe[2] if probe is not None and probe[0] == index and probe[1] == value else None
            if value > self.top:
                self.top = value

    def oldest(self) -> int | None:
        """The oldest slice in the window that holds anything."""
        return min(self.slices) if self.slices else None
