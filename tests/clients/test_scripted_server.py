"""Client behaviour against a scripted gRPC server (conftest.FakeTriton): retries on exactly the retryable
codes, broken answers, round-robin over replicas, TLS, channel rotation, the asyncio client.

    .venv/bin/pytest tests/clients/test_scripted_server.py -q
"""

from __future__ import annotations

import asyncio
import time

import pytest

from sessionrec.clients import (NO_RETRY, AsyncRecommendClient, BadResponse, ChannelOptions, InvalidRequest,
                                ModelNotReady, Overloaded, RecommendClient, RetryPolicy, ServerUnavailable)
from sessionrec.serving.launcher import free_ports
from sessionrec.serving.tls import generate_self_signed

FAST = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)


def test_resource_exhausted_and_unavailable_are_retried_invisibly(fake_triton):
    fake = fake_triton(failures=["RESOURCE_EXHAUSTED", "UNAVAILABLE"])
    with RecommendClient(fake.url, retry=FAST) as client:
        rec = client.recommend([7, 8], k=3)
    assert rec.item_ids == [700, 701, 702] and rec.scores == [3.0, 2.0, 1.0]
    assert fake.calls == 3 and client.retries == 2


def test_invalid_argument_is_never_retried(fake_triton):
    fake = fake_triton(failures=["INVALID_ARGUMENT"])
    with RecommendClient(fake.url, retry=FAST) as client, pytest.raises(InvalidRequest, match="scripted") as caught:
        client.recommend([7], k=3)
    assert fake.calls == 1 and caught.value.attempts == 1


def test_model_loading_is_retried_but_an_unknown_model_is_not(fake_triton):
    # What tritonserver answers while it (re)loads a model or unloads it on SIGTERM, and for a typo.
    loading = ("NOT_FOUND", "Request for unknown model: 'recommend' has no available versions")
    fake = fake_triton(failures=[loading, loading])
    with RecommendClient(fake.url, retry=FAST) as client:
        assert client.recommend([7], k=1).item_ids == [700]
    assert fake.calls == 3
    fake = fake_triton(failures=[("NOT_FOUND", "Request for unknown model: 'recomend' is not found")])
    with RecommendClient(fake.url, retry=FAST) as client, pytest.raises(ModelNotReady) as caught:
        client.recommend([7], k=1)
    assert fake.calls == 1 and not caught.value.retryable


def test_retries_stop_at_max_attempts_with_the_last_error(fake_triton):
    fake = fake_triton(failures=["RESOURCE_EXHAUSTED"] * 10)
    with RecommendClient(fake.url, retry=FAST) as client, pytest.raises(Overloaded, match="after 4 attempts"):
        client.recommend([7], k=3)
    assert fake.calls == 4


def test_retries_never_outlive_the_deadline():
    port = free_ports(1)[0]  # nothing listens: every attempt is UNAVAILABLE
    patient = RetryPolicy(max_attempts=1000, initial_backoff_s=0.05, max_backoff_s=0.2)
    with RecommendClient(f"127.0.0.1:{port}", retry=patient, timeout=0.6) as client:
        began = time.monotonic()
        with pytest.raises(ServerUnavailable) as caught:
            client.recommend([1])
        assert time.monotonic() - began < 1.5
    assert 1 < caught.value.attempts < 1000


def test_broken_answer_is_a_bad_response(fake_triton):
    fake = fake_triton(broken=True)
    with RecommendClient(fake.url, retry=NO_RETRY) as client, pytest.raises(BadResponse, match="SCORES"):
        client.recommend([7], k=3)


def test_round_robin_spreads_calls_over_every_resolved_address(fake_triton):
    # A headless Service's DNS name resolves to every pod; an ipv4: target with two addresses is the
    # same resolver result without DNS. pick_first (gRPC's default) would send everything to one.
    first, second = fake_triton(name="pod-a"), fake_triton(name="pod-b")
    with RecommendClient(f"ipv4:127.0.0.1:{first.port},127.0.0.1:{second.port}") as client:
        for _ in range(20):
            client.recommend([1], k=2)
    assert first.calls + second.calls == 20
    assert min(first.calls, second.calls) >= 5


def test_tls_with_a_self_signed_ca(fake_triton, tmp_path):
    bundle = generate_self_signed(tmp_path)
    fake = fake_triton(tls=bundle)
    with RecommendClient(fake.url, tls=bundle.client_tls()) as client:
        assert client.recommend([4], k=2).item_ids == [400, 401]
    with RecommendClient(fake.url, retry=NO_RETRY, timeout=2) as plaintext, pytest.raises(ServerUnavailable):
        plaintext.recommend([4], k=2)  # a plaintext client cannot talk to a TLS server


def test_channel_is_rebuilt_after_its_max_age(fake_triton):
    fake = fake_triton()
    with RecommendClient(fake.url, channel=ChannelOptions(max_connection_age_s=0.05), timeout=0.1) as client:
        first = client._client
        client.recommend([1], k=1)
        time.sleep(0.1)
        client.recommend([2], k=1)
        assert client._client is not first  # a new channel: DNS resolved again
        time.sleep(1.2)  # past the old channel's grace (deadline + 1 s): closed on the next call
        client.recommend([3], k=1)
        assert all(old is not first for _, old in client._retired)
    assert fake.calls == 3


def test_async_client_batches_and_retries(fake_triton):
    fake = fake_triton(failures=["UNAVAILABLE"])

    async def main():
        async with AsyncRecommendClient(fake.url, retry=FAST) as client:
            single = await client.recommend([5], k=2)
            batch = await client.recommend_batch([[1], [2, 3], [4]], k=2)
            return single, batch, client.retries

    single, batch, retries = asyncio.run(main())
    assert single.item_ids == [500, 501] and retries == 1
    assert [rec.item_ids[0] for rec in batch] == [100, 200, 400]
    assert fake.calls == 1 + 1 + 2  # failed + single + one request per session length
