"""`sessionrec serve` (EmbeddedServer) on a sharded export: the shard servers are its own.

The bundled sample's model with 2 exact shards (fixture `sharded_repository`): EmbeddedServer starts
a tritonserver per shard on 127.0.0.1 and the front pointed at them, and is healthy only when the
canaries answer through the shards; a new sharded version is switched to under traffic with no
failed request (its shard versions loaded on the shard servers first; a corrupted shard refuses the
switch and the front stays on the version whose shards are there); a shard server killed is
restarted on its address by heal(); stop() leaves no process behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import time

import numpy as np
import pytest

from sessionrec.clients import NO_RETRY, RecommendClient
from sessionrec.clients.errors import RecommendError
from sessionrec.errors import SessionrecError
from sessionrec.export.exporter import ExportOptions, export_version
from sessionrec.export.repository import rollback
from sessionrec.reliability.load import Load, canary_probes
from sessionrec.serving.artifacts import read_manifest
from sessionrec.serving.embedded import EmbeddedServer, replay_canaries
from sessionrec.serving.launcher import group_members
from sessionrec.serving.pipeline import LocalPipeline
from sessionrec.serving.shard_servers import served_shard_count
from sessionrec.serving.shards import ADDRESSES_ENV

pytestmark = pytest.mark.server
FAST = dict(index="flat", quality_sessions=200, parity_sessions=100)


@pytest.fixture
def repository(sharded_repository, tmp_path):
    repo = tmp_path / "repository"
    shutil.copytree(sharded_repository, repo)
    return repo


def recommend_until_answered(client, items, timeout: float = 15.0):
    """The front's channel to a restarted shard reconnects within its backoff (<= 1 s)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.recommend(items, 20)
        except RecommendError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_sharded_export_is_served_and_a_killed_shard_server_healed(repository, exported_repository, tmp_path):
    server = EmbeddedServer(repository, watch_seconds=0, log_file=tmp_path / "front.log").start()  # canaries replayed
    try:
        assert len(server.shards) == 2 and server.version == 1
        assert server.server.environment[ADDRESSES_ENV] == ",".join(server.shards.addresses)
        for s, shard in enumerate(server.shards.servers):
            assert shard.grpc_url.startswith("127.0.0.1:") and shard.log_path == tmp_path / f"front.shard{s}.log"
            assert shard.model_ready(f"retrieval_shard_{s}", "1") and not shard.model_ready(f"retrieval_shard_{1 - s}")
        assert not server.server.model_ready("retrieval_shard_0")  # the front holds no item vectors
        canaries = read_manifest(repository / "recommend" / "1")["canaries"]
        reference = LocalPipeline(exported_repository, 1)
        with RecommendClient(server.grpc_url, retry=NO_RETRY, timeout=10) as client:
            for canary in canaries:
                answer = client.recommend(canary["items"], canary["k"], canary["exclude_seen"])
                assert list(answer.item_ids) == canary["expected_ids"]
                np.testing.assert_allclose(answer.scores, canary["expected_scores"], rtol=1e-5, atol=1e-6)
            session = next(c["items"] for c in canaries if len(c["items"]) >= 2)  # one click: the front's table
            deep = client.recommend(session, 300, True)  # merged across both shards' ranges
            np.testing.assert_array_equal(deep.item_ids, reference.recommend(session, 300, True).item_ids)

            expected = list(client.recommend(session, 20).item_ids)
            victim = server.shards.servers[1]
            address, pid = victim.grpc_url, victim.pid
            os.killpg(pid, signal.SIGKILL)  # the shard's tritonserver and its stub, as the OOM killer would
            deadline = time.monotonic() + 10
            while victim.is_running and time.monotonic() < deadline:
                time.sleep(0.05)
            with pytest.raises(RecommendError) as failed:
                client.recommend(session, 20)
            assert failed.value.code == "UNAVAILABLE" and "retrieval shard 1" in str(failed.value)
            assert server.heal() == "retrieval_shard_1"
            assert server.shards.addresses[1] == address and server.shards.servers[1].pid != pid
            assert "restarted the retrieval_shard_1 server" in server.events[-1]
            assert list(recommend_until_answered(client, session).item_ids) == expected
            assert server.heal() is None  # nothing else to do
        # Every front stub (two fused instances) has its own channel to the shard: one that tried the
        # dead shard reconnects within its backoff (<= 1 s), so the canaries pass within a few seconds.
        manifest, deadline = read_manifest(repository / "recommend" / "1"), time.monotonic() + 10
        while not (report := replay_canaries(server.server.client(), manifest)).ok and time.monotonic() < deadline:
            time.sleep(0.2)
        assert report.ok, report.failures[:2]
    finally:
        groups = [s.pid for s in (server.server, *server.shards.servers)]
        server.stop()
    assert not server.server.is_running and not any(s.is_running for s in server.shards.servers)
    assert not any(group_members(g) for g in groups)  # no tritonserver or stub outlives stop()


