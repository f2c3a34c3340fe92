"""Speculative history: compute a click's answer while its Redis round trip travels, then check it.

The stateful path's extra cost is one Redis round trip per batch (docs/BENCHMARKS.md section 4),
spent before the encoder can start, because the encoder needs the session's history. But the
history of a session's next click is predictable: the clicks stored so far plus this event's. So
the step sends its round trip, computes the answer from the predicted history while the reply
travels, and then compares: an answer is kept only when the history Redis returns is exactly the
predicted one, otherwise it is computed again from the returned history. Answers are therefore
always those of the plain path; what changes is that the round trip overlaps the encoder and FAISS
instead of preceding them.

Where a stub learns the stored clicks: the history script publishes a session's stored clicks on
the updates channel (`<key_prefix>updates`) whenever an event stores a click, and every stub of
every replica listens on it in a thread (`Updates`), so a prediction holds whichever stub or
replica took the session's previous click (Triton hands a server's consecutive requests to its
instances in turn, so a stub rarely sees a session's previous click itself).
Messages arrive in the order Redis ran the scripts. A session the stub has not heard of is new
once the listener has been subscribed for a whole session TTL without losing an entry that could
still be alive (every live session stored a click since, so it would have been heard of): its
history is then this event's clicks. Before that, and while the listener is down, such events wait
for Redis as before. A prediction is still wrong when a click was recorded an instant before and its
message is in flight, after an out-of-order event, or for a session kept alive only by look-ups
(they slide the TTL without storing); that costs the second computation, never a wrong answer.

Cost: one PUBLISH per stored click inside the script (a few µs), and Redis sends every stored
click's history (about 20 bytes a click) to every listening stub: for R replicas of S stubs, R x S
messages per click. Opt-in (`HistoryConfig.speculate`, chart `redis.speculate`): on the project's
2-vCPU machine it did not pay (docs/BENCHMARKS.md section 4); the overlap needs a core free for
Redis while the stub computes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("sessionrec.history")

CLICKS_SUFFIX = ":c"  # the session's clicks key (history.lua KEYS[1]); the cache is keyed without it


@dataclass
class Entry:
    last_seq: int  # sequence number of the newest stored click
    items: np.ndarray  # the stored clicks, oldest first (the newest max_len)
    at: float  # monotonic time of the update (the session's TTL slid then)


def parse_update(payload: bytes) -> tuple[str, int, np.ndarray]:
    """(session key, newest stored seq, stored clicks) from history.lua's message."""
    name, members = payload.split(b"\n", 1)
    name = name.decode()
    key = name[:-len(CLICKS_SUFFIX)] if name.endswith(CLICKS_SUFFIX) else name
    pairs = [m.split(b":", 1) for m in members.split(b",")]
    items = np.array([int(i) for _, i in pairs], dtype=np.int64)
    return key, int(pairs[-1][0]) // 64, items  # score = seq * 64 + position in the event


class HistoryCache:
    """The stored clicks of recently active sessions, bounded (LRU)."""

    def __init__(self, capacity: int, max_len: int, ttl_s: float):
        self.capacity, self.max_len = capacity, max_len
        # Redis expires a session TTL after its last event; the stub's clocks are not Redis's, so a
        # margin both ways: an entry is trusted for the TTL less the margin, known to be gone after
        # the TTL plus the margin, and in between nothing is predicted for the session.
        margin = min(5.0, 0.1 * ttl_s)
        self.max_age_s, self.gone_after_s = ttl_s - margin, ttl_s + margin
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.Lock()
        # Unknown sessions are new only when the cache has heard every store for a whole TTL: since
        # `heard_since` (the last clear, i.e. the listener's subscription) and since the last
        # eviction of an entry that could still be alive.
        self.heard_since = self.lost_at = time.monotonic()
        self.hits = self.misses = self.wrong = 0  # predictions made, not made, made and wrong

    def predict(self, key: str, seq: int, new_items: np.ndarray) -> np.ndarray | None:
        """The history up to event `seq` if it is newer than every stored click, or None."""
        if new_items.size == 0:
            return None  # a look-up only: the answer is whatever is stored
        with self._lock:
            now = time.monotonic()
            entry = self._entries.get(key)
            age = None if entry is None else now - entry.at
            if age is not None and age > self.gone_after_s:
                entry = None  # expired in Redis by now (unless look-ups kept it alive: then a wrong guess)
            if entry is None and now - max(self.heard_since, self.lost_at) > self.gone_after_s:
                self.hits += 1
                return new_items[-self.max_len:]  # a new session: nothing stored for it is still alive
            if entry is None or seq <= entry.last_seq or age > self.max_age_s:
                self.misses += 1
                return None
            self.hits += 1
        return np.concatenate([entry.items, new_items])[-self.max_len:]

    def update(self, key: str, last_seq: int, items: np.ndarray) -> None:
        with self._lock:
            self._entries[key] = Entry(last_seq, items, time.monotonic())
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                _, old = self._entries.popitem(last=False)
                if time.monotonic() - old.at <= self.gone_after_s:
                    self.lost_at = time.monotonic()  # a possibly live session forgotten

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.heard_since = time.monotonic()

    def __len__(self) -> int:
        return len(self._entries)


class Updates:
    """A thread that listens on the updates channel and keeps a HistoryCache current.

    `up` is true while it is subscribed; on any failure the cache is cleared (what was missed is
    unknown) and it reconnects every `retry_s`.
    """

    def __init__(self, connections, channel: str, cache: HistoryCache, retry_s: float = 1.0):
        self._connections = connections  # sessionrec.serving.redis_conn.Connections
        self.channel, self.cache, self.retry_s = channel, cache, retry_s
        self._connection = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.up = False
        self.received = 0

    def start(self) -> "Updates":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="session-history-updates", daemon=True)
            self._thread.start()
        return self

    def wait_up(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.up and time.monotonic() < deadline and not self._stopped.is_set():
            time.sleep(0.01)
        return self.up

    def stop(self) -> None:
        self._stopped.set()
        connection = self._connection
        if connection is not None:
            connection.disconnect()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stopped.is_set():
            connection = self._connections.dedicated()
            try:
                connection.connect()
                self._connection = connection
                connection.send_command("SUBSCRIBE", self.channel)
                connection.read_response()
                self.cache.clear()  # whatever was published while not subscribed is unknown
                self.up = True
                while not self._stopped.is_set():
                    if not connection.can_read(timeout=0.5):  # select(): the GIL is free meanwhile
                        continue
                    message = connection.read_response()
                    if isinstance(message, list) and len(message) == 3 and message[0] == b"message":
                        self.cache.update(*parse_update(message[2]))
                        self.received += 1
            except Exception as exc:  # noqa: BLE001 - whatever broke, the thread lives on and reconnects
                if not self._stopped.is_set():
                    log.info("session history: updates listener down (%s); predictions off until it reconnects", exc)
            finally:
                self.up = False
                self.cache.clear()
                self._connection = None
                connection.disconnect()
            self._stopped.wait(self.retry_s)
