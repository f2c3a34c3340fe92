"""Sharded retrieval through real tritonservers: two shard servers and one front, on 127.0.0.1.

The front serves `recommend` with its usual fused step; its retrieval fans each batch out to the
shard servers (SESSIONREC_SHARD_ADDRESSES) and merges by score. With exact shards it answers what
the unsharded export answers; with a shard killed every request gets UNAVAILABLE naming that shard,
the front stays up, and it answers again once the shard is back on its address.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from sessionrec.clients import NO_RETRY, RecommendClient
from sessionrec.clients.errors import RecommendError
from sessionrec.serving.artifacts import read_manifest
from sessionrec.serving.launcher import TritonServer
from sessionrec.serving.pipeline import LocalPipeline


def _shard_server(repo, shard: int, log_dir, grpc_port: int = 0) -> TritonServer:
    server = TritonServer(repo, models=[f"retrieval_shard_{shard}"], grpc_port=grpc_port,
                          log_file=log_dir / f"shard{shard}.log")
    return server.start(require_models=True)


@pytest.fixture(scope="module")
def cluster(sharded_repository, tmp_path_factory):
    logs = tmp_path_factory.mktemp("sharded-logs")
    shards = [_shard_server(sharded_repository, s, logs) for s in range(2)]
    addresses = ",".join(f"127.0.0.1:{s.ports['grpc']}" for s in shards)
    front = TritonServer(sharded_repository, models=["recommend"], log_file=logs / "front.log",
                         environment={"SESSIONREC_SHARD_ADDRESSES": addresses, "SESSIONREC_SHARD_TIMEOUT_MS": "2000"})
    front.start(require_models=True)
    yield front, shards, logs
    front.stop()
    for shard in shards:
        shard.stop()


def test_front_loads_no_item_vectors_and_only_its_own_models(cluster, sharded_repository):
    front, shards, _ = cluster
    assert front.model_ready("recommend") and front.model_ready("session_recommender")
    assert not front.model_ready("retrieval_shard_0") and not front.model_ready("retrieval")
    assert shards[0].model_ready("retrieval_shard_0", "1") and not shards[0].model_ready("retrieval_shard_1")
    assert not (sharded_repository / "retrieval" / "1" / "items.faiss").exists()


def test_sharded_answers_equal_the_unsharded_export(cluster, exported_repository):
    front, _, _ = cluster
    reference = LocalPipeline(exported_repository, 1)
    canaries = read_manifest(exported_repository / "recommend" / "1")["canaries"]
    with RecommendClient(front.grpc_url, retry=NO_RETRY, timeout=10) as client:
        for canary in canaries:
            answer = client.recommend(canary["items"], canary["k"], canary["exclude_seen"])
            assert list(answer.item_ids) == canary["expected_ids"], canary["items"]
            np.testing.assert_allclose(answer.scores, canary["expected_scores"], rtol=1e-5, atol=1e-6)
        # the deepest merge: K across both shards' ranges, with the session's items excluded
        for canary in canaries[:5]:
            answer, want = client.recommend(canary["items"], 300, True), reference.recommend(canary["items"], 300, True)
            np.testing.assert_array_equal(answer.item_ids, want.item_ids)
        # a batch of sessions in one request goes out to the shards as one batch
        sessions = [c["items"] for c in canaries[:6]]
        batch = client.recommend_batch(sessions, 20)
        assert [list(b.item_ids) for b in batch] == [reference.recommend(s, 20).item_ids.tolist() for s in sessions]


def test_a_killed_shard_gives_a_clear_error_and_the_front_recovers(cluster, sharded_repository, exported_repository):
    front, shards, logs = cluster
    canaries = read_manifest(exported_repository / "recommend" / "1")["canaries"]
    session = next(c for c in canaries if len(c["items"]) >= 2)  # one click is answered from the one-click table
    port = shards[1].ports["grpc"]
    with RecommendClient(front.grpc_url, retry=NO_RETRY, timeout=10) as client:
        expected = list(client.recommend(session["items"], 20).item_ids)
        shards[1].stop(grace_s=0)  # killed
        for _ in range(3):
            with pytest.raises(RecommendError) as failed:
                client.recommend(session["items"], 20)
            message = str(failed.value)
            assert "retrieval shard 1" in message and f"127.0.0.1:{port}" in message, message
            assert failed.value.code == "UNAVAILABLE", failed.value.code  # retryable, not a bad request
        assert front.is_running and client.ready()  # the front stays up and ready

        shards[1] = _shard_server(sharded_repository, 1, logs, grpc_port=port)  # back on its address
        deadline, answer = time.monotonic() + 15, None
        while answer is None:
            try:
                answer = client.recommend(session["items"], 20)
            except RecommendError:  # the front's channel reconnects within its backoff (<= 1 s)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert list(answer.item_ids) == expected
