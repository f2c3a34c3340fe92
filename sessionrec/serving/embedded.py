"""The embedded default: a real tritonserver on 127.0.0.1 over an exported repository.

Start-up loads the steps and the ensemble (pinned to the live version) at launch, then replays the
manifest's canary requests over gRPC and refuses to report healthy when an answer differs — that
catches whole classes of silent failure (numpy 2 in the server environment zeroes python-backend
inputs while every model reports READY). A watcher then follows the repository: when a new version
goes live (export), its steps are loaded beside the serving ones, then the ensemble is switched to it
and its canaries are replayed; when the live one is retired (rollback), the ensemble is switched back
first. A failed load or canary points the ensemble back at the previous version, which stayed
loaded; a version whose canaries answered wrong is not tried again (`refused`). Requests keep being answered throughout (docs/RELIABILITY.md measures it under load). The
watcher also restarts a step whose python-backend stub process died (`heal`).

A sharded export (`export --shards S`) is served the same way with a tritonserver per retrieval
shard beside the front (sessionrec.serving.shard_servers, loopback, free ports), started first and
named to the front by SESSIONREC_SHARD_ADDRESSES. A switch loads the new shard versions on every
shard server and checks them ready before the front loads anything (the front pins its version on
each shard), so a failed switch leaves the front on a version whose shards are all there. `heal`
restarts a shard server that died, on its own port. An unsharded repository runs no more processes.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sessionrec.errors import SessionrecError
from sessionrec.export.configs import HISTORY, SESSION_ENSEMBLE, VERSIONED, parse
from sessionrec.export.repository import (CANDIDATE, candidate_version, current_version, live_versions, shard_models,
                                          versions as version_folders)
from sessionrec.serving.artifacts import read_manifest
from sessionrec.serving.launcher import TritonServer
from sessionrec.serving.shard_servers import ShardServers, served_shard_count
from sessionrec.serving.shards import SHARD_MODEL, ShardConfigError, shard_list

log = logging.getLogger("sessionrec.serve")
REDIS_URL_ENV = "SESSIONREC_REDIS_URL"  # sessionrec.serving.history.ENVIRONMENT
SCORE_TOLERANCE = 1e-3  # absolute, on dot-product scores of order 1-20
# Triton's answer once a python-backend stub process has died (killed, OOM): the model still reports
# READY, is never restarted, and every request through it fails (docs/RELIABILITY.md, "Faults").
_DEAD_STUB = re.compile(r"Stub process '(?P<model>\w+?)_\d+_\d+' is not healthy")


class CanaryMismatch(SessionrecError):
    """A served answer differs from the answer recorded at export time (`report`: the replay)."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class HistoryTooShort(SessionrecError):
    """recommend_session is served and its Redis history keeps fewer clicks than a version reads."""


@dataclass
class CanaryReport:
    version: int
    checked: int
    failures: list[str]
    errors: int = 0  # failures that are requests with no answer (a timeout, a dead stub), not wrong answers

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def disagrees(self) -> bool:
        """Some answer came back and differs: the version is wrong, not the moment (no retry helps)."""
        return len(self.failures) > self.errors


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


def replay_canaries(client, manifest: dict, model: str = "recommend") -> CanaryReport:
    failures, errors = [], 0
    canaries = manifest.get("canaries", [])
    for i, canary in enumerate(canaries):
        try:
            result = infer_recommend(client, canary["items"], canary["k"], canary["exclude_seen"], model=model)
        except Exception as exc:  # noqa: BLE001 - any failure to answer is a canary failure
            failures.append(f"canary {i}: request failed: {exc}")
            errors += 1
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
    return CanaryReport(version=int(manifest["version"]), checked=len(canaries), failures=failures, errors=errors)


def ensemble_steps_on_disk(repository: Path) -> tuple[str, ...]:
    """The step models of the repository's `recommend` ensemble (its config.pbtxt): one
    session_recommender on the CPU layout, preprocess/session_encoder/retrieval on the three-step one."""
    path = Path(repository) / "recommend" / "config.pbtxt"
    try:
        steps = tuple(step.model_name for step in parse(path.read_text()).ensemble_scheduling.step)
    except (OSError, ValueError) as exc:  # text_format.ParseError is a ValueError
        raise SessionrecError(f"{path}: cannot read the ensemble config: {exc}") from None
    unknown = sorted(set(steps) - set(VERSIONED))
    if not steps or unknown:
        raise SessionrecError(f"{path}: ensemble steps {list(steps)} are not sessionrec models")
    return steps


