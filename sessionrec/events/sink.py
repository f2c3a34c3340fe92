"""The event sink interface, and a bounded buffered sink that backends build on.

    sink = RedisStreamSink("redis://127.0.0.1:6379/0")     # or KafkaSink(...), see redis_sink / kafka_sink
    sink.emit(event)       # never blocks, never raises: False when the event was dropped (counted)
    sink.flush(5.0); sink.stats(); sink.close()

Logging must never block or fail a recommendation (docs/EXPERIMENTS.md, "Events"): `emit` serialises
the event and appends it to a bounded in-memory buffer; one background thread writes batches to the
backend and retries a failed batch with capped backoff while newer events wait. When the buffer is
full (the backend is down or slower than traffic) new events are dropped and counted, so memory stays
bounded and the caller's latency does not depend on the broker.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

from sessionrec.events.schema import EventError, validate


@dataclass
class SinkStats:
    accepted: int = 0  # emit() calls that were buffered
    delivered: int = 0  # events the backend confirmed
    dropped_full: int = 0  # refused because the buffer was full
    dropped_invalid: int = 0  # refused because they did not follow their schema
    dropped_undelivered: int = 0  # buffered but the backend never confirmed them (Kafka message timeout, close)
    write_errors: int = 0  # failed backend writes (each retried)
    pending: int = 0  # buffered now

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def dropped(self) -> int:
        return self.dropped_full + self.dropped_invalid + self.dropped_undelivered


class EventSink:
    """Interface: emit(event) -> bool (non-blocking), flush(timeout) -> bool, stats() -> SinkStats, close()."""

    def emit(self, event: dict) -> bool:
        raise NotImplementedError

    def flush(self, timeout: float = 5.0) -> bool:
        raise NotImplementedError

    def stats(self) -> SinkStats:
        raise NotImplementedError

    def close(self, timeout: float = 5.0) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class Message:
    """One event as a source hands it to ingest."""

    payload: bytes
    position: object  # the source's handle for commit() (a stream entry id, a (partition, offset))


def encode(event: dict, check: bool) -> bytes:
    if check:
        validate(event)
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


class BufferedSink(EventSink):
    """Bounded buffer (events and bytes) + one writer thread calling `_write(batch)`; subclasses write.

    `_write(batch: list[bytes])` must either store the whole batch or raise; it is retried until it
    succeeds or the sink is closed (then the batch counts as dropped_undelivered).
    """

    def __init__(self, max_events: int = 100_000, max_bytes: int = 64 << 20, batch_size: int = 500,
                 validate_events: bool = True, max_backoff_s: float = 2.0):
        self.max_events = max_events  # bound on buffered events
        self.max_bytes = max_bytes  # bound on buffered bytes (64 MiB; librdkafka's own default is 1 GiB)
        self.batch_size = batch_size
        self.validate_events = validate_events
        self.max_backoff_s = max_backoff_s
        self._buffer: deque[bytes] = deque()
        self._bytes = 0
        self._stats = SinkStats()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"{type(self).__name__}-writer", daemon=True)
        self._thread.start()

    def emit(self, event: dict) -> bool:
        try:
            payload = encode(event, self.validate_events)
        except (EventError, TypeError, ValueError):
            with self._cond:
                self._stats.dropped_invalid += 1
            return False
        with self._cond:
            if (self._closing or len(self._buffer) >= self.max_events
                    or self._bytes + len(payload) > self.max_bytes):
                self._stats.dropped_full += 1
                return False
            self._buffer.append(payload)
            self._bytes += len(payload)
            self._stats.accepted += 1
            self._cond.notify()
        return True

    def flush(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._buffer or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def stats(self) -> SinkStats:
        with self._cond:
            return SinkStats(**{**asdict(self._stats), "pending": len(self._buffer) + self._in_flight})

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=max(timeout, 1.0))
        with self._cond:
            self._stats.dropped_undelivered += len(self._buffer) + self._in_flight
            self._buffer.clear()
            self._in_flight = 0
            self._bytes = 0
        self._close_backend()

    # -- writer thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.05
        while True:
            with self._cond:
                while not self._buffer and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                batch = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
                self._bytes -= sum(len(b) for b in batch)
                self._in_flight = len(batch)
            while True:
                try:
                    self._write(batch)
                except Exception:  # noqa: BLE001 - any backend failure is retried; the caller never sees it
                    with self._cond:
                        self._stats.write_errors += 1
                        if self._closing:
                            return  # close() counts the in-flight batch as undelivered
                        self._cond.wait(backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)
                    continue
                backoff = 0.05
                with self._cond:
                    self._stats.delivered += len(batch)
                    self._in_flight = 0
                    self._cond.notify_all()
                break

    def _write(self, batch: list[bytes]) -> None:
        raise NotImplementedError

    def _close_backend(self) -> None:
        pass
