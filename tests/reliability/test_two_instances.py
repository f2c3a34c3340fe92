"""Two fused-step instances per version (`fused_instances` 2): hot swap and heal with two stubs each.

With two `session_recommender` stubs per version a switch loads two new stubs beside the two serving
ones, and a stub that dies leaves the other answering. Checked here against the real tritonserver and
a real redis-server:

- a version switch under open-loop traffic on `recommend` and `recommend_session` fails no request and
  every answer is one of the two versions' canary answers;
- one of the two stubs killed: what Triton does alone, that `heal()` finds it (a process check: the
  canary probe may reach the live instance and pass) and brings the step back, and that requests fail
  for no longer than heal's window (docs/RELIABILITY.md, "Faults").

    .venv/bin/pytest tests/reliability/test_two_instances.py -q          # ~2 min
"""

from __future__ import annotations

import itertools
import shutil
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from sessionrec.export.configs import FUSED, ServingConfig
from sessionrec.export.exporter import ExportOptions, export_version
from sessionrec.reliability.faults import kill_stub
from sessionrec.reliability.load import Load, canary_probes
from sessionrec.reliability.report import write_report
from sessionrec.serving.artifacts import read_manifest
from sessionrec.serving.embedded import EmbeddedServer, replay_canaries
from sessionrec.serving.redis_local import LocalRedis
from sessionrec.serving.stubs import live_stubs
from tests.reliability.test_faults import outage

pytestmark = pytest.mark.server
FAST = dict(quality_sessions=200, parity_sessions=100)
TWO = dict(serving=ServingConfig(fused_instances=2))
FIGURES: dict[str, dict] = {}


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    if FIGURES:
        write_report("two_instances", FIGURES)


@pytest.fixture(scope="module")
def two_instance_repository(tmp_path_factory, trained_checkpoint, sample_path):
    repo = tmp_path_factory.mktemp("two") / "repository"
    export_version(trained_checkpoint, repo, ExportOptions(data=str(sample_path), **FAST, **TWO), progress=False)
    return repo


@pytest.fixture
def repo(two_instance_repository, tmp_path):
    copy = tmp_path / "repository"
    shutil.copytree(two_instance_repository, copy)
    return copy


class SessionTraffic:
    """recommend_session events at `rate`/s from a thread: each a new guest whose one event carries a
    canary's clicks, so its answer must be that canary's answer under one of `versions`."""

    def __init__(self, url: str, repository, versions, rate: float = 15.0):
        from sessionrec.clients.session import build_click_inputs

        self.build = build_click_inputs
        self.client = grpcclient.InferenceServerClient(url)
        self.repository, self.rate = repository, rate
        self.accept(versions)
        self.sent, self.failed, self.wrong, self.errors = 0, 0, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def accept(self, versions) -> None:
        canaries = [read_manifest(self.repository / "recommend" / str(v))["canaries"] for v in versions]
        self.canaries = [(c[0], {tuple(x["expected_ids"]) for x in c}) for c in zip(*canaries)]

    def _run(self) -> None:
        for n in itertools.count():
            if self._stop.wait(1.0 / self.rate):
                return
            canary, answers = self.canaries[n % len(self.canaries)]
            inputs = self.build(grpcclient, f"two-instances-guest-{n}".encode(), np.asarray(canary["items"], np.int64),
                                1, canary["k"], canary["exclude_seen"], None)
            self.sent += 1
            try:
                ids = self.client.infer("recommend_session", inputs, client_timeout=10.0).as_numpy("ITEM_IDS")[0]
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                self.failed += 1
                self.errors.append(str(exc)[:200])
                continue
            self.wrong += tuple(ids.tolist()) not in answers

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.1)
    assert predicate(), what


def test_the_export_chooses_two_instances_for_a_small_catalogue(exported_repository, two_instance_repository):
    from sessionrec.export import instances
    from sessionrec.export.configs import parse

    manifest = read_manifest(exported_repository / "recommend" / "1")
    fused = manifest["fused_instances"]
    index_bytes = (exported_repository / "retrieval" / "1" / "items.faiss").stat().st_size
    assert fused["chosen_by"] == instances.rule_text() and fused["count"] == 2
    assert instances.STUB_BASE_BYTES + index_bytes < fused["stub_estimate_bytes"] <= fused["budget_bytes"]
    assert manifest["serving_config"]["fused_instances"] == 2  # what `sessionrec serve` rebuilds configs from
    config = parse((exported_repository / FUSED / "config.pbtxt").read_text())
    assert [g.count for g in config.instance_group] == [2]
    assert read_manifest(two_instance_repository / "recommend" / "1")["fused_instances"]["chosen_by"] == "requested"


