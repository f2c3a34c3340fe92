"""The autoscaling metric is real: a real Prometheus scrapes the real embedded tritonserver.

Prometheus (Debian package) loads the chart's own recording rules (helm/sessionrec/files/
recording-rules.yaml) and scrapes tritonserver's metrics endpoint every second while a load
generator drives the `recommend` ensemble. The HPA's metric, sessionrec:queued_requests:rate1m,
must rise under load and fall back to zero once the load stops; the SLO series must exist too.
(With the chart's own flags, probes running and the three-step layout: test_live_hardening.py.)
"""

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from sessionrec.serving.embedded import EmbeddedServer, infer_recommend

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm" / "sessionrec" / "files" / "recording-rules.yaml"
pytestmark = [pytest.mark.server]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(base: str, expr: str) -> float | None:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        result = json.load(response)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_for(base: str, expr: str, predicate, timeout: float) -> list[float | None]:
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = query(base, expr)
        except OSError:  # Prometheus still starting
            value = None
        seen.append(value)
        if value is not None and predicate(value):
            return seen
        time.sleep(1)
    raise AssertionError(f"{expr}: condition not reached in {timeout:.0f} s; values seen {seen[-10:]}")


def closed_loop_users(grpc_url: str, raw: np.ndarray, sessions: list, stop: threading.Event,
                      count: int = 12) -> list[threading.Thread]:
    """`count` threads sending real sessions back to back until `stop` is set (then join them)."""
    def user(i: int) -> None:
        client = grpcclient.InferenceServerClient(grpc_url)
        n = 0
        while not stop.is_set():
            infer_recommend(client, raw[np.asarray(sessions[(i + n) % len(sessions)])], 20, False)
            n += 1

    users = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(count)]
    for t in users:
        t.start()
    return users


@pytest.fixture
def prometheus_binary():
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: scripts/setup.sh installs the Debian package (apt-get install prometheus)")
    return binary


def test_queued_requests_rise_under_load_and_fall_back(prometheus_binary, exported_repository, tmp_path, sample_dataset):
    extra = ["--metrics-config=summary_latencies=true", "--metrics-interval-ms=500"]
    with EmbeddedServer(exported_repository, watch_seconds=0, log_file=tmp_path / "triton.log", extra_args=extra) as server:
        target = server.metrics_url.split("//")[-1].split("/")[0]
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: ['{RULES}']\n"
            f"scrape_configs: [{{job_name: triton, static_configs: [{{targets: ['{target}']}}]}}]\n"
        )
        port = free_port()
        prom = subprocess.Popen(
            [prometheus_binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=open(tmp_path / "prometheus.log", "w"), stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(base, "up", lambda v: v == 1, 60)
            ratio = "sessionrec:queued_requests:rate1m"
            wait_for(base, ratio, lambda v: v == 0, 60)  # idle: nothing queued

            stop = threading.Event()
            sessions = [s for s in sample_dataset.test][:30]
            raw = np.load(exported_repository / "preprocess" / "1" / "item_ids.npy")

            users = closed_loop_users(server.grpc_url, raw, sessions, stop)  # stopped at most ~90 s later
            try:
                loaded = wait_for(base, ratio, lambda v: v > 0.05, 90)
                # rate()[1m] needs a few scrapes of the load before it reads requests per second.
                rate = wait_for(base, "sessionrec:requests:rate1m", lambda v: v > 1, 60)[-1]
                p95 = query(base, "sessionrec:request_latency_p95_ms:max")
            finally:
                stop.set()
                for t in users:
                    t.join(timeout=30)
            assert p95 is not None and p95 > 0 and rate is not None and rate > 1
            # rate(...[1m]) forgets the load within a minute after it stops.
            wait_for(base, ratio, lambda v: v < 0.01, 120)
            assert max(v for v in loaded if v is not None) > 0.05
        finally:
            prom.terminate()
            prom.wait(timeout=30)
