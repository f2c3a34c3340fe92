"""`sessionrec rollout` on a real Prometheus scraping the real tritonserver that serves both variants.

A bad candidate (its python-backend stub killed after start, as an OOM kill would: Triton keeps it
READY and every candidate request fails, while control, another version's stub, is unaffected) is
rolled back at the end of the first interval with enough candidate traffic; a good one is promoted
through every step and the server switches to it.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

from sessionrec.cli import main
from sessionrec.clients import NO_RETRY, RecommendClient
from sessionrec.clients.assignment import Experiment, ExperimentFile, load_experiment, save_experiment
from sessionrec.clients.errors import RecommendError
from sessionrec.clients.experiment import ExperimentClient
from sessionrec.experiments.rollout import Bounds, RolloutConfig, rollout
from sessionrec.export.exporter import ExportOptions, export_version
from sessionrec.export.repository import candidate_version, current_version
from sessionrec.serving.embedded import EmbeddedServer

pytestmark = pytest.mark.server
INTERVAL_S = 4.0
STEPS = (2000, 5000, 10_000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusProcess:
    def __init__(self, folder, target: str, tracks: dict[str, str] | None = None):
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed: scripts/setup.sh installs the Debian package")
        config = folder / "prometheus.yml"
        if tracks:  # two-Deployment mode: each server's series carry its track, as the chart's relabeling does
            statics = ", ".join(f"{{targets: ['{t}'], labels: {{track: {name}}}}}" for name, t in tracks.items())
        else:
            statics = f"{{targets: ['{target}']}}"
        config.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                          f"scrape_configs: [{{job_name: triton, static_configs: [{statics}]}}]\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'tsdb'}",
                                         f"--web.listen-address=127.0.0.1:{self.port}"],
                                        stdout=open(folder / "prometheus.log", "w"), stderr=subprocess.STDOUT)

    def wait_scraping(self, timeout: float = 60) -> None:
        from sessionrec.experiments.rollout import Prometheus, RolloutError

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if Prometheus(self.url).scalar("up") == 1:
                    return
            except RolloutError:
                pass
            time.sleep(0.5)
        raise AssertionError("prometheus never scraped tritonserver")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


class Load:
    """Guests through ExperimentClient, following the experiment file; bounded by stop()."""

    def __init__(self, server, experiment_file, sessions, users: int = 4, candidate_server=None):
        self.records: list[tuple[float, str, bool, str]] = []  # (sent at, variant, ok, model_version)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._user, args=(server, candidate_server, experiment_file,
                                                                   sessions, i), daemon=True) for i in range(users)]

    def _user(self, server, candidate_server, experiment_file, sessions, seed) -> None:
        rng = random.Random(seed)
        if candidate_server is None:  # in-pod mode: one server, two ensembles
            candidate = RecommendClient(server.grpc_url, retry=NO_RETRY, model="recommend_candidate")
        else:  # two-Deployment mode: another server's `recommend`
            candidate = RecommendClient(candidate_server.grpc_url, retry=NO_RETRY)
        clients = {"control": RecommendClient(server.grpc_url, retry=NO_RETRY), "candidate": candidate}
        with ExperimentClient(ExperimentFile(experiment_file), clients) as client:
            while not self._stop.is_set():
                unit = f"guest-{rng.randrange(100_000)}"
                sent = time.monotonic()  # a failing request can take a while: judge it by when it was sent
                try:
                    answer = client.recommend(unit, sessions[rng.randrange(len(sessions))], k=20)
                    record = (sent, answer.variant, True, answer.model_version)
                except RecommendError:
                    record = (sent, client.experiment.assign(unit).variant, False, "")
                with self._lock:
                    self.records.append(record)

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def since(self, moment: float) -> list[tuple[float, str, bool, str]]:
        with self._lock:
            return [r for r in self.records if r[0] >= moment]


@pytest.fixture
def sessions(exported_repository, sample_dataset):
    raw = np.load(exported_repository / "preprocess" / "1" / "item_ids.npy")
    return [raw[np.asarray(s)].tolist() for s in sample_dataset.test[:50]]


def kill_version_stub(server_pid: int, version: int) -> None:
    """SIGKILL every python-backend stub serving `version` of the fused step: each of its instances,
    so that every request to the version fails."""
    from sessionrec.serving.stubs import stubs_of

    killed = [pid for pid, model, v in stubs_of(server_pid) if model == "session_recommender" and v == version]
    assert killed, f"no stub of session_recommender version {version}"
    for pid in killed:
        os.kill(pid, signal.SIGKILL)


def serve_with_prometheus(repo, tmp_path, watch_seconds: float = 0.5):
    server = EmbeddedServer(repo, watch_seconds=watch_seconds, candidate=True, log_file=tmp_path / "triton.log")
    server.start()
    prometheus = PrometheusProcess(tmp_path, server.metrics_url.split("//")[-1].split("/")[0])
    return server, prometheus


def test_a_failing_candidate_is_rolled_back_within_one_interval(fresh_repository, sample_path, other_checkpoint,
                                                                 sessions, tmp_path):
    repo = fresh_repository
    control = current_version(repo)
    bad = export_version(other_checkpoint, repo, ExportOptions(data=str(sample_path), candidate=True),
                         progress=False).version
    experiment_file = tmp_path / "experiment.json"
    save_experiment(Experiment("canary-bad", salt="canary-bad-salt", ramp_bp=0), experiment_file)
    # No watcher: its heal() now finds a step with fewer live stubs than instances and reloads it,
    # which would revive the candidate this test needs to stay broken (a pod of the chart's
    # two-Deployment mode has no watcher either).
    server, prometheus = serve_with_prometheus(repo, tmp_path, watch_seconds=0)
    try:
        kill_version_stub(server.server.pid, bad)
        prometheus.wait_scraping()
        with Load(server, experiment_file, sessions) as load:
            config = RolloutConfig(STEPS, INTERVAL_S, bounds=Bounds(min_requests=10))
            result = rollout(prometheus.url, experiment_file, config, repository=repo)
            rolled_back_at = time.monotonic()
            time.sleep(3.0)  # clients re-read the experiment file at their next request
        assert result.outcome == "rolled_back"
        judged = [i for i in result.intervals if i.verdict != "quiet"]
        assert len(judged) == 1 and judged[0].verdict == "bad" and judged[0].ramp_bp == STEPS[0]
        assert judged[0].candidate.error_rate > 0.9 and judged[0].control.error_rate == 0
        assert "error rate" in judged[0].reason
        assert load_experiment(experiment_file).ramp_bp == 0
        assert candidate_version(repo) is None and current_version(repo) == control
        # after the rollback (and the clients' next read of the file) every guest is on control, answered
        after = load.since(rolled_back_at + 0.5)
        offending = [r for r in after if not (r[1] == "control" and r[2])]
        assert after and not offending, (offending[:5], len(offending), len(after), rolled_back_at)
        failed_before = [r for r in load.records if not r[2]]
        assert failed_before and all(variant == "candidate" for _, variant, _, _ in failed_before)
        assert (repo.parent / f".{repo.name}.retired" / str(bad)).is_dir()  # its number is never reused
    finally:
        prometheus.stop()
        server.stop()


def test_a_good_candidate_is_promoted_and_served_to_everybody(fresh_repository, sample_path, other_checkpoint,
                                                               sessions, tmp_path, capsys):
    repo = fresh_repository
    good = export_version(other_checkpoint, repo, ExportOptions(data=str(sample_path), candidate=True),
                          progress=False).version
    experiment_file = tmp_path / "experiment.json"
    server, prometheus = serve_with_prometheus(repo, tmp_path)
    try:
        prometheus.wait_scraping()
        with Load(server, experiment_file if experiment_file.exists() else _create(experiment_file), sessions) as load:
            code = main(["rollout", "--prometheus", prometheus.url, "--experiment", str(experiment_file),
                         "--repository", str(repo), "--steps", ",".join(map(str, STEPS)), "--interval",
                         str(INTERVAL_S), "--min-requests", "10", "--json", str(tmp_path / "rollout.json")])
            promoted_at = time.monotonic()
            deadline = time.monotonic() + 30
            while server.version != good and time.monotonic() < deadline:
                time.sleep(0.2)
            switched_at = time.monotonic()
            time.sleep(2.0)
        assert code == 0, capsys.readouterr().out
        out = capsys.readouterr().out
        assert "rollout promoted" in out and out.count(": good:") >= len(STEPS)
        assert server.version == good and current_version(repo) == good and candidate_version(repo) is None
        after = load.since(switched_at + 1.0)
        assert after and all(ok and model_version == str(good) for _, _, ok, model_version in after)
        # no request failed: not on the good candidate, not during promotion and the switch to it
        assert all(ok for _, _, ok, _ in load.records), [r for r in load.records if not r[2]][:5]
        assert any(variant == "candidate" for sent, variant, _, _ in load.records if sent < promoted_at)
    finally:
        prometheus.stop()
        server.stop()


def _create(path):
    save_experiment(Experiment("canary-good", salt="canary-good-salt", ramp_bp=0), path)
    return path


def test_two_deployment_mode_rolls_back_on_the_track_label(fresh_repository, exported_repository, sample_path,
                                                           other_checkpoint, sessions, tmp_path):
    """The chart's two-Deployment mode: two servers (releases), both serving `recommend`, told apart by track."""
    candidate_repo = tmp_path / "candidate-repository"
    shutil.copytree(exported_repository, candidate_repo)
    bad = export_version(other_checkpoint, candidate_repo, ExportOptions(data=str(sample_path)), progress=False).version
    experiment_file = tmp_path / "experiment.json"
    save_experiment(Experiment("two-releases", salt="two-releases-salt", ramp_bp=0), experiment_file)
    stable = EmbeddedServer(fresh_repository, watch_seconds=0, log_file=tmp_path / "stable.log").start()
    candidate = None
    prometheus = None
    try:
        candidate = EmbeddedServer(candidate_repo, watch_seconds=0, log_file=tmp_path / "candidate.log").start()
        kill_version_stub(candidate.server.pid, bad)
        hostport = lambda s: s.metrics_url.split("//")[-1].split("/")[0]  # noqa: E731
        prometheus = PrometheusProcess(tmp_path, "", tracks={"stable": hostport(stable),
                                                             "candidate": hostport(candidate)})
        prometheus.wait_scraping()
        with Load(stable, experiment_file, sessions, candidate_server=candidate) as load:
            config = RolloutConfig(STEPS, INTERVAL_S, bounds=Bounds(min_requests=10),
                                   control_match='track="stable",model="recommend"',
                                   candidate_match='track="candidate",model="recommend"')
            result = rollout(prometheus.url, experiment_file, config)
            rolled_back_at = time.monotonic()
            time.sleep(2.0)
        judged = [i for i in result.intervals if i.verdict != "quiet"]
        assert result.outcome == "rolled_back" and len(judged) == 1 and judged[0].ramp_bp == STEPS[0]
        assert judged[0].candidate.error_rate > 0.9 and judged[0].control.error_rate == 0
        after = load.since(rolled_back_at + 0.5)
        assert after and all(variant == "control" and ok for _, variant, ok, _ in after)
    finally:
        if prometheus is not None:
            prometheus.stop()
        if candidate is not None:
            candidate.stop()
        stable.stop()
