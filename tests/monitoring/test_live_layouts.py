"""The monitoring series on the real tritonserver, in both layouts, with a real redis-server.

The fused CPU step (`session_recommender`) and the three-step layout (`session_history` ->
`preprocess` -> `session_encoder` -> `retrieval`, the GPU deployment's wiring on CPU backends)
must expose the same series with the values the requests imply: the test sends `recommend`
requests (known, unknown-last-click, all-unknown, one too long: an error) and `recommend_session`
clicks (stored, a retried duplicate), then compares the increase of every series on /metrics with
what it computes from the requests and their answers (the manifest's score deciles, the version's
popularity buckets). The server's own canary replays at start are not counted: they happen before
the baseline is read, and recommend_session's are left out by the steps.
"""

from __future__ import annotations

import time
import urllib.request

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from sessionrec.clients import NO_RETRY, RecommendClient
from sessionrec.monitoring.reference import item_buckets
from sessionrec.monitoring.signals import SESSION_LENGTH_LE
from sessionrec.serving.artifacts import read_manifest
from sessionrec.serving.embedded import EmbeddedServer, infer_recommend
from sessionrec.serving.preprocess import IdMap
from sessionrec.serving.redis_local import LocalRedis

pytestmark = pytest.mark.server


def scrape(metrics_url: str, version: str) -> dict[tuple, float]:
    """{(name, other labels...): value} of this version's sessionrec_* series, aggregated over the
    stubs that wrote them as the rules do (`stub` summed away for counters, max for the reference gauges)."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    out: dict[tuple, float] = {}
    for line in text.splitlines():
        if not line.startswith("sessionrec_") or f'model_version="{version}"' not in line:
            continue
        head, value = line.rsplit(" ", 1)
        name, _, labels = head.partition("{")
        pairs = dict(kv.split("=", 1) for kv in labels.rstrip("}").split(",") if kv)
        assert pairs.pop("stub", "").strip('"').isdigit(), line  # every series names the stub (its pid) that wrote it
        key = (name, *((k, v.strip('"')) for k, v in sorted(pairs.items()) if k != "model_version"))
        gauge = name.startswith("sessionrec_reference_")
        out[key] = max(out.get(key, 0.0), float(value)) if gauge else out.get(key, 0.0) + float(value)
    return out


class Expected:
    """The series' increases the requests imply, computed here from the requests and the answers."""

    def __init__(self, repository, version: str):
        retrieval = repository / "retrieval" / version
        self.id_map = IdMap(np.load(retrieval / "item_ids.npy"))
        self.buckets = item_buckets(np.load(retrieval / "popularity.npy"))
        self.edges = np.asarray(read_manifest(retrieval)["monitoring"]["top_score"]["edges"])
        self.values: dict[tuple, float] = {}

    def add(self, key: tuple, n: float = 1) -> None:
        self.values[key] = self.values.get(key, 0) + n

    def click(self, raw: int) -> None:
        model = int(self.id_map.to_model(np.array([raw]))[0])
        self.add(("sessionrec_input_clicks_total", ("bucket", "unknown" if model == 0 else str(self.buckets[model]))))

    def answer(self, answer, length: int) -> None:
        self.add(("sessionrec_sessions_total",))
        self.add(("sessionrec_fallback_total",), int(answer.fallback))
        self.add(("sessionrec_unknown_items_total",), answer.unknown_count)
        self.add(("sessionrec_session_items_total",), length)
        self.add(("sessionrec_session_length_sum",), length)
        self.add(("sessionrec_session_length_count",))
        for le in SESSION_LENGTH_LE:
            self.add(("sessionrec_session_length_bucket", ("le", f"{le:g}")), int(length <= le))
        self.add(("sessionrec_session_length_bucket", ("le", "+Inf")))
        self.add(("sessionrec_top_score_total", ("bucket", str(int(np.searchsorted(self.edges, answer.scores[0], side="right"))))))
        for model in self.id_map.to_model(np.asarray(answer.item_ids)):
            self.add(("sessionrec_recommended_items_total", ("bucket", str(self.buckets[model]))))

    def recommend(self, answer, items: list[int]) -> None:
        self.click(items[-1])
        self.answer(answer, len(items))

    def event(self, answer, new_items: list[int]) -> None:
        self.add(("sessionrec_history_state_total", ("state", answer.state)))
        if answer.state != "duplicate":
            for item in new_items:
                self.click(item)
        self.answer(answer, answer.history_length)


