"""Prometheus rules, adapter rules and dashboard queries: consistent with each other, accepted by a
real `promtool`, and computing what they claim on synthetic Triton series (`promtool test rules`).

promtool comes from Debian's `prometheus` package (`apt-get install prometheus`); the tests that
need it skip only when it is absent.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helm.conftest import CHART, FULLNAME, NAMESPACE, one

FILES = CHART / "files"
RECORDING = yaml.safe_load((FILES / "recording-rules.yaml").read_text())
ADAPTER = yaml.safe_load((FILES / "prometheus-adapter-rules.yaml").read_text())
DASHBOARD = json.loads((FILES / "dashboard.json").read_text())
# Triton metric names the rules may use (docs/ARCHITECTURE.md, plus the summary and failure
# counters of the same server).
TRITON_METRICS = {
    "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us",
    "nv_inference_request_success", "nv_inference_request_failure",
    "nv_inference_pending_request_count", "nv_inference_request_summary_us",
}
POD = f"{FULLNAME}-7d9f8c6b5-x2k4q"  # a pod name of this release's Deployment
OTHER_POD = f"{FULLNAME}-canary-7d9f8c6b5-x2k4q"  # a pod of another release whose name starts alike
JOB = f"{FULLNAME}-metrics"  # ServiceMonitor job label = the metrics Service's name

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")


def records() -> dict[str, str]:
    return {rule["record"]: rule["expr"] for group in RECORDING["groups"] for rule in group["rules"]}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=60)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


STEPS = 'model=~"preprocess|session_encoder|retrieval|session_recommender"'


def test_recording_rules_use_triton_metrics_of_the_steps():
    rules = records()
    assert set(rules) == {
        "sessionrec:queued_requests:rate1m", "sessionrec:pending_requests:avg1m",
        "sessionrec:request_latency_p95_ms:max", "sessionrec:request_error_ratio:rate5m",
        "sessionrec:requests:rate1m",
    }
    # Little's law: queue-microseconds per second / 1e6 = requests waiting; 0 at idle, no ratio floor.
    queued = rules["sessionrec:queued_requests:rate1m"]
    assert f"rate(nv_inference_queue_duration_us{{{STEPS}}}[1m])) / 1e6" in queued
    assert "compute" not in queued
    assert f"avg_over_time(nv_inference_pending_request_count{{{STEPS}}}[1m])" in rules["sessionrec:pending_requests:avg1m"]
    used = set(re.findall(r"\bnv_[a-z_]+", " ".join(rules.values())))
    assert used <= TRITON_METRICS, used - TRITON_METRICS


def test_adapter_rules_serve_the_recorded_series_under_the_hpa_names():
    custom = {rule["name"]["as"]: rule for rule in ADAPTER["rules"]["custom"]}
    assert set(custom) == {"sessionrec_queued_requests", "sessionrec_pending_requests"}
    for rule in custom.values():
        series = rule["seriesQuery"].split("{")[0].strip("'")
        assert series in records()
        assert re.fullmatch(rule["name"]["matches"], series)
        assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"},
                                                   "pod": {"resource": "pod"}}


def scoped(groups: list[dict], job: str) -> list[dict]:
    """The recording file's groups with namespace and job added to every Triton selector."""
    groups = json.loads(json.dumps(groups))
    for group in groups:
        for rule in group["rules"]:
            rule["expr"] = re.sub(r"(nv_inference_[a-z_]+)\{", rf'\1{{namespace="{NAMESPACE}", job="{job}", ', rule["expr"])
    return groups


def test_prometheus_rule_embeds_the_recording_file_scoped_to_the_release(rendered):
    groups = one(rendered["hpa"], "PrometheusRule")["spec"]["groups"]
    assert groups[:len(RECORDING["groups"])] == scoped(RECORDING["groups"], JOB)
    alerts = {rule["alert"]: rule for rule in groups[-1]["rules"]}
    assert set(alerts) == {"SessionrecLatencyP95High", "SessionrecErrorRateHigh", "SessionrecBacklogHigh",
                           "SessionrecPendingRequestsGrowing", "SessionrecMetricsAbsent"}
    assert alerts["SessionrecLatencyP95High"]["expr"].endswith("> 70")


