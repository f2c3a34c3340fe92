"""Speculative history (sessionrec.serving.history_cache) against a real redis-server: the history
script publishes each session's stored clicks, every stub listens, and a known session's answer is
computed while its round trip travels and kept only when Redis returns exactly the predicted history."""

from __future__ import annotations

import time

import numpy as np
import pytest
import redis

from sessionrec.serving.history import STORED, ClickEvent, HistoryConfig, SessionHistory
from sessionrec.serving.pipeline import BatchAnswer
from sessionrec.serving.redis_local import LocalRedis
from sessionrec.serving.stateful import StepRequest, recommend_with_history


@pytest.fixture(scope="module")
def local_redis():
    with LocalRedis() as server:
        yield server


def stub(url: str, **overrides) -> SessionHistory:
    """One serving stub's history, warmed as the step's load does (script loaded, listener subscribed)."""
    history = SessionHistory(HistoryConfig(url=url, max_len=10, **{"speculate": True, **overrides}))
    history.warm_in_background().join(timeout=10)
    assert history._updates.wait_up(5)
    return history


@pytest.fixture
def two_stubs(local_redis):
    redis.Redis.from_url(local_redis.url).flushdb()
    stubs = stub(local_redis.url), stub(local_redis.url)
    yield stubs
    for history in stubs:
        history.close()


def event(session: bytes, seq: int, *items: int) -> ClickEvent:
    return ClickEvent(session, np.array(items, dtype=np.int64), seq)


def predicted(history: SessionHistory, *events: ClickEvent):
    out = history.predict_many(list(events))
    return None if out is None else [p.tolist() for p in out]


