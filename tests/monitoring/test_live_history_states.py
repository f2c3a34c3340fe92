"""The recommend_session history-state counters on the real tritonserver with a real redis-server."""

from __future__ import annotations

import time

import numpy as np
import pytest

from sessionrec.clients import RecommendClient
from sessionrec.serving.embedded import EmbeddedServer
from sessionrec.serving.redis_local import LocalRedis

pytestmark = pytest.mark.server


def state_counts(metrics_url: str, version: str) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("sessionrec_history_state_total{") and f'model_version="{version}"' in line:
            state = line.split('state="')[1].split('"')[0]
            out[state] = out.get(state, 0.0) + float(line.rsplit(" ", 1)[1])  # summed over the stubs' series
    return out


def test_stored_and_duplicate_events_are_counted(exported_repository, tmp_path):
    known = np.load(exported_repository / "preprocess" / "1" / "item_ids.npy")[1:10].tolist()
    with LocalRedis() as redis:
        env = {"SESSIONREC_REDIS_URL": redis.url, "SESSIONREC_REDIS_TIMEOUT_MS": "50"}
        with EmbeddedServer(exported_repository, watch_seconds=0, log_file=tmp_path / "triton.log",
                            environment=env) as server:
            with RecommendClient(server.grpc_url) as client:
                for seq, item in enumerate(known[:4], 1):
                    assert client.click("guest-m", [item], k=10, seq=seq).state == "stored"
                assert client.click("guest-m", [known[3]], k=10, seq=4).state == "duplicate"
                # Each stub flushes its counts on a request after its flush interval; with two fused
                # instances a request reaches one of them, so ask until both have flushed.
                deadline = time.monotonic() + 15
                while True:
                    time.sleep(1.1)
                    client.recommend(known[:2], k=5)
                    counts = state_counts(server.metrics_url, str(server.version))
                    if counts.get("stored") == 4 and counts.get("duplicate") == 1 or time.monotonic() > deadline:
                        break
    assert counts.get("stored") == 4 and counts.get("duplicate") == 1, counts
