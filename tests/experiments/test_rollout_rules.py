"""The rollout's verdict per interval and its loop, on scripted metrics (the live test uses real Prometheus)."""

from __future__ import annotations

import pytest

from sessionrec.clients.assignment import Experiment, ExperimentFile, load_experiment, save_experiment
from sessionrec.experiments import rollout as ro
from sessionrec.experiments.rollout import Bounds, RolloutConfig, VariantWindow, judge

OK = VariantWindow(1000, 0, 3.0)


@pytest.mark.parametrize("candidate, verdict, words", [
    (VariantWindow(500, 1, 3.2), "good", "error rate"),
    (VariantWindow(5, 5, 3.0), "quiet", "5 candidate requests"),
    (VariantWindow(500, 50, 3.0), "bad", "error rate 0.1000"),
    (VariantWindow(500, 0, 9.0), "bad", "mean latency 9.00 ms above 6.50 ms"),
    (VariantWindow(500, 0, 6.4), "good", "mean latency"),
])
def test_verdicts(candidate, verdict, words):
    got, reason = judge(OK, candidate, Bounds())
    assert got == verdict and words in reason


def test_a_shared_outage_is_not_blamed_on_the_candidate():
    both_failing = VariantWindow(1000, 100, 3.0)
    assert judge(both_failing, VariantWindow(500, 52, 3.0), Bounds())[0] == "good"


def test_absolute_latency_ceiling():
    assert judge(OK, VariantWindow(500, 0, 4.0), Bounds(max_latency_ms=3.5))[0] == "bad"


class Scripted:
    """Stands in for Prometheus: returns the next scripted window per model."""

    def __init__(self, windows):
        self.windows = list(windows)

    def __call__(self, url):
        return self

    def window(self, match, seconds):
        control, candidate = self.windows[0]
        if match == ro.CANDIDATE_MATCH:
            self.windows.pop(0)
            return candidate
        return control


def run(monkeypatch, tmp_path, windows, **config):
    monkeypatch.setattr(ro, "Prometheus", Scripted(windows))
    path = tmp_path / "experiment.json"
    save_experiment(Experiment("e", "salt"), path)
    ramps = []
    result = ro.rollout("http://unused", path, RolloutConfig((100, 1000, 10_000), 1.0, **config),
                        sleep=lambda s: ramps.append(load_experiment(path).ramp_bp))
    return result, ramps, path


def test_promoted_after_every_step_then_ramp_zero(monkeypatch, tmp_path):
    result, ramps, path = run(monkeypatch, tmp_path, [(OK, VariantWindow(100, 0, 3.0))] * 3)
    assert result.outcome == "promoted" and ramps == [100, 1000, 10_000]
    assert load_experiment(path).ramp_bp == 0 and '"promoted"' in path.read_text()


def test_bad_interval_rolls_back_at_once_and_quiet_ones_only_wait(monkeypatch, tmp_path):
    quiet, bad = VariantWindow(3, 0, 3.0), VariantWindow(100, 30, 3.0)
    result, ramps, path = run(monkeypatch, tmp_path, [(OK, VariantWindow(100, 0, 3)), (OK, quiet), (OK, bad)])
    assert result.outcome == "rolled_back" and ramps == [100, 1000, 1000]
    assert [i.verdict for i in result.intervals] == ["good", "quiet", "bad"]
    assert load_experiment(path).ramp_bp == 0


def test_too_long_without_traffic_stalls_with_ramp_zero(monkeypatch, tmp_path):
    quiet = VariantWindow(0, 0, None)
    result, _, path = run(monkeypatch, tmp_path, [(OK, quiet)] * 10, max_quiet_intervals=3)
    assert result.outcome == "stalled" and len(result.intervals) == 4 and load_experiment(path).ramp_bp == 0


def test_experiment_file_follows_rewrites_and_keeps_the_last_good_one(tmp_path):
    path = tmp_path / "experiment.json"
    save_experiment(Experiment("e", "salt", ramp_bp=100), path)
    source = ExperimentFile(path)
    assert source.current().ramp_bp == 100
    save_experiment(Experiment("e", "salt", ramp_bp=5000), path)
    assert source.current().ramp_bp == 5000
    path.write_text("{broken")
    assert source.current().ramp_bp == 5000  # a bad file never fails a recommendation
