"""Acceptance: the drift alert on a real tritonserver scraped by a real Prometheus.

Prometheus loads the chart's own monitoring rules (helm/sessionrec/files/monitoring-rules.yaml)
with the windows shortened from 15 minutes to 30 seconds (and `for:` to 5 s; the 1,000-click
volume guard and the thresholds unchanged). Clients replay sessions prefix by prefix, as a site
sends the session after every click, so every click is the last item of one request:
- the training sessions (the period the version was trained on): each click once per pass, the
  reference distribution itself: PSI stays under 0.1 and no alert fires;
- the test sessions (the later period of the same log): their popularity mix differs, and the
  drift alert fires.
Then a hot swap under traffic with the counters live (test_live_swap.py).
"""

from __future__ import annotations

import json
import random
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

from sessionrec.clients import NO_RETRY, RecommendClient
from sessionrec.serving.embedded import EmbeddedServer

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm" / "sessionrec" / "files" / "monitoring-rules.yaml"
pytestmark = pytest.mark.server
WINDOW = "30s"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shortened_rules(folder: Path) -> Path:
    text = RULES.read_text()
    text = text.replace("[15m]", f"[{WINDOW}]").replace("for: 15m", "for: 5s")
    assert f"[{WINDOW}]" in text and "[15m]" not in text
    path = folder / "monitoring-rules.yaml"
    path.write_text(text)
    return path


class Prometheus:
    def __init__(self, folder: Path, target: str, rules: Path):
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed: scripts/setup.sh installs the Debian package")
        config = folder / "prometheus.yml"
        config.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                          f"rule_files: ['{rules}']\n"
                          f"scrape_configs: [{{job_name: triton, static_configs: [{{targets: ['{target}']}}]}}]\n")
        self.url = f"http://127.0.0.1:{free_port()}"
        self.process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'tsdb'}",
                                         f"--web.listen-address={self.url.split('//')[1]}"],
                                        stdout=open(folder / "prometheus.log", "w"), stderr=subprocess.STDOUT)

    def query(self, expr: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)["data"]["result"]
        except OSError:
            return []

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


class Replay:
    """Users sending session prefixes (shuffled) back to back until stopped."""

    def __init__(self, grpc_url: str, prefixes: list[list[int]], users: int = 3):
        self.failures, self.sent = 0, 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(grpc_url, prefixes, i), daemon=True)
                         for i in range(users)]

    def _run(self, url, prefixes, seed):
        client = RecommendClient(url, retry=NO_RETRY)
        order = list(range(len(prefixes)))
        random.Random(seed).shuffle(order)
        i = 0
        while not self._stop.is_set():
            try:
                client.recommend(prefixes[order[i % len(order)]], k=20)
                ok = True
            except Exception:  # noqa: BLE001 - counted; the test asserts none
                ok = False
            with self._lock:
                self.sent += 1
                self.failures += not ok
            i += 1

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(30)


def prefixes(dataset, sessions) -> list[list[int]]:
    return [dataset.raw_ids[np.asarray(s[:n])].tolist() for s in sessions for n in range(1, len(s) + 1)]


def wait_until(predicate, timeout: float, what: str, seen: list):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        seen.append(value)
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"{what}: not reached in {timeout:.0f} s; last seen {seen[-5:]}")


def firing(prometheus: Prometheus, name: str) -> list[dict]:
    return prometheus.query(f'ALERTS{{alertname="{name}",alertstate="firing"}}')


def test_a_later_period_replay_fires_the_drift_alert_and_the_training_period_does_not(
        exported_repository, sample_dataset, tmp_path):
    server = EmbeddedServer(exported_repository, watch_seconds=0, log_file=tmp_path / "triton.log")
    server.start()
    prometheus = Prometheus(tmp_path, server.metrics_url.split("//")[-1].split("/")[0], shortened_rules(tmp_path))
    version = str(server.version)
    psi = f'sessionrec:input_popularity_psi:15m{{model_version="{version}"}}'
    volume = f'sessionrec:input_clicks:increase15m{{model_version="{version}"}}'
    try:
        seen: list = []
        with Replay(server.grpc_url, prefixes(sample_dataset, sample_dataset.train)) as replay:
            # the volume guard passed with the reference mix: PSI is computed on >= 1,000 clicks
            wait_until(lambda: (prometheus.value(volume) or 0) >= 1000, 90, "1,000 clicks in a window", seen)
            quiet_psi = []
            for _ in range(15):  # 15 s of evaluations with the guard passed: no alert
                quiet_psi.append(prometheus.value(psi))
                assert not firing(prometheus, "SessionrecInputDrift"), quiet_psi
                time.sleep(1)
        assert replay.failures == 0
        assert all(p is not None and p < 0.1 for p in quiet_psi), quiet_psi
        # No gap between the replays: the window moves from the training period to the later one.
        with Replay(server.grpc_url, prefixes(sample_dataset, sample_dataset.test)) as replay:
            alert = wait_until(lambda: firing(prometheus, "SessionrecInputDrift"), 90, "drift alert firing", seen)
            drifted_psi = prometheus.value(psi)
        assert replay.failures == 0
        assert alert[0]["metric"]["model_version"] == version
        assert drifted_psi > 0.1 > max(quiet_psi)
        # the other alerts stay quiet: the replayed ids are all in the catalogue
        assert not firing(prometheus, "SessionrecUnknownItemsHigh")
        assert not firing(prometheus, "SessionrecFallbackHigh")
    finally:
        prometheus.stop()
        server.stop()
