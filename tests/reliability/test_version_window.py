"""Retrains that change what a version needs, against a real tritonserver and a real redis-server.

- A Redis history shorter than the model's max_len is refused where the two numbers meet: export
  (before anything is staged), `sessionrec serve` at start, and the step's own load.
- A retrain with another max_len does not touch the config the serving version shares with it, so the
  serving version's stub is not reloaded during the switch (Triton reloads every version of a model
  whose config changed).
- Three versions on disk: switching 1 -> 2 -> 3, and 1 -> 3 past a version that was never served,
  with requests in flight on `recommend` and `recommend_session`, fails none (the version the
  ensembles still pin is never unloaded under them).
- A step healed in place (a dead stub) switches later without reloading the version it serves.

    /work/wt/testlock timeout 900 .venv/bin/python -m pytest tests/reliability/test_version_window.py -q
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from sessionrec.export.configs import FUSED, ConfigError, ServingConfig, fused_config, history_config
from sessionrec.export.exporter import ExportError, ExportOptions, export_version
from sessionrec.reliability.procs import python_stubs
from sessionrec.serving import history
from sessionrec.serving.embedded import EmbeddedServer, HistoryTooShort, infer_recommend, replay_canaries
from sessionrec.serving.redis_local import LocalRedis

FAST = dict(quality_sessions=200, parity_sessions=100)


def tree(repo: Path) -> dict[str, tuple[str, int]]:
    """Every file of a repository: its digest and mtime (what Triton would see as modified)."""
    return {str(p.relative_to(repo)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(repo.rglob("*")) if p.is_file()}


# -- 1. history_max_len below the model's max_len ---------------------------------------------------------

def test_the_config_generator_refuses_a_history_shorter_than_the_model():
    with pytest.raises(ConfigError, match=r"history_max_len=8 .* below the model's max_len=16"):
        fused_config(ServingConfig(max_len=16, history_max_len=8))
    with pytest.raises(ConfigError, match=r"session_history: history_max_len=8"):
        history_config(ServingConfig(max_len=16, history_max_len=8))
    fused_config(ServingConfig(max_len=16, history_max_len=16))  # equal is enough


def test_export_refuses_before_replacing_anything(fresh_repository, trained_checkpoint, sample_path):
    before = tree(fresh_repository)
    options = ExportOptions(data=str(sample_path), serving=ServingConfig(history_max_len=8), **FAST)
    started = time.monotonic()
    with pytest.raises(ExportError, match=r"refusing to export: history_max_len=8 .* max_len=16"):
        export_version(trained_checkpoint, fresh_repository, options, progress=False)
    assert time.monotonic() - started < 10  # refused up front, not after the ONNX export and the gates
    assert tree(fresh_repository) == before  # not a byte, not an mtime
    assert not list(fresh_repository.parent.glob(f".{fresh_repository.name}.staging-*"))


def test_export_cli_takes_the_history_length(fresh_repository, trained_checkpoint, sample_path, capsys):
    from sessionrec.cli import main

    code = main(["export", str(trained_checkpoint), "--repository", str(fresh_repository), "--data", str(sample_path),
                 "--history-max-len", "4", "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "history_max_len=4" in err and "max_len=16" in err, err


def test_the_step_refuses_to_load_with_a_short_history(monkeypatch):
    parameters = {"history_max_len": "50"}
    monkeypatch.setenv("SESSIONREC_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("SESSIONREC_HISTORY_MAX_LEN", "8")
    with pytest.raises(ValueError, match=r"SESSIONREC_HISTORY_MAX_LEN=8 .* max_len=16"):
        history.for_model(lambda key, default: parameters.get(key, default), 16)
    assert history.for_model(lambda key, default: parameters.get(key, default), 8).config.max_len == 8
    monkeypatch.delenv("SESSIONREC_REDIS_URL")  # no Redis: nothing is stored, nothing to be short of
    assert not history.for_model(lambda key, default: parameters.get(key, default), 16).enabled


@pytest.mark.server
def test_serve_refuses_to_start_with_a_short_history(exported_repository, tmp_path):
    env = {"SESSIONREC_REDIS_URL": "redis://127.0.0.1:1/0", "SESSIONREC_HISTORY_MAX_LEN": "8"}
    server = EmbeddedServer(exported_repository, watch_seconds=0, log_file=tmp_path / "triton.log", environment=env)
    with pytest.raises(HistoryTooShort, match=r"version 1: SESSIONREC_HISTORY_MAX_LEN=8 .* max_len=16"):
        server.start()
    assert server.server.pid is None  # refused before tritonserver was started


# -- 2. and 3. switches under traffic on both ensembles -----------------------------------------------------

@pytest.fixture(scope="module")
def redis_server():
    with LocalRedis() as server:
        yield server


@pytest.fixture(scope="module")
def short_window_checkpoint(tmp_path_factory, sample_path):
    """A model that reads the newest 4 clicks (trained_checkpoint reads 16)."""
    from sessionrec.model import ModelConfig
    from sessionrec.train import TrainConfig, train

    out = tmp_path_factory.mktemp("short-window")
    return train(sample_path, out, ModelConfig(dim=32, max_len=4), TrainConfig(epochs=1, batch_size=50, patience=1),
                 progress=False).best_path


def click(client, session: str, seq: int, item: int):
    arrays = {"SESSION_ID": (np.array([[session.encode()]], dtype=object), "BYTES"),
              "NEW_ITEMS": (np.array([[item]], dtype=np.int64), "INT64"),
              "CLICK_SEQ": (np.array([[seq]], dtype=np.int64), "INT64"),
              "K": (np.array([[10]], dtype=np.int32), "INT32"), "EXCLUDE_SEEN": (np.array([[False]]), "BOOL")}
    inputs = []
    for name, (array, dtype) in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return client.infer("recommend_session", inputs, client_timeout=10.0)


class Traffic:
    """Back-to-back requests on both ensembles in two threads; every failure is kept (no retries)."""

    def __init__(self, url: str, known: np.ndarray):
        self.url, self.known = url, [int(x) for x in known]
        self.sent = {"recommend": 0, "recommend_session": 0}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._recommend), threading.Thread(target=self._session)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _recommend(self):
        client, i = grpcclient.InferenceServerClient(self.url), 0
        while not self._stop.is_set():
            i += 1
            try:
                infer_recommend(client, self.known[i % 20: i % 20 + 3], 10, False)
            except Exception as exc:  # noqa: BLE001 - counted
                self.failures.append(f"recommend: {exc}")
            self.sent["recommend"] += 1
            time.sleep(0.01)

    def _session(self):
        client, i = grpcclient.InferenceServerClient(self.url), 0
        while not self._stop.is_set():
            i += 1
            try:  # guests of 6 clicks each: histories longer than the short model reads
                click(client, f"guest-{i // 6}", i % 6 + 1, self.known[i % len(self.known)])
            except Exception as exc:  # noqa: BLE001 - counted
                self.failures.append(f"recommend_session: {exc}")
            self.sent["recommend_session"] += 1
            time.sleep(0.01)


def pinned(client, ensemble: str) -> set[int]:
    config = client.get_model_config(ensemble, as_json=True)["config"]
    return {int(step["model_version"]) for step in config["ensemble_scheduling"]["step"]}


def first_version(checkpoint, sample_path, tmp_path):
    """Version 1 of `checkpoint` exported into a new repository: (repository, export options, known ids)."""
    repo = tmp_path / "repository"
    options = ExportOptions(data=str(sample_path), **FAST)
    export_version(checkpoint, repo, options, progress=False)
    return repo, options, np.load(repo / "preprocess" / "1" / "item_ids.npy")[1:40]


def served(repo, redis_server, tmp_path) -> EmbeddedServer:
    """The repository served with session history (no watcher: the tests call sync and heal)."""
    env = {"SESSIONREC_REDIS_URL": redis_server.url, "SESSIONREC_REDIS_TIMEOUT_MS": "50"}
    return EmbeddedServer(repo, watch_seconds=0, log_file=tmp_path / "triton.log", environment=env)


def fused_stubs(server) -> set[int]:
    return set(python_stubs(server.server.pid).get(FUSED, []))


@pytest.mark.server
def test_a_new_max_len_leaves_the_serving_version_loaded_and_three_versions_switch_under_traffic(
        trained_checkpoint, short_window_checkpoint, sample_path, redis_server, tmp_path):
    from sessionrec.serving.artifacts import read_manifest

    repo, options, known = first_version(trained_checkpoint, sample_path, tmp_path)  # v1 reads 16 clicks
    with served(repo, redis_server, tmp_path) as server:
        own = grpcclient.InferenceServerClient(server.grpc_url)
        with Traffic(server.grpc_url, known) as traffic:
            time.sleep(1.0)
            instances = read_manifest(repo / "recommend" / "1")["fused_instances"]["count"]  # chosen by memory
            serving = fused_stubs(server)
            assert len(serving) == instances
            config = (repo / FUSED / "config.pbtxt")
            shared = (config.read_bytes(), config.stat().st_mtime_ns)

            export_version(short_window_checkpoint, repo, options, progress=False)  # v2 reads 4
            assert read_manifest(repo / "recommend" / "2")["serving"]["max_len"] == 4
            assert (config.read_bytes(), config.stat().st_mtime_ns) == shared  # the versions' shared config
            assert server.sync() and server.version == 2, server.events
            after = fused_stubs(server)
            # version 1's stubs are the ones that served before (not reloaded); version 2's are the new ones
            assert serving <= after and len(after - serving) == instances, (serving, after)
            assert server.session_canaries.ok and server.session_canaries.version == 2

            export_version(trained_checkpoint, repo, options, progress=False)  # v3 reads 16 again
            assert server.sync() and server.version == 3, server.events
            time.sleep(1.0)  # requests after the old version unloaded
        assert traffic.failures == [], traffic.failures[:5]
        assert min(traffic.sent.values()) > 50, traffic.sent
        assert pinned(own, "recommend") == pinned(own, "recommend_session") == {3}
        assert replay_canaries(own, read_manifest(repo / "recommend" / "3")).ok
        assert [e.split(" (")[0] for e in server.events if e.startswith("switched")] == ["switched 1 -> 2", "switched 2 -> 3"]


@pytest.mark.server
def test_a_switch_past_a_version_never_served_keeps_the_pinned_one_loaded(
        trained_checkpoint, short_window_checkpoint, sample_path, redis_server, tmp_path):
    """Versions 2 and 3 are published before the server switches (two quick exports, or a version 2 it
    refused): the steps' `latest 2` would load {2, 3} and unload 1 while both ensembles still pin it."""
    from sessionrec.serving.artifacts import read_manifest

    repo, options, known = first_version(trained_checkpoint, sample_path, tmp_path)
    with served(repo, redis_server, tmp_path) as server:
        own = grpcclient.InferenceServerClient(server.grpc_url)
        export_version(short_window_checkpoint, repo, options, progress=False)
        export_version(trained_checkpoint, repo, options, progress=False)
        with Traffic(server.grpc_url, known) as traffic:
            time.sleep(1.0)
            assert server.sync() and server.version == 3, server.events
            time.sleep(1.0)
        assert traffic.failures == [], traffic.failures[:5]
        assert min(traffic.sent.values()) > 20, traffic.sent
        assert pinned(own, "recommend") == pinned(own, "recommend_session") == {3}
        assert server.session_canaries.ok and server.session_canaries.version == 3
        # The next retrain is an ordinary switch again: 3 -> 4 loads 4 beside 3.
        export_version(short_window_checkpoint, repo, options, progress=False)
        with Traffic(server.grpc_url, known) as traffic:
            assert server.sync() and server.version == 4, server.events
            time.sleep(1.0)
        assert traffic.failures == [], traffic.failures[:5]
        assert pinned(own, "recommend") == pinned(own, "recommend_session") == {4}
        assert replay_canaries(own, read_manifest(repo / "recommend" / "4")).ok