def session_models_on_disk(repository: Path) -> tuple[str, ...]:
    """The models recommend_session adds to `recommend`'s: (recommend_session,) on the fused CPU layout
    (its step looks the history up itself), (session_history, recommend_session) on the others; ()
    when the repository has no stateful ensemble (exported before it existed)."""
    path = Path(repository) / SESSION_ENSEMBLE / "config.pbtxt"
    if not path.is_file():
        return ()
    try:
        steps = {step.model_name for step in parse(path.read_text()).ensemble_scheduling.step}
    except (OSError, ValueError) as exc:
        raise SessionrecError(f"{path}: cannot read the ensemble config: {exc}") from None
    return (HISTORY, SESSION_ENSEMBLE) if HISTORY in steps else (SESSION_ENSEMBLE,)


def _precompile_model_code(repository: Path, versions, venv_python) -> None:
    """Write the bytecode of each step's model.py of `versions` before Triton first loads them.

    Otherwise the python backend stub writes `<version>/__pycache__/` while loading it (it ignores
    PYTHONDONTWRITEBYTECODE), Triton then sees the version folder modified, and the next load of that
    model or of the ensemble (which re-polls its steps) restarts every instance of it: a second round
    of stub processes competing with serving for the CPU during every switch. Only where no bytecode
    is there yet (rewriting it would count as a modification too), and only when the stub runs this
    interpreter's Python version (the cache file is per version).
    """
    import importlib.util
    import py_compile
    import sys

    from sessionrec.serving.launcher import _interpreter

    if _interpreter(venv_python).version != f"{sys.version_info[0]}.{sys.version_info[1]}":
        return
    models = (*VERSIONED, *shard_models(repository))  # the shard servers load from the same repository
    for source in (repository / model / str(v) / "model.py" for v in versions for model in models):
        if source.is_file() and not Path(importlib.util.cache_from_source(str(source))).exists():
            try:
                py_compile.compile(str(source), doraise=True)
            except (OSError, py_compile.PyCompileError) as exc:  # read-only repository: nothing to avoid
                log.debug("no bytecode written for %s: %s", source, exc)


