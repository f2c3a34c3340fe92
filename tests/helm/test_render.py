"""The chart lints strictly, renders for every ci/ scenario, and every manifest matches its schema.

Built-in kinds are validated against the Kubernetes JSON schemas that kubernetes-validate ships
(strict: unknown fields fail). CRD kinds are validated against the small structural schemas in
tests/helm/schemas/, which reuse the Kubernetes definitions for the embedded core types.
"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from functools import lru_cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import referencing
from referencing.jsonschema import DRAFT202012

from tests.helm.conftest import CHART, FULLNAME, KUBE_VERSION, SCENARIOS, find, one, triton

SCHEMAS = Path(__file__).parent / "schemas"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.json",
}

# What each scenario must render beyond the always-on objects, and what it must not.
ALWAYS = {"Deployment", "Service", "ServiceAccount", "Pod"}
EXPECTED = {
    # One replica: no PodDisruptionBudget (it would protect nothing and block drains).
    "cpu": (set(), {"HorizontalPodAutoscaler", "ScaledObject", "PersistentVolumeClaim", "PodDisruptionBudget"}),
    "gpu": ({"PersistentVolumeClaim"}, {"HorizontalPodAutoscaler", "ScaledObject"}),
    "hpa": ({"HorizontalPodAutoscaler", "ServiceMonitor", "PrometheusRule", "ConfigMap", "NetworkPolicy"},
            {"ScaledObject", "PodMonitor"}),
    "keda": ({"ScaledObject", "PodMonitor", "PrometheusRule"},
             {"HorizontalPodAutoscaler", "ServiceMonitor", "PodDisruptionBudget"}),  # minReplicas 1
    "pvc": (set(), {"PersistentVolumeClaim"}),  # both claims exist already
    "s3": (set(), {"HorizontalPodAutoscaler"}),
    "gcs": (set(), {"HorizontalPodAutoscaler"}),
    "tls": (set(), {"HorizontalPodAutoscaler"}),
    "shards": (set(), {"HorizontalPodAutoscaler"}),  # + a Deployment and Service per shard (test_shards_chart.py)
}


def test_every_scenario_has_expectations():
    assert set(SCENARIOS) == set(EXPECTED), "add the new ci/ scenario to EXPECTED"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint_strict(helm, scenario):
    result = helm.run("lint", "--strict", str(CHART), "--values", str(SCENARIOS[scenario]),
                      "--kube-version", KUBE_VERSION)
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_renders_expected_objects(rendered, scenario):
    kinds = {doc["kind"] for doc in rendered[scenario]}
    wanted, unwanted = EXPECTED[scenario]
    assert ALWAYS | wanted <= kinds
    assert not kinds & unwanted
    names = [(doc["kind"], doc["metadata"]["name"]) for doc in rendered[scenario]]
    assert len(names) == len(set(names)), "duplicate object"
    for doc in rendered[scenario]:
        assert doc["metadata"]["namespace"] == "recs-prod"
        assert len(doc["metadata"]["name"]) <= 63


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_python_stubs_start_one_blas_thread(rendered, scenario):
    # Each python stub would otherwise start (and spin) a numpy OpenBLAS thread per node core.
    env = triton(rendered[scenario])["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names)), "duplicate env entry"
    assert {"name": "OPENBLAS_NUM_THREADS", "value": "1"} in env


@lru_cache(maxsize=1)
def _crd_registry() -> referencing.Registry:
    definitions = kubernetes_validate.utils.schema_contents(
        f"kubernetes-json-schema/v{KUBE_VERSION}-local-strict/_definitions.json", KUBE_VERSION)
    return referencing.Registry().with_resource(
        "https://kubernetes.io/api/_definitions.json", DRAFT202012.create_resource(definitions))


def validate_crd(doc: dict) -> None:
    key = (doc["apiVersion"], doc["kind"])
    assert key in CRD_SCHEMAS, f"no schema for {key}: add one to tests/helm/schemas/"
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[key]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema, registry=_crd_registry()).validate(doc)


# The chart does not branch on the cluster version, so one rendering is checked against the pinned
# version and the newest one kubernetes-validate ships (catches an API removed since).
VALIDATE_VERSIONS = sorted({KUBE_VERSION, kubernetes_validate.utils.latest_version()})


@pytest.mark.parametrize("version", VALIDATE_VERSIONS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_manifests_match_schemas(rendered, scenario, version):
    for doc in rendered[scenario]:
        where = f"{scenario}: {doc['kind']}/{doc['metadata']['name']}"
        if (doc["apiVersion"], doc["kind"]) in CRD_SCHEMAS:
            try:
                validate_crd(doc)
            except jsonschema.ValidationError as error:
                pytest.fail(f"{where}: {error.json_path}: {error.message}")
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            pytest.fail(f"{where}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(f"{where}: {error.message}")


def test_crd_schemas_catch_a_misspelt_field(rendered):
    """The structural CRD schemas are strict enough to matter."""
    monitor = one(rendered["hpa"], "ServiceMonitor")
    broken = json.loads(json.dumps(monitor))
    broken["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(broken)
    scaled = json.loads(json.dumps(one(rendered["keda"], "ScaledObject")))
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 8  # KEDA wants strings
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(scaled)


def test_kubernetes_schemas_catch_a_misspelt_field(rendered):
    deployment = json.loads(json.dumps(one(rendered["gpu"], "Deployment", FULLNAME)))
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def test_default_values_ask_for_the_repository(helm):
    """Defaults alone cannot deploy (no bucket): a `required` message says what to set, not a schema error."""
    result = helm.template(check=False)
    assert result.returncode != 0
    assert "modelRepository.s3.uri is required" in result.stderr and "--set modelRepository.s3.uri=s3://" in result.stderr
    assert "schema" not in result.stderr.lower()
    for source, key in (("gcs", "modelRepository.gcs.uri"), ("pvc", "modelRepository.pvc.claimName")):
        result = helm.template(set_values=(f"modelRepository.source={source}",), check=False)
        assert result.returncode != 0 and f"{key} is required" in result.stderr


@pytest.mark.parametrize("assignment, words", [
    ("modelRepositry.source=s3", ["modelRepositry"]),             # misspelt top-level key
    ("gpu.cont=2", ["cont"]),                                     # misspelt nested key
    ("autoscaling.metric=cpu", ["metric"]),                       # not one of the enum
    ("modelRepository.source=http", ["source"]),
    ("image.tag=latest", ["tag"]),                                # unpinned image
    ("tests.image.tag=latest", ["tag"]),
    ("triton.extraArgs[0]=--model-control-mode=poll", ["extraArgs"]),
    ("podLabels.app\\.kubernetes\\.io/name=other", ["app.kubernetes.io/name"]),  # would break the selector
])
def test_schema_rejects_bad_values(helm, assignment, words):
    result = helm.template(SCENARIOS["gpu"], set_values=(assignment,), check=False)
    assert result.returncode != 0, f"--set {assignment} rendered"
    assert "schema" in result.stderr.lower()
    for word in words:
        assert word in result.stderr


def test_hpa_and_keda_are_exclusive(helm):
    result = helm.template(SCENARIOS["hpa"], set_values=("autoscaling.keda.enabled=true",), check=False)
    assert result.returncode != 0
    assert "exclusive" in result.stderr


def test_grace_period_covers_drain(helm):
    result = helm.template(SCENARIOS["gpu"], set_values=("terminationGracePeriodSeconds=20",), check=False)
    assert result.returncode != 0
    assert "terminationGracePeriodSeconds" in result.stderr


def test_optional_objects_are_off_by_default(helm):
    docs = helm.render(set_values=("modelRepository.s3.uri=s3://bucket/repository",))
    kinds = {doc["kind"] for doc in docs}
    assert kinds == {"Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "Pod"}
    assert len(find(docs, "Service")) == 3  # main + metrics + headless


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_notes_render(helm, scenario):
    """NOTES.txt is not part of `helm template`; a client-side dry-run install renders it."""
    result = helm.run("install", "recs", str(CHART), "--namespace", "recs-prod", "--dry-run=client",
                      "--values", str(SCENARIOS[scenario]))
    notes = result.stdout.split("\nNOTES:\n", 1)[1]
    assert f"deployment/{FULLNAME}" in notes
    assert "helm test recs" in notes
    assert "<no value>" not in notes


def _local_tritonserver() -> Path | None:
    """The tritonserver 2.51 binary that nvidia-pytriton 0.7.0 ships (same release as NGC 24.10)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(spec.submodule_search_locations[0]) / "tritonserver" / "bin" / "tritonserver"
    return binary if binary.exists() else None


@pytest.mark.skipif(_local_tritonserver() is None, reason="nvidia-pytriton (tritonserver 2.51) not installed")
def test_triton_knows_every_flag_the_chart_passes(rendered):
    result = subprocess.run([str(_local_tritonserver()), "--help"], capture_output=True, text=True, timeout=30)
    help_text = result.stdout + result.stderr  # the usage text goes to stderr
    known = set(re.findall(r"^\s+(--[a-z-]+)", help_text, re.MULTILINE))
    assert "--model-control-mode" in known
    for scenario, docs in rendered.items():
        for arg in triton(docs)["args"][1:]:  # args[0] is tritonserver itself
            flag = arg.split("=", 1)[0]
            assert flag in known, f"{scenario}: tritonserver 2.51 has no {flag}"
