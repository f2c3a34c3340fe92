"""Hot swap under traffic with the monitoring counters live (regression test for custom metrics on reload).

Newer Triton releases have an open crash bug when a python model that created custom metrics is
unloaded or reloaded; the stub also refuses a MetricFamily deleted before its Metrics. Here two new
versions are exported while clients replay sessions: version 1 is unloaded (steps keep the newest
two), its monitor's finalize drops its metrics while versions 2 and 3 keep using the same families.
Every request must succeed, the server and the serving stubs must live on, and the counters must
follow the served version.
"""

from __future__ import annotations

import time
import urllib.request

import pytest

from sessionrec.export.exporter import ExportOptions, export_version
from sessionrec.serving.embedded import EmbeddedServer
from tests.monitoring.test_live_drift import Replay, prefixes

pytestmark = pytest.mark.server


def series(metrics_url: str, name: str) -> dict[str, float]:
    """{model_version: value} of one unlabelled-but-version series on the server's metrics page."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1:].split("} ")
            version = dict(kv.split("=") for kv in labels.split(","))["model_version"].strip('"')
            out[version] = float(value)
    return out


def wait_version(server: EmbeddedServer, version: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.version != version:
        time.sleep(0.2)
    assert server.version == version, server.events


def test_hot_swap_under_traffic_with_counters_live(fresh_repository, trained_checkpoint, sample_path, sample_dataset,
                                                   tmp_path):
    server = EmbeddedServer(fresh_repository, watch_seconds=0.5, log_file=tmp_path / "triton.log")
    server.start()
    try:
        with Replay(server.grpc_url, prefixes(sample_dataset, sample_dataset.train), users=2) as replay:
            time.sleep(2)
            for version in (2, 3):
                export_version(trained_checkpoint, fresh_repository, ExportOptions(data=str(sample_path)), progress=False)
                wait_version(server, version)
                time.sleep(2.5)  # traffic on the new version, more than one flush interval
            sent_before_end = replay.sent
        assert replay.failures == 0, server.server.log_tail()
        assert replay.sent > sent_before_end - 1 and replay.sent > 100
        assert server.server.is_running, server.server.log_tail()
        sessions = series(server.metrics_url, "sessionrec_sessions_total")
        assert sessions.get("3", 0) > 0, sessions  # the counters follow the served version
        assert sessions.get("2", 0) > 0, sessions
        assert "1" not in sessions, sessions  # version 1 unloaded: its finalize released its series
        log = (tmp_path / "triton.log").read_text(errors="replace")
        for bad in ("Segmentation fault", "Stub process", "Error when deleting", "Invalid metric operation",
                    "core dumped", "Failed to finalize"):
            assert bad not in log, bad
    finally:
        server.stop()


def test_two_stubs_of_one_version_never_share_a_series(fresh_repository, sample_dataset, tmp_path):
    """Regression: the fused step reloaded between two instances and one, under traffic.

    Two stubs of one version used to create the same series (same labels); tritonserver 2.51 counts
    references per stub's MetricFamily, so the stub that unloaded first freed the series under the
    other and the server aborted on heap corruption (sessionrec.monitoring.signals.TritonSink).
    Each stub's series now carry its own `stub` label.
    """
    import json

    server = EmbeddedServer(fresh_repository, watch_seconds=0, log_file=tmp_path / "triton.log")
    server.start()
    try:
        step = "session_recommender"
        tri = server.server.client()
        config = tri.get_model_config(step, as_json=True)["config"]
        with Replay(server.grpc_url, prefixes(sample_dataset, sample_dataset.train), users=2) as replay:
            for count in (2, 1, 2, 1, 2, 1):
                config["instance_group"][0]["count"] = count
                server.server.load_model(step, config_json=json.dumps(config))
                time.sleep(1.5)  # traffic on both stubs, more than one flush interval
                assert server.server.is_running, server.server.log_tail()
        assert replay.failures == 0, server.server.log_tail()
        assert replay.sent > 100
        text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
        stubs = {line.split('stub="')[1].split('"')[0] for line in text.splitlines()
                 if line.startswith("sessionrec_sessions_total{")}
        assert len(stubs) == 1, stubs  # one instance left: the unloaded stub's series went with it
        log = (tmp_path / "triton.log").read_text(errors="replace")
        for bad in ("malloc", "Signal (6)", "Segmentation fault", "Stub process", "Error when deleting"):
            assert bad not in log, bad
    finally:
        server.stop()
