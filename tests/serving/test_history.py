"""Session history against a real redis-server (Debian's): concurrency, idempotency, order, TTL, trim, faults."""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest
import redis

from sessionrec.serving.history import (DEGRADED, DUPLICATE, NOT_STORED, STORED, ClickEvent, HistoryConfig,
                                        SessionHistory)
from sessionrec.serving.preprocess import RequestError
from sessionrec.serving.redis_local import LocalRedis


@pytest.fixture(scope="module")
def local_redis():
    with LocalRedis() as server:
        yield server


@pytest.fixture
def history(local_redis):
    redis.Redis.from_url(local_redis.url).flushdb()
    return SessionHistory(HistoryConfig(url=local_redis.url, max_len=10))


def click(history, session, seq, *items, full=None):
    return history.record(ClickEvent(session, np.array(items, dtype=np.int64), seq,
                                     None if full is None else np.array(full)))


def test_the_unix_socket_reaches_the_same_sessions(history, local_redis):
    click(history, b"guest-u", 1, 11)  # over TCP
    over_socket = SessionHistory(HistoryConfig(url=local_redis.socket_url, max_len=10))
    answer = click(over_socket, b"guest-u", 2, 12)
    assert answer.items.tolist() == [11, 12] and answer.state == STORED


def test_clicks_accumulate_in_order(history):
    assert click(history, b"guest-1", 1, 11).items.tolist() == [11]
    answer = click(history, b"guest-1", 2, 12)
    assert answer.items.tolist() == [11, 12] and answer.state == STORED and answer.stored_length == 2
    assert click(history, b"other", 1, 99).items.tolist() == [99]  # sessions are separate


def test_a_retried_event_is_stored_once(history):
    click(history, b"s", 1, 5)
    first = click(history, b"s", 2, 6)
    retry = click(history, b"s", 2, 6)
    assert first.state == STORED and retry.state == DUPLICATE
    assert retry.items.tolist() == first.items.tolist() == [5, 6]
    assert click(history, b"s", 3, 7).items.tolist() == [5, 6, 7]


def test_out_of_order_events_see_the_history_up_to_their_click(history):
    click(history, b"s", 1, 1)
    assert click(history, b"s", 3, 3).items.tolist() == [1, 3]
    assert click(history, b"s", 2, 2).items.tolist() == [1, 2]
    assert click(history, b"s", 4, 4).items.tolist() == [1, 2, 3, 4]


def test_repeated_items_and_multi_click_events_are_kept(history):
    click(history, b"s", 1, 7, 8)
    assert click(history, b"s", 2, 7).items.tolist() == [7, 8, 7]


def test_int64_ids_survive_exactly(history):
    big = [2**62 + 1, -(2**62) - 3, 2**53 + 1]
    for seq, item in enumerate(big, 1):
        answer = click(history, b"big", seq, item)
    assert answer.items.tolist() == big


def test_longer_than_max_len_keeps_the_newest(history):
    for seq in range(1, 26):
        answer = click(history, b"long", seq, 100 + seq)
    assert answer.items.tolist() == list(range(116, 126))
    # an event older than every kept click is not stored (it would be trimmed at once)
    late = click(history, b"long", 3, 999)
    assert late.state == NOT_STORED and 999 not in click(history, b"long", 26, 126).items.tolist()


def test_canary_sessions_have_their_own_key_space_and_a_short_ttl(local_redis):
    from sessionrec.serving.history import CANARY_PREFIX

    db = redis.Redis.from_url(local_redis.url)
    db.flushdb()
    history = SessionHistory(HistoryConfig(url=local_redis.url, canary_ttl_s=5))
    click(history, b"guest", 1, 7)
    assert click(history, CANARY_PREFIX + b"v1:nonce:0", 1, 7).state == STORED
    keys = {k.decode(): db.pttl(k) for k in db.keys("*")}
    canary = {k: ttl for k, ttl in keys.items() if k.startswith("sessionrec:h:canary:{")}
    guests = {k: ttl for k, ttl in keys.items() if k not in canary}
    assert len(canary) == len(guests) == 1  # one clicks key each (no floor key before a trim)
    assert all(0 < ttl <= 5000 for ttl in canary.values()) and all(ttl > 1_000_000 for ttl in guests.values())


def test_ttl_expiry_starts_a_new_session(local_redis):
    redis.Redis.from_url(local_redis.url).flushdb()
    history = SessionHistory(HistoryConfig(url=local_redis.url, ttl_s=0.3))
    click(history, b"s", 1, 1)
    time.sleep(0.15)
    assert click(history, b"s", 2, 2).items.tolist() == [1, 2]  # the TTL slides at each click
    time.sleep(0.2)
    assert click(history, b"s", 3, 3).items.tolist() == [1, 2, 3]
    time.sleep(0.5)
    assert click(history, b"s", 4, 4).items.tolist() == [4]


