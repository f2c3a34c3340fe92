"""Events through a real Redis: sink -> stream -> ingest -> click log that training reads; faults."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from sessionrec.data import read_clicks
from sessionrec.events.ingest import EventLogWriter, ingest
from sessionrec.events.redis_streams import RedisStreamSink, RedisStreamSource
from sessionrec.events.schema import interaction_event

T0 = 1_767_225_600.0


def clicks(n: int, start: int = 0) -> list[dict]:
    return [interaction_event("click", unit_id=f"g{i % 50}", session_id=f"s{i // 5}", item_id=100 + i % 17,
                              timestamp=T0 + i, event_id=f"e{i}") for i in range(start, start + n)]


def test_events_reach_the_click_log_once_and_training_reads_it(redis_server, tmp_path):
    with RedisStreamSink(redis_server.url) as sink:
        for event in clicks(2000):
            assert sink.emit(event)
        assert sink.flush(10)
        assert sink.stats().delivered == 2000
    writer = EventLogWriter(tmp_path / "log")
    source = RedisStreamSource(redis_server.url)
    stats = ingest(source, writer, batch_size=300)
    assert (stats.clicks_written, stats.duplicates, stats.rejected) == (2000, 0, 0)
    assert source.lag() == 0  # every entry acknowledged
    rows = read_clicks(tmp_path / "log" / "clicks.csv")  # the reader `sessionrec train` uses
    assert len(rows) == 2000 and rows[0].session == "s0" and rows[0].item == "100"
    assert sum(1 for _ in open(tmp_path / "log" / "events.jsonl")) == 2000


def test_duplicate_events_are_written_once(redis_server, tmp_path):
    events = clicks(300)
    with RedisStreamSink(redis_server.url) as sink:
        for event in events + events[:120] + events[50:60]:  # producer retries / replays
            sink.emit(event)
        sink.flush(10)
    stats = ingest(RedisStreamSource(redis_server.url), EventLogWriter(tmp_path / "log"))
    assert stats.read == 430 and stats.clicks_written == 300 and stats.duplicates == 130
    ids = [row.split(",")[3].strip() for row in open(tmp_path / "log" / "clicks.csv").readlines()[1:]]
    assert sorted(ids) == sorted(e["event_id"] for e in events)


def test_bad_events_are_rejected_with_the_reason_and_do_not_stall_the_stream(redis_server, tmp_path):
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.xadd("sessionrec:events", {b"event": b"{not json"})
    client.xadd("sessionrec:events", {b"event": json.dumps({**clicks(1)[0], "item_id": "x"}).encode()})
    client.xadd("sessionrec:events", {b"event": json.dumps(clicks(1, start=9)[0]).encode()})
    stats = ingest(RedisStreamSource(redis_server.url), EventLogWriter(tmp_path / "log"))
    assert (stats.rejected, stats.clicks_written) == (2, 1)
    reasons = [json.loads(line)["reason"] for line in open(tmp_path / "log" / "rejected.jsonl")]
    assert "item_id" in reasons[1] and "not of type 'integer'" in reasons[1]


CRASHING_INGEST = textwrap.dedent("""
    import os, signal, sys
    from sessionrec.events.ingest import EventLogWriter, ingest
    from sessionrec.events.redis_streams import RedisStreamSource
    # killed (SIGKILL, no cleanup) after the first batch is durable and before its commit
    ingest(RedisStreamSource(sys.argv[1]), EventLogWriter(sys.argv[2]), batch_size=250,
           after_write=lambda: os.kill(os.getpid(), signal.SIGKILL))
""")


def test_a_crash_between_write_and_commit_loses_and_duplicates_nothing(redis_server, tmp_path):
    with RedisStreamSink(redis_server.url) as sink:
        for event in clicks(1000):
            sink.emit(event)
        sink.flush(10)
    folder = tmp_path / "log"
    run = subprocess.run([sys.executable, "-c", CRASHING_INGEST, redis_server.url, str(folder)])
    assert run.returncode == -9
    source = RedisStreamSource(redis_server.url)
    assert source.lag() == 1000  # nothing was committed ...
    assert len(open(folder / "clicks.csv").readlines()) == 251  # ... though the first batch was written
    stats = ingest(source, EventLogWriter(folder), batch_size=250)  # the restart re-reads the pending batch
    assert stats.duplicates == 250 and stats.clicks_written == 750
    assert source.lag() == 0
    ids = [row.split(",")[3].strip() for row in open(folder / "clicks.csv").readlines()[1:]]
    assert len(ids) == len(set(ids)) == 1000


def test_a_torn_last_line_is_cut_and_its_event_comes_again(redis_server, tmp_path):
    folder = tmp_path / "log"
    writer = EventLogWriter(folder)
    with RedisStreamSink(redis_server.url) as sink:
        for event in clicks(10):
            sink.emit(event)
        sink.flush(10)
    with open(folder / "clicks.csv", "a") as handle:
        handle.write("s9,109,17672")  # a write cut short by a crash, never committed
    del writer
    stats = ingest(RedisStreamSource(redis_server.url), EventLogWriter(folder))
    assert stats.clicks_written == 10
    assert len(read_clicks(folder / "clicks.csv")) == 10


def test_broker_down_emit_stays_non_blocking_drops_are_counted_and_delivery_resumes(redis_server, tmp_path):
    sink = RedisStreamSink(redis_server.url, max_events=500, timeout_s=0.2)
    try:
        for event in clicks(100):
            sink.emit(event)
        assert sink.flush(10)
        redis_server.stop()
        for event in clicks(2000, start=100):
            sink.emit(event)
        stats = sink.stats()
        assert stats.dropped_full >= 2000 - 500 - sink.batch_size  # the buffer bound held
        assert stats.pending <= 500 + sink.batch_size
        redis_server.start()  # same port
        assert sink.flush(15)
        after = sink.stats()
        assert after.write_errors > 0
        assert after.delivered + after.dropped_full == 2100
    finally:
        sink.close()
    stats = ingest(RedisStreamSource(redis_server.url), EventLogWriter(tmp_path / "log"))
    assert stats.clicks_written == after.delivered - 100  # the first 100 died with the first Redis (no persistence)
