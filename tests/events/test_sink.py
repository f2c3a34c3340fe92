"""The buffered sink without a broker: emit never blocks on the backend, bounds hold, invalid events counted."""

from __future__ import annotations

import threading

from sessionrec.events.schema import interaction_event
from sessionrec.events.sink import BufferedSink, encode


class StuckBackend(BufferedSink):
    """A backend whose write hangs until released (a broker that accepts the connection, then stalls)."""

    def __init__(self, **options):
        self.release = threading.Event()
        self.entered = threading.Event()
        self.written: list[bytes] = []
        super().__init__(**options)

    def _write(self, batch):
        self.entered.set()
        self.release.wait()
        self.written.extend(batch)


def events(n):
    return [interaction_event("purchase", unit_id="g", session_id="s", item_id=i, event_id=f"e{i}", timestamp=1.0)
            for i in range(n)]


def test_emit_returns_while_the_backend_hangs_and_drops_beyond_the_bound():
    sink = StuckBackend(max_events=100, batch_size=10)
    try:
        first = events(1)[0]
        assert sink.emit(first)
        assert sink.entered.wait(5)  # the writer thread is now stuck inside _write
        accepted = [sink.emit(e) for e in events(1000)[1:]]  # all return with the writer stuck
        stats = sink.stats()
        assert sum(accepted) == 100 and stats.dropped_full == 899 and stats.pending == 101
        sink.release.set()
        assert sink.flush(5)
        assert len(sink.written) == 101 and sink.stats().delivered == 101
    finally:
        sink.release.set()
        sink.close()


def test_the_byte_bound_holds_too():
    sink = StuckBackend(max_bytes=2000)
    try:
        batch = events(201)
        sink.emit(batch[0])
        assert sink.entered.wait(5)
        results = [sink.emit(e) for e in batch[1:]]
        size = min(len(encode(e, False)) for e in batch)
        assert 0 < sum(results) <= 2000 // size and sink.stats().dropped_full == 200 - sum(results)
    finally:
        sink.release.set()
        sink.close()


def test_invalid_events_are_counted_not_raised():
    sink = StuckBackend()
    try:
        assert not sink.emit({"type": "click", "event_id": "x"})  # missing fields
        assert not sink.emit({"type": "exposure", "unknown": object()})
        assert not sink.emit("not a dict")
        assert sink.stats().dropped_invalid == 3
    finally:
        sink.release.set()
        sink.close()


def test_close_counts_what_was_never_delivered():
    sink = StuckBackend(batch_size=5)
    for e in events(20):
        sink.emit(e)
    sink.entered.wait(5)
    sink.close(timeout=0.2)  # the backend never came back
    stats = sink.stats()
    assert stats.delivered == 0 and stats.dropped_undelivered == 20 and stats.pending == 0
    sink.release.set()
