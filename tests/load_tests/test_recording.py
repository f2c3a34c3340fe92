"""Load-test pieces without Locust or a server: session replay, the recorder, the SLA check, the plot.

    .venv/bin/pytest tests/load_tests/test_recording.py -q
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sessionrec.load_tests.sessions import SessionWalk, load_sessions, read_replay_file, write_replay_file
from sessionrec.load_tests.sla import SLA, Recorder, read_requests, write_reports


def test_sessions_from_a_click_log_are_the_test_split_in_raw_ids(sample_path, sample_dataset, tmp_path):
    sessions = load_sessions(sample_path)
    assert sessions == [sample_dataset.raw_ids[s].tolist() for s in sample_dataset.test]
    replay = write_replay_file(sessions, tmp_path / "sessions.txt")
    assert read_replay_file(replay) == sessions == load_sessions(replay)
    (tmp_path / "srgnn").mkdir()
    write_replay_file(sessions[:3], tmp_path / "srgnn" / "test_sessions.txt")
    assert load_sessions(tmp_path / "srgnn") == sessions[:3]  # a SR-GNN folder: ids are raw ids


def test_walk_goes_click_by_click_through_whole_sessions():
    walk = SessionWalk([[1, 2, 3], [4, 5]], seed=3)
    requests = [walk.next_request() for _ in range(40)]
    for request in requests:
        assert request in ([1], [1, 2], [1, 2, 3], [4], [4, 5])
    # every session is walked to its end before the next one starts
    for previous, current in zip(requests, requests[1:]):
        if len(current) > 1:
            assert current[:-1] == previous
    assert SessionWalk([[1, 2, 3], [4, 5]], seed=3).next_request() == requests[0]  # repeatable
    only_first = {tuple(SessionWalk([[1, 2], [4, 5]], seed=s, distinct=1).next_request()) for s in range(10)}
    assert only_first == {(1,)}


def _recorder(latencies, failed_at=(), start=100.0, spacing=0.01, warmup=0.0):
    recorder = Recorder(warmup_s=warmup, start=start)
    for i, latency in enumerate(latencies):
        recorder.add(start + (i + 1) * spacing, latency, "boom" if i in failed_at else None)
    return recorder


def test_summary_has_exact_percentiles_and_excludes_warmup_and_stopping():
    latencies = list(np.linspace(1, 10, 100)) + [500.0] * 10  # the slow tail lands after the stop
    recorder = _recorder([1000.0] * 50 + latencies, warmup=0.505)  # the first 50 (slow) end in the warm-up
    recorder.stop = 100.0 + 150 * 0.01 + 0.005
    summary = recorder.summary()
    assert summary["requests"] == 100 and summary["warmup_requests"] == 50
    assert summary["latency_ms"]["p50"] == pytest.approx(np.percentile(np.linspace(1, 10, 100), 50))
    assert summary["latency_ms"]["max"] == pytest.approx(10.0)
    assert summary["throughput_rps"] == pytest.approx(100 / 1.0, rel=0.02)


def test_sla_fails_on_latency_on_any_failure_and_on_no_traffic():
    fast = _recorder([2.0] * 100).summary()
    assert SLA(95, 70).check(fast).ok
    assert not SLA(95, 1.0).check(fast).ok
    assert "p99" in SLA(99, 1.0).check(_recorder([2.0] * 100).summary(extra_percentiles=(99,))).line()
    failing = _recorder([2.0] * 100, failed_at={5}).summary()
    verdict = SLA(95, 70).check(failing)
    assert not verdict.ok and "1 failed" in verdict.line() and "boom" in verdict.line()
    assert SLA(95, 70, max_failures=1).check(failing).ok
    assert not SLA().check(Recorder().summary()).ok


def test_reports_are_written(tmp_path):
    recorder = _recorder(list(np.random.default_rng(0).gamma(2, 2, 650)), spacing=0.005, warmup=0.5)
    summary = write_reports(recorder, SLA(95, 70), tmp_path / "run", title="unit")
    assert summary["sla"]["ok"]
    assert json.loads((tmp_path / "run_summary.json").read_text())["requests"] == summary["requests"]
    rows = (tmp_path / "run_timeline.csv").read_text().splitlines()
    assert rows[0].startswith("t_s,rps") and len(rows) == 1 + 3  # 3.25 s: the last quarter second is dropped
    assert (tmp_path / "run_latency.png").read_bytes()[:4] == b"\x89PNG"


def test_every_request_is_written_and_read_back(tmp_path):
    recorder = _recorder([1.5, 2.25, 3.0], failed_at={1})
    recorder.error_texts[1] = "RecommendError: UNAVAILABLE, connection refused\nretry later"
    write_reports(recorder, None, tmp_path / "run")
    rows = read_requests(tmp_path / "run_requests.csv")
    ends, latencies, _ = recorder.arrays()
    assert [r[0] for r in rows] == pytest.approx(list(ends), abs=1e-6)
    assert [r[1] for r in rows] == pytest.approx([1.5, 2.25, 3.0])
    assert rows[0][2] is None and rows[2][2] is None
    assert rows[1][2] == "RecommendError: UNAVAILABLE; connection refused retry later"  # one field, one line
    (tmp_path / "other.csv").write_text("t_s,rps\n")
    with pytest.raises(ValueError, match="not a requests file"):
        read_requests(tmp_path / "other.csv")