def test_two_releases_record_disjoint_series(helm):
    """Recording rules are global in Prometheus: two releases (same namespace) must not write one series."""
    exprs = {}
    for release in ("recs", "recs-b"):
        text = helm.run("template", release, str(CHART), "--namespace", NAMESPACE, "-f",
                        str(CHART / "ci" / "hpa-values.yaml")).stdout
        rule = one([d for d in yaml.safe_load_all(text) if d], "PrometheusRule")
        exprs[release] = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r]
        for expr in exprs[release]:
            for selector in re.findall(r"nv_inference_[a-z_]+\{([^}]*)\}", expr):
                assert f'namespace="{NAMESPACE}"' in selector
                assert f'job="{release}-sessionrec-metrics"' in selector, selector
    assert not set(exprs["recs"]) & set(exprs["recs-b"])
    off = helm.render(CHART / "ci" / "hpa-values.yaml", set_values=("metrics.prometheusRule.recordingRules=false",))
    assert [g["name"] for g in one(off, "PrometheusRule")["spec"]["groups"]] == ["sessionrec.alerts"]


def test_dashboard_is_grafana_json():
    assert DASHBOARD["uid"] == "sessionrec-triton"
    assert {v["name"] for v in DASHBOARD["templating"]["list"]} == {"datasource", "namespace", "job"}
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in DASHBOARD["panels"]:
        assert panel["targets"] and all(target["expr"] for target in panel["targets"])


def dashboard_queries() -> list[str]:
    """Panel queries with the Grafana variables replaced by literal values."""
    exprs = [target["expr"] for panel in DASHBOARD["panels"] for target in panel["targets"]]
    return [expr.replace("$namespace", NAMESPACE).replace("$job", JOB) for expr in exprs]


@needs_promtool
def test_promtool_accepts_every_rule_and_query(rendered, tmp_path):
    (tmp_path / "recording.yaml").write_text((FILES / "recording-rules.yaml").read_text())
    for scenario in ("hpa", "keda"):  # ServiceMonitor and PodMonitor flavours of the alerts
        groups = one(rendered[scenario], "PrometheusRule")["spec"]["groups"]
        (tmp_path / f"{scenario}.yaml").write_text(yaml.safe_dump({"groups": groups}))
    queries = [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(dashboard_queries())]
    (tmp_path / "dashboard.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": queries}]}))
    result = promtool("check", "rules", "recording.yaml", "hpa.yaml", "keda.yaml", "dashboard.yaml", cwd=tmp_path)
    assert result.stdout.count("SUCCESS") == 4


def selector(name: str, **labels: str) -> str:
    return name + "{" + ", ".join(f'{key}="{value}"' for key, value in labels.items()) + "}"


def series(name: str, values: str, **labels: str) -> dict:
    return {"series": selector(name, **labels), "values": values}


def sample(name: str, value: float, **labels: str) -> dict:
    return {"labels": selector(name, **labels), "value": value}


