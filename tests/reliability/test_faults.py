"""Faults under load: a killed python-backend stub, a crashed and restarted server, a full disk during an
export, a corrupted artifact. For each, what the system does and what a client sees (counted by
sessionrec.reliability.load with retries off); figures go to runs/reliability/faults.json.

    .venv/bin/pytest tests/reliability/test_faults.py -q          # ~1.5 min; the disk test needs root
"""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest
import tritonclient.grpc as grpcclient

from sessionrec.clients import RetryPolicy
from sessionrec.export.exporter import ExportOptions, export_version
from sessionrec.export.repository import current_version, live_versions
from sessionrec.reliability.faults import FaultUnavailable, flip_byte, kill_stub, resize, size_limited_folder
from sessionrec.reliability.load import Load, canary_probes
from sessionrec.reliability.procs import python_stubs
from sessionrec.reliability.report import write_report
from sessionrec.serving.artifacts import read_manifest
from sessionrec.serving.embedded import EmbeddedServer, replay_canaries
from sessionrec.serving.launcher import free_ports

pytestmark = pytest.mark.server
RATE = 50.0  # requests/s: light steady traffic, so failures and gaps are measured rather than overload
FAST = dict(quality_sessions=200, parity_sessions=100)
FIGURES: dict[str, dict] = {}


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    if FIGURES:
        write_report("faults", FIGURES)


def outage(load: Load, since: float) -> dict:
    """Failures after `since`, and how long from the first failure until answers came back."""
    records = load.window(since)
    failed = [r for r in records if r.code]
    summary = {"requests": len(records), "failed": len(failed), "codes": sorted({r.code for r in failed}),
               "wrong": sum(r.wrong for r in records)}
    if failed:  # how long a failing request took to fail
        summary["failed_latency_max_ms"] = round(1000 * max(r.latency_s for r in failed), 1)
    if failed:
        back = [r for r in records if not r.code and r.start > failed[-1].start]
        summary["first_error"] = failed[0].message[:200]
        summary["outage_s"] = round((back[0].start if back else records[-1].start) - failed[0].start, 3)
        summary["recovered"] = bool(back)
    return summary


def one_instance(repository):
    """The repository's fused step at one instance (its configs rewritten): a killed stub is the step's
    only one. Two instances, the export's choice at this catalogue size: tests/reliability/test_two_instances.py."""
    from sessionrec.export.configs import ServingConfig
    from sessionrec.export.repository import write_configs

    cfg = ServingConfig(**read_manifest(repository / "recommend" / "1")["serving_config"])
    cfg.fused_instances = 1
    write_configs(repository, cfg, version=1)
    return repository


