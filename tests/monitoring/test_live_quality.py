"""The live-quality job: unit cases on hand-made events, and the acceptance check that on the test set
replayed through the real tritonserver (exposures and next clicks as the event log holds them) it
reproduces the served version's offline HR@20 / MRR@20 from the manifest within sampling error."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from sessionrec.events.schema import interaction_event, validate
from sessionrec.monitoring.live_quality import gini, live_quality, offline_numbers, prometheus_text


def exposure(request_id, session, shown, t, version="1", variant="control"):
    return validate({"schema": "exposure/1", "type": "exposure", "event_id": f"e-{request_id}", "timestamp": t,
                     "experiment": "none", "unit_id": f"u-{session}", "variant": variant, "in_experiment": False,
                     "request_id": request_id, "model": "recommend", "model_version": version,
                     "session_id": session, "session_items": [], "items_shown": shown})


def click(session, item, t, request_id=None, kind="click"):
    return interaction_event(kind, unit_id=f"u-{session}", session_id=session, item_id=item, request_id=request_id,
                             timestamp=t, event_id=f"c-{session}-{t}-{kind}")


def test_next_click_hit_rank_ctr_conversion_and_duplicates():
    events = [
        exposure("r1", "a", [5, 6, 7], 1.0), click("a", 6, 2.0, request_id="r1"),  # hit at rank 2, clicked
        exposure("r2", "a", [8, 9], 3.0), click("a", 1, 4.0), click("a", 9, 5.0),  # next click is 1: a miss
        exposure("r3", "b", [5], 1.0),  # no later click: unlabelled
        click("b", 5, 0.5, request_id="r3", kind="purchase"),  # a purchase on r3 (before: still a conversion)
    ]
    events.append(dict(events[0]))  # delivered twice
    (row,) = live_quality(events, n_items=10)
    assert row["exposures"] == 3 and row["labelled"] == 2
    assert row["HR@20"] == pytest.approx(50.0) and row["MRR@20"] == pytest.approx(100 * 0.5 / 2)
    assert row["ctr"] == pytest.approx(1 / 3) and row["conversion"] == pytest.approx(1 / 3)
    assert row["coverage"] == pytest.approx(5 / 10)  # items 5..9 shown
    assert gini(np.array([3, 3, 3])) == pytest.approx(0.0) and gini(np.array([0, 0, 9])) > 0.6


def test_rows_per_version_and_variant_and_the_exposition_parses():
    events = [exposure("r1", "a", [1], 1.0, version="1", variant="control"), click("a", 1, 2.0),
              exposure("r2", "b", [1], 1.0, version="2", variant="candidate"), click("b", 2, 2.0)]
    rows = live_quality(events, n_items=5)
    assert [(r["model_version"], r["variant"], r["HR@20"]) for r in rows] == [("1", "control", 100.0),
                                                                             ("2", "candidate", 0.0)]
    text = prometheus_text(rows, {"1": {"HR@20": 12.5, "MRR@20": 4.0}}, computed_at=1e9)
    assert 'sessionrec_live_hr_at_20{model_version="2",variant="candidate"} 0' in text
    assert 'sessionrec_offline_hr_at_20{model_version="1"} 12.5' in text
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: scripts/setup.sh installs the Debian package")
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.server
def test_replayed_test_set_reproduces_the_offline_numbers(embedded_server, exported_repository, sample_dataset):
    from sessionrec.clients import RecommendClient
    from sessionrec.export.exporter import _test_sessions
    from sessionrec.serving.artifacts import read_manifest

    version = str(embedded_server.version)
    manifest = read_manifest(exported_repository / "recommend" / version)
    raw = np.load(exported_repository / "preprocess" / version / "item_ids.npy")
    sessions = _test_sessions("sample", sample_dataset, raw)  # export's own test sessions (model ids)
    events, t = [], 1000.0
    with RecommendClient(embedded_server.grpc_url) as client:
        for j, session in enumerate(sessions):
            ids = raw[np.asarray(session)].tolist()
            sid = f"s{j}"
            events.append(click(sid, ids[0], t))
            for m in range(1, len(ids) + 1):  # the site asks after every click; the guest clicks on
                answer = client.recommend(ids[:m], k=20)
                assert answer.model_version == version
                events.append(exposure(f"{sid}-{m}", sid, [int(i) for i in answer.item_ids], t + 0.1, version))
                t += 1.0
                if m < len(ids):
                    events.append(click(sid, ids[m], t))
    (row,) = live_quality(events, n_items=manifest["serving"]["n_items"])
    offline = offline_numbers(manifest)
    labelled = sum(len(s) - 1 for s in sessions)
    assert row["labelled"] == labelled  # every prefix with its next click, as offline
    # export measured every prefix when there are fewer than quality_sessions: the same population
    assert labelled <= manifest["export_options"]["quality_sessions"]
    assert abs(row["HR@20"] - offline["HR@20"]) <= 2 * row["HR@20_stderr"] + 1e-6, (row, offline)
    assert abs(row["MRR@20"] - offline["MRR@20"]) <= 2 * row["HR@20_stderr"] + 1e-6, (row, offline)
    print(f"live HR@20 {row['HR@20']:.2f} ± {row['HR@20_stderr']:.2f}, MRR@20 {row['MRR@20']:.2f}; "
          f"offline HR@20 {offline['HR@20']:.2f}, MRR@20 {offline['MRR@20']:.2f} ({labelled} prefixes)")