@pytest.mark.parametrize("layout", ["fused", "three_step"])
def test_both_layouts_expose_the_series_the_requests_imply(layout, fresh_repository, tmp_path):
    from sessionrec.export.configs import HISTORY, STEPS, ServingConfig
    from sessionrec.export.repository import write_configs
    from sessionrec.reliability.procs import python_stubs

    if layout == "three_step":
        write_configs(fresh_repository, ServingConfig(fused_cpu=False), version=1)
    known = np.load(fresh_repository / "preprocess" / "1" / "item_ids.npy")[1:].tolist()
    unknown = max(known) + 1
    with LocalRedis() as redis:
        env = {"SESSIONREC_REDIS_URL": redis.url, "SESSIONREC_REDIS_TIMEOUT_MS": "200"}
        with EmbeddedServer(fresh_repository, watch_seconds=0, log_file=tmp_path / "triton.log",
                            environment=env) as server:
            if layout == "three_step":
                assert set(python_stubs(server.server.pid)) == {*STEPS, HISTORY}
            version = str(server.version)
            expected = Expected(fresh_repository, version)
            with RecommendClient(server.grpc_url, retry=NO_RETRY) as client:
                def flush_round(seq: int):
                    """Every step flushes at its first execute a second after its last flush: a click
                    (session_history, and the steps after it), a second later a `recommend` (preprocess,
                    retrieval: the click's counts too). Returns both answers."""
                    time.sleep(1.1)
                    clicked = client.click("flush", [known[70]], k=10, seq=seq)
                    time.sleep(1.1)
                    return clicked, client.recommend(known[:2], k=10)

                flush_round(1)  # what the start's canary replays left is flushed: the baseline
                before = scrape(server.metrics_url, version)

                sessions = [known[3:6], known[10:11], known[20:27], [known[5], unknown], [unknown, unknown + 1],
                            known[40:41] * 3]
                for items in sessions:
                    expected.recommend(client.recommend(items, k=20), items)
                grpc = server.server.client()
                with pytest.raises(InferenceServerException, match="over the limit"):
                    infer_recommend(grpc, known[:1] * 1001, 20, False)  # refused by preprocess: an error
                expected.add(("sessionrec_request_errors_total",))
                for seq, item in enumerate(known[50:54], 1):
                    answer = client.click("guest-m", [item], k=15, seq=seq)
                    assert answer.state == "stored"
                    expected.event(answer, [item])
                answer = client.click("guest-m", [known[53]], k=15, seq=4)  # a retry
                assert answer.state == "duplicate"
                expected.event(answer, [known[53]])
                answer = client.click("guest-n", [known[60], unknown], k=15, seq=1)  # two clicks, one unknown
                expected.event(answer, [known[60], unknown])

                # the server's canary replays through recommend_session (as at a switch): not guest traffic
                from sessionrec.serving import session_canaries

                manifest = read_manifest(fresh_repository / "recommend" / version)
                assert session_canaries.replay(grpc, manifest).ok
                clicked, answer = flush_round(2)
                expected.event(clicked, [known[70]])
                expected.recommend(answer, known[:2])
                after = scrape(server.metrics_url, version)
    increase = {key: after.get(key, 0) - before.get(key, 0) for key in set(after) | set(before)}
    changed = {key: value for key, value in increase.items() if value}
    wanted = {key: value for key, value in expected.values.items() if value}
    assert changed == wanted, (layout, sorted(set(changed.items()) ^ set(wanted.items())))
    # the gauges are there in both layouts: the PSI references
    assert after[("sessionrec_reference_click_share", ("bucket", "0"))] > 0
    assert after[("sessionrec_reference_score_share", ("bucket", "0"))] == pytest.approx(0.1)