class EmbeddedServer:
    """tritonserver + canary gate + version watcher. Use as a context manager or start()/stop()."""

    def __init__(self, repository: str | Path, watch_seconds: float = 2.0, session_history: bool | None = None,
                 candidate: bool = False, tracing=None, **server_kwargs):
        self.repository = Path(repository).resolve()
        if tracing is not None:  # sessionrec.serving.tracing.TracingConfig: Triton's flags + the step's env
            server_kwargs["extra_args"] = [*tracing.server_flags(), *server_kwargs.get("extra_args", ())]
            server_kwargs["environment"] = {**(server_kwargs.get("environment") or {}), **tracing.environment()}
        self.tracing = tracing
        if current_version(self.repository) is None:
            raise SessionrecError(f"{self.repository}: no live model version (run `sessionrec export` first)")
        # An experiment: recommend_candidate (export/candidate.py) loads beside recommend, over the same steps.
        self.candidate_version = candidate_version(self.repository) if candidate else None
        if candidate and self.candidate_version is None:
            raise SessionrecError(f"{self.repository}: no candidate pinned (sessionrec export --candidate, or "
                                  "sessionrec serve --candidate M)")
        # The models load at launch: tritonserver opens its ports only once they are ready, so a client
        # retrying UNAVAILABLE across a restart never meets "Request for unknown model: 'recommend' is
        # not found" (not retryable: it also means a typo) while the ensemble is still loading.
        # Only the ensemble's own steps: on the CPU layout that is one stub (session_recommender).
        self.steps = ensemble_steps_on_disk(self.repository)
        # recommend_session (guest history in Redis) where the export wrote it and a Redis is configured
        # (SESSIONREC_REDIS_URL; `session_history` overrides): one more stub, only where it is used.
        # Its history step connects lazily, so a Redis that is down never delays or fails the start.
        if session_history is None:
            environment = {**os.environ, **(server_kwargs.get("environment") or {})}
            session_history = bool(environment.get(REDIS_URL_ENV))
        self.session_models = session_models_on_disk(self.repository) if session_history else ()
        ensembles = ["recommend", CANDIDATE] if self.candidate_version is not None else ["recommend"]
        self.server = TritonServer(self.repository, models=[*self.steps, *ensembles, *self.session_models],
                                   **server_kwargs)
        # A sharded export: one tritonserver per retrieval shard, started before the front (whose
        # steps search them from their first warm-up request). None when unsharded: nothing more runs.
        count = served_shard_count({v: self._manifest(v) for v in self._front_versions()})
        self.shards = ShardServers(self.repository, count, log_file=server_kwargs.get("log_file"),
                                   venv_python=server_kwargs.get("venv_python", sys.executable),
                                   exit_timeout_s=server_kwargs.get("exit_timeout_s", 10)) if count else None
        self.watch_seconds = watch_seconds
        self.version: int | None = None
        self.events: list[str] = []  # what the watcher did, for logs and tests
        self.session_canaries = None  # the last SessionCanaryReport (recommend_session served)
        # Versions whose canaries got wrong answers at a switch: why, by version. Not tried again (the
        # answers do not change; each try switched both ensembles to it and back, and tritonserver
        # 2.51 crashed on a second round of those reloads: malloc_consolidate, signal 6). A restart,
        # a rollback or the next export moves on; a switch that failed for any other reason (a load
        # error, requests that timed out) is tried again at the next round.
        self.refused: dict[int, str] = {}
        self._overridden: set[str] = set()  # steps loaded with a version_policy override (_load_step)
        self._generation: dict[str, int] = {}  # step -> fresh reloads so far (heal; _load_step)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> "EmbeddedServer":
        served = live_versions(self.repository) + ([self.candidate_version] if self.candidate_version else [])
        # Before anything starts: a history shorter than the model reads is a setting to fix, not a
        # state to serve in (the stubs would refuse to load too, less legibly).
        for version in [current_version(self.repository)] + ([self.candidate_version] if self.candidate_version else []):
            problem = self._history_problem(version)
            if problem:
                raise HistoryTooShort(f"{self.repository}: version {version}: {problem}")
        _precompile_model_code(self.repository, served, self.server.venv_python)
        if self.shards is not None:
            self._start_shards(timeout)
        try:
            self.server.start(timeout=timeout, require_models=True)
        except BaseException:
            if self.shards is not None:
                self.shards.stop()
            raise
        try:
            version = current_version(self.repository)
            report = replay_canaries(self.server.client(), read_manifest(self.repository / "recommend" / str(version)))
            if not report.ok:
                raise CanaryMismatch(
                    f"version {version} answers differ from its export-time canaries ({len(report.failures)} of "
                    f"{report.checked}): {report.failures[0]}; refusing to report healthy. Server log: {self.server.log_path}"
                )
            self.events.append(f"serving version {version} ({report.checked} canaries ok)")
            if self.session_models:
                self._check_session(version)
            self.version = version
            if self.candidate_version is not None:
                self._check_candidate()
        except BaseException:
            self.server.stop()
            if self.shards is not None:
                self.shards.stop()
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
        if self.shards is not None:  # after the front: no request is left to fan out to them
            self.shards.stop()

    def _start_shards(self, timeout: float) -> None:
        """The shard servers up, with the shard versions of what the front pins at launch ready."""
        self.shards.start(timeout=timeout)
        self.server.environment.update(self.shards.environment())
        pinned = [v for v in (current_version(self.repository), self.candidate_version) if v is not None]
        missing = [m for v in pinned if shard_list(self._manifest(v)) for m in self.shards.missing(v)]
        if missing:  # e.g. a candidate older than the two newest shard versions on disk
            self.shards.stop()
            raise SessionrecError(f"the shard servers did not load what the front serves: {'; '.join(missing)} "
                                  "(each loads the newest two versions of its shard on disk)")

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

    # -- the stateful ensemble ------------------------------------------------------------------
    def _check_session(self, version: int):
        """The version's canaries through recommend_session (sessionrec.serving.session_canaries)."""
        from sessionrec.serving import session_canaries

        report = session_canaries.replay(self.server.client(), read_manifest(self.repository / "recommend" / str(version)))
        self.session_canaries = report
        if not report.ok:
            raise CanaryMismatch(f"version {version} on {SESSION_ENSEMBLE} answers differ from its export-time canaries "
                                 f"({len(report.failures)} failed): {report.failures[0]}", report)
        self.events.append(f"version {version} on {SESSION_ENSEMBLE} ({report.summary()})")
        return report

    # -- the experiment's candidate --------------------------------------------------------------
    def _check_candidate(self) -> None:
        version = self.candidate_version
        manifest = read_manifest(self.repository / CANDIDATE / str(version))
        report = replay_canaries(self.server.client(), manifest, model=CANDIDATE)
        if not report.ok:
            raise CanaryMismatch(f"candidate version {version} answers differ from its export-time canaries "
                                 f"({len(report.failures)} of {report.checked}): {report.failures[0]}")
        self.events.append(f"candidate version {version} on {CANDIDATE} ({report.checked} canaries ok)")

    def sync_candidate(self) -> bool:
        """Unload recommend_candidate once the experiment ended on disk (promoted or dropped)."""
        with self._lock:
            if self.candidate_version is None or candidate_version(self.repository) == self.candidate_version:
                return False
            self.server.unload_model(CANDIDATE)
            self.events.append(f"candidate version {self.candidate_version} unloaded (experiment ended)")
            self.candidate_version = None
            return True

    # -- version switching ---------------------------------------------------------------------
    def sync(self) -> bool:
        """Serve the repository's live version if it changed; True when a switch happened."""
        with self._lock:
            target = current_version(self.repository)
            if target is None or target == self.version or target in self.refused:
                return False
            previous = self.version
            ensemble_touched = False
            try:
                problem = self._history_problem(target)
                if problem:  # before anything loads: the stubs would refuse it, and recommend_session would be wrong
                    raise HistoryTooShort(f"version {target}: {problem}")
                steps = self._steps_of(target)
                forward = previous is None or target > previous
                if forward:
                    _precompile_model_code(self.repository, [target], self.server.venv_python)
                # A sharded target: its shard versions ready on every shard server before the front
                # loads it (its steps' warm-up already searches them); a failure here leaves the front
                # untouched.
                self._prepare_shards(target, forward)
                if forward:
                    # A new version: each step loads it beside the serving one, while the ensemble still
                    # pins `previous`. Triton keeps a model version serving until its reload is ready,
                    # and keeps the loaded model when a load fails (a corrupted artifact): no gap.
                    extra = tuple(m for m in self.session_models if m == HISTORY)
                    for model in steps + extra:  # the newest two versions of each (version_policy)
                        self._load_step(model, {previous, target} - {None}, target)
                elif self._overridden:
                    # A rollback after a pinned load (below): the step holds {previous, the one before};
                    # it must hold target before the ensemble points there.
                    for model in sorted(self._overridden):
                        self._load_step(model, {previous, target}, target)
                # The switch: the ensemble pinned to target. A rollback goes straight here: loading a
                # step first would drop the retired version's instances from under the ensemble still
                # pinned to them ("'recommend' has no available versions" until the ensemble load);
                # the ensemble load re-polls its steps and unloads the retired versions after it.
                # The config always comes with the load: after an override (_restore), a load without
                # one keeps the override until config.pbtxt changes (a retried switch would not happen).
                ensemble_touched = True
                self.server.load_model("recommend", config_json=self._ensemble_json(target))
                report = replay_canaries(self.server.client(), read_manifest(self.repository / "recommend" / str(target)))
                if not report.ok:
                    raise CanaryMismatch(f"version {target}: {report.failures[0]}", report)
                if self.session_models:  # the stateful ensemble follows once the version is verified
                    self.server.load_model(SESSION_ENSEMBLE, config_json=self._ensemble_json(target, SESSION_ENSEMBLE))
                    self._check_session(target)  # a failure restores both ensembles below
            except Exception as exc:  # noqa: BLE001 - keep serving whatever still works
                self.events.append(f"switch to version {target} failed: {exc}")
                if isinstance(exc, HistoryTooShort) or (isinstance(exc, CanaryMismatch) and exc.report is not None
                                                        and exc.report.disagrees):
                    self.refused[target] = str(exc)  # neither changes while this server runs: not tried again
                log.error("switch to version %s failed, staying on %s: %s", target, previous, exc)
                if ensemble_touched:
                    self._restore(previous)
                return False
            self.version = target
            self.steps = steps
            self.events.append(f"switched {previous} -> {target} ({report.checked} canaries ok)")
            log.info("now serving version %s", target)
            return True

    def _load_step(self, model: str, wanted: set[int], target: int, fresh: bool = False) -> None:
        """Load `model` so that every version in `wanted` is loaded (the one the ensembles pin now and target).

        The step's config.pbtxt says `latest <versions_kept>`, which is right when the pinned version
        is among the newest on disk. It is not when a version between them was never served (two
        exports between the watcher's rounds, or a version refused at its switch): then `latest 2`
        would unload the pinned version while both ensembles still point at it, and every request
        would fail until they moved (and a failed switch could not go back). Then the load comes
        with the same config and `version_policy specific {wanted}`; Triton keeps a load's override
        until config.pbtxt changes, so from then on this model's loads always carry one.

        `fresh` (heal): new instances for every version in `wanted`, swapped in when they are ready.
        Triton skips a load whose config is unchanged (and a touched config.pbtxt), so the override
        carries a generation number (`sessionrec_generation`, a parameter no step reads) that each
        fresh load raises; a changed config makes Triton load new instances beside the serving ones
        and retire the old only then, so nothing is unavailable meanwhile. Later loads carry the same
        number: their config then differs only in versions, and the versions both keep are not reloaded.
        """
        kept = self._serving_config(target).versions_kept
        if (not fresh and model not in self._overridden
                and wanted <= set(version_folders(self.repository, model)[-kept:])):
            self.server.load_model(model)
            return
        from google.protobuf import json_format

        config = parse((self.repository / model / "config.pbtxt").read_text())
        config.version_policy.ClearField("latest")
        config.version_policy.specific.versions.extend(sorted(wanted))
        if fresh:
            self._generation[model] = self._generation.get(model, 0) + 1
        if model in self._generation:
            config.parameters["sessionrec_generation"].string_value = str(self._generation[model])
        self.server.load_model(model, config_json=json_format.MessageToJson(config, preserving_proto_field_name=True))
        self._overridden.add(model)
        if not fresh:
            self.events.append(f"{model} loaded with versions {sorted(wanted)} (not the newest {kept} on disk)")

    def _history_problem(self, version: int) -> str | None:
        """Why recommend_session cannot serve `version` with this server's history length (None: it can).

        The kept length is SESSIONREC_HISTORY_MAX_LEN in the server's environment, else the
        `history_max_len` parameter of the step that reads the history (config.pbtxt, written by export).
        """
        if not self.session_models:
            return None
        from sessionrec.serving.history import shortfall

        name = "SESSIONREC_HISTORY_MAX_LEN"
        value = {**os.environ, **self.server.environment}.get(name) or None
        if value is None:
            model = HISTORY if HISTORY in self.session_models else self.steps[0]
            path = self.repository / model / "config.pbtxt"
            parameters = parse(path.read_text()).parameters
            name = f"{model}/config.pbtxt history_max_len"
            value = parameters["history_max_len"].string_value if "history_max_len" in parameters else "50"
        try:
            kept = int(value)
        except ValueError:
            raise HistoryTooShort(f"{name}={value!r}: expected a whole number of clicks") from None
        return shortfall(kept, int(self._manifest(version)["serving"]["max_len"]), name)

    def _manifest(self, version: int) -> dict:
        """A served version's manifest: recommend/<v>, or recommend_candidate/<v> for a candidate."""
        folder = self.repository / "recommend" / str(version)
        return read_manifest(folder if folder.is_dir() else self.repository / CANDIDATE / str(version))

    def _front_versions(self) -> list[int]:
        """The versions the front's steps load: the newest live ones (version_policy) and the candidate."""
        kept = self._serving_config(current_version(self.repository)).versions_kept
        found = live_versions(self.repository)[-kept:]
        return found + [self.candidate_version] if self.candidate_version is not None else found

    def _prepare_shards(self, target: int, forward: bool) -> None:
        """Every shard of a sharded `target` ready on its server; raises (naming them) otherwise."""
        count = len(shard_list(self._manifest(target)))
        if not count:
            return  # the front searches the version's own index
        running = len(self.shards) if self.shards is not None else 0
        if count != running:
            raise ShardConfigError(f"version {target} is split into {count} retrieval shards, this server runs "
                                   f"{running} shard servers (the front reads their addresses when it starts): "
                                   "restart `sessionrec serve` to serve it")
        if forward:  # each shard server loads version target beside the one the front pins now
            self._check_kept(target)
            self.shards.load()
        missing = self.shards.missing(target)
        if missing:
            raise SessionrecError(f"not ready on the shard servers: {'; '.join(missing)}")

    def _serving_config(self, version: int):
        from sessionrec.export.configs import ServingConfig

        folder = self.repository / "recommend" / str(version)
        manifest = read_manifest(folder) if folder.is_dir() else {}
        return ServingConfig(**manifest.get("serving_config", {}))

    def _steps_of(self, version: int) -> tuple[str, ...]:
        from sessionrec.export.configs import ensemble_steps

        return ensemble_steps(self._serving_config(version))

    def _ensemble_json(self, version: int, name: str = "recommend") -> str:
        """The ensemble config pinned to `version`, as the load API takes it."""
        from google.protobuf import json_format

        from sessionrec.export.configs import ensemble_config

        config = ensemble_config(self._serving_config(version), version, name=name)
        return json_format.MessageToJson(config, preserving_proto_field_name=True)

    def _restore(self, previous: int | None) -> None:
        """Point the ensemble back at the previous version (still loaded: version_policy keeps two)."""
        if previous is None:
            return
        try:
            self.server.load_model("recommend", config_json=self._ensemble_json(previous))
            if self.session_models:
                self.server.load_model(SESSION_ENSEMBLE, config_json=self._ensemble_json(previous, SESSION_ENSEMBLE))
        except Exception as exc:  # noqa: BLE001
            log.error("could not restore version %s: %s", previous, exc)

    def heal(self) -> str | None:
        """Reload the step whose python-backend stub died, found by one canary request; its name or None.

        Triton neither restarts a dead stub nor marks its model unready, so nothing else would notice.
        First a process check (no request): a step with more than one instance (`fused_instances` 2) whose
        one stub died keeps answering through the other, so a canary could pass; its live stubs are
        counted against the instances Triton reports loaded (sessionrec.serving.stubs).
        The step is reloaded in place (_reload_step): new stubs load beside the old, which keep their
        place until the new are ready, so the step is never unavailable. The probe goes
        through `recommend`, then through `recommend_session` where that ensemble has a step of its
        own (session_history, on the three-step layouts; on the fused CPU layout both ensembles run
        the one session_recommender stub the first probe reached): a look-up event under a reserved
        canary id, which stores nothing and, when Redis is down or hung, comes back `degraded` within
        one Redis timeout, which is an answer, not a dead stub.
        With shard servers: first a shard server whose process exited is started again (a process check, no
        request), and a dead stub on a shard server is reloaded there.
        """
        from tritonclient.utils import InferenceServerException

        from sessionrec.serving import session_canaries

        with self._lock:
            if self.version is None:
                return None
            if self.shards is not None and self.shards.dead():
                return self._restart_shard_servers()
            version, client = self.version, self.server.client()
            short = self._short_of_stubs(client)
            if short:  # one instance of several died: the probe below may reach a live one and pass
                return self._reload_step(client, short[0], "one of its python backend stubs had died")
            canary = read_manifest(self.repository / "recommend" / str(version))["canaries"][0]
            probes = [lambda: infer_recommend(client, canary["items"], canary["k"], canary["exclude_seen"])]
            if HISTORY in self.session_models:
                probes.append(lambda: session_canaries.probe(client, canary, version))
            dead = None
            for probe in probes:
                try:
                    probe()
                except InferenceServerException as exc:
                    dead = _DEAD_STUB.search(exc.message() or "")
                    if dead is not None:
                        break
            if dead is None:
                return None
            model = dead.group("model")
            if self.shards is not None and model.startswith(SHARD_MODEL.format("")):
                self.shards.reload_model(model)  # the stub died on a shard server: the front relays its error
                self.events.append(f"restarted {model}: its python backend stub had died")
                log.error("restarted %s: its python backend stub had died", model)
                return model
            return self._reload_step(client, model, "its python backend stub had died")

    def _reload_step(self, client, model: str, why: str) -> str:
        """Reload a step in place: every instance of its loaded versions gets a new stub, and the old
        ones serve until the new are ready (a `fresh` _load_step). An unload + load instead left the
        step unavailable for the load (~0.3-1.5 s of NOT_FOUND on every request); now only the requests
        the dead stub had already taken fail.

        With two instances and one stub dead, tritonserver 2.51 under traffic never finishes retiring
        the old instances: the surviving stub stayed alive beside the new ones until the server stopped
        (a whole version's memory; tests/reliability/test_two_instances.py). Once the new instances
        are loaded, a stub of the step that was there before the reload is such a leftover: it is
        killed, which lets Triton finish the unload."""
        from sessionrec.serving.stubs import loaded_versions, stub_pids

        pid = self.server.pid
        before = stub_pids(pid, model) if pid is not None else set()
        self._load_step(model, loaded_versions(client, model) | {self.version}, self.version, fresh=True)
        for stub in (stub_pids(pid, model) & before) if pid is not None else ():
            try:
                os.kill(stub, signal.SIGKILL)
            except ProcessLookupError:  # it exited on its own meanwhile
                continue
            log.warning("killed stub %s of %s left behind by its unload", stub, model)
        self.events.append(f"restarted {model}: {why}")
        log.error("restarted %s: %s", model, why)
        return model

    def _short_of_stubs(self, client, confirm_s: float = 0.5) -> list[str]:
        """The front's python steps with a READY version that has fewer live stub processes than instances.

        A process check, no request (sessionrec.serving.stubs). Seen twice, `confirm_s` apart, because a
        version Triton is unloading on its own (the steps' retired version, after a switch) can still be
        listed READY while its stubs exit."""
        from sessionrec.serving.stubs import short_of_stubs

        pid = self.server.pid
        if pid is None:
            return []
        models = (*self.steps, *(m for m in self.session_models if m == HISTORY))
        try:
            first = short_of_stubs(pid, client, models)
            if not first:
                return []
            time.sleep(confirm_s)
            return [m for m in short_of_stubs(pid, client, models) if m in first]
        except Exception as exc:  # noqa: BLE001 - the server is busy or restarting: the probe below still runs
            log.debug("stub process check skipped: %s", exc)
            return []

    def _check_kept(self, target: int) -> None:
        """Refuse a load that would unload the shard version the front pins now: the shard servers keep
        the newest `versions_kept` on disk, so a version between it and `target` (a failed switch) would
        push it out, and a failed switch could not go back to it."""
        if self.version is None or not shard_list(self._manifest(self.version)):
            return
        kept = self._serving_config(target).versions_kept
        newest = version_folders(self.repository, SHARD_MODEL.format(0))[-kept:]
        if self.version not in newest:
            raise SessionrecError(f"loading version {target} on the shard servers would unload version {self.version}, "
                                  f"which the front serves (they keep the newest {kept} on disk: {newest}); "
                                  "roll back the versions in between, or restart `sessionrec serve`")

    def _restart_shard_servers(self) -> str | None:
        """Start every shard server that exited again, on the address the front dials; their names."""
        restarted = []
        for shard in self.shards.dead():
            model, address = SHARD_MODEL.format(shard), self.shards.addresses[shard]
            try:
                self.shards.restart(shard)
            except Exception as exc:  # noqa: BLE001 - tried again at the next heal
                self.events.append(f"could not restart the {model} server at {address}: {exc}")
                log.error("could not restart the %s server at %s: %s", model, address, exc)
                continue
            restarted.append(model)
            self.events.append(f"restarted the {model} server at {address}: its tritonserver had exited")
            log.error("restarted the %s server at %s: its tritonserver had exited", model, address)
        return ", ".join(restarted) or None

    def _watch(self) -> None:
        while not self._stop.wait(self.watch_seconds):
            try:
                self.sync()
                self.sync_candidate()
                self.heal()
            except Exception as exc:  # noqa: BLE001 - the watcher must never die
                log.error("watcher: %s", exc)