def until(condition, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_the_next_click_of_a_known_session_is_predicted(two_stubs):
    a, _ = two_stubs
    assert predicted(a, event(b"s", 1, 5)) is None  # never heard of: the round trip comes first
    assert a.record(event(b"s", 1, 5)).items.tolist() == [5]
    assert until(lambda: predicted(a, event(b"s", 2, 6, 7)) == [[5, 6, 7]])
    assert predicted(a, event(b"s", 1, 9)) is None  # not newer than every stored click: no guess
    assert predicted(a, event(b"s", 2)) is None  # a look-up only
    full = ClickEvent(b"x", np.array([3]), 1, np.array([1, 2, 3]))
    assert predicted(a, event(b"s", 2, 6), full) == [[5, 6], [1, 2, 3]]  # the caller's session is known
    assert predicted(a, event(b"s", 2, 6), event(b"other", 4, 1)) is None  # one unknown: none predicted


def test_every_stub_learns_the_clicks_another_stub_stored(two_stubs):
    a, b = two_stubs
    a.record(event(b"s", 1, 5))
    b.record(event(b"s", 2, 6))  # the session's next click lands on the other stub (Triton alternates)
    for history in (a, b):
        assert until(lambda: predicted(history, event(b"s", 3, 7)) == [[5, 6, 7]])
    assert a.record(event(b"s", 3, 7)).items.tolist() == [5, 6, 7]


def test_out_of_order_and_duplicate_events_are_not_predicted_wrong(two_stubs):
    a, b = two_stubs
    a.record(event(b"o", 1, 1))
    b.record(event(b"o", 3, 3))
    assert until(lambda: predicted(a, event(b"o", 4, 4)) == [[1, 3, 4]])
    assert predicted(a, event(b"o", 2, 2)) is None  # older than a stored click: Redis decides
    assert predicted(a, event(b"o", 3, 3)) is None  # a retry of a stored event


def test_the_prediction_keeps_the_newest_max_len(two_stubs):
    a, _ = two_stubs
    for seq in range(1, 12):
        a.record(event(b"long", seq, seq))
    assert until(lambda: predicted(a, event(b"long", 12, 12)) == [list(range(3, 13))])
    assert a.record(event(b"long", 12, 12)).items.tolist() == list(range(3, 13))


def test_nothing_is_published_without_speculation(local_redis):
    listener = redis.Redis.from_url(local_redis.url).pubsub(ignore_subscribe_messages=True)
    history = SessionHistory(HistoryConfig(url=local_redis.url, speculate=False))
    listener.subscribe(history.updates_channel)
    assert history.record(event(b"quiet", 1, 5)).state == STORED
    assert listener.get_message(timeout=0.5) is None and history.predict_many([event(b"quiet", 2, 6)]) is None
    listener.close()


class CountingPipeline:
    """The pipeline's contract (one BatchAnswer per request), answering with the session's sum."""

    clock = None

    def __init__(self):
        self.calls: list[list[list[int]]] = []

    def recommend_many(self, requests):
        self.calls.append([np.asarray(r.items).reshape(-1).tolist() for r in requests])
        return [BatchAnswer(np.array([[int(np.sum(r.items))]]), np.zeros((1, 1), np.float32),
                            np.zeros((1, 1), np.int32), np.zeros((1, 1), bool)) for r in requests]


def step(history, *events_or_items):
    requests = [StepRequest(None, np.array([[20]]), np.array([[False]]), e) if isinstance(e, ClickEvent)
                else StepRequest(np.array([e]), np.array([[20]]), np.array([[False]])) for e in events_or_items]
    return recommend_with_history(pipeline := CountingPipeline(), history, requests), pipeline.calls


def test_a_right_prediction_is_computed_once_and_answers_as_the_plain_path(two_stubs):
    a, _ = two_stubs
    a.record(event(b"s", 1, 5))
    assert until(lambda: a._cache.__len__() == 1)
    outs, calls = step(a, event(b"s", 2, 6), [1, 2])  # an event beside a stateless request
    assert calls == [[[5, 6], [1, 2]]]  # one pipeline call, the predicted history in it
    assert outs[0].answer.item_ids.tolist() == [[11]] and outs[0].history_state.tolist() == [[STORED.encode()]]
    assert outs[0].history_length.tolist() == [[2]] and outs[1].answer.item_ids.tolist() == [[3]]
    assert a.predictions["hits"] == 1 and a.predictions["wrong"] == 0


def test_a_wrong_prediction_is_computed_again_from_what_redis_returned(two_stubs, monkeypatch):
    a, b = two_stubs
    a.record(event(b"s", 1, 5))
    assert until(lambda: predicted(a, event(b"s", 2, 6)) is not None)
    monkeypatch.setattr(a._cache, "update", lambda *args: None)  # b's message has not reached a yet
    b.record(event(b"s", 2, 6))
    outs, calls = step(a, event(b"s", 3, 7), [1, 2])
    assert calls == [[[5, 7], [1, 2]], [[5, 6, 7]]]  # guessed, then only the wrong one again
    assert outs[0].answer.item_ids.tolist() == [[18]] and outs[0].history_length.tolist() == [[3]]
    assert outs[1].answer.item_ids.tolist() == [[3]]
    assert a.predictions["wrong"] == 1


def test_an_unknown_session_waits_for_redis_as_before(two_stubs):
    a, _ = two_stubs
    outs, calls = step(a, event(b"new", 1, 4))
    assert calls == [[[4]]] and outs[0].history_state.tolist() == [[STORED.encode()]]


def test_with_redis_gone_nothing_is_predicted_and_predictions_return_with_it(tmp_path):
    with LocalRedis() as server:
        history = stub(server.url, retry_after_s=0.2)
        history.record(event(b"g", 1, 5))
        assert until(lambda: predicted(history, event(b"g", 2, 6)) == [[5, 6]])
        server.stop()
        assert until(lambda: not history._updates.up)
        assert predicted(history, event(b"g", 2, 6)) is None  # what was missed is unknown: no guesses
        server.start()
        assert until(lambda: history._updates.up, 10)
        # The pool's idle socket died with the server: the first click may come back degraded (then
        # Redis is skipped for retry_after_s); the session starts again on the fresh server.
        assert until(lambda: history.record(event(b"g", 2, 6)).state == STORED, 5)
        assert until(lambda: predicted(history, event(b"g", 3, 7)) == [[6, 7]])
        history.close()


def test_speculation_is_off_unless_turned_on(local_redis, monkeypatch):
    assert HistoryConfig().speculate is False
    monkeypatch.setenv("SESSIONREC_HISTORY_SPECULATE", "1")
    assert HistoryConfig.from_environment(HistoryConfig(url=local_redis.url)).speculate is True
    monkeypatch.setenv("SESSIONREC_HISTORY_SPECULATE", "0")
    history = SessionHistory(HistoryConfig.from_environment(HistoryConfig(url=local_redis.url, speculate=True)))
    history.record(event(b"off", 1, 5))
    assert history.predict_many([event(b"off", 2, 6)]) is None and history.predictions == {}
    assert history._updates is None  # no listener thread, no PUBLISH in the script call
    monkeypatch.setenv("SESSIONREC_HISTORY_SPECULATE", "maybe")
    with pytest.raises(ValueError, match="SESSIONREC_HISTORY_SPECULATE='maybe': expected 1 or 0"):
        HistoryConfig.from_environment()


def test_a_redis_user_refused_publish_still_stores_every_click(local_redis):
    admin = redis.Redis.from_url(local_redis.url)
    admin.acl_setuser("nopub", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                      commands=["+@all", "-publish", "-subscribe"])
    host, port = local_redis.url.split("//")[1].split("/")[0].split(":")
    history = SessionHistory(HistoryConfig(url=f"redis://nopub:pw@{host}:{port}/0", max_len=10, speculate=True))
    history.warm_in_background().join(timeout=10)
    try:
        assert [history.record(event(b"acl", seq, seq)).state for seq in (1, 2)] == [STORED, STORED]
        assert history.record(event(b"acl", 3, 3)).items.tolist() == [1, 2, 3]
        assert not history._updates.up and history.predict_many([event(b"acl", 4, 4)]) is None  # SUBSCRIBE refused
    finally:
        history.close()
        admin.acl_deluser("nopub")


def test_a_session_never_heard_of_is_new_once_every_live_session_was_heard(local_redis):
    """After a whole TTL subscribed (here 1 s, plus its 10 % margin), every live session has stored a
    click the stub heard of: an unknown one is new, its history this event's clicks."""
    redis.Redis.from_url(local_redis.url).flushdb()
    history = stub(local_redis.url, ttl_s=1.0, cache_size=1)
    try:
        assert predicted(history, event(b"fresh", 1, 4)) is None  # subscribed for less than a TTL
        time.sleep(1.2)
        assert predicted(history, event(b"fresh", 1, 4)) == [[4]]
        assert history.record(event(b"fresh", 1, 4)).items.tolist() == [4]  # as predicted
        assert until(lambda: predicted(history, event(b"fresh", 2, 5)) == [[4, 5]])
        history.record(event(b"other", 1, 9))  # evicts "fresh" (cache_size=1) while it is alive
        assert until(lambda: predicted(history, event(b"other", 2, 8)) == [[9, 8]])
        assert predicted(history, event(b"new", 1, 1)) is None  # "fresh" may still be alive: no guesses
        time.sleep(1.2)  # a TTL after the eviction, "fresh" has expired unless it stored a click since
        assert predicted(history, event(b"new", 1, 1)) == [[1]]
    finally:
        history.close()
