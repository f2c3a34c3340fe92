"""The soak runner on a short run (`python benchmarks/soak.py --minutes 10` is the real soak, run by hand).

    .venv/bin/pytest tests/reliability/test_soak.py -q             # ~35 s
"""

from __future__ import annotations

import pytest

from sessionrec.reliability.procs import memory_kib, python_stubs
from sessionrec.serving.artifacts import read_manifest


def fused_instances(repository) -> int:
    """Stubs of the fused step per version: the count the export chose by memory (its manifest)."""
    version = max(int(p.name) for p in (repository / "recommend").iterdir() if p.name.isdigit())
    return read_manifest(repository / "recommend" / str(version))["fused_instances"]["count"]
from sessionrec.reliability.soak import SoakPlan, markdown, run_soak

pytestmark = pytest.mark.server


def test_short_soak_has_no_errors_and_flat_memory(exported_repository, tmp_path):
    plan = SoakPlan(exported_repository, minutes=0.3, rate=100, warmup_s=6, window_s=6, sample_s=1,
                    log_file=tmp_path / "triton.log")
    report = run_soak(plan)
    assert report["total"]["requests"] > 1500
    assert report["verdict"]["no_failed_request"] and report["verdict"]["no_wrong_answer"], report["total"]["failures"]
    memory = report["memory"]
    assert memory["samples"][0]["processes"] == 1 + fused_instances(exported_repository)  # tritonserver, the fused stubs
    assert memory["growth"] is not None and abs(memory["growth"]) < 0.05, memory
    assert len(report["windows"]) == 3 and "| from (s) |" in markdown(report)
    slowest = report["slowest_requests"]
    assert len(slowest) == 10 and slowest[0]["latency_ms"] >= slowest[-1]["latency_ms"]
    assert all(0 <= r["generator_gc_ms"] <= r["latency_ms"] + 1e-6 for r in slowest)
    assert "Load generator:" in markdown(report)


def test_recorded_outcomes_are_not_walked_by_the_garbage_collector():
    """A soak records ~300,000 outcomes; as tracked objects they made each full collection of the
    generator a 70-145 ms stall that showed as request latency (docs/RELIABILITY.md, Soak)."""
    import gc
    import time

    from sessionrec.reliability.load import Load, Probe, Record

    load = Load("127.0.0.1:1", [Probe((1, 2))])
    load._record(time.monotonic(), 0.002)
    load._record(time.monotonic(), 0.5, "UNAVAILABLE", "connection refused")
    gc.collect()
    assert not any(gc.is_tracked(row) for row in load._rows)
    assert load.records[1] == Record(load._rows[1][0], 0.5, "UNAVAILABLE", "connection refused")
    assert load.stats(since=0).failed == 1


def test_memory_is_read_for_the_server_and_each_stub(embedded_server):
    memory = memory_kib(embedded_server.server.pid)
    stubs = fused_instances(embedded_server.repository)
    assert memory["processes"] == 1 + stubs and memory["tritonserver"] > 10_000 and memory["stubs"] > 20_000
    assert set(python_stubs(embedded_server.server.pid)) == set(embedded_server.steps) == {"session_recommender"}
