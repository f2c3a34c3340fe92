"""The monitoring rules (helm/sessionrec/files/monitoring-rules.yaml) on synthetic series, with a real
`promtool test rules`: PSI equals sessionrec.monitoring.reference.psi, the volume guard holds drift
alerts back below 1,000 clicks a window, the unknown/fallback/retrain alerts fire only when they should.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from sessionrec.monitoring.reference import psi

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm" / "sessionrec" / "files" / "monitoring-rules.yaml"
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (scripts/setup.sh: apt-get install prometheus)")

REFERENCE = [0.1] * 10
# clicks per minute per bucket in three scenarios (model_version label): the reference mix, a mix
# shifted to the head, the shifted mix at too low a volume (150 clicks per 15 minutes).
MIXES = {"1": [10] * 10, "2": [50] + [5] * 9, "3": [5] + [0.5] * 9}
MINUTES = 400


def clicks(version: str, extra: dict | None = None) -> list[dict]:
    out = []
    for b, per_min in enumerate(MIXES[version]):
        out.append({"series": f'sessionrec_input_clicks_total{{job="triton",model_version="{version}",bucket="{b}"}}',
                    "values": f"0+{per_min}x{MINUTES}"})
        out.append({"series": f'sessionrec_reference_click_share{{job="triton",model_version="{version}",bucket="{b}"}}',
                    "values": f"{REFERENCE[b]}x{MINUTES}"})
    out.append({"series": f'sessionrec_input_clicks_total{{job="triton",model_version="{version}",bucket="unknown"}}',
                "values": f"0+1000x{MINUTES}"})  # unknown clicks are not part of the PSI
    return out


def sessions(version: str, per_min: float, unknown_per_min: float, items_per_min: float, fallback_per_min: float):
    labels = f'job="triton",model_version="{version}"'
    return [
        {"series": f"sessionrec_sessions_total{{{labels}}}", "values": f"0+{per_min}x{MINUTES}"},
        {"series": f"sessionrec_fallback_total{{{labels}}}", "values": f"0+{fallback_per_min}x{MINUTES}"},
        {"series": f"sessionrec_session_items_total{{{labels}}}", "values": f"0+{items_per_min}x{MINUTES}"},
        {"series": f"sessionrec_unknown_items_total{{{labels}}}", "values": f"0+{unknown_per_min}x{MINUTES}"},
    ]


def alert(name: str, at: str, firing: list[str], severity: str = "warning") -> dict:
    """The firing alerts by their labels (promtool's alert_rule_test also wants every annotation verbatim)."""
    return {"expr": f'ALERTS{{alertname="{name}",alertstate="firing"}}', "eval_time": at,
            "exp_samples": [{"labels": f'ALERTS{{alertname="{name}",alertstate="firing",job="triton",'
                                       f'model_version="{v}",severity="{severity}"}}', "value": 1} for v in firing]}


def run_promtool(tmp_path: Path, series: list[dict], alerts: list[dict], exprs: list[dict]) -> None:
    test = {"rule_files": [str(RULES)], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": exprs + alerts}]}
    path = tmp_path / "monitoring-test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_file_is_valid():
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_psi_drift_alert_with_volume_guard(tmp_path):
    series = clicks("1") + clicks("2") + clicks("3")
    expected = psi(REFERENCE, MIXES["2"])
    assert expected > 0.25
    exprs = [
        # the recorded PSI is the library's PSI (up to 1e-6), ~0 for the reference mix
        {"expr": f'abs(sessionrec:input_popularity_psi:15m{{model_version="2"}} - {expected}) < bool 1e-6',
         "eval_time": "30m", "exp_samples": [{"labels": '{job="triton",model_version="2"}', "value": 1}]},
        {"expr": 'sessionrec:input_popularity_psi:15m{model_version="1"} < bool 1e-9',
         "eval_time": "30m", "exp_samples": [{"labels": '{job="triton",model_version="1"}', "value": 1}]},
        # the low-volume scenario has the same PSI, under 1,000 clicks a window
        {"expr": 'sessionrec:input_clicks:increase15m{model_version="3"} < bool 1000',
         "eval_time": "30m", "exp_samples": [{"labels": '{job="triton",model_version="3"}', "value": 1}]},
    ]
    alerts = [
        alert("SessionrecInputDrift", "10m", []),  # shifted, but not yet for 15 minutes
        alert("SessionrecInputDrift", "40m", ["2"]),  # shifted and enough clicks; 1 is stable, 3 too few
        alert("SessionrecRetrainRecommended", "60m", []),
        alert("SessionrecRetrainRecommended", "380m", ["2"], severity="info"),  # large shift held 6 hours
    ]
    run_promtool(tmp_path, series, alerts, exprs)


def test_unknown_and_fallback_alerts(tmp_path):
    series = (sessions("1", per_min=100, unknown_per_min=8, items_per_min=100, fallback_per_min=1)  # 8% unknown
              + sessions("2", per_min=100, unknown_per_min=1, items_per_min=100, fallback_per_min=8)  # 8% fallback
              + sessions("3", per_min=5, unknown_per_min=2, items_per_min=5, fallback_per_min=2)  # too few
              + sessions("4", per_min=100, unknown_per_min=20, items_per_min=100, fallback_per_min=0))  # 20% unknown
    exprs = [{"expr": "round(sessionrec:unknown_item_ratio:rate15m, 0.0001)", "eval_time": "30m",
              "exp_samples": [{"labels": '{job="triton",model_version="1"}', "value": 0.08},
                              {"labels": '{job="triton",model_version="2"}', "value": 0.01},
                              {"labels": '{job="triton",model_version="3"}', "value": 0.4},
                              {"labels": '{job="triton",model_version="4"}', "value": 0.2}]}]
    alerts = [
        alert("SessionrecUnknownItemsHigh", "40m", ["1", "4"]),
        alert("SessionrecFallbackHigh", "40m", ["2"]),
        alert("SessionrecRetrainRecommended", "380m", ["4"], severity="info"),  # 3: 40% unknown, but too few items
    ]
    run_promtool(tmp_path, series, alerts, exprs)


def test_every_alert_is_tested():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    names = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    source = Path(__file__).read_text()
    assert names == {"SessionrecInputDrift", "SessionrecUnknownItemsHigh", "SessionrecFallbackHigh",
                     "SessionrecRetrainRecommended"}
    assert all(f'"{n}"' in source for n in names)
    assert np.isclose(psi(REFERENCE, MIXES["3"]), psi(REFERENCE, MIXES["2"]))