def test_killed_stub_is_not_restarted_by_triton_but_by_the_watcher(fresh_repository, tmp_path):
    one_instance(fresh_repository)
    probes = canary_probes(fresh_repository, [1])
    manifest = read_manifest(fresh_repository / "recommend" / "1")
    # Triton alone (no watcher): the stub stays dead, the model stays READY, every request fails.
    with EmbeddedServer(fresh_repository, watch_seconds=0, log_file=tmp_path / "alone.log") as server:
        victim = server.steps[len(server.steps) // 2]  # the step that runs the encoder
        client = grpcclient.InferenceServerClient(server.grpc_url)
        with Load(server.grpc_url, probes, rate=RATE) as load:
            time.sleep(1)
            killed_at = load.now()
            kill_stub(server.server.pid, victim)
            time.sleep(4)
            still_ready = client.is_model_ready(victim) and client.is_model_ready("recommend")
            restarted = victim in python_stubs(server.server.pid)
            alone = outage(load, killed_at)
            healed = server.heal()
            time.sleep(0.5)
        assert alone["failed"] > 0.9 * alone["requests"] and alone["codes"] == ["INTERNAL"]
        assert f"Stub process '{victim}_0_0' is not healthy" in alone["first_error"]
        assert still_ready and not restarted  # nothing in Triton notices
        assert healed == victim and replay_canaries(client, manifest).ok
    FIGURES["killed_stub_triton_alone"] = {**alone, "observed_s": 4.0, "model_still_ready": still_ready,
                                          "stub_restarted_by_triton": restarted}

    # With the watcher (sessionrec serve's default, here every second): each step's stub killed in turn.
    with EmbeddedServer(fresh_repository, watch_seconds=1.0, log_file=tmp_path / "watched.log") as server:
        with Load(server.grpc_url, probes, rate=RATE) as load:
            for model in server.steps:
                time.sleep(1.5)
                killed_at = load.now()
                kill_stub(server.server.pid, model)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and f"restarted {model}" not in " ".join(server.events):
                    time.sleep(0.1)
                time.sleep(1.0)
                figures = outage(load, killed_at)
                FIGURES[f"killed_stub_{model}_with_watcher"] = figures
                assert figures.get("recovered"), figures
                assert set(figures["codes"]) <= {"INTERNAL"}, figures  # reloaded in place: no NOT_FOUND window
                # a failing request takes ~2 s to fail (the canary too), plus up to one watch period
                assert figures["outage_s"] < 2.5 + 2 * server.watch_seconds, figures
        assert load.stats(load.now() - 0.9).failed == 0
        assert replay_canaries(server.server.client(), manifest).ok


def test_server_crash_and_restart_on_the_same_ports(fresh_repository, tmp_path):
    """SIGKILL to tritonserver and its stubs, a new server on the same ports: a retrying client with a
    long enough deadline sees no failure; without retries the gap is counted."""
    grpc_port, http_port, metrics_port = free_ports(3)
    ports = dict(grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port)
    probes = canary_probes(fresh_repository, [1])
    patient = RetryPolicy(max_attempts=100, initial_backoff_s=0.05, max_backoff_s=0.5)
    first = EmbeddedServer(fresh_repository, watch_seconds=0, log_file=tmp_path / "first.log", **ports).start()
    second = None
    try:
        with Load(first.grpc_url, probes, rate=RATE) as bare, \
                Load(first.grpc_url, probes, rate=RATE, retry=patient, timeout_s=30.0) as retrying:
            time.sleep(1.5)
            crashed_at = bare.now()
            os.killpg(first.server.pid, signal.SIGKILL)
            first.stop()  # reaps it and removes its shared memory, as a supervisor would
            began = time.monotonic()
            second = EmbeddedServer(fresh_repository, watch_seconds=0, log_file=tmp_path / "second.log", **ports).start()
            restart_s = time.monotonic() - began
            time.sleep(2.0)
        figures = {"restart_to_ready_s": round(restart_s, 2), "without_retries": outage(bare, crashed_at),
                   "with_retries": outage(retrying, crashed_at)}
        FIGURES["server_crash_restart"] = figures
        assert figures["without_retries"]["failed"] > 0 and figures["without_retries"]["recovered"]
        assert set(figures["without_retries"]["codes"]) <= {"UNAVAILABLE", "NOT_FOUND"}
        assert figures["with_retries"]["failed"] == 0 and figures["with_retries"]["wrong"] == 0
        assert replay_canaries(second.server.client(), read_manifest(fresh_repository / "recommend" / "1")).ok
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_disk_full_during_export_changes_nothing_served(exported_repository, trained_checkpoint, sample_path, tmp_path):
    folder = tmp_path / "disk"
    used_kib = sum(p.stat().st_size for p in exported_repository.rglob("*") if p.is_file()) // 1024
    try:
        # Room for the live version and ~150 KiB more: the next export (~350 KiB staged) runs out.
        mount = size_limited_folder(folder, f"{used_kib + 150}k")
        mount.__enter__()
    except FaultUnavailable as exc:
        pytest.skip(str(exc))
    try:
        repo = folder / "repository"
        shutil.copytree(exported_repository, repo)
        before = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
        with EmbeddedServer(repo, watch_seconds=0.5, log_file=tmp_path / "triton.log") as server:
            with Load(server.grpc_url, canary_probes(repo, [1]), rate=RATE) as load:
                time.sleep(1)
                with pytest.raises(OSError) as error:
                    export_version(trained_checkpoint, repo, ExportOptions(data=str(sample_path), **FAST), progress=False)
                after = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts)
                time.sleep(1.5)  # the watcher looks: nothing to switch to
                full = load.stats()
                assert server.version == 1 and live_versions(repo) == [1]
                resize(folder, "8m")  # the operator frees space; the same export now goes through
                export_version(trained_checkpoint, repo, ExportOptions(data=str(sample_path), **FAST), progress=False)
                deadline = time.monotonic() + 60
                while server.version != 2 and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(1)
            assert server.version == 2
        FIGURES["disk_full_during_export"] = {
            "error": f"{type(error.value).__name__}: {error.value}"[:200], "tmpfs_kib": used_kib + 150,
            "while_full": full.as_dict(), "after_space_freed": load.stats().as_dict(),
            "repository_unchanged": after == [p for p in before if "__pycache__" not in p],
        }
        assert error.value.errno == 28  # ENOSPC
        assert FIGURES["disk_full_during_export"]["repository_unchanged"]
        assert not list(folder.glob(".repository.staging-*"))
        assert full.failed == 0 and load.stats().failed == 0 and load.stats().wrong == 0
    finally:
        mount.__exit__(None, None, None)


def test_corrupted_artifact_is_refused_under_load_without_a_gap(fresh_repository, trained_checkpoint, sample_path,
                                                                tmp_path):
    repo = fresh_repository
    with EmbeddedServer(repo, watch_seconds=0, log_file=tmp_path / "triton.log") as server:
        export_version(trained_checkpoint, repo, ExportOptions(data=str(sample_path), **FAST), progress=False)
        flip_byte(repo / "retrieval" / "2" / "items.faiss")
        with Load(server.grpc_url, canary_probes(repo, [1]), rate=RATE) as load:
            time.sleep(1)
            began = load.now()
            first = server.sync()
            again = server.sync()  # the watcher tries again on its next round: same answer
            time.sleep(1)
        assert not first and not again and server.version == 1
        assert "checksum mismatch" in server.events[-1]
        during = load.stats(began)
        assert load.stats().failed == 0 and load.stats().wrong == 0, load.stats().failures
        assert replay_canaries(server.server.client(), read_manifest(repo / "recommend" / "1")).ok
        assert current_version(repo) == 2  # on disk; the server refuses it
    FIGURES["corrupted_artifact"] = {"during_refused_switches": during.as_dict(), "served_version": 1,
                                     "event": server.events[-1][:240]}
