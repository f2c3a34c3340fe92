"""benchmarks/serving_bench.py --repeats: medians over runs and the issue-15 goal lines (pure functions)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
serving_bench = pytest.importorskip("serving_bench")


def row(rps, p50, p95, users=8, rate=None, failures=0):
    return {"users": users, "arrival_rate": rate, "throughput_rps": rps, "failures": failures,
            "latency_ms": {"p50": p50, "p95": p95, "p99": p95 + 1}, "generator_cores": 0.3, "server_cores": 1.2,
            "other_cores": 0.1}


def run(ours_rps, cached_rps, naive_rps, ours_probe_p50):
    def system(rps, probe_p50, rate_p50):
        ladder = [row(rps / 2, 2.0, 3.0, users=1), row(rps, 20.0, 60.0, users=32), row(rps * 1.1, 90.0, 150.0, users=64)]
        return {"ladder": ladder, "probe": {"requests": 100, "p50": probe_p50, "p95": probe_p50 + 0.5, "p99": probe_p50 + 1},
                "rates": [row(20, rate_p50, rate_p50 + 1, rate=20), row(100, rate_p50 + 0.2, rate_p50 + 1.5, rate=100)],
                "best": None}
    out = {"sessionrec": system(ours_rps, ours_probe_p50, 2.5), "naive": system(naive_rps, 5.0, 6.0),
           "naive-cached": system(cached_rps, 2.4, 3.0)}
    for data in out.values():
        data["best"] = serving_bench.best_under(data["ladder"], serving_bench.SLA(95, 70))
    return out


def test_medians_over_runs_and_goals_on_them():
    runs = [run(2400, 700, 300, 2.0), run(2000, 700, 300, 2.6), run(2200, 700, 250, 2.1)]
    merged = serving_bench.merge_runs(runs)
    assert merged["sessionrec"]["best"]["throughput_rps"] == 2200  # median of 2400, 2000, 2200
    assert merged["sessionrec"]["best"]["users"] == 32
    assert merged["sessionrec"]["probe"]["p50"] == 2.1 and merged["sessionrec"]["probe"]["requests"] == 300
    assert [r["arrival_rate"] for r in merged["sessionrec"]["rates"]] == [20, 100]
    assert len(merged["sessionrec"]["ladder"]) == 9 and merged["sessionrec"]["ladder"][-1]["run"] == 3
    lines = serving_bench.goals({"systems": merged, "runs": runs})
    table = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| ") and "goal" not in line}
    assert "| yes |" in table["one request at a time, p50"] and "2/3 |" in table["one request at a time, p50"]
    assert "| yes |" in table["20 req/s open loop, p95"]
    cached = table["throughput at the SLA >= 3x the cached naive server"]
    assert "| yes |" in cached and "3.14x" in cached and "2/3 |" in cached  # 2000/700 = 2.86x in run 2
    plain = table["throughput at the SLA >= 8x the plain naive server"]
    assert "| no |" in plain and "7.33x" in plain  # 2200 / 300


def test_a_goal_missed_on_the_medians_says_no():
    runs = [run(1900, 700, 300, 2.6)] * 3
    lines = serving_bench.goals({"systems": serving_bench.merge_runs(runs), "runs": runs})
    assert any(line.startswith("| one request at a time, p50 | no |") and "0/3" in line for line in lines)
    assert any(line.startswith("| throughput at the SLA >= 3x the cached naive server | no |") for line in lines)
