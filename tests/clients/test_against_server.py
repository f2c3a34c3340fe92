"""The clients against the real tritonserver serving the exported sample model.

Answers are checked against the served pipeline without Triton (LocalPipeline: same artifacts), so a
server that answers with the right shapes but wrong values fails here. The restart test stops and
restarts a server on fixed ports while a caller keeps asking: retries must hide the gap.

    .venv/bin/pytest tests/clients/test_against_server.py -q
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import numpy as np
import pytest

from sessionrec.clients import (AsyncRecommendClient, DeadlineExceeded, InvalidRequest, ModelNotReady,
                                RecommendClient, RetryPolicy, ServerUnavailable)
from sessionrec.export.repository import current_version
from sessionrec.serving.launcher import TritonServer, free_ports
from sessionrec.serving.pipeline import LocalPipeline

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def sessions(sample_dataset):
    """Real test sessions in raw ids, plus an unknown id mixed in and a wholly unknown session."""
    raw = [sample_dataset.raw_ids[s].tolist() for s in sample_dataset.test[:12]]
    return raw + [raw[0][:1] + [987654321], [987654321, 987654322]]


@pytest.fixture(scope="module")
def pipeline(exported_repository):
    return LocalPipeline(exported_repository, current_version(exported_repository))


@pytest.fixture(scope="module")
def client(embedded_server):
    with RecommendClient(embedded_server.grpc_url) as client:
        yield client


def _assert_same(rec, expected):
    assert rec.item_ids == expected.item_ids.tolist()
    np.testing.assert_allclose(rec.scores, expected.scores, atol=1e-4)
    assert rec.unknown_count == expected.unknown_count and rec.fallback == expected.fallback


def test_answers_match_the_served_pipeline(client, pipeline, sessions):
    for exclude_seen in (False, True):
        for session in sessions:
            rec = client.recommend(session, k=10, exclude_seen=exclude_seen)
            _assert_same(rec, pipeline.recommend(session, 10, exclude_seen))
            assert len(rec) == 10
            if exclude_seen:
                assert not set(rec.item_ids) & set(session)
    assert client.recommend(sessions[-2], k=5).unknown_count == 1
    assert client.recommend(sessions[-1], k=5).fallback


def test_batch_keeps_input_order_and_isolates_bad_sessions(client, pipeline, sessions):
    batch = client.recommend_batch(sessions, k=5, exclude_seen=True)
    for session, rec in zip(sessions, batch):
        _assert_same(rec, pipeline.recommend(session, 5, True))
    mixed = client.recommend_batch([sessions[0][:1], [], sessions[1][:1]], k=5, return_exceptions=True)
    assert isinstance(mixed[1], InvalidRequest) and "empty" in str(mixed[1])
    _assert_same(mixed[0], pipeline.recommend(sessions[0][:1], 5))
    _assert_same(mixed[2], pipeline.recommend(sessions[1][:1], 5))
    with pytest.raises(InvalidRequest):
        client.recommend_batch([sessions[0], []], k=5)


def test_async_client_gives_the_same_answers(embedded_server, pipeline, sessions):
    async def main():
        async with AsyncRecommendClient(embedded_server.grpc_url) as client:
            single = await client.recommend(sessions[0], k=10)
            batch = await client.recommend_batch(sessions, k=10)
            with pytest.raises(InvalidRequest, match="K=0"):
                await client.recommend(sessions[0], k=0)
            return single, batch

    single, batch = asyncio.run(main())
    _assert_same(single, pipeline.recommend(sessions[0], 10))
    for session, rec in zip(sessions, batch):
        _assert_same(rec, pipeline.recommend(session, 10))


@pytest.mark.parametrize("items, k, message", [
    ([], 5, "ITEMS is empty"),
    ([1, 2], 0, "K=0 is out of range"),
    ([1, 2], 10**6, "out of range"),
    (list(range(1, 1500)), 5, "over the limit"),
])
def test_bad_input_is_an_invalid_request_naming_the_problem(client, items, k, message):
    before = client.retries
    with pytest.raises(InvalidRequest, match=message) as caught:
        client.recommend(items, k=k)
    assert caught.value.code == "INVALID_ARGUMENT" and caught.value.attempts == 1
    assert client.retries == before  # never retried


def test_deadline_is_enforced(client, embedded_server, sessions):
    """A stalled server (the process stopped, as in a long GC pause or a frozen node) meets the deadline.

    The server is frozen rather than asked for a sub-millisecond deadline: a cached answer can come back
    before gRPC's deadline timer fires, which made that version of this test flaky on a busy machine.
    """
    with pytest.raises(DeadlineExceeded, match="within 0 s after 0 attempts"):
        client.recommend(sessions[0], timeout=0)  # spent before sending: never reaches the wire
    assert client.recommend(sessions[0], timeout=5).item_ids  # connected: the frozen server then holds a call
    pid = embedded_server.server.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="within 0.3 s") as caught:
            client.recommend(sessions[0], timeout=0.3)
        elapsed = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert caught.value.code == "DEADLINE_EXCEEDED"
    assert 0.25 <= elapsed < 2.0  # waited for the deadline, not for the frozen server
    assert client.recommend(sessions[0], timeout=5).item_ids  # the client is still usable


def test_model_not_ready_is_named(embedded_server, sessions):
    with RecommendClient(embedded_server.grpc_url, model="not_loaded") as client:
        with pytest.raises(ModelNotReady, match="not_loaded"):
            client.recommend(sessions[0])
        assert not client.ready()


def test_no_server_is_unavailable_after_retries():
    with RecommendClient(f"127.0.0.1:{free_ports(1)[0]}", timeout=1.0,
                         retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.01)) as client:
        with pytest.raises(ServerUnavailable, match="after 3 attempts"):
            client.recommend([1, 2])


def test_restart_mid_run_is_invisible_to_an_idempotent_caller(fresh_repository, sessions, pipeline, tmp_path):
    """A server stopped and restarted on the same ports while a caller keeps asking: no error reaches it."""
    grpc_port, http_port, metrics_port = free_ports(3)
    server = TritonServer(fresh_repository, models=None, grpc_port=grpc_port, http_port=http_port,
                          metrics_port=metrics_port, log_file=tmp_path / "tritonserver.log")
    patient = RetryPolicy(max_attempts=1000, initial_backoff_s=0.05, max_backoff_s=0.5)
    server.start(require_models=True)  # every model loads before the endpoints open
    errors, calls = [], []  # calls: (session, answer, started, finished)
    stop = threading.Event()
    try:
        with RecommendClient(server.grpc_url, timeout=90, retry=patient) as client:
            def caller():
                while not stop.is_set():
                    session = sessions[len(calls) % len(sessions)]
                    started = time.monotonic()
                    try:
                        rec = client.recommend(session, k=5)
                        calls.append((session, rec, started, time.monotonic()))
                    except Exception as exc:  # noqa: BLE001 - collected, asserted below
                        errors.append(exc)

            thread = threading.Thread(target=caller)
            thread.start()
            while len(calls) < 20 and not errors:
                time.sleep(0.01)
            server.stop()  # SIGTERM: models unload (NOT_FOUND "no available versions"), then the port closes
            time.sleep(0.5)  # calls meanwhile fail with UNAVAILABLE and are retried
            server.start(require_models=True)
            up_at = time.monotonic()
            deadline = up_at + 30  # the pending call returns after its backoff and the channel's reconnect
            while sum(started > up_at for *_, started, _ in calls) < 5 and not errors and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            thread.join(timeout=60)
            retries = client.retries
    finally:
        stop.set()
        server.stop()
    assert not errors, errors[:3]
    assert retries > 0
    spanning = [call for call in calls if call[2] < up_at < call[3]]
    assert spanning, "no call was in flight while the server was down"
    after = [(session, rec) for session, rec, started, _ in calls if started > up_at]
    assert after, "no call after the restart"
    for session, rec in [spanning[0][:2]] + after[:5]:
        _assert_same(rec, pipeline.recommend(session, 5))


def test_recommend_command_prints_a_table(embedded_server, sessions, pipeline, capsys):
    from sessionrec.cli import main

    assert main(["recommend", *map(str, sessions[0]), "--url", embedded_server.grpc_url, "--k", "3"]) == 0
    out = capsys.readouterr().out
    expected = pipeline.recommend(sessions[0], 3).item_ids.tolist()
    assert [int(line.split()[1]) for line in out.splitlines()[1:4]] == expected
    assert "unknown input ids: 0" in out
    assert main(["recommend", "1", "--url", embedded_server.grpc_url, "--k", "0"]) == 1
    assert "invalid request" in capsys.readouterr().err
