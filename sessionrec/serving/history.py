"""Guest session history in Redis: the site sends one click, the server keeps the session.

The `session_history` step of the `recommend_session` ensemble (model_repository/session_history/
model.py only adapts tensors) records each click event and hands the session's clicks up to it to
the recommender. State lives in Redis, not in Triton: every replica and every model version sees
the same history, and a hot swap or a pod restart loses nothing.

One round trip per batch: each event is one EVALSHA of history.lua (record, de-duplicate by the
event's sequence number, keep the newest `max_len` in click order, slide the TTL, return the
history), all events of the batch pipelined. Session ids are keyed by an HMAC, never stored raw.

Redis is never a single point of failure: commands time out after `timeout_ms` (tens of ms, not
redis-py's defaults), nothing is retried inside a request, the pool is bounded, and when Redis is
slow or down the request is answered from the clicks it carries (state `degraded`); after a
failure Redis is not tried again for `retry_after_s`, so a hung Redis costs at most one timeout per
interval, not one per request, and the next try reconnects by itself.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from sessionrec.serving.preprocess import RequestError

log = logging.getLogger("sessionrec.history")

SCRIPT = (Path(__file__).with_name("history.lua")).read_text()
STORED, DUPLICATE, DEGRADED, NOT_STORED = "stored", "duplicate", "degraded", "not_stored"
STATES = (STORED, DUPLICATE, DEGRADED, NOT_STORED)
MAX_EVENT_ITEMS = 63  # clicks in one event: positions 0..63 of the event's score range (history.lua); more: ITEMS
MAX_SEQ = 1 << 47  # seq * 64 stays an exact integer in Lua's doubles (2**53); ms timestamps fit for millennia
MAX_SESSION_ID_BYTES = 256
# Session ids that start with this are the server's own canaries (sessionrec.serving.session_canaries),
# replayed at every start and version switch: kept under <key_prefix>canary: with a TTL of
# canary_ttl_s, never among guests' keys. The NUL byte keeps it out of any cookie, UUID or token a
# site would send as a guest's session id.
CANARY_PREFIX = b"\x00sessionrec-canary:"
# Server environment -> HistoryConfig field (the chart sets these from its `redis:` values and Secret).
ENVIRONMENT = {
    "SESSIONREC_REDIS_URL": "url",
    "SESSIONREC_REDIS_PASSWORD": "password",
    "SESSIONREC_HISTORY_KEY_PREFIX": "key_prefix",
    "SESSIONREC_HISTORY_TTL_S": "ttl_s",
    "SESSIONREC_HISTORY_MAX_LEN": "max_len",
    "SESSIONREC_REDIS_TIMEOUT_MS": "timeout_ms",
    "SESSIONREC_SESSION_HMAC_KEY": "hmac_key",
    "SESSIONREC_HISTORY_SPECULATE": "speculate",
}


@dataclass
class HistoryConfig:
    """Where the history lives and how long a request may wait for it."""

    url: str | None = None  # redis://host:port/db or rediss:// (TLS); None: history off (answers not_stored)
    password: str | None = None  # kept out of the url so it can come from a Secret on its own
    key_prefix: str = "sessionrec:h:"  # keys are <prefix>{<hmac>}:c and :f (one hash slot: Redis Cluster safe)
    ttl_s: float = 1800.0  # sliding: a guest idle for 30 min starts a new session (the usual session cut)
    max_len: int = 50  # clicks kept per session; the model reads the newest of them (its own max_len)
    timeout_ms: float = 20.0  # connect and each reply; a request waits at most this for Redis
    retry_after_s: float = 1.0  # after a failure, answer degraded without trying Redis for this long
    pool_size: int = 4  # connections per stub; one batch at a time uses one
    canary_ttl_s: float = 60.0  # canary sessions (CANARY_PREFIX ids) expire soon: each replay uses new ids
    # Compute a known session's answer while its round trip travels, kept only if Redis returns the
    # predicted history (sessionrec.serving.history_cache): the script publishes stored clicks on
    # <key_prefix>updates and every stub listens. Off by default: on this project's 2-vCPU machine it
    # did not pay (docs/BENCHMARKS.md section 4); it needs a core free for Redis during the compute.
    speculate: bool = False
    cache_size: int = 100000  # sessions whose stored clicks a stub keeps for that (LRU; ~0.6 KB each)
    # HMAC key of session ids. Replicas must share it (the chart reads it from a Secret); the default
    # only keeps raw ids out of Redis on a single embedded server.
    hmac_key: str = field(default="sessionrec-embedded-default", repr=False)

    @classmethod
    def from_environment(cls, base: "HistoryConfig | None" = None, environ=None) -> "HistoryConfig":
        environ = os.environ if environ is None else environ
        config = base or cls()
        changes = {}
        for name, attribute in ENVIRONMENT.items():
            value = environ.get(name)
            if value in (None, ""):
                continue
            kind = type(getattr(cls(), attribute))
            if kind is bool:
                if value.lower() not in ("1", "0", "true", "false", "on", "off"):
                    raise ValueError(f"{name}={value!r}: expected 1 or 0")
                changes[attribute] = value.lower() in ("1", "true", "on")
                continue
            try:
                changes[attribute] = kind(value) if kind in (int, float) else value
            except ValueError:
                raise ValueError(f"{name}={value!r}: expected a number") from None
        config = replace(config, **changes)
        config.check()
        return config

    def check(self) -> None:
        if (self.ttl_s <= 0 or self.canary_ttl_s <= 0 or self.max_len < 1 or self.timeout_ms <= 0 or self.pool_size < 1
                or self.cache_size < 0):
            raise ValueError(f"history settings out of range: ttl_s={self.ttl_s}, max_len={self.max_len}, "
                             f"timeout_ms={self.timeout_ms}, pool_size={self.pool_size}, cache_size={self.cache_size}")


def shortfall(history_max_len: int, model_max_len: int, setting: str = "history_max_len") -> str | None:
    """Why a history of `history_max_len` clicks cannot serve a model reading `model_max_len`, or None.

    Redis keeps the newest `history_max_len` clicks of a session and the model reads the newest
    `model_max_len` of what it gets: with fewer kept than read, every guest past the kept length is
    answered from a truncated session on recommend_session while `recommend` (the caller's whole
    session) answers right. Nothing fails; the answers are silently worse. So it is refused wherever
    both numbers meet: export (ServingConfig), the server's start and switches (sessionrec serve),
    and the step's load (a server started some other way, e.g. the chart's tritonserver).
    """
    if int(history_max_len) >= int(model_max_len):
        return None
    return (f"{setting}={history_max_len} (clicks kept per session in Redis) is below the model's "
            f"max_len={model_max_len} (clicks it reads): recommend_session would answer guests from truncated "
            f"sessions; keep at least {model_max_len} clicks ({setting} >= max_len)")


def for_model(parameter, model_max_len: int | None = None, speculate: bool = True) -> "SessionHistory":
    """The history of a Triton python step: its config parameters, then the server's environment.

    `parameter(key, default)` reads the model config's parameters (triton_io.parameter).
    `model_max_len`: the clicks the step's model version reads; with Redis configured, a kept
    history shorter than that fails the load (`shortfall`), so a wrong setting never serves.
    `speculate=False`: never (a step with nothing to overlap the round trip with: session_history).
    """
    defaults = HistoryConfig(max_len=int(parameter("history_max_len", "50")),
                             ttl_s=float(parameter("history_ttl_s", "1800")),
                             timeout_ms=float(parameter("redis_timeout_ms", "20")))
    config = HistoryConfig.from_environment(defaults)
    if not speculate:
        config = replace(config, speculate=False)
    if model_max_len is not None and config.url:
        source = "SESSIONREC_HISTORY_MAX_LEN" if os.environ.get("SESSIONREC_HISTORY_MAX_LEN") else "history_max_len"
        problem = shortfall(config.max_len, model_max_len, source)
        if problem:
            raise ValueError(problem)
    return SessionHistory(config)


def model_max_len(version_dir) -> int:
    """The clicks a served version's model reads (its manifest's serving.max_len)."""
    from sessionrec.serving.artifacts import read_manifest

    return int(read_manifest(Path(version_dir))["serving"]["max_len"])


@dataclass
class ClickEvent:
    """One request of recommend_session."""

    session_id: bytes  # the site's guest session id (hashed before it reaches Redis)
    new_items: np.ndarray  # raw ids clicked in this event, oldest first (empty: look up only)
    seq: int  # this event's sequence number in its session, 1, 2, ...: order and idempotency key
    items: np.ndarray | None = None  # the caller's full session: answered from it instead of the history


@dataclass
class HistoryAnswer:
    items: np.ndarray  # (n,) raw ids the recommender gets, oldest first
    state: str  # one of STATES
    stored_length: int  # clicks in the stored history up to this event (0 when Redis was not read)


def check_event(event: ClickEvent) -> ClickEvent:
    """The event with normalised arrays, or a RequestError naming the bad input."""
    session = event.session_id
    if isinstance(session, str):
        session = session.encode()
    if not session:
        raise RequestError("SESSION_ID is empty: send the guest's session id")
    if len(session) > MAX_SESSION_ID_BYTES:
        raise RequestError(f"SESSION_ID has {len(session)} bytes, over the limit of {MAX_SESSION_ID_BYTES}")
    new_items = np.asarray(event.new_items).reshape(-1)
    if new_items.size and not np.issubdtype(new_items.dtype, np.integer):
        raise RequestError(f"NEW_ITEMS must be int64 item ids, got {new_items.dtype}")
    if new_items.size > MAX_EVENT_ITEMS:
        raise RequestError(f"NEW_ITEMS has {new_items.size} item ids, over the limit of {MAX_EVENT_ITEMS} per event")
    seq = int(event.seq)
    if not 1 <= seq < MAX_SEQ:
        raise RequestError(f"CLICK_SEQ={seq} is out of range: number a session's events 1, 2, 3, ... or "
                           "use the event's time in ms (1 up to 2**47)")
    items = None if event.items is None else np.asarray(event.items).reshape(-1).astype(np.int64)
    return ClickEvent(session, new_items.astype(np.int64), seq, items if items is not None and items.size else None)


def _own_clicks(event: ClickEvent) -> np.ndarray:
    return event.items if event.items is not None else event.new_items


class SessionHistory:
    """Records click events and returns each session's history, one Redis round trip per batch."""

    def __init__(self, config: HistoryConfig, client=None):
        """`client`: a redis_conn.Connections (default: one for config.url, or none when it is None)."""
        config.check()
        self.config = config
        self._key = config.hmac_key.encode()
        self._connections = client if client is not None else self._connect(config)
        self._sha: str | None = None
        self._lock = threading.Lock()
        self._closed_until = 0.0  # monotonic time before which Redis is not tried (after a failure)
        self.failures = 0  # batches answered degraded because Redis failed (for logs and tests)
        self._cache = self._updates = None
        if self._connections is not None and config.speculate and config.cache_size > 0:
            from sessionrec.serving.history_cache import HistoryCache, Updates

            self._cache = HistoryCache(config.cache_size, config.max_len, config.ttl_s)
            self._updates = Updates(self._connections, self.updates_channel, self._cache, config.retry_after_s)

    @staticmethod
    def _connect(config: HistoryConfig):
        if not config.url:
            return None
        from sessionrec.serving.redis_conn import Connections

        # Nothing connects here: start never waits on Redis (warm_in_background connects off the
        # serving thread). A request waits for a free connection
        # no longer than one timeout, and for each reply no longer than one timeout.
        return Connections(config.url, config.password, config.pool_size, config.timeout_ms / 1000.0)

    @property
    def enabled(self) -> bool:
        return self._connections is not None

    def key(self, session_id: bytes) -> str:
        digest = hmac.new(self._key, session_id, hashlib.sha256).hexdigest()[:32]  # 128 bits: no collisions in practice
        space = "canary:" if session_id.startswith(CANARY_PREFIX) else ""
        return f"{self.config.key_prefix}{space}{{{digest}}}"

    def record_many(self, events: list[ClickEvent | Exception]) -> list[HistoryAnswer | Exception]:
        """One answer (or the request's own error) per event, in order; an error given stays in place."""
        return self.begin_many(events).finish()

    def begin_many(self, events: list[ClickEvent | Exception]) -> "PendingHistory":
        """Send the batch's round trip and return before its replies: `finish()` reads them and gives
        record_many's answers. Whatever happens in between, call finish() (the clicks are stored then)."""
        out: list[HistoryAnswer | Exception | None] = [None] * len(events)
        good: list[tuple[int, ClickEvent]] = []
        for i, event in enumerate(events):
            if isinstance(event, Exception):  # a request the tensor adapter already refused
                out[i] = event
                continue
            try:
                good.append((i, check_event(event)))
            except RequestError as exc:
                out[i] = exc
        return PendingHistory(self, out, good, self._send([event for _, event in good]) if good else None)

    def predict_many(self, events: list[ClickEvent | Exception]) -> list[np.ndarray | Exception] | None:
        """Per event, the history its answer will most likely be computed from (sessionrec.serving.
        history_cache), or its error; None when any event's cannot be predicted (then nothing is)."""
        if self._updates is None or not self._updates.up or time.monotonic() < self._closed_until:
            return None
        out: list[np.ndarray | Exception] = []
        for event in events:
            if isinstance(event, Exception):
                out.append(event)
                continue
            try:
                event = check_event(event)
            except RequestError as exc:
                out.append(exc)
                continue
            if event.items is not None:  # the caller's own session: known whatever Redis answers
                out.append(event.items)
                continue
            guess = self._cache.predict(self.key(event.session_id), event.seq, event.new_items)
            if guess is None:
                return None
            out.append(guess)
        return out

    def record(self, event: ClickEvent) -> HistoryAnswer:
        answer = self.record_many([event])[0]
        if isinstance(answer, RequestError):
            raise answer
        return answer

    # -- internals ---------------------------------------------------------------------------------
    def _answer(self, event: ClickEvent, reply) -> HistoryAnswer | RequestError:
        if reply is None:  # Redis off, or failed for this batch
            state = DEGRADED if self.enabled else NOT_STORED
            items, stored = _own_clicks(event), 0
        else:
            state = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            history = np.array([int(m.rsplit(b":", 1)[1]) for m in reply[1:]], dtype=np.int64)
            stored = history.size
            # The caller's full session wins; a history that lost the event (too old) falls back to it.
            items = event.items if event.items is not None else (history if history.size else event.new_items)
        if items.size == 0:
            return RequestError("no clicks for this session: NEW_ITEMS is empty and the session has no stored history")
        return HistoryAnswer(items=items, state=state, stored_length=stored)

    def _send(self, events: list[ClickEvent]):
        """The batch's round trip, sent: a redis_conn.Pending, None (Redis off or skipped), or the error."""
        if self._connections is None or time.monotonic() < self._closed_until:
            return None
        import redis

        try:
            if self._sha is None:
                self._load_script()
            return self._connections.send([self._command(event) for event in events])
        except redis.exceptions.RedisError as exc:
            return exc

    def _receive(self, sent, events: list[ClickEvent]) -> list:
        """Per event: the script's reply, or None when Redis is off, failing, or skipped after a failure."""
        if sent is None:
            return [None] * len(events)
        import redis

        if isinstance(sent, Exception):
            return self._failed(sent, len(events))
        try:
            return self._checked(sent.replies())
        except redis.exceptions.NoScriptError:
            # Redis restarted (or SCRIPT FLUSH) since the script was loaded: load it once more. Not a
            # retry of a slow call: the NOSCRIPT reply came back within the timeout.
            self._sha = None
            try:
                return self._pipeline(events)
            except redis.exceptions.RedisError as exc:
                return self._failed(exc, len(events))
        except redis.exceptions.RedisError as exc:
            return self._failed(exc, len(events))

    def prediction_wrong(self, count: int) -> None:
        """The step computed `count` answers again: Redis returned other histories than predicted."""
        if self._cache is not None:
            self._cache.wrong += count

    @property
    def predictions(self) -> dict:
        """Predictions made (hits), not made (misses) and made but wrong, since start."""
        cache = self._cache
        return {"hits": cache.hits, "misses": cache.misses, "wrong": cache.wrong} if cache else {}

    @property
    def updates_channel(self) -> str:
        return f"{self.config.key_prefix}updates"

    def start_updates(self) -> None:
        """Start listening for stored clicks (a daemon thread; no-op without speculation)."""
        if self._updates is not None:
            self._updates.start()

    def close(self) -> None:
        """Stop the updates listener and close the idle connections (a step's finalize)."""
        if self._updates is not None:
            self._updates.stop()
        if self._connections is not None:
            self._connections.disconnect()

    def warm_in_background(self, attempts: int = 10, pause_s: float = 0.5) -> threading.Thread | None:
        """Connect and load the script off the serving thread; the thread, or None without Redis.

        A cold stub's first event pays three round trips (connect, SCRIPT LOAD, EVALSHA), each under
        the serving timeout: on a busy node one of them overruns, the event is answered degraded and
        its click is not stored, and Redis is then skipped for `retry_after_s`. Warmed, the first event
        is one round trip like every other. Start never waits for this (an absent Redis leaves the
        pool cold, and the request path behaves exactly as before); failed attempts are not request
        failures, so they never open the `retry_after_s` window. The updates listener (speculation,
        sessionrec.serving.history_cache) starts here too, in its own thread.
        """
        if self._connections is None:
            return None
        self.start_updates()

        def warm() -> None:
            import redis

            last: Exception | None = None
            for attempt in range(1, attempts + 1):
                try:
                    self._load_script()
                    log.info("session history: Redis connected, script loaded (attempt %d)", attempt)
                    return
                except redis.exceptions.RedisError as exc:
                    last = exc
                    time.sleep(pause_s)
            log.warning("session history: Redis not reached in %d warm-up attempts (%s); the first events "
                        "connect themselves", attempts, last)

        thread = threading.Thread(target=warm, name="session-history-warm", daemon=True)
        thread.start()
        return thread

    def _load_script(self) -> str:
        reply = self._connections.run([("SCRIPT", "LOAD", SCRIPT)])[0]  # leaves its connection idle, warm
        if isinstance(reply, Exception):
            raise reply
        self._sha = reply.decode() if isinstance(reply, bytes) else str(reply)
        return self._sha

    def _command(self, event: ClickEvent) -> tuple:
        key = self.key(event.session_id)
        ttl = self.config.canary_ttl_s if event.session_id.startswith(CANARY_PREFIX) else self.config.ttl_s
        channel = self.updates_channel if self._updates is not None else ""
        return ("EVALSHA", self._sha, 2, f"{key}:c", f"{key}:f", str(event.seq), str(int(ttl * 1000)),
                str(self.config.max_len), channel, *(str(int(i)) for i in event.new_items))

    def _pipeline(self, events: list[ClickEvent]) -> list:
        if self._sha is None:
            self._load_script()
        return self._checked(self._connections.run([self._command(event) for event in events]))  # one round trip

    @staticmethod
    def _checked(replies: list) -> list:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _failed(self, exc: Exception, count: int) -> list:
        with self._lock:
            self.failures += 1
            self._closed_until = time.monotonic() + self.config.retry_after_s
        log.warning("session history: Redis failed (%s: %s); answering from the request's clicks for %.1f s",
                    type(exc).__name__, exc, self.config.retry_after_s)
        try:  # the failed socket is gone already; close the idle ones too: the next try starts fresh
            self._connections.disconnect()
        except Exception:  # noqa: BLE001 - best effort
            pass
        return [None] * count


class PendingHistory:
    """A batch's history round trip in flight (SessionHistory.begin_many)."""

    def __init__(self, history: SessionHistory, out: list, good: list, sent):
        self._history, self._out, self._good, self._sent = history, out, good, sent

    def finish(self) -> list[HistoryAnswer | Exception]:
        """Read the replies: one answer (or the request's own error) per event, in order."""
        history, out = self._history, self._out
        if self._good:
            events = [event for _, event in self._good]
            for (i, event), reply in zip(self._good, history._receive(self._sent, events)):
                out[i] = history._answer(event, reply)
            self._good = []
        return out  # type: ignore[return-value]
