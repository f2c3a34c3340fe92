"""Short Locust runs against the real server: the SLA check passes when met and fails when it cannot be.

    .venv/bin/pytest tests/load_tests/test_locust_runs.py -q

Each run is a `locust --headless` subprocess bounded by --run-time (a few seconds here; the full-length
runs are `sessionrec loadtest` and benchmarks/serving_bench.py).
"""

from __future__ import annotations

import csv
import json

import pytest

from sessionrec.cli import main

pytestmark = pytest.mark.server


def test_one_command_runs_a_load_test_against_the_embedded_server(exported_repository, tmp_path, capsys):
    """`sessionrec loadtest --repository`: start the server, load it, replay sessions, stop; SLA met."""
    out = tmp_path / "run"
    code = main(["loadtest", "--repository", str(exported_repository), "--users", "8", "--run-time", "8",
                 "--warmup", "2", "--think-time", "0:0.01", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "SLA passed (p95 <= 70 ms" in printed
    summary = json.loads((out / "locust_summary.json").read_text())
    assert summary["requests"] > 100 and summary["failures"] == 0
    assert summary["latency_ms"]["p95"] <= 70 and summary["sla"]["ok"]
    with open(out / "locust_stats.csv") as handle:  # Locust's own CSV agrees on what was sent
        aggregated = [row for row in csv.DictReader(handle) if row["Name"] == "Aggregated"][0]
    assert int(aggregated["Request Count"]) >= summary["requests"] and aggregated["Failure Count"] == "0"
    assert (out / "locust_report.html").stat().st_size > 10_000
    assert (out / "locust_latency.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "locust_timeline.csv").read_text().splitlines()) >= 6


def test_an_impossible_sla_fails_the_run(embedded_server, sample_path, tmp_path, capsys):
    """Open-loop (constant arrival rate) run against a running host with a 10 microsecond target."""
    out = tmp_path / "run"
    code = main(["loadtest", "--host", embedded_server.grpc_url, "--sessions", str(sample_path),
                 "--arrival-rate", "60", "--users", "4", "--run-time", "3", "--sla-ms", "0.01",
                 "--sla-percentile", "50", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 1, printed
    assert "SLA FAILED (p50 <= 0.01 ms" in printed
    summary = json.loads((out / "locust_summary.json").read_text())
    assert summary["failures"] == 0 and not summary["sla"]["ok"]
    assert 60 * 3 * 0.6 <= summary["requests"] <= 60 * 3 * 1.2  # the offered rate, not a closed loop's


def test_wrong_answers_and_errors_are_failures(embedded_server, sample_path, tmp_path, capsys):
    """K beyond the catalogue: every request is refused (INVALID_ARGUMENT), reported, and fails the SLA."""
    code = main(["loadtest", "--host", embedded_server.grpc_url, "--sessions", str(sample_path), "--users", "2",
                 "--run-time", "2", "--k", "100000", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert code == 1 and "failed requests" in printed and "InvalidRequest" in printed



def test_a_locust_that_ends_early_is_seen_without_being_reaped(tmp_path):
    # LocustLoad polls exited() while it waits for the first requests; wait() must still collect the
    # process (its CPU time, its report) afterwards, and say so when there is no report.
    import subprocess
    import sys
    import threading
    import time

    from sessionrec.load_tests.runner import LoadTest, LoadTestError, RunningLoadTest

    test = LoadTest(host="127.0.0.1:9", sessions_file=tmp_path / "s.txt", out_dir=tmp_path, name="early")
    log = tmp_path / "early_console.log"
    log.write_text("locust: no such option\n")
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(2)"])
    running = RunningLoadTest(test, process, threading.Timer(60, lambda: None), time.monotonic(), log)
    deadline = time.monotonic() + 30
    while not running.exited():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert running.exited()  # still there to be collected
    with pytest.raises(LoadTestError, match="(?s)exited with 2 and wrote no report.*no such option"):
        running.wait()


def test_click_mode_replays_sessions_one_click_at_a_time(exported_repository, tmp_path, capsys):
    """`--mode click`: recommend_session with session ids, a local redis-server, 0 failed, every click stored."""
    out = tmp_path / "run"
    code = main(["loadtest", "--repository", str(exported_repository), "--mode", "click", "--users", "4",
                 "--run-time", "5", "--think-time", "0:0.01", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    summary = json.loads((out / "locust_summary.json").read_text())
    assert summary["requests"] > 50 and summary["failures"] == 0
    console = (out / "locust_console.log").read_text()
    states = dict(part.split("=") for part in console.split("history states ")[1].splitlines()[0].split(", "))
    assert int(states["stored"]) >= summary["requests"] * 0.99 and "degraded" not in states, states
