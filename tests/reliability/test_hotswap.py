"""Hot swap per retrain under load (the CI-sized version of `python benchmarks/hotswap.py`).

While open-loop traffic runs, a new version is exported and switched to, then rolled back. Requests
are counted with retries off (every failure the server causes shows), answers are checked against
the canaries of both versions. The p99 criterion (within 2x steady) is the benchmark's verdict:
here the figures are written to runs/reliability/hotswap_ci.json, not judged, because the 2 shared
cores of CI make one-second percentiles a measure of the neighbours (docs/RELIABILITY.md).

    .venv/bin/pytest tests/reliability/test_hotswap.py -q          # ~1.5 min
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from sessionrec.clients import RetryPolicy
from sessionrec.export.exporter import ExportOptions, export_version
from sessionrec.export.repository import rollback
from sessionrec.reliability.hotswap import HotSwapPlan, run_hotswap
from sessionrec.reliability.load import Load, canary_probes
from sessionrec.reliability.report import write_report
from sessionrec.serving.embedded import EmbeddedServer

pytestmark = pytest.mark.server
FAST = dict(quality_sessions=200, parity_sessions=100)
# A rollback used to drop the retired step versions a few milliseconds before the ensemble pinned
# to the previous version was in place; rollback now retires only the ensemble folder, so nothing
# may fail (docs/RELIABILITY.md).


def fused_instances(repository) -> int:
    """session_recommender instances of version 2 (the export chose them by memory: export/instances.py);
    read from its step folder, which stays when a rollback retires recommend/2."""
    from sessionrec.serving.artifacts import read_manifest

    return read_manifest(repository / "session_recommender" / "2")["fused_instances"]["count"]


def only_rollback_window(failures: dict[str, int]) -> bool:
    return not failures


def wait_for(server, version: int, seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while server.version != version and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.version == version, server.events


def test_watcher_swaps_under_load_without_a_failed_request(fresh_repository, trained_checkpoint, sample_path, tmp_path):
    repo = fresh_repository
    probes = canary_probes(repo, [1])
    with EmbeddedServer(repo, watch_seconds=0.5, log_file=tmp_path / "triton.log") as server:
        with Load(server.grpc_url, probes, rate=50) as bare, \
                Load(server.grpc_url, probes, rate=20, retry=RetryPolicy()) as retrying:
            time.sleep(1.5)
            export_version(trained_checkpoint, repo, ExportOptions(data=str(sample_path), **FAST), progress=False)
            probes[:] = canary_probes(repo, [1, 2])
            began = bare.now()
            wait_for(server, 2)
            time.sleep(2.0)  # the old instances unload after the switch
            swap = bare.stats(began)
            rollback(repo)
            began = bare.now()
            wait_for(server, 1)
            time.sleep(2.0)
            back = bare.stats(began)
        assert swap.requests > 50 and swap.failed == 0 and swap.wrong == 0, swap.failures
        assert back.wrong == 0 and only_rollback_window(back.failures), back.failures
        assert retrying.stats().failed == 0 and retrying.stats().wrong == 0
        assert bare.stats().wrong == 0
        assert [e.split(" (")[0] for e in server.events] == ["serving version 1", "switched 1 -> 2", "switched 2 -> 1"]


def test_export_swap_and_rollback_under_steady_load(fresh_repository, trained_checkpoint, sample_path, tmp_path):
    plan = HotSwapPlan(fresh_repository, next_checkpoint=trained_checkpoint, data=str(sample_path), rate=100,
                       steady_s=5, settle_s=2, tail_s=1.5, export_options=FAST, log_file=tmp_path / "triton.log",
                       plot=tmp_path / "hotswap.png")
    report = run_hotswap(plan)
    write_report("hotswap_ci", report)
    assert (tmp_path / "hotswap.png").read_bytes()[:4] == b"\x89PNG" and report["plot"] == str(tmp_path / "hotswap.png")
    verdict, phases = report["verdict"], report["phases"]
    assert verdict["no_wrong_answer"] and verdict["every_switch_done"] and verdict["rolled_back"]
    for name in ("steady", "export", "swap", "settled", "restored"):
        assert phases[name]["failed"] == 0, (name, phases[name]["failures"])
    assert only_rollback_window(phases["rollback"]["failures"]), phases["rollback"]["failures"]
    assert report["switches"]["requests"] > 300
    # A forward switch starts the new version's fused stubs (one per instance) and nothing else: the
    # serving version's stubs are not restarted beside them (an export that rewrote an unchanged
    # config.pbtxt made Triton reload every version). A rollback is a repin: no stub starts.
    assert report["stubs_started"]["swap"]["stubs"] == fused_instances(fresh_repository), report["stubs_started"]
    assert report["stubs_started"]["rollback"]["stubs"] == 0, report["stubs_started"]


def test_swap_and_rollback_while_locust_drives_the_traffic(fresh_repository, trained_checkpoint, sample_path, tmp_path):
    # The wording: Locust (load_tests/locustfile.py, open loop, real sessions click by click)
    # drives steady traffic while a new version is exported, switched to and rolled back.
    plan = HotSwapPlan(fresh_repository, next_checkpoint=trained_checkpoint, data=str(sample_path), rate=50,
                       steady_s=4, settle_s=2, tail_s=1.5, export_options=FAST, log_file=tmp_path / "triton.log",
                       driver="locust", locust_out=tmp_path / "locust")
    report = run_hotswap(plan)
    write_report("hotswap_locust_ci", report)
    verdict, phases = report["verdict"], report["phases"]
    assert verdict["every_switch_done"] and verdict["rolled_back"]
    for name, phase in phases.items():
        assert phase["failed"] == 0 and phase["wrong"] == 0, (name, phase["failures"])
    # Locust's own record of every request is what the windows were cut from.
    requests = (tmp_path / "locust" / "locust_requests.csv").read_text().splitlines()
    assert len(requests) - 1 >= report["total"]["requests"] > 0.8 * 50 * report["total"]["seconds"]
    assert report["switches"]["requests"] > 100 and report["locust"]["generator_cpu_s"] > 0
    assert report["stubs_started"]["swap"]["stubs"] == fused_instances(fresh_repository)


def test_each_switch_is_held_to_the_quiet_windows_just_before_it():
    from sessionrec.reliability.hotswap import _local_reference
    from sessionrec.reliability.load import Record

    class Recorded:  # one request per second; its latency in ms is the second it was sent
        def window(self, since, until):
            return [Record(float(t), t / 1000) for t in range(int(since), int(until))]

    windows = {"steady": (0, 10), "export 1": (10, 12), "published 1": (12, 14), "swap 1": (14, 16),
               "settled 1": (16, 21), "rollback 1": (21, 23), "restored 1": (23, 28), "export 2": (28, 30),
               "published 2": (30, 32), "swap 2": (32, 34)}
    p99 = lambda values: float(np.percentile(values, 99))  # noqa: E731
    assert _local_reference(Recorded(), windows, "swap 1") == pytest.approx(p99(list(range(10)) + [12, 13]))
    assert _local_reference(Recorded(), windows, "rollback 1") == pytest.approx(p99(range(16, 21)))
    assert _local_reference(Recorded(), windows, "swap 2") == pytest.approx(p99([23, 24, 25, 26, 27, 30, 31]))


def test_an_unknown_reference_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(ValueError, match="reference 'last'"):
        run_hotswap(HotSwapPlan(tmp_path, next_checkpoint=tmp_path / "b.pt", data="", reference="last"))
