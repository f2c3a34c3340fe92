"""Redis Streams backend: the sink (XADD) and the ingest source (consumer group, XACK after durable write).

    sink = RedisStreamSink("redis://127.0.0.1:6379/0", stream="sessionrec:events")
    source = RedisStreamSource("redis://127.0.0.1:6379/0", group="ingest", consumer="ingest-0")

Each stream entry has one field, `event`, holding the event's JSON. The stream is capped approximately
at `max_len` entries (XADD MAXLEN ~), so a stalled ingester cannot fill Redis' memory; the cap should
hold several days of events. The source reads its own pending entries (delivered, never
acknowledged: a crash between write and commit) before new ones, so nothing is lost; the click-log
writer drops the repeats by event id.
"""

from __future__ import annotations

from sessionrec.events.sink import BufferedSink, Message

STREAM = "sessionrec:events"
FIELD = b"event"


def _client(url: str, timeout_s: float):
    import redis

    # Short socket timeouts: a dead Redis makes the writer thread retry, never hang.
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


class RedisStreamSink(BufferedSink):
    def __init__(self, url: str, stream: str = STREAM, max_len: int = 10_000_000, timeout_s: float = 1.0,
                 **buffer_options):
        self.url, self.stream, self.max_len = url, stream, max_len
        self._redis = _client(url, timeout_s)
        super().__init__(**buffer_options)

    def _write(self, batch: list[bytes]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for payload in batch:
            pipe.xadd(self.stream, {FIELD: payload}, maxlen=self.max_len, approximate=True)
        pipe.execute()

    def _close_backend(self) -> None:
        self._redis.close()


class RedisStreamSource:
    """A consumer-group reader. `read` returns pending entries of this consumer first, then new ones."""

    def __init__(self, url: str, stream: str = STREAM, group: str = "sessionrec-ingest", consumer: str = "ingest-0",
                 timeout_s: float = 5.0):
        import redis

        self.stream, self.group, self.consumer = stream, group, consumer
        self._redis = _client(url, timeout_s)
        try:
            self._redis.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._pending_done = False

    def read(self, count: int = 1000, block_ms: int = 500) -> list[Message]:
        if not self._pending_done:
            # "0": this consumer's delivered-but-unacknowledged entries (left by a crash)
            entries = self._redis.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=count)
            messages = self._messages(entries)
            if messages:
                return messages
            self._pending_done = True
        entries = self._redis.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms)
        return self._messages(entries)

    @staticmethod
    def _messages(entries) -> list[Message]:
        out = []
        for _stream, items in entries or []:
            for entry_id, fields in items:
                out.append(Message(fields.get(FIELD, b""), entry_id))
        return out

    def commit(self, messages: list[Message]) -> None:
        if messages:
            self._redis.xack(self.stream, self.group, *[m.position for m in messages])

    def lag(self) -> int:
        """Entries not yet acknowledged by the group (pending + never delivered)."""
        info = next((g for g in self._redis.xinfo_groups(self.stream) if g["name"].decode() == self.group), None)
        return int(info.get("lag") or 0) + int(info["pending"]) if info else 0

    def close(self) -> None:
        self._redis.close()
