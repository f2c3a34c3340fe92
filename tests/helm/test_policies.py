"""Policies over the rendered manifests of every ci/ scenario: what a reviewer of the chart would
check by hand, checked on each change.
"""
from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.helm.conftest import (CHART, FULLNAME, NAMESPACE, SCENARIOS, containers, find, one,
                                 pod_specs, triton)

ALL = sorted(SCENARIOS)
GPU = "nvidia.com/gpu"


def quantity_bytes(value: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    return float(match.group(1)) * units.get(match.group(2), 1)


@pytest.mark.parametrize("scenario", ALL)
def test_every_container_has_resources(rendered, scenario):
    for name, spec in pod_specs(rendered[scenario]):
        for container in containers(spec):
            resources = container.get("resources", {})
            where = f"{scenario}: {name}/{container['name']}"
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), f"{where}: requests"
            assert "memory" in resources.get("limits", {}), f"{where}: memory limit"


@pytest.mark.parametrize("scenario", ALL)
def test_every_container_runs_as_non_root(rendered, scenario):
    for name, spec in pod_specs(rendered[scenario]):
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, f"{scenario}: {name}"
        assert pod.get("runAsUser", 0) != 0
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        for container in containers(spec):
            context = container.get("securityContext", {})
            where = f"{scenario}: {name}/{container['name']}"
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert context.get("runAsUser", pod["runAsUser"]) != 0, where
            assert not context.get("privileged", False), where


@pytest.mark.parametrize("scenario", ALL)
def test_images_are_pinned(rendered, scenario):
    for name, spec in pod_specs(rendered[scenario]):
        for container in containers(spec):
            image = container["image"]
            if "@sha256:" in image:
                continue
            repository, _, tag = image.rpartition(":")
            assert repository and "/" not in tag, f"{scenario}: {name}/{container['name']}: {image} has no tag"
            assert tag != "latest", f"{scenario}: {image}"


@pytest.mark.parametrize("scenario", ALL)
def test_writable_paths_are_volumes(rendered, scenario):
    """With a read-only root filesystem, every path Triton and the init steps write is a volume."""
    deployment = one(rendered[scenario], "Deployment", FULLNAME)
    spec = deployment["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in triton(rendered[scenario])["volumeMounts"]}
    for path in ("/tmp", "/dev/shm", "/models", "/engine-cache"):
        assert path in mounts, f"{scenario}: {path} not mounted"
    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shm["medium"] == "Memory"
    memory_limit = triton(rendered[scenario])["resources"]["limits"]["memory"]
    assert quantity_bytes(shm["sizeLimit"]) < quantity_bytes(memory_limit), "shm counts against the memory limit"
    for container in containers(spec):
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes


@pytest.mark.parametrize("scenario", ALL)
def test_triton_probes(rendered, scenario):
    container = triton(rendered[scenario])
    # Readiness: the ensemble is ready and every python step answers at normal priority.
    ready = container["readinessProbe"]["exec"]["command"][2]
    assert "127.0.0.1:8000/v2/models/recommend/ready" in ready and "/tmp/sessionrec-probe/*.ready.json" in ready
    # Liveness: a real inference per python step (a dead stub leaves /v2/health/live green), at
    # the top priority level, straight to the steps: never through `recommend` (the SLO series).
    live = container["livenessProbe"]["exec"]["command"][2]
    assert "/tmp/sessionrec-probe/*.live.json" in live and "/v2/models/$step/infer" in live
    assert "recommend" not in live
    assert container["livenessProbe"]["timeoutSeconds"] > container["readinessProbe"]["timeoutSeconds"]
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/v2/health/live"
    # Long enough for model loading plus first-load engine builds.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


@pytest.mark.parametrize("scenario", ALL)
def test_triton_loads_the_prepared_models_and_refuses_model_control(rendered, scenario):
    container = triton(rendered[scenario])
    args = container["args"]
    # The image's entrypoint runs the args (NGC's driver check, CUDA forward compatibility).
    assert "command" not in container and args[0] == "tritonserver"
    assert "--model-control-mode=none" in args
    assert not any(arg.startswith("--load-model") or "poll" in arg for arg in args)
    restricted = "shared-memory,model-repository,trace,logging:sessionrec-admin=$(SESSIONREC_ADMIN_KEY)"
    assert f"--http-restricted-api={restricted}" in args and f"--grpc-restricted-protocol={restricted}" in args
    key = {e["name"]: e for e in container["env"]}["SESSIONREC_ADMIN_KEY"]
    assert key["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.uid"}}  # known to nobody outside
    assert "--model-repository=/models" in args
    assert "--metrics-config=summary_latencies=true" in args  # the p95 rule needs it
    assert {"--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"} <= set(args)


