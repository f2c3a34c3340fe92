"""The naive baseline of the serving benchmark answers what the ensemble answers, over HTTP/JSON.

    .venv/bin/pytest tests/load_tests/test_naive_server.py -q
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from sessionrec.export.repository import current_version
from sessionrec.load_tests.runner import LoadTest, run_load_test
from sessionrec.load_tests.sessions import load_sessions, write_replay_file
from sessionrec.naive_server import NaiveRecommender, serve_in_thread
from sessionrec.serving.pipeline import LocalPipeline

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def naive(trained_checkpoint):
    return NaiveRecommender(trained_checkpoint, threads=1)


@pytest.fixture(scope="module")
def sessions(sample_path):
    return load_sessions(sample_path)[:15] + [[987654321, 987654322]]


def test_same_answers_as_the_served_pipeline(naive, trained_checkpoint, exported_repository, sessions):
    cached = NaiveRecommender(trained_checkpoint, threads=1, cache_item_table=True)
    pipeline = LocalPipeline(exported_repository, current_version(exported_repository))
    for session in sessions:
        for exclude_seen in (False, True):
            answer = naive.recommend(session, 10, exclude_seen)
            same = cached.recommend(session, 10, exclude_seen)
            assert answer["item_ids"] == same["item_ids"] and answer["scores"] == pytest.approx(same["scores"], abs=1e-5)
            expected = pipeline.recommend(session, 10, exclude_seen)
            assert answer["fallback"] == expected.fallback and answer["unknown_count"] == expected.unknown_count
            # ONNX + FAISS vs eager PyTorch: equal up to float noise, which may swap near-ties
            np.testing.assert_allclose(answer["scores"], expected.scores, atol=1e-3)
            assert len(set(answer["item_ids"]) & set(expected.item_ids.tolist())) >= 9


def test_http_endpoint_and_a_short_load_test(naive, sessions, tmp_path):
    server, _ = serve_in_thread(naive)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        request = urllib.request.Request(f"{url}/recommend", data=json.dumps({"items": sessions[0], "k": 3}).encode())
        with DIRECT.open(request, timeout=10) as response:
            assert json.load(response)["item_ids"] == naive.recommend(sessions[0], 3)["item_ids"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            DIRECT.open(urllib.request.Request(f"{url}/recommend", data=b'{"items": [], "k": 3}'), timeout=10)
        assert refused.value.code == 400 and b"empty" in refused.value.read()
        replay = write_replay_file(sessions, tmp_path / "sessions.txt")
        result = run_load_test(LoadTest(host=url, protocol="http", sessions_file=replay, out_dir=tmp_path,
                                        users=4, run_time_s=3))
    finally:
        server.shutdown()
        server.server_close()
    assert result.passed, result.output
    assert result.summary["requests"] > 20 and result.summary["failures"] == 0