@needs_promtool
def test_rules_compute_what_they_claim(rendered, tmp_path):
    """`promtool test rules` on synthetic Triton counters (scraped every 15 s)."""
    groups = one(rendered["hpa"], "PrometheusRule")["spec"]["groups"]
    for rule in groups[-1]["rules"]:
        rule.pop("annotations")  # promtool compares annotations verbatim; check_rules covers them
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    at = {"namespace": NAMESPACE, "job": JOB}
    encoder = dict(model="session_encoder", **at)
    recommend = dict(model="recommend", **at)
    busy, idle = dict(encoder, pod=POD), dict(encoder, pod=OTHER_POD)
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "15s",
        "tests": [
            {   # Busy pod: +1,500 s of queue time per 15 s scrape = 100 requests waiting on average,
                # over the alert's 64. Idle pod: flat counters -> 0. A pod of another release (other
                # job) is never recorded here.
                "interval": "15s",
                "input_series": [
                    series("nv_inference_queue_duration_us", "0+1500000000x60", **busy),
                    series("nv_inference_compute_infer_duration_us", "0+15000x60", **busy),
                    series("nv_inference_queue_duration_us", "0x60", **idle),
                    series("nv_inference_compute_infer_duration_us", "0x60", **idle),
                    series("nv_inference_queue_duration_us", "0+1500000000x60",
                           **dict(busy, job="other-release-metrics", pod="other-7d9f8c6b5-x2k4q")),
                    series("nv_inference_pending_request_count", "0+1x60", **busy),
                    series("nv_inference_request_summary_us", "80000x60", quantile="0.95", pod=POD, **recommend),
                    series("nv_inference_request_success", "0+96x60", pod=POD, **recommend),
                    series("nv_inference_request_failure", "0+32x60", pod=POD, **recommend),
                ],
                "promql_expr_test": [
                    {"expr": "sessionrec:queued_requests:rate1m", "eval_time": "5m", "exp_samples": [
                        sample("sessionrec:queued_requests:rate1m", 100, namespace=NAMESPACE, pod=POD),
                        sample("sessionrec:queued_requests:rate1m", 0, namespace=NAMESPACE, pod=OTHER_POD)]},
                    {"expr": "sessionrec:request_latency_p95_ms:max", "eval_time": "5m", "exp_samples": [
                        sample("sessionrec:request_latency_p95_ms:max", 80, **at)]},
                    {"expr": "sessionrec:request_error_ratio:rate5m", "eval_time": "10m", "exp_samples": [
                        sample("sessionrec:request_error_ratio:rate5m", 0.25, **at)]},  # 32 / (96 + 32)
                ],
                "alert_rule_test": [
                    {"alertname": "SessionrecLatencyP95High", "eval_time": "10m", "exp_alerts": [
                        {"exp_labels": {"severity": "warning", **at}}]},
                    {"alertname": "SessionrecErrorRateHigh", "eval_time": "10m", "exp_alerts": [
                        {"exp_labels": {"severity": "warning", **at}}]},
                    # Only this release's pod; the look-alike pod of another release is ignored.
                    {"alertname": "SessionrecBacklogHigh", "eval_time": "10m", "exp_alerts": [
                        {"exp_labels": {"severity": "warning", "namespace": NAMESPACE, "pod": POD}}]},
                    {"alertname": "SessionrecPendingRequestsGrowing", "eval_time": "14m", "exp_alerts": [
                        {"exp_labels": {"severity": "warning"}}]},
                    {"alertname": "SessionrecMetricsAbsent", "eval_time": "14m", "exp_alerts": []},
                ],
            },
            {   # Healthy: 40 ms p95, no failures, no queueing -> nothing fires.
                "interval": "15s",
                "input_series": [
                    series("nv_inference_queue_duration_us", "0+1000x60", **busy),
                    series("nv_inference_compute_infer_duration_us", "0+15000x60", **busy),
                    series("nv_inference_request_summary_us", "40000x60", quantile="0.95", pod=POD, **recommend),
                    series("nv_inference_request_success", "0+100x60", pod=POD, **recommend),
                    series("nv_inference_request_failure", "0x60", pod=POD, **recommend),
                ],
                "alert_rule_test": [
                    {"alertname": name, "eval_time": "14m", "exp_alerts": []}
                    for name in ("SessionrecLatencyP95High", "SessionrecErrorRateHigh",
                                 "SessionrecBacklogHigh", "SessionrecMetricsAbsent")
                ],
            },
            {   # No Triton series from this release at all -> the autoscaler is blind: alert.
                "interval": "15s",
                "input_series": [series("up", "1x60", job="something-else")],
                "alert_rule_test": [
                    {"alertname": "SessionrecMetricsAbsent", "eval_time": "14m", "exp_alerts": [
                        {"exp_labels": {"severity": "warning", "model": "recommend", "namespace": NAMESPACE}}]},
                ],
            },
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    promtool("test", "rules", "tests.yaml", cwd=tmp_path)
