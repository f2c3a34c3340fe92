"""A lean, bounded pool of redis-py connections: the history step's one round trip per batch.

The history step sends one burst of pipelined EVALSHAs per batch and reads their replies. Through
`redis.Redis` and its connection pool that cost 60-75 us more Python per event in redis-py 8.1
(the pool's queue, its observability hooks, a poll() at every checkout to see that the socket is
clean), as much as a hot loopback PING (`python benchmarks/history_roundtrip.py`, docs/BENCHMARKS.md).
Here the step talks to redis-py's `Connection` directly: pack, one sendall, one read per reply.
Everything else stays redis-py's: URL parsing, TLS
(rediss://), AUTH, database selection, socket and connect timeouts, the hiredis parser.

A connection whose round trip failed in any way (timeout, reset, a half-read reply) is closed and
dropped, never handed out again: the next round trip starts on a fresh socket. Nothing connects
before the first round trip (the history step's warm-up thread makes one), so a server starts
whether or not Redis is there.
"""

from __future__ import annotations

import threading


class Connections:
    """At most `size` connections to the Redis at `url`; `run` sends commands in one round trip."""

    def __init__(self, url: str, password: str | None, size: int, timeout_s: float):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # Every default that would stretch a request is off: redis-py retries on timeouts and
        # connection errors and waits 5 s by default. The pool object only parses the URL into a
        # connection class and its arguments; its own checkout is what this module avoids.
        # TCP keepalive (a dead peer is noticed) means nothing on a unix:// socket, whose class refuses it.
        tcp = {} if url.startswith("unix:") else {"socket_keepalive": True}
        parsed = redis.ConnectionPool.from_url(
            url, password=password, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0,
            lib_name=None, lib_version=None, **tcp)  # no CLIENT SETINFO: a connect is one round trip, not three
        self._class, self._kwargs = parsed.connection_class, parsed.connection_kwargs
        self._errors = redis.exceptions
        self.timeout_s = timeout_s
        self._idle: list = []  # LIFO: the warmest socket first
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()

    def run(self, commands: list[tuple]) -> list:
        """The replies, in order; a reply that is a Redis error (NOSCRIPT, WRONGTYPE) is returned as
        its exception. Raises redis.exceptions.RedisError when the round trip itself fails."""
        if not self._slots.acquire(timeout=self.timeout_s):
            raise self._errors.ConnectionError(f"no free Redis connection within {self.timeout_s * 1000:g} ms")
        try:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                connection = self._class(**self._kwargs)
            try:
                packed = (connection.pack_command(*commands[0]) if len(commands) == 1
                          else connection.pack_commands(commands))
                connection.send_packed_command(packed, check_health=False)
                replies = []
                for _ in commands:
                    try:
                        replies.append(connection.read_response())
                    except self._errors.ResponseError as exc:  # one command's error: keep reading the others
                        replies.append(exc)
            except BaseException:
                connection.disconnect()  # a half-used socket is never reused
                raise
            with self._lock:
                self._idle.append(connection)
            return replies
        finally:
            self._slots.release()

    def disconnect(self) -> None:
        """Close the idle connections (after a failure: the next round trip reconnects)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.disconnect()
