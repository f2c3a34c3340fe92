"""The embedded default: a real tritonserver on 127.0.0.1 over an exported repository.

Start-up loads the steps, then the ensemble (pinned to the live version), then replays the
manifest's canary requests over gRPC and refuses to report healthy when an answer differs — that
catches whole classes of silent failure (numpy 2 in the server environment zeroes python-backend
inputs while every model reports READY). A watcher then follows the repository: when a new version
goes live (export) or the live one is retired (rollback), the steps are reloaded with both versions,
the canaries of the new version are replayed against its steps through a pinned ensemble, and only
then does the served ensemble switch. A failed switch keeps the previous version serving.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sessionrec.errors import SessionrecError
from sessionrec.export.configs import STEPS
from sessionrec.export.repository import current_version
from sessionrec.serving.artifacts import read_manifest
from sessionrec.serving.launcher import TritonServer

log = logging.getLogger("sessionrec.serve")
SCORE_TOLERANCE = 1e-3  # absolute, on dot-product scores of order 1-20


class CanaryMismatch(SessionrecError):
    """A served answer differs from the answer recorded at export time."""


@dataclass
class CanaryReport:
    version: int
    checked: int
    failures: list[str]

    @property
    def ok(self) -> bool:
        return not self.failures


def infer_recommend(client, items, k: int, exclude_seen: bool, model: str = "recommend", timeout: float | None = 10.0):
    import tritonclient.grpc as grpcclient

    items = np.asarray(items, dtype=np.int64).reshape(1, -1)
    inputs = [
        grpcclient.InferInput("ITEMS", list(items.shape), "INT64"),
        grpcclient.InferInput("K", [1, 1], "INT32"),
        grpcclient.InferInput("EXCLUDE_SEEN", [1, 1], "BOOL"),
    ]
    inputs[0].set_data_from_numpy(items)
    inputs[1].set_data_from_numpy(np.array([[k]], dtype=np.int32))
    inputs[2].set_data_from_numpy(np.array([[exclude_seen]], dtype=bool))
    return client.infer(model, inputs, client_timeout=timeout)


def replay_canaries(client, manifest: dict) -> CanaryReport:
    failures = []
    canaries = manifest.get("canaries", [])
    for i, canary in enumerate(canaries):
        try:
            result = infer_recommend(client, canary["items"], canary["k"], canary["exclude_seen"])
        except Exception as exc:  # noqa: BLE001 - any failure to answer is a canary failure
            failures.append(f"canary {i}: request failed: {exc}")
            continue
        ids = result.as_numpy("ITEM_IDS")[0].tolist()
        scores = result.as_numpy("SCORES")[0]
        if ids != canary["expected_ids"]:
            failures.append(f"canary {i}: items {ids[:5]}... differ from expected {canary['expected_ids'][:5]}...")
        elif np.abs(scores - np.asarray(canary["expected_scores"])).max(initial=0) > SCORE_TOLERANCE:
            failures.append(f"canary {i}: scores differ by more than {SCORE_TOLERANCE}")
        elif bool(result.as_numpy("FALLBACK")[0, 0]) != canary["fallback"]:
            failures.append(f"canary {i}: FALLBACK flag differs")
        elif int(result.as_numpy("UNKNOWN_COUNT")[0, 0]) != canary["unknown_count"]:
            failures.append(f"canary {i}: UNKNOWN_COUNT differs")
    if not canaries:
        failures.append("manifest has no canary requests")
    return CanaryReport(version=int(manifest["version"]), checked=len(canaries), failures=failures)


class EmbeddedServer:
    """tritonserver + canary gate + version watcher. Use as a context manager or start()/stop()."""

    def __init__(self, repository: str | Path, watch_seconds: float = 2.0, **server_kwargs):
        self.repository = Path(repository).resolve()
        if current_version(self.repository) is None:
            raise SessionrecError(f"{self.repository}: no live model version (run `sessionrec export` first)")
        self.server = TritonServer(self.repository, models=[], **server_kwargs)
        self.watch_seconds = watch_seconds
        self.version: int | None = None
        self.events: list[str] = []  # what the watcher did, for logs and tests
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> "EmbeddedServer":
        self.server.start(timeout=timeout)
        try:
            for model in STEPS + ("recommend",):
                self.server.load_model(model)
            version = current_version(self.repository)
            report = replay_canaries(self.server.client(), read_manifest(self.repository / "recommend" / str(version)))
            if not report.ok:
                raise CanaryMismatch(
                    f"version {version} answers differ from its export-time canaries ({len(report.failures)} of "
                    f"{report.checked}): {report.failures[0]}; refusing to report healthy. Server log: {self.server.log_path}"
                )
            self.version = version
            self.events.append(f"serving version {version} ({report.checked} canaries ok)")
        except BaseException:
            self.server.stop()
            raise
        if self.watch_seconds > 0:
            self._watcher = threading.Thread(target=self._watch, name="sessionrec-watch", daemon=True)
            self._watcher.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=30)
        self.server.stop()

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def grpc_url(self) -> str:
        return self.server.grpc_url

    @property
    def http_url(self) -> str:
        return self.server.http_url

    @property
    def metrics_url(self) -> str:
        return self.server.metrics_url

    # -- version switching ---------------------------------------------------------------------
    def sync(self) -> bool:
        """Serve the repository's live version if it changed; True when a switch happened."""
        with self._lock:
            target = current_version(self.repository)
            if target is None or target == self.version:
                return False
            previous = self.version
            try:
                for model in STEPS:  # loads the newest two versions of each step (version_policy)
                    self.server.load_model(model)
                self.server.load_model("recommend")  # re-reads the ensemble config, pinned to target
                report = replay_canaries(self.server.client(), read_manifest(self.repository / "recommend" / str(target)))
                if not report.ok:
                    raise CanaryMismatch(f"version {target}: {report.failures[0]}")
            except Exception as exc:  # noqa: BLE001 - keep serving whatever still works
                self.events.append(f"switch to version {target} failed: {exc}")
                log.error("switch to version %s failed, staying on %s: %s", target, previous, exc)
                self._restore(previous)
                return False
            self.version = target
            self.events.append(f"switched {previous} -> {target} ({report.checked} canaries ok)")
            log.info("now serving version %s", target)
            return True

    def _restore(self, previous: int | None) -> None:
        """Point the ensemble back at the previous version (still loaded: version_policy keeps two)."""
        if previous is None:
            return
        from sessionrec.export.configs import ServingConfig, ensemble_config
        from google.protobuf import json_format

        manifest = read_manifest(self.repository / "recommend" / str(previous)) if (
            self.repository / "recommend" / str(previous)).is_dir() else {}
        cfg = ServingConfig(**manifest.get("serving_config", {}))
        config = json_format.MessageToJson(ensemble_config(cfg, previous), preserving_proto_field_name=True)
        try:
            self.server.load_model("recommend", config_json=config)
        except Exception as exc:  # noqa: BLE001
            log.error("could not restore version %s: %s", previous, exc)

    def _watch(self) -> None:
        while not self._stop.wait(self.watch_seconds):
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - the watcher must never die
                log.error("watcher: %s", exc)
