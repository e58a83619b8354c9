"""Giving freed memory back to the system, so a daemon's RSS follows what it holds.

glibc keeps what a burst frees (a thousand agents registering at once, their retries, a big
slice's replies queued in libzmq's pipes) inside its malloc arenas, and RSS counts it until
told otherwise. Three knobs, all glibc's:

* a fixed mmap threshold: by default glibc raises it to the size of every large block freed
  (up to 32 MiB), after which blocks of that size come from the heap and, freed, stay
  resident (the trim threshold follows it to twice that). A peer that sends a few
  many-MiB frames would grow the daemon by as much for good; fixed, each such frame is
  mapped on its own and unmapped when dropped;

* fewer arenas: libzmq's I/O thread and the ZAP thread otherwise get arenas of their own, and
  memory one thread freed is not reused by another thread's allocations;
* ``malloc_trim(0)`` after a burst: returns the whole free pages inside every arena.

What stays is what libzmq and Python hold per connected agent (see docs/architecture.md,
"What the controller holds per agent"). Elsewhere than glibc both knobs do nothing, and say so.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt parameter numbers, from glibc's malloc.h
M_ARENA_MAX = -8
MAP_LARGE_FROM = 1 << 20  # blocks of a MiB or more: frames, decoded desired sets, never small objects


def _glibc() -> ctypes.CDLL | None:
    try:
        try:
            libc = ctypes.CDLL("libc.so.6")  # glibc's name everywhere; find_library runs ldconfig (~10 ms of every CLI start)
        except OSError:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim): nothing to tune
        return None


_LIBC = _glibc()


def limit_arenas(arenas: int) -> bool:
    """At most ``arenas`` malloc arenas (0: glibc's default, 8 per core). Call it before the
    sockets start their threads: a thread keeps the arena it first allocated from."""
    if arenas <= 0:
        return False
    if _LIBC is None:
        log.info("not glibc: malloc_arena_max=%d has no effect here", arenas)
        return False
    return bool(_LIBC.mallopt(M_ARENA_MAX, arenas))


def map_large_blocks(threshold: int = MAP_LARGE_FROM) -> bool:
    """Blocks of ``threshold`` bytes or more are mapped on their own and unmapped when freed,
    whatever was freed before (setting it turns glibc's sliding threshold off)."""
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(M_MMAP_THRESHOLD, threshold))


def release_free_memory() -> bool:
    """``malloc_trim(0)``: hand every whole free page of every arena back to the kernel."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))


@dataclass
class Trimmer:
    """Trims after a burst: once ``burst`` messages were handled since the last trim, and at
    most every ``interval`` seconds (a trim walks the arenas: about a millisecond per 100 MiB)."""

    interval: float
    burst: int
    release: Callable[[], bool] = release_free_memory
    clock: Callable[[], float] = time.monotonic
    _last: float = 0.0
    _handled_then: int = 0

    def due(self, handled: int, now: float) -> bool:
        return self.interval > 0 and handled - self._handled_then >= self.burst and now - self._last >= self.interval

    def maybe_trim(self, handled: int) -> bool:
        """Trim if due; ``handled`` is the loop's running count of messages."""
        now = self.clock()
        if not self.due(handled, now):
            return False
        self._last, self._handled_then = now, handled
        t0 = time.perf_counter()
        self.release()
        log.debug("malloc_trim after %d messages took %.1f ms", handled, (time.perf_counter() - t0) * 1000)
        return True


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection while a large message is decoded into records.

    Decoding a 10,000-row reply makes some 100,000 containers, all kept: the collector ran
    over them about 150 times for nothing, half of the decode or more (10,000 node rows on a
    loaded machine: 504-735 ms with it, 168-357 ms plus one 22-57 ms collection after
    without). Reference counting still frees as usual; cycles made
    meanwhile wait for the next collection. A process whose collector is off stays so.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass
class Collector:
    """Python's cyclic garbage collector on the loop's terms.

    Left to itself, the collector runs a full (oldest generation) collection whenever a
    quarter more objects have survived into it: under churn (10,000-sliver slices made and
    deleted) that was every 2 s at 10,000 nodes, 200 ms each, a pause every loop phase took
    its turn to absorb, and most freed nothing (bench responsiveness). Here the young
    generations are collected as before (700 allocations, cheap: a few thousand objects), and
    full collections only from the loop's timer, every ``interval`` seconds (0: Python's own
    schedule). Reference counting frees all but cycles at once; cycles wait at most that long.

    The young generations are also collected at the loop's chosen points (``young``), not
    only on Python's count. The count is allocations less frees, so a record replaced by a
    new one (a node's used capacity after a charge, its usage at each heartbeat, a view row
    kept on its record) adds nothing to it: 10,000 such replacements left 10,000 objects in
    the youngest generation, and the collection that came next, wherever it fell, walked all
    of them (4-11 ms here, 18-41 ms on the loaded machine of bench responsiveness, inside
    whatever step or heartbeat it hit).
    """

    interval: float
    clock: Callable[[], float] = time.monotonic
    _last: float = 0.0

    def __post_init__(self) -> None:
        self._last = self.clock()

    def take_over(self) -> None:
        """From now on this process's full collections are ours (a daemon's main calls it:
        the setting is the whole process's)."""
        if self.interval > 0:
            young, middle, _ = gc.get_threshold()
            gc.set_threshold(young, middle, NEVER)

    def young(self) -> None:
        """Collect the two young generations now (the loop calls it where it looks at its
        users: between steps, every few agent messages). What was made since the last call
        is walked once, then is old: each call costs what one step or batch made (under a
        millisecond), and no collection walks ten thousand replacements at once."""
        if self.interval > 0 and gc.isenabled():
            gc.collect(1)

    def maybe_collect(self) -> bool:
        now = self.clock()
        if self.interval <= 0 or now - self._last < self.interval:
            return False
        self._last = now
        t0 = time.perf_counter()
        found = gc.collect()
        log.info("full garbage collection: %d objects in cycles freed in %.0f ms", found, (time.perf_counter() - t0) * 1000)
        return True


NEVER = 1 << 30  # a collection count the oldest generation's threshold never reaches
