"""`sessionrec experiment analyze` on synthetic event logs: verdicts, the SRM gate, duplicates, crossovers."""

from __future__ import annotations

import json

import pytest

from sessionrec.cli import main
from sessionrec.experiments.readout import ReadoutConfig, ReadoutError, analyze


def write(path, events):
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def test_a_real_lift_is_found_and_reported_with_a_plot(tmp_path, events_factory, capsys):
    events = write(tmp_path / "events.jsonl", events_factory(units=20_000, conversion=(0.05, 0.08), ctr=(0.1, 0.13)))
    code = main(["experiment", "analyze", str(events), "--experiment", "exp-test", "--out", str(tmp_path / "out")])
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert not report["srm"]["mismatch"]
    assert report["conversion"]["significant"] and report["conversion"]["difference"] > 0
    assert report["ctr"]["significant"] and report["ctr"]["ci_low"] > 0
    assert report["sequential"]["stopped_at"] is not None
    assert (tmp_path / "out" / "readout.png").stat().st_size > 10_000
    assert "significant" in (tmp_path / "out" / "report.md").read_text()
    assert "significant" in capsys.readouterr().out


def test_no_effect_is_not_called_significant(events_factory):
    report = analyze(events_factory(units=8000, seed=5), ReadoutConfig("exp-test"))
    assert not report["srm"]["mismatch"]
    assert report["conversion"]["ci_low"] < 0 < report["conversion"]["ci_high"]


def test_srm_gate_stops_the_readout_when_exposures_of_one_arm_are_lost(tmp_path, events_factory):
    events = events_factory(units=20_000, conversion=(0.05, 0.08))
    # a logging bug drops a fifth of the candidate's units: the remaining "lift" must not be read
    lost = {e["unit_id"] for e in events if e.get("variant") == "candidate" and int(e["unit_id"].split("-")[1]) % 5 == 0}
    kept = [e for e in events if e["unit_id"] not in lost]
    path = write(tmp_path / "events.jsonl", kept)
    code = main(["experiment", "analyze", str(path), "--experiment", "exp-test", "--out", str(tmp_path / "out")])
    assert code == 3
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["srm"]["mismatch"] and "conversion" not in report
    assert "sample-ratio mismatch" in report["verdict"]
    assert not (tmp_path / "out" / "readout.png").exists()


def test_duplicated_events_count_once(events_factory):
    events = events_factory(units=4000, conversion=(0.05, 0.07), seed=2)
    once = analyze(events, ReadoutConfig("exp-test"))
    twice = analyze(events + events[::-1], ReadoutConfig("exp-test"))
    assert once["units"] == twice["units"]
    assert once["conversion"] == twice["conversion"] and once["ctr"] == twice["ctr"]


def test_units_in_two_arms_are_excluded_and_outside_units_ignored(events_factory):
    events = events_factory(units=4000, ramp_bp=5000, seed=4)
    first = next(e for e in events if e["type"] == "exposure" and e["in_experiment"])
    flipped = dict(first, event_id="flip", variant="candidate" if first["variant"] == "control" else "control",
                   request_id="flip-req")
    report = analyze(events + [flipped], ReadoutConfig("exp-test"))
    assert report["crossover_units_excluded"] == 1
    assert report["outside_ramp_units"] > 1500  # about half the units sit outside a 50 % ramp
    assert sum(report["units"].values()) < 2500


def test_bad_inputs_name_the_problem(tmp_path, events_factory):
    with pytest.raises(ReadoutError, match="no in-experiment exposures of experiment 'other'"):
        analyze(events_factory(units=100), ReadoutConfig("other"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "exposure"}\nnot json\n')
    assert main(["experiment", "analyze", str(bad), "--experiment", "x", "--out", str(tmp_path / "o")]) == 1


def test_sample_size_and_simulate_commands(capsys, tmp_path):
    assert main(["experiment", "sample-size", "--baseline", "0.05", "--mde", "0.1", "--daily-units", "10000"]) == 0
    out = capsys.readouterr().out
    assert "31234 units per arm" in out and "7 days" in out
    assert main(["experiment", "simulate", "--runs", "400", "--json", str(tmp_path / "s.json")]) == 0
    figures = json.loads((tmp_path / "s.json").read_text())
    assert figures["aa"]["naive_peeking"]["rate"] > figures["aa"]["fixed_horizon"]["rate"]