def test_concurrent_clicks_on_one_session_lose_none(local_redis):
    redis.Redis.from_url(local_redis.url).flushdb()
    # A correctness test: a generous timeout, so a busy machine's slow reply is not a degraded answer.
    history = SessionHistory(HistoryConfig(url=local_redis.url, max_len=1000, pool_size=8, timeout_ms=2000))
    threads, per_thread = 8, 40
    errors = []

    def clicker(t):
        try:
            for j in range(per_thread):
                seq = t * per_thread + j + 1
                history.record(ClickEvent(b"busy", np.array([seq]), seq))
                history.record(ClickEvent(b"busy", np.array([seq]), seq))  # every event retried once
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    workers = [threading.Thread(target=clicker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    final = history.record(ClickEvent(b"busy", np.array([], dtype=np.int64), threads * per_thread + 1))
    assert final.state == NOT_STORED  # a look-up only
    assert final.items.tolist() == list(range(1, threads * per_thread + 1))


def test_one_round_trip_per_batch(history, local_redis, monkeypatch):
    events = [ClickEvent(f"g{i}".encode(), np.array([i]), 1) for i in range(20)]
    history.record_many(events[:1])  # loads the script
    sent = []
    original = redis.connection.Connection.send_packed_command

    def counting(self, command, check_health=True):  # every write to a Redis socket
        sent.append(command)
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    stats = redis.Redis.from_url(local_redis.url)
    before = stats.info("commandstats")["cmdstat_evalsha"]["calls"]
    sent.clear()  # the stats client's own INFO
    answers = history.record_many(events)
    sends = len(sent)
    after = stats.info("commandstats")["cmdstat_evalsha"]["calls"]
    assert [a.items.tolist() for a in answers] == [[i] for i in range(20)]
    assert after - before == 20 and sends == 1  # 20 script calls, one pipelined write, then the 20 replies


def test_a_warmed_stub_answers_its_first_event_in_one_round_trip(local_redis, monkeypatch):
    """Cold, the first event pays connect + SCRIPT LOAD + EVALSHA under the serving timeout; the stub
    warms in the background at load so a busy node's first click is not answered degraded."""
    redis.Redis.from_url(local_redis.url).flushdb()
    history = SessionHistory(HistoryConfig(url=local_redis.url, max_len=10))
    history.warm_in_background().join(timeout=10)
    connects, sent = [], []
    original_connect, original_send = redis.connection.AbstractConnection.connect, redis.connection.Connection.send_packed_command

    def connect(self, *args, **kwargs):
        connects.append(self)
        return original_connect(self, *args, **kwargs)

    def send(self, command, check_health=True):
        sent.append(command)
        return original_send(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "connect", connect)
    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", send)
    answer = click(history, b"first", 1, 5)
    assert answer.state == STORED and answer.items.tolist() == [5]
    assert connects == [] and len(sent) == 1  # the warm socket, the loaded script: one write


def test_warming_without_redis_never_blocks_or_opens_the_retry_window():
    from sessionrec.serving.launcher import free_ports

    server = LocalRedis(port=free_ports(1)[0])  # not started yet: its port refuses connections
    history = SessionHistory(HistoryConfig(url=server.url, retry_after_s=60))
    began = time.monotonic()
    thread = history.warm_in_background(attempts=3, pause_s=0.05)
    assert time.monotonic() - began < 0.05  # start goes on at once
    thread.join(timeout=5)
    assert not thread.is_alive() and history.failures == 0
    server.start()
    try:  # a failed warm-up is not a failed request: the first click goes to Redis at once
        assert click(history, b"s", 1, 1).state == STORED
    finally:
        server.close()
    assert SessionHistory(HistoryConfig(url=None)).warm_in_background() is None


BUSY_200_MS = """local function now() local t = redis.call('TIME') return t[1] * 1000000 + t[2] end
local stop = now() + 200000
while now() < stop do end
return 1"""


def test_a_failed_round_trip_never_reuses_its_socket(local_redis):
    """A reply that timed out would otherwise arrive as the answer to the next batch's first event."""
    from sessionrec.serving.redis_conn import Connections

    redis.Redis.from_url(local_redis.url).flushdb()
    connections = Connections(local_redis.url, None, size=1, timeout_s=0.05)
    assert connections.run([("SET", "a", "1"), ("GET", "a")]) == [b"OK", b"1"]
    with pytest.raises(redis.exceptions.TimeoutError):
        connections.run([("EVAL", BUSY_200_MS, 0)])
    time.sleep(0.3)  # the script's late reply would be waiting on the old socket now
    assert connections.run([("GET", "a")]) == [b"1"]
    assert isinstance(connections.run([("GET", "a"), ("INCR", "nope", "x")])[1], redis.exceptions.ResponseError)


def test_session_ids_are_stored_as_hmac_only(history, local_redis):
    click(history, b"guest-secret-id", 1, 1)
    keys = redis.Redis.from_url(local_redis.url).keys("*")
    assert keys and not any(b"guest-secret-id" in k for k in keys)
    other = SessionHistory(HistoryConfig(url=local_redis.url, hmac_key="another key"))
    assert other.key(b"guest-secret-id") != history.key(b"guest-secret-id")


def test_full_items_override_answers_from_the_callers_session(history):
    click(history, b"s", 1, 1)
    answer = click(history, b"s", 2, 2, full=[50, 51, 2])
    assert answer.items.tolist() == [50, 51, 2] and answer.state == STORED
    assert click(history, b"s", 3, 3).items.tolist() == [1, 2, 3]  # the stored history is still the clicks


def test_bad_events_get_their_own_error(history):
    answers = history.record_many([
        ClickEvent(b"", np.array([1]), 1),
        ClickEvent(b"s", np.array([1]), 0),
        ClickEvent(b"s", np.array([1.5]), 1),
        ClickEvent(b"fresh", np.array([], dtype=np.int64), 1),
        ClickEvent(b"ok", np.array([4]), 1),
    ])
    assert [type(a) for a in answers[:4]] == [RequestError] * 4
    assert "SESSION_ID is empty" in str(answers[0]) and "CLICK_SEQ=0" in str(answers[1])
    assert "int64" in str(answers[2]) and "no clicks" in str(answers[3])
    assert answers[4].items.tolist() == [4]


def test_without_redis_configured_requests_carry_their_session():
    history = SessionHistory(HistoryConfig(url=None))
    answer = history.record(ClickEvent(b"s", np.array([3]), 1, np.array([1, 2, 3])))
    assert answer.state == NOT_STORED and answer.items.tolist() == [1, 2, 3]


def address(server: LocalRedis, transport: str) -> str:
    """TCP loopback (a Redis elsewhere) or the unix socket (what the embedded server uses)."""
    return server.socket_url if transport == "unix" else server.url


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_redis_down_is_degraded_then_recovers(tmp_path, transport):
    server = LocalRedis().start()
    try:
        history = SessionHistory(HistoryConfig(url=address(server, transport), retry_after_s=0.2))
        assert click(history, b"s", 1, 1).state == STORED
        server.kill()
        began = time.monotonic()
        answer = click(history, b"s", 2, 2, full=[1, 2])
        assert answer.state == DEGRADED and answer.items.tolist() == [1, 2]
        assert click(history, b"s", 3, 3).items.tolist() == [3]  # no override: the event's own clicks
        assert time.monotonic() - began < 0.5
        server.start()  # same port, empty: the old sessions are gone
        deadline = time.monotonic() + 5
        while (answer := click(history, b"s", 4, 4)).state != STORED:
            assert time.monotonic() < deadline, "did not reconnect within 5 s"
            time.sleep(0.05)
        assert answer.items.tolist() == [4]
    finally:
        server.close()


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_hung_redis_costs_at_most_the_timeout(transport):
    server = LocalRedis().start()
    try:
        history = SessionHistory(HistoryConfig(url=address(server, transport), timeout_ms=30, retry_after_s=0.0))
        click(history, b"s", 1, 1)
        server.signal(signal.SIGSTOP)
        waits = []
        for seq in range(2, 7):
            began = time.monotonic()
            assert click(history, b"s", seq, seq).state == DEGRADED
            waits.append(time.monotonic() - began)
        # each call waits for one reply timeout (30 ms), never redis-py's 5 s or its retries
        assert max(waits) < 0.03 + 0.1, waits
        server.signal(signal.SIGCONT)
        deadline = time.monotonic() + 5
        while click(history, b"s", 10, 10).state not in (STORED, DUPLICATE):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        server.close()


def test_after_a_failure_redis_is_skipped_for_retry_after():
    server = LocalRedis().start()
    try:
        history = SessionHistory(HistoryConfig(url=server.url, timeout_ms=30, retry_after_s=60))
        click(history, b"s", 1, 1)
        server.signal(signal.SIGSTOP)
        assert click(history, b"s", 2, 2).state == DEGRADED  # pays one timeout
        began = time.monotonic()
        for seq in range(3, 23):
            assert click(history, b"s", seq, seq).state == DEGRADED
        assert time.monotonic() - began < 0.03  # 20 requests, none waited on the hung Redis
        assert history.failures == 1
    finally:
        server.close()


def test_environment_overrides(monkeypatch):
    config = HistoryConfig.from_environment(environ={"SESSIONREC_REDIS_URL": "redis://10.0.0.1:6380/2",
                                                     "SESSIONREC_HISTORY_TTL_S": "60", "SESSIONREC_HISTORY_MAX_LEN": "7"})
    assert (config.url, config.ttl_s, config.max_len) == ("redis://10.0.0.1:6380/2", 60.0, 7)
    with pytest.raises(ValueError, match="SESSIONREC_HISTORY_TTL_S"):
        HistoryConfig.from_environment(environ={"SESSIONREC_HISTORY_TTL_S": "soon"})


@pytest.mark.parametrize("batch", [1, 3])
def test_script_flushed_on_the_server_is_loaded_again(history, local_redis, batch):
    click(history, b"s", 1, 1)
    redis.Redis.from_url(local_redis.url).script_flush()  # as after a Redis restart
    answers = history.record_many([ClickEvent(f"f{i}".encode(), np.array([i]), 1) for i in range(batch)])
    assert [a.state for a in answers] == [STORED] * batch and history.failures == 0
