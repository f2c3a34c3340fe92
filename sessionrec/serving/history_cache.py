"""Speculative history: compute a click's answer while its Redis round trip travels, then check it.

The stateful path's extra cost is one Redis round trip per batch (docs/BENCHMARKS.md section 4),
spent before the encoder can start, because the encoder needs the session's history. But the next
history of a session this stub has seen is predictable: the clicks Redis returned last time plus
this event's. So the step sends its round trip, computes the answer from the predicted history
while the reply travels, and then compares: an answer is kept only when the history Redis returns
is exactly the predicted one, otherwise it is computed again from the returned history. Answers
are therefore always those of the plain path; what changes is that the round trip overlaps the
encoder and FAISS instead of preceding them.

A prediction goes stale when another stub or replica records a click of the session. Redis says
so: every pool connection runs `CLIENT TRACKING ON REDIRECT <id> NOLOOP`, so the keys the history
script reads are tracked (measured on redis-server 7.0: keys read inside a script are), and a
write by any other connection sends their names to one connection of this stub subscribed to
`__redis__:invalidate` (server-assisted client-side caching; RESP2 redirect, so no push messages
reach the pool's connections). The stub drains those messages before predicting. Nothing is
predicted while that listener is not connected; a prediction that is still wrong (a click recorded
an instant before, an out-of-order event) only costs the second computation.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

CHANNEL = "__redis__:invalidate"
SUFFIXES = (":c", ":f")  # the history's two keys per session (history.lua): clicks and floor


@dataclass
class Entry:
    seq: int  # the event whose answer this is
    items: np.ndarray  # the history Redis returned for it, oldest first
    at: float  # monotonic time it was stored (the session's TTL slides from about then)


class HistoryCache:
    """The last history Redis returned per session key, bounded (LRU), dropped when invalidated."""

    def __init__(self, capacity: int, max_len: int, ttl_s: float):
        self.capacity, self.max_len = capacity, max_len
        # An entry is trusted for less than the session's TTL: an expired session starts afresh in
        # Redis (its expiry is also an invalidation, but the listener may have been down then).
        self.max_age_s = max(0.0, ttl_s - 5.0)
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.wrong = 0  # predictions made, not made, made and wrong

    def predict(self, key: str, seq: int, new_items: np.ndarray) -> np.ndarray | None:
        """The history up to event `seq` if nothing but this event happened since the entry, or None."""
        if new_items.size == 0:
            return None  # a look-up only: the answer is whatever is stored
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or seq <= entry.seq or time.monotonic() - entry.at > self.max_age_s:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
        return np.concatenate([entry.items, new_items])[-self.max_len:]

    def remember(self, key: str, seq: int, items: np.ndarray) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.seq > seq:
                return  # an older event's answer (out of order): keep the newer one
            self._entries[key] = Entry(seq, items, time.monotonic())
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def forget(self, keys) -> None:
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class Invalidations:
    """The connection Redis sends tracked keys' invalidations to; `drain()` reads what arrived."""

    ALL = None  # drain()'s answer when every entry must go (a flush, or the listener failed)

    def __init__(self, connections):
        self._connections = connections  # sessionrec.serving.redis_conn.Connections
        self._connection = None
        self._lock = threading.Lock()

    @property
    def up(self) -> bool:
        return self._connection is not None

    def connect(self) -> int:
        """Connect, subscribe and point every new pool connection's tracking here; the client id.
        Raises redis.exceptions.RedisError when Redis is not reachable."""
        connection = self._connections.dedicated()
        try:
            connection.connect()
            connection.send_command("CLIENT", "ID")
            client_id = int(connection.read_response())
            connection.send_command("SUBSCRIBE", CHANNEL)
            connection.read_response()
        except BaseException:
            connection.disconnect()
            raise
        with self._lock:
            old, self._connection = self._connection, connection
        if old is not None:
            old.disconnect()
        # NOLOOP: a connection's own writes do not invalidate what it read (the step remembers what
        # its own round trip returned). Connections made before this are not reused (set_setup).
        self._connections.set_setup([("CLIENT", "TRACKING", "ON", "REDIRECT", str(client_id), "NOLOOP")])
        return client_id

    def drain(self) -> set[str] | None:
        """Session keys invalidated since the last call (their :c/:f suffix removed), or ALL."""
        with self._lock:
            connection = self._connection
            if connection is None:
                return self.ALL
            keys: set[str] = set()
            try:
                while connection.can_read(timeout=0):
                    message = connection.read_response()
                    if not (isinstance(message, list) and len(message) == 3 and message[0] == b"message"):
                        continue
                    if message[2] is None:  # FLUSHDB / FLUSHALL: everything is invalid
                        return self.ALL
                    for name in message[2]:
                        name = name.decode() if isinstance(name, bytes) else str(name)
                        keys.add(name[:-2] if name.endswith(SUFFIXES) else name)
            except Exception:  # noqa: BLE001 - any failure: listener down, nothing is trusted
                pass
            else:
                return keys
        self.close()
        return self.ALL

    def close(self) -> None:
        """Disconnect; new pool connections stop tracking (a redirect to a gone client is refused)."""
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.disconnect()
            self._connections.set_setup([])
