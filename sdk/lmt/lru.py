"""A small thread-safe LRU mapping, bounded by entry count and optionally by bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class LRUCache(Generic[V]):
    """Least-recently-used cache. ``size_of(value)`` (bytes) is used when ``max_bytes`` is set.

    >>> cache = LRUCache(max_entries=2)
    >>> cache.put("a", 1); cache.put("b", 2); cache.put("c", 3)
    >>> list(cache.keys())
    ['b', 'c']
    """

    def __init__(
        self, max_entries: int, max_bytes: int | None = None, size_of: Callable[[V], int] | None = None
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._size_of = size_of or (lambda value: 0)
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._lock = threading.RLock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            self._items[key] = (value, self._size_of(value))
            self._items.move_to_end(key)
            self._evict(keep=key)

    def _evict(self, keep: Hashable) -> None:
        while len(self._items) > self.max_entries or (
            self.max_bytes is not None and self.total_bytes > self.max_bytes and len(self._items) > 1
        ):
            oldest = next(iter(self._items))
            if oldest == keep:  # never evict what was just inserted
                break
            del self._items[oldest]

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._items.values())

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