@pytest.mark.server
def test_a_healed_step_switches_later_without_reloading_the_serving_version(
        trained_checkpoint, sample_path, redis_server, tmp_path):
    """heal() reloads a step in place with a config override carrying a raised generation
    (EmbeddedServer._load_step). The next switch's load carries the same generation, so its config
    differs only in versions: version 1's stubs (the healed ones) keep serving through it."""
    from sessionrec.reliability.faults import kill_stub
    from sessionrec.serving.artifacts import read_manifest

    repo, options, known = first_version(trained_checkpoint, sample_path, tmp_path)
    with served(repo, redis_server, tmp_path) as server:
        own = grpcclient.InferenceServerClient(server.grpc_url)
        instances = read_manifest(repo / "recommend" / "1")["fused_instances"]["count"]
        before = fused_stubs(server)
        kill_stub(server.server.pid, FUSED)
        assert server.heal() == FUSED, server.events
        deadline = time.monotonic() + 15  # the old surviving stub is killed once the new ones are in
        while len(fused_stubs(server)) != instances and time.monotonic() < deadline:
            time.sleep(0.1)
        healed = fused_stubs(server)
        assert len(healed) == instances and not healed & before, (before, healed)
        assert replay_canaries(own, read_manifest(repo / "recommend" / "1")).ok

        export_version(trained_checkpoint, repo, options, progress=False)
        with Traffic(server.grpc_url, known) as traffic:
            time.sleep(0.5)
            assert server.sync() and server.version == 2, server.events
            after = fused_stubs(server)
            time.sleep(0.5)
        assert traffic.failures == [], traffic.failures[:5]
        assert healed <= after and len(after - healed) == instances, (healed, after)  # version 1 not reloaded
        assert pinned(own, "recommend") == pinned(own, "recommend_session") == {2}
        assert replay_canaries(own, read_manifest(repo / "recommend" / "2")).ok
        assert server.heal() is None