def test_a_new_sharded_version_is_switched_to_under_traffic(repository, trained_checkpoint, sample_path, tmp_path):
    server = EmbeddedServer(repository, watch_seconds=0, log_file=tmp_path / "front.log").start()
    try:
        export_version(trained_checkpoint, repository, ExportOptions(data=str(sample_path), shards=2, **FAST),
                       progress=False)
        # A corrupted shard of version 2: refused on its shard server, the front never touched.
        index = repository / "retrieval_shard_1" / "2" / "items.faiss"
        good = index.read_bytes()
        index.write_bytes(good[:-8] + b"tampered")
        assert not server.sync() and server.version == 1
        assert "switch to version 2 failed" in server.events[-1] and "retrieval_shard_1" in server.events[-1]
        assert server.shards.missing(1) == []  # what the front pins is all there
        assert replay_canaries(server.server.client(), read_manifest(repository / "recommend" / "1")).ok

        index.write_bytes(good)  # repaired: the next switch goes through, under traffic
        with Load(server.grpc_url, canary_probes(repository, [1, 2]), rate=20) as load:
            time.sleep(1)
            assert server.sync() and server.version == 2, server.events
            time.sleep(1)
        stats = load.stats()
        assert stats.failed == 0 and stats.wrong == 0 and stats.requests > 20, stats.as_dict()
        assert server.shards.missing(2) == [] and server.shards.missing(1) == []  # newest two on each shard
        assert replay_canaries(server.server.client(), read_manifest(repository / "recommend" / "2")).ok

        retired, live = rollback(repository)
        assert (retired, live) == (2, 1)
        assert server.sync() and server.version == 1
        assert replay_canaries(server.server.client(), read_manifest(repository / "recommend" / "1")).ok
        # rollback moves only recommend/2 aside (export/repository.py): like the steps, the shard
        # servers keep version 2 until the next export moves its folders away
        assert server.shards.missing(1) == [] and server.shards.missing(2) == []
    finally:
        server.stop()


def test_the_unsharded_path_runs_no_shard_servers(exported_repository, sharded_repository):
    server = EmbeddedServer(exported_repository, watch_seconds=0)  # not started: nothing runs yet
    assert server.shards is None and ADDRESSES_ENV not in server.server.environment
    plain, sharded = read_manifest(exported_repository / "recommend" / "1"), read_manifest(sharded_repository / "recommend" / "1")
    assert served_shard_count({1: plain}) == 0 and served_shard_count({1: plain, 2: sharded}) == 2
    three = {**sharded, "retrieval_shards": sharded["retrieval_shards"] + [{"model": "retrieval_shard_2"}]}
    with pytest.raises(SessionrecError, match=r"different retrieval shard counts \(version 1: 2, version 2: 3\)"):
        served_shard_count({1: sharded, 2: three})