@pytest.mark.parametrize("scenario", ALL)
def test_ports_and_services(rendered, scenario):
    docs = rendered[scenario]
    ports = {port["name"]: port["containerPort"] for port in triton(docs)["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    main = one(docs, "Service", FULLNAME)
    # Serving ports only: a public LoadBalancer on the main Service never exposes metrics.
    assert {p["name"]: p["port"] for p in main["spec"]["ports"]} == {"http": 8000, "grpc": 8001}
    metrics = one(docs, "Service", f"{FULLNAME}-metrics")
    assert metrics["spec"]["type"] == "ClusterIP"
    assert {p["name"]: p["port"] for p in metrics["spec"]["ports"]} == {"metrics": 8002}
    headless = one(docs, "Service", f"{FULLNAME}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert {p["name"] for p in headless["spec"]["ports"]} >= {"grpc", "http"}
    selector = one(docs, "Deployment", FULLNAME)["spec"]["selector"]["matchLabels"]
    assert main["spec"]["selector"] == headless["spec"]["selector"] == selector


@pytest.mark.parametrize("scenario", ALL)
def test_only_server_pods_match_the_selector(rendered, scenario):
    """The helm test pod must not become a Service endpoint or count in the PDB."""
    docs = rendered[scenario]
    selector = one(docs, "Deployment", FULLNAME)["spec"]["selector"]["matchLabels"]
    template_labels = one(docs, "Deployment", FULLNAME)["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items()
    for pod in find(docs, "Pod"):
        assert not selector.items() <= pod["metadata"]["labels"].items(), pod["metadata"]["name"]
    for pdb in find(docs, "PodDisruptionBudget"):  # none at one replica
        assert pdb["spec"]["selector"]["matchLabels"] == selector


@pytest.mark.parametrize("scenario", ALL)
def test_gpu_scheduling(rendered, scenario):
    docs = rendered[scenario]
    spec = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    values = yaml.safe_load(SCENARIOS[scenario].read_text())
    gpu_on = values.get("gpu", {}).get("enabled", True)
    limits = triton(docs)["resources"]["limits"]
    args = triton(docs)["args"]
    engines = values.get("engineBuild", {}).get("enabled", False)
    config_flags = [arg for arg in args if arg.startswith("--model-config-name")]
    if gpu_on:
        # Triton serves configs/gpu.pbtxt (or tensorrt.pbtxt with native plans), not the CPU config.pbtxt.
        assert config_flags == [f"--model-config-name={'tensorrt' if engines else 'gpu'}"]
        assert limits[GPU] == 1
        # The GPU request is what lands pods on GPU nodes; a feature-discovery label would leave
        # them Pending on GKE managed-driver pools and EKS without discovery.
        assert "nodeSelector" not in spec
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        assert "--allow-gpu-metrics=true" in args
    else:
        assert config_flags == []
        assert GPU not in limits
        assert "nodeSelector" not in spec and "tolerations" not in spec
        assert "--allow-gpu-metrics=false" in args
        assert "runtimeClassName" not in spec


def test_gpu_scenario_builds_engines_on_the_node(rendered):
    spec = one(rendered["gpu"], "Deployment", FULLNAME)["spec"]["template"]["spec"]
    names = [c["name"] for c in spec["initContainers"]]
    assert names == ["fetch-repository", "prepare-repository", "build-engine"]
    build = spec["initContainers"][-1]
    assert "command" not in build  # the TensorRT image's entrypoint runs the args
    assert build["args"] == ["sessionrec", "build-engine", "--repository", "/models", "--version", "latest",
                             "--engine-cache=/engine-cache/plans"]
    # Builder and server images come from one NGC release (same TensorRT version).
    release = lambda image: image.rpartition(":")[2].rpartition("-triton")[2]  # noqa: E731
    assert build["image"].startswith("registry.example.com/sessionrec/engine-builder:")
    assert release(build["image"]) == release(triton(rendered["gpu"])["image"]) == "24.10"
    assert build["resources"]["limits"][GPU] == 1
    assert spec["runtimeClassName"] == "nvidia"
    cache = {v["name"]: v for v in spec["volumes"]}["engine-cache"]
    assert cache["persistentVolumeClaim"]["claimName"] == f"{FULLNAME}-engine-cache"
    claim = one(rendered["gpu"], "PersistentVolumeClaim", f"{FULLNAME}-engine-cache")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


@pytest.mark.parametrize("scenario, fetch", [
    ("s3", ["aws", "s3", "sync"]), ("gcs", ["gcloud", "storage", "rsync"]), ("pvc", None),
])
def test_model_repository_sources(rendered, scenario, fetch):
    spec = one(rendered[scenario], "Deployment", FULLNAME)["spec"]["template"]["spec"]
    init = {c["name"]: c for c in spec["initContainers"]}
    prepare = init["prepare-repository"]
    env = {e["name"]: e.get("value") for e in prepare["env"]}
    if fetch:
        assert init["fetch-repository"]["command"][:3] == fetch
        assert init["fetch-repository"]["command"][-1] == "/models"
        assert "SOURCE_DIR" not in env
    else:
        assert "fetch-repository" not in init
        claim = {v["name"]: v for v in spec["volumes"]}["repository-source"]["persistentVolumeClaim"]
        assert claim == {"claimName": "sessionrec-models", "readOnly": True}
        mount = {m["name"]: m for m in prepare["volumeMounts"]}["repository-source"]
        assert mount["readOnly"] is True and mount["subPath"] == "repository"
        assert env["SOURCE_DIR"] == "/repository-source"


def test_s3_uri_may_name_the_version(rendered):
    """ci/s3 uses one prefix per export: the URI is rendered with tpl."""
    spec = one(rendered["s3"], "Deployment", FULLNAME)["spec"]["template"]["spec"]
    fetch = {c["name"]: c for c in spec["initContainers"]}["fetch-repository"]
    assert "s3://sessionrec/exports/20250101/repository" in fetch["command"]
    assert "--endpoint-url=http://minio.storage.svc:9000" in fetch["command"]
    assert fetch["envFrom"] == [{"secretRef": {"name": "sessionrec-minio"}}]
    assert triton(rendered["s3"])["image"].endswith(
        "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")


def test_new_model_version_rolls_every_pod_and_nothing_else(helm):
    """Only the pod template changes (so a rolling update); the selector never does."""
    before = helm.render(SCENARIOS["gpu"])
    after = helm.render(SCENARIOS["gpu"], set_values=("model.version=13",))
    old, new = one(before, "Deployment", FULLNAME), one(after, "Deployment", FULLNAME)
    assert old["spec"]["selector"] == new["spec"]["selector"]
    assert old["spec"]["template"]["metadata"]["annotations"]["sessionrec.io/model-version"] == "12"
    assert new["spec"]["template"]["metadata"]["annotations"]["sessionrec.io/model-version"] == "13"
    assert old["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    unchanged = lambda docs: [d for d in docs if d["kind"] != "Deployment"]  # noqa: E731
    assert unchanged(before) == unchanged(after)


@pytest.mark.parametrize("scenario", ["hpa", "keda"])
def test_autoscaled_deployment_leaves_replicas_to_the_autoscaler(rendered, scenario):
    assert "replicas" not in one(rendered[scenario], "Deployment", FULLNAME)["spec"]
    assert one(rendered["cpu"], "Deployment", FULLNAME)["spec"]["replicas"] == 1


def test_hpa(rendered):
    hpa = one(rendered["hpa"], "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 6)
    (metric,) = spec["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "sessionrec_queued_requests"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "4000m"}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert spec["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0


def test_hpa_on_pending_requests(helm):
    docs = helm.render(SCENARIOS["hpa"], set_values=("autoscaling.metric=pendingRequests",
                                                     "autoscaling.pendingRequestsTarget=6"))
    (metric,) = one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "sessionrec_pending_requests"
    assert metric["pods"]["target"]["averageValue"] == "6000m"


def test_keda(rendered):
    scaled = one(rendered["keda"], "ScaledObject")["spec"]
    assert scaled["scaleTargetRef"]["name"] == FULLNAME
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 4)
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["threshold"] == "8"
    assert trigger["metadata"]["query"] == (
        f'sum(sessionrec:pending_requests:avg1m{{namespace="{NAMESPACE}", '
        f'pod=~"{FULLNAME}-[a-z0-9]+-[a-z0-9]+"}})')
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 600


def test_monitors_scrape_each_pod_once(rendered):
    monitor = one(rendered["hpa"], "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    services = [s for s in find(rendered["hpa"], "Service")
                if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert [s["metadata"]["name"] for s in services] == [f"{FULLNAME}-metrics"]
    pod_monitor = one(rendered["keda"], "PodMonitor")
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_dashboard_configmap(rendered):
    configmap = one(rendered["hpa"], "ConfigMap", f"{FULLNAME}-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"]["sessionrec-triton.json"].strip() == \
        (CHART / "files" / "dashboard.json").read_text().strip()


def test_tls(rendered):
    docs = rendered["tls"]
    args = triton(docs)["args"]
    assert {"--grpc-use-ssl=true", "--grpc-server-cert=/etc/sessionrec/tls/tls.crt",
            "--grpc-server-key=/etc/sessionrec/tls/tls.key", "--grpc-use-ssl-mutual=true",
            "--grpc-root-cert=/etc/sessionrec/tls/ca.crt"} <= set(args)
    spec = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    tls = {v["name"]: v for v in spec["volumes"]}["tls"]
    assert tls["secret"]["secretName"] == "sessionrec-grpc-tls"
    mount = {m["name"]: m for m in triton(docs)["volumeMounts"]}["tls"]
    assert mount["mountPath"] == "/etc/sessionrec/tls" and mount["readOnly"] is True
    for scenario in ("gpu", "cpu"):
        assert not any("ssl" in arg for arg in triton(rendered[scenario])["args"])


def test_network_policy_admits_clients_scrapers_and_the_test_pod(rendered):
    policy = one(rendered["hpa"], "NetworkPolicy")["spec"]
    serving, metrics = policy["ingress"]
    assert {p["port"] for p in serving["ports"]} == {"http", "grpc"}
    test_pod = one(rendered["hpa"], "Pod")
    peers = [peer.get("podSelector", {}).get("matchLabels", {}) for peer in serving["from"]]
    assert any(labels and labels.items() <= test_pod["metadata"]["labels"].items() for labels in peers)
    assert {p["port"] for p in metrics["ports"]} == {"metrics"}


@pytest.mark.parametrize("scenario", ALL)
def test_helm_test_pod(rendered, scenario):
    pod = one(rendered[scenario], "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["TRITON_URL"] == f"http://{FULLNAME}.{NAMESPACE}.svc:8000"
    request = json.loads(env["REQUEST"])
    inputs = {i["name"]: i for i in request["inputs"]}
    assert inputs["ITEMS"]["datatype"] == "INT64" and inputs["ITEMS"]["shape"][0] == 1
    assert inputs["ITEMS"]["shape"][1] == len(inputs["ITEMS"]["data"])
    assert inputs["K"] == {"name": "K", "datatype": "INT32", "shape": [1, 1], "data": [int(env["K"])]}
    assert inputs["EXCLUDE_SEEN"]["datatype"] == "BOOL" and inputs["EXCLUDE_SEEN"]["shape"] == [1, 1]


def test_engine_build_needs_a_gpu(helm):
    result = helm.template(SCENARIOS["cpu"], set_values=("engineBuild.enabled=true",), check=False)
    assert result.returncode != 0
    assert "engineBuild.enabled needs gpu.enabled" in result.stderr