def test_switch_with_two_instances_fails_no_request(repo, trained_checkpoint, sample_path, tmp_path):
    probes = canary_probes(repo, [1])
    with LocalRedis() as redis_server, EmbeddedServer(
            repo, watch_seconds=0.5, log_file=tmp_path / "triton.log",
            environment={"SESSIONREC_REDIS_URL": redis_server.url, "SESSIONREC_REDIS_TIMEOUT_MS": "50"}) as server:
        assert live_stubs(server.server.pid)[(FUSED, 1)] == 2
        with Load(server.grpc_url, probes, rate=40) as load, \
                SessionTraffic(server.grpc_url, repo, [1]) as session:
            time.sleep(1.5)
            export_version(trained_checkpoint, repo, ExportOptions(data=str(sample_path), **FAST, **TWO), progress=False)
            probes[:] = canary_probes(repo, [1, 2])
            session.accept([1, 2])
            began = load.now()
            wait_for(lambda: server.version == 2, 120, server.events)
            stubs_after_switch = dict(live_stubs(server.server.pid))
            time.sleep(2.0)  # traffic on version 2 with both versions' stubs loaded
            swap = load.stats(began)
        FIGURES["switch"] = {"recommend": swap.as_dict(), "recommend_session": {
            "sent": session.sent, "failed": session.failed, "wrong": session.wrong}, "stubs": str(stubs_after_switch)}
        assert swap.requests > 50 and swap.failed == 0 and swap.wrong == 0, swap.failures
        assert load.stats().failed == 0 and load.stats().wrong == 0
        assert session.sent > 30 and session.failed == 0 and session.wrong == 0, session.errors[:3]
        assert [e.split(" (")[0] for e in server.events] == [
            "serving version 1", "version 1 on recommend_session", "version 2 on recommend_session", "switched 1 -> 2"]
        # both versions loaded (version_policy latest 2), each with its two stubs
        assert stubs_after_switch[(FUSED, 1)] == 2 and stubs_after_switch[(FUSED, 2)] == 2, stubs_after_switch
        client = server.server.client()
        assert replay_canaries(client, read_manifest(repo / "recommend" / "2")).ok
        assert server._check_session(2).ok
        assert server.heal() is None  # nothing is dead: the process check finds every stub


def test_heal_finds_one_dead_instance_of_two(repo, tmp_path):
    probes = canary_probes(repo, [1])
    manifest = read_manifest(repo / "recommend" / "1")
    # Triton alone (no watcher): one of the two stubs killed.
    with EmbeddedServer(repo, watch_seconds=0, log_file=tmp_path / "alone.log") as server:
        client = server.server.client()
        with Load(server.grpc_url, probes, rate=50) as load:
            time.sleep(1)
            killed_at = load.now()
            kill_stub(server.server.pid, FUSED)
            time.sleep(4)
            alone = outage(load, killed_at)
            canaries_alone = replay_canaries(client, manifest)
            stubs_alone = live_stubs(server.server.pid)[(FUSED, 1)]
            healed = server.heal()
            time.sleep(1.0)
            after = load.stats(load.now() - 0.9)
        FIGURES["one_of_two_killed_triton_alone"] = {**alone, "observed_s": 4.0, "live_stubs": stubs_alone,
                                                     "canaries_failed": len(canaries_alone.failures)}
        assert stubs_alone == 1  # Triton does not restart it
        # the live instance keeps answering: some requests fail (those the dead one takes), not all
        assert 0 < alone["failed"] < alone["requests"] and alone["codes"] == ["INTERNAL"], alone
        assert f"Stub process '{FUSED}_0_" in alone["first_error"]
        assert healed == FUSED and server.events[-1].startswith(f"restarted {FUSED}: one of its")
        # the unloaded instance's surviving stub exits shortly after the unload returns: none is left behind
        wait_for(lambda: live_stubs(server.server.pid)[(FUSED, 1)] == 2, 15, live_stubs(server.server.pid))
        assert after.failed == 0 and replay_canaries(client, manifest).ok

    # With the watcher (sessionrec serve's default period is larger; here every second).
    with EmbeddedServer(repo, watch_seconds=1.0, log_file=tmp_path / "watched.log") as server:
        with Load(server.grpc_url, probes, rate=50) as load:
            time.sleep(1.5)
            killed_at = load.now()
            kill_stub(server.server.pid, FUSED)
            wait_for(lambda: f"restarted {FUSED}" in " ".join(server.events), 15, server.events)
            time.sleep(1.5)
            watched = outage(load, killed_at)
            tail = load.stats(load.now() - 0.9)
        FIGURES["one_of_two_killed_with_watcher"] = watched
        assert tail.failed == 0 and watched.get("wrong", 0) == 0
        # reloaded in place: only the requests the dead stub had taken fail, never a NOT_FOUND window
        assert set(watched["codes"]) <= {"INTERNAL"}, watched
        if watched["failed"]:  # heal's window (docs/RELIABILITY.md): a failing request takes ~2.5 s to fail,
            assert watched["recovered"], watched  # plus up to one watch period and the confirmation
            assert watched["outage_s"] < 2.5 + 2 * server.watch_seconds, watched
        wait_for(lambda: live_stubs(server.server.pid)[(FUSED, 1)] == 2, 15, live_stubs(server.server.pid))
        assert replay_canaries(server.server.client(), manifest).ok
