"""The chart's model-monitoring section (values `monitoring`): the switch reaches the serving
container, the PrometheusRule carries files/monitoring-rules.yaml scoped to the release and passes
`promtool check rules`, the dashboard ConfigMap queries only series the rules record or the step exports."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from tests.helm.conftest import CHART, FULLNAME, NAMESPACE, find, one, triton

CPU = CHART / "ci" / "cpu-values.yaml"
ON = ("monitoring.prometheusRule.enabled=true", "monitoring.dashboard.enabled=true")
RULES = yaml.safe_load((CHART / "files" / "monitoring-rules.yaml").read_text())


def env(docs) -> dict:
    return {e["name"]: e.get("value") for e in triton(docs).get("env", [])}


def test_monitoring_is_on_by_default_and_can_be_switched_off(helm):
    assert env(helm.render(CPU))["SESSIONREC_MONITORING"] == "on"
    docs = helm.render(CPU, set_values=("monitoring.enabled=false", *ON))
    assert env(docs)["SESSIONREC_MONITORING"] == "off"
    assert not find(docs, "PrometheusRule", f"{FULLNAME}-monitoring")  # no rules over series nobody exports
    assert not find(docs, "ConfigMap", f"{FULLNAME}-monitoring-dashboard")


def test_rules_are_scoped_to_the_release_and_valid(helm, tmp_path):
    docs = helm.render(CPU, set_values=ON)
    rule = one(docs, "PrometheusRule", f"{FULLNAME}-monitoring")
    groups = rule["spec"]["groups"]
    assert [g["name"] for g in groups] == [g["name"] for g in RULES["groups"]]
    text = " ".join(r["expr"] for g in groups for r in g["rules"])
    selectors = re.findall(r"\b(sessionrec_[a-z_]+)\{([^}]*)\}", text)
    assert selectors
    for name, labels in selectors:
        assert f'namespace="{NAMESPACE}"' in labels and "job=" in labels, (name, labels)
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: scripts/setup.sh installs the Debian package")
    path = tmp_path / "rendered-monitoring-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_has_drift_and_live_quality_rows_over_real_series(helm):
    docs = helm.render(CPU, set_values=ON)
    config = one(docs, "ConfigMap", f"{FULLNAME}-monitoring-dashboard")
    dashboard = json.loads(config["data"]["sessionrec-monitoring.json"])
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert any(r.startswith("Drift") for r in rows) and any(r.startswith("Live quality") for r in rows)
    recorded = {r["record"] for g in RULES["groups"] for r in g["rules"] if "record" in r}
    exported = set(re.findall(r"`(sessionrec_[a-z_]+)", (CHART.parents[1] / "sessionrec" / "monitoring" /
                                                         "signals.py").read_text()))
    # the live-quality job's exposition (another scrape job than Triton's: read by namespace)
    live = set(re.findall(r"(sessionrec_(?:live|offline)_[a-z0-9_]+)", (CHART.parents[1] / "sessionrec" / "monitoring" /
                                                                       "live_quality.py").read_text()))
    assert {"sessionrec_live_hr_at_20", "sessionrec_offline_hr_at_20", "sessionrec_live_computed_at"} <= live
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names = re.findall(r"\b(sessionrec[:_][a-z0-9_:]+)\{", target["expr"])
            assert names, target["expr"]
            for name in names:
                assert name in recorded or name in exported or name in live, name
            if all(name in live for name in names):
                assert 'namespace="$namespace"' in target["expr"], target["expr"]
            else:
                assert 'namespace="$namespace", job="$job"' in target["expr"], target["expr"]
    titles = [p["title"] for p in dashboard["panels"]]
    assert any("HR@20" in t and "offline" in t for t in titles)  # live against offline, drawn


@pytest.mark.parametrize("drop, labelled, selector, firing", [
    (0.2, 400, "", ["1", "2"]),  # version 2's 500 labelled exposures pass a 400 guard
    (0.3, 1000, 'namespace="observability", job="textfile"', []),  # a 25% drop is within a 30% margin
])
def test_live_quality_thresholds_and_scrape_come_from_values(helm, tmp_path, drop, labelled, selector, firing):
    """The rendered rule, run by `promtool test rules` on the live-quality job's series as the chart's
    selector finds them: the values' margin and guard decide which versions fire (the file's own
    defaults are tested in tests/monitoring/test_monitoring_rules.py)."""
    from tests.monitoring.test_monitoring_rules import live_alert, live_series

    values = tmp_path / "live-quality-values.yaml"  # a file: `--set` passes 0.2 as a string (the schema wants a number)
    values.write_text(yaml.safe_dump({"monitoring": {"liveQuality": {
        "maxRelativeDrop": drop, "minLabelled": labelled, "selector": selector}}}))
    groups = one(helm.render(CPU, values, set_values=ON), "PrometheusRule", f"{FULLNAME}-monitoring")["spec"]["groups"]
    rules = tmp_path / "rendered-monitoring-rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    namespace, job = ("observability", "textfile") if selector else (NAMESPACE, f"{FULLNAME}-live-quality")
    extra = f'namespace="{namespace}",'
    series = live_series(job, extra) + live_series("someone-else", extra)  # another scrape: not read
    alerts = [live_alert("SessionrecLiveHitRateBelowOffline", "30m", firing, job=job, extra=extra),
              live_alert("SessionrecLiveMrrBelowOffline", "30m", ["3"], job=job, extra=extra)]  # 58% of offline
    test = {"rule_files": [str(rules)], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": alerts}]}
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: scripts/setup.sh installs the Debian package")
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
