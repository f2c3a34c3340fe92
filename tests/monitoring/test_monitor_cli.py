"""`sessionrec monitor live-quality` and `drift-report` on an event log over the exported sample version."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sessionrec.cli import main
from sessionrec.monitoring.reference import item_buckets, psi
from tests.monitoring.test_live_quality import click, exposure


def write_events(path, events):
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


def test_live_quality_cli_writes_json_and_exposition(exported_repository, tmp_path, capsys):
    raw = np.load(exported_repository / "preprocess" / "1" / "item_ids.npy")
    events = [exposure("r1", "a", raw[1:21].tolist(), 1.0), click("a", int(raw[3]), 2.0, request_id="r1")]
    write_events(tmp_path / "events.jsonl", events)
    code = main(["monitor", "live-quality", "--events", str(tmp_path / "events.jsonl"),
                 "--repository", str(exported_repository), "--out", str(tmp_path / "live")])
    assert code == 0
    result = json.loads((tmp_path / "live" / "live-quality.json").read_text())
    (row,) = result["rows"]
    assert row["HR@20"] == 100.0 and row["MRR@20"] == pytest.approx(100 / 3) and row["ctr"] == 1.0
    assert result["offline"]["1"]["HR@20"] is not None
    prom = (tmp_path / "live" / "live-quality.prom").read_text()
    assert 'sessionrec_live_hr_at_20{model_version="1",variant="control"} 100' in prom
    assert "sessionrec_offline_hr_at_20" in prom


def test_drift_report_matches_the_library_psi(exported_repository, sample_dataset, tmp_path, capsys):
    raw_ids = sample_dataset.raw_ids
    events = [exposure(f"r{i}", f"s{i}", [1], float(i)) | {"session_items": raw_ids[np.asarray(s)].tolist()}
              for i, s in enumerate(sample_dataset.test)]
    write_events(tmp_path / "events.jsonl", events)
    assert main(["monitor", "drift-report", "--events", str(tmp_path / "events.jsonl"),
                 "--repository", str(exported_repository)]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    folder = exported_repository / "retrieval" / "1"
    popularity = np.load(folder / "popularity.npy")
    from sessionrec.serving.preprocess import IdMap

    model = IdMap(np.load(folder / "item_ids.npy")).to_model(np.array([raw_ids[s[-1]] for s in sample_dataset.test]))
    live = np.bincount(item_buckets(popularity)[model[model > 0]], minlength=10)
    reference = [b["reference_share"] for b in report["buckets"]]
    assert report["clicks_sampled"] == len(sample_dataset.test)
    assert report["psi"] == psi(reference, live)
    assert abs(sum(b["psi_term"] for b in report["buckets"]) - report["psi"]) < 1e-9
    assert report["psi_noise_floor"] == 9 / (model > 0).sum()
