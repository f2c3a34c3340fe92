"""The production-hardening items of the chart (issue 11), one test (or more) each, at render or
script level. The live ones (admin API refused, DNS re-resolution, probes under load and after a
stub dies, the autoscaling metric at idle and under load) are in test_live_hardening.py.
"""
from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from tests.helm.conftest import CHART, FULLNAME, SCENARIOS, containers, find, one, pod_specs, triton
from tests.helm.test_scripts import fake_repository, run_prepare

GPU_SCENARIOS = [name for name, path in SCENARIOS.items()
                 if (yaml.safe_load(path.read_text()).get("gpu") or {}).get("enabled", True)]


def pod_spec(docs: list[dict]) -> dict:
    return one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]


def cache_path(repository) -> str:
    text = (repository / "session_encoder" / "configs" / "gpu.pbtxt").read_text()
    (path,) = re.findall(r'key: "trt_engine_cache_path"\s*value: "([^"]*)"', text)
    return path


# 1. Stale TensorRT engines --------------------------------------------------------------------

def test_engine_cache_is_keyed_by_version_weights_gpu_and_image(rendered, tmp_path):
    """Two exports of the same architecture (same file and tensor names, what onnxruntime hashes)
    get two cache paths, and so do two GPU products and two images."""
    paths = {}
    for name, version, weights in (("a", 12, b"weights A"), ("b", 13, b"weights B"), ("c", 12, b"weights C")):
        repository = tmp_path / name
        repository.mkdir()
        fake_repository(repository, versions=(version,), pinned=version)
        (repository / "session_encoder" / str(version) / "model.onnx").write_bytes(weights)
        result = run_prepare(rendered["s3"], repository, MODEL_VERSION=str(version))
        assert result.returncode == 0, result.stderr
        paths[name] = cache_path(repository)
        assert (tmp_path / f"{name}-pod" / "engine-cache" / "ort").is_dir()
    assert len(set(paths.values())) == 3  # same version number, other weights: still another path
    assert paths["a"].startswith(str(tmp_path / "a-pod" / "engine-cache" / "ort" / "v12-"))
    assert "NVIDIA_L4" in paths["a"] and paths["a"].endswith("-triton_sha256_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")  # ci/s3 pins a digest

    other_gpu = tmp_path / "a-other-gpu"
    other_gpu.mkdir()
    fake_repository(other_gpu, versions=(12,), pinned=12)
    (other_gpu / "session_encoder" / "12" / "model.onnx").write_bytes(b"weights A")
    from tests.helm.test_scripts import fake_nvidia_smi
    smi = fake_nvidia_smi(tmp_path / "h100-bin", "NVIDIA H100 80GB HBM3")
    result = run_prepare(rendered["s3"], other_gpu, MODEL_VERSION="12", PATH=f"{smi}:/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    assert cache_path(other_gpu).rsplit("/", 1)[1] != paths["a"].rsplit("/", 1)[1]


def test_engine_cache_needs_the_gpu_product(rendered, tmp_path):
    fake_repository(tmp_path)
    result = run_prepare(rendered["s3"], tmp_path, MODEL_VERSION="12", PATH="/usr/bin:/bin")  # no nvidia-smi
    assert result.returncode != 0 and "nvidia-smi cannot name the GPU" in result.stderr


def test_prepare_container_sees_the_gpu_it_keys_the_cache_by(rendered):
    for scenario in GPU_SCENARIOS:
        spec = pod_spec(rendered[scenario])
        prepare = {c["name"]: c for c in spec["initContainers"]}["prepare-repository"]
        assert prepare["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert {m["name"] for m in prepare["volumeMounts"]} >= {"engine-cache", "tmp"}
    cpu_prepare = {c["name"]: c for c in pod_spec(rendered["cpu"])["initContainers"]}["prepare-repository"]
    assert "nvidia.com/gpu" not in cpu_prepare["resources"].get("limits", {})
    assert "ENGINE_CACHE" not in {e["name"] for e in cpu_prepare["env"]}


def test_values_no_longer_call_a_shared_cache_safe():
    text = (CHART / "values.yaml").read_text()
    assert "one shared volume is safe" not in text
    assert "onnxruntime issues 6455, 32254" in text


# 2. Model control and metrics exposure ---------------------------------------------------------

def test_a_public_load_balancer_never_exposes_metrics(helm):
    docs = helm.render(SCENARIOS["s3"], set_values=("service.type=LoadBalancer",))
    main = one(docs, "Service", FULLNAME)
    assert main["spec"]["type"] == "LoadBalancer"
    assert 8002 not in [p["port"] for p in main["spec"]["ports"]]
    assert one(docs, "Service", f"{FULLNAME}-metrics")["spec"]["type"] == "ClusterIP"


def test_admin_key_from_a_secret(helm):
    docs = helm.render(SCENARIOS["s3"], set_values=("triton.adminKeySecret=triton-admin",))
    key = {e["name"]: e for e in triton(docs)["env"]}["SESSIONREC_ADMIN_KEY"]
    assert key["valueFrom"] == {"secretKeyRef": {"name": "triton-admin", "key": "admin-key"}}
    docs = helm.render(SCENARIOS["s3"], set_values=("triton.restrictedApis=null",))
    assert not any("restricted" in arg for arg in triton(docs)["args"])


@pytest.mark.parametrize("flag", ["--model-control-mode=explicit", "--load-model=*"])
def test_schema_refuses_model_control_flags(helm, flag):
    result = helm.template(SCENARIOS["s3"], set_values=(f"triton.extraArgs[0]={flag}",), check=False)
    assert result.returncode != 0 and "extraArgs" in result.stderr


# 3. Entrypoint -------------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_project_images_keep_their_entrypoint(rendered, scenario):
    for _, spec in pod_specs(rendered[scenario]):
        for container in containers(spec):
            if "sessionrec/" in container["image"]:  # the server and engine-builder images (NGC based)
                assert "command" not in container, container["name"]
    assert triton(rendered[scenario])["args"][0] == "tritonserver"


# 4. Rollout deadline -------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_progress_deadline_covers_the_startup_budget(rendered, scenario):
    deployment = one(rendered[scenario], "Deployment", FULLNAME)["spec"]
    startup = triton(rendered[scenario])["startupProbe"]
    assert deployment["progressDeadlineSeconds"] > startup["periodSeconds"] * startup["failureThreshold"]
    assert deployment["minReadySeconds"] == 0


def test_a_deadline_below_the_startup_budget_is_refused(helm):
    result = helm.template(SCENARIOS["s3"], set_values=("progressDeadlineSeconds=600",), check=False)
    assert result.returncode != 0
    assert "progressDeadlineSeconds (600)" in result.stderr and "900" in result.stderr
    docs = helm.render(SCENARIOS["s3"], set_values=("progressDeadlineSeconds=600", "probes.startup.failureThreshold=30",
                                                    "minReadySeconds=20"))
    assert one(docs, "Deployment", FULLNAME)["spec"]["minReadySeconds"] == 20


# 5. Connection age with the headless Service --------------------------------------------------

def test_connection_age_when_the_headless_service_is_on(rendered, helm):
    args = triton(rendered["s3"])["args"]
    assert "--grpc-max-connection-age=60000" in args and "--grpc-max-connection-age-grace=10000" in args
    off = triton(helm.render(SCENARIOS["s3"], set_values=("service.headless.enabled=false",)))["args"]
    assert not any("max-connection-age" in arg for arg in off)


def test_client_options_no_longer_deny_the_server_flag():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / "clients" / "options.py").read_text()
    assert "has no server-side max-connection-age" not in text
    assert "--grpc-max-connection-age" in text


# 6. Probes and warm-up -------------------------------------------------------------------------

def test_prepare_writes_probe_bodies_for_every_python_step(rendered, tmp_path):
    fake_repository(tmp_path)
    result = run_prepare(rendered["s3"], tmp_path, MODEL_VERSION="12")
    assert result.returncode == 0, result.stderr
    probe = tmp_path.parent / f"{tmp_path.name}-pod" / "probe"
    assert sorted(p.name for p in probe.iterdir()) == [
        "preprocess.live.json", "preprocess.ready.json", "preprocess.stubs",
        "retrieval.live.json", "retrieval.ready.json", "retrieval.stubs"]
    from sessionrec.export.configs import parse
    served = tmp_path / "retrieval" / "configs" / "gpu.pbtxt"  # the s3 scenario serves the GPU layout
    served = served if served.exists() else tmp_path / "retrieval" / "config.pbtxt"
    count = parse(served.read_text()).instance_group[0].count
    # the step config's instance_group count, and the folder its stubs' command lines name
    assert (probe / "retrieval.stubs").read_text().split("\n")[:2] == [str(count), f"{tmp_path}/retrieval/"]
    live = json.loads((probe / "retrieval.live.json").read_text())
    assert live["parameters"] == {"priority": 1}
    embedding = {t["name"]: t for t in live["inputs"]}["session_embedding"]
    assert embedding["shape"] == [1, 8] and embedding["data"] == [0] * 8  # the manifest's dim
    assert "parameters" not in json.loads((probe / "retrieval.ready.json").read_text())


def test_liveness_probe_fails_when_a_stub_of_two_is_dead(rendered, tmp_path):
    """Two instances of a step: one dead stub leaves the other answering, so the probe's request may
    never reach it (tritonserver 2.51 does not restart it). The probe counts the step's stub
    processes (/proc) against the count prepare wrote, before any request."""
    live = triton(rendered["s3"])
    command = live["livenessProbe"]["exec"]["command"][2].replace("/tmp/sessionrec-probe", str(tmp_path))
    step = f"fake-step-{tmp_path.name}"  # unique: other tests' processes never match
    (tmp_path / f"{step}.stubs").write_text(f"2\n/models/{step}/\n")
    fake = f"/opt/tritonserver/backends/python/triton_python_backend_stub /models/{step}/1/model.py"
    stubs = [subprocess.Popen(["bash", "-c", f'exec -a "{fake}" sleep 60'])]
    try:
        import time
        time.sleep(0.3)
        one_alive = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
        assert one_alive.returncode == 1 and f"{step}: 1 of 2 python backend stubs alive" in one_alive.stderr
        stubs.append(subprocess.Popen(["bash", "-c", f'exec -a "{fake}" sleep 60']))
        time.sleep(0.3)
        both = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
        # the count passes; the probe goes on to its requests (no body files here: it fails there, not on stubs)
        assert "python backend stubs alive" not in both.stderr, both.stderr
    finally:
        for stub in stubs:
            stub.kill()
            stub.wait()


def test_python_steps_have_a_priority_level_for_the_probes():
    from sessionrec.export.configs import ServingConfig, all_configs, parse
    for relative, text in all_configs(ServingConfig()).items():
        config = parse(text)
        if config.backend == "python":
            assert config.dynamic_batching.priority_levels == 2, relative
            assert config.dynamic_batching.default_priority_level == 2, relative


def test_gpu_encoder_warms_up_at_batch_one_and_the_largest_batch():
    from sessionrec.export.configs import ServingConfig, encoder_config
    warmups = encoder_config(ServingConfig(), gpu=True).model_warmup
    assert sorted(w.batch_size for w in warmups) == [1, ServingConfig().max_batch_size]


# 7/8. Autoscaling metric and rule scope: tests/helm/test_rules.py and test_live_hardening.py.

def test_adapter_rules_tell_users_to_append(tmp_path):
    text = (CHART / "files" / "prometheus-adapter-rules.yaml").read_text()
    assert "Helm replaces lists" in text
    existing = {"rules": {"custom": [{"seriesQuery": "other_team_metric", "name": {"as": "theirs"}}]}, "prometheus": {"url": "x"}}
    (tmp_path / "adapter.yaml").write_text(yaml.safe_dump(existing))
    subprocess.run(["python3", str(CHART.parents[1] / "scripts" / "merge_adapter_rules.py"), str(tmp_path / "adapter.yaml"),
                    str(CHART / "files" / "prometheus-adapter-rules.yaml")], check=True, capture_output=True)
    merged = yaml.safe_load((tmp_path / "adapter.yaml").read_text())
    names = [rule["name"]["as"] for rule in merged["rules"]["custom"]]
    assert names == ["theirs", "sessionrec_queued_requests", "sessionrec_pending_requests"]
    assert merged["prometheus"] == {"url": "x"}


# 9. GPU scheduling -----------------------------------------------------------------------------

def test_gpu_pods_schedule_on_the_resource_request_alone(helm):
    spec = pod_spec(helm.render(SCENARIOS["s3"]))
    assert "nodeSelector" not in spec
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    mig = helm.render(SCENARIOS["s3"], set_values=("gpu.resourceName=nvidia.com/mig-1g\\.10gb",))
    assert triton(mig)["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == 1


# 10. Kubernetes-typed fields pass the schema ---------------------------------------------------

@pytest.mark.parametrize("assignment", [
    "resources.requests.ephemeral-storage=20Gi",
    "resources.limits.hugepages-2Mi=1Gi",
    "autoscaling.behavior.scaleDown.selectPolicy=Disabled",
    "podDisruptionBudget.minAvailable=50%",
    "metrics.monitor.relabelings[0].action=labeldrop",
    "enabled=true",
    "global.storageClass=fast",
])
def test_kubernetes_typed_values_pass(helm, assignment):
    result = helm.template(SCENARIOS["hpa"], set_values=(assignment,), check=False)
    assert result.returncode == 0, result.stderr


# 11. Disk and storage --------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_disk_backed_empty_dirs_are_requested(rendered, scenario):
    requests = triton(rendered[scenario])["resources"]["requests"]
    assert "ephemeral-storage" in requests
    for volume in pod_spec(rendered[scenario])["volumes"]:
        if "emptyDir" in volume:
            assert volume["emptyDir"].get("sizeLimit"), volume["name"]


def test_only_the_served_version_is_fetched(rendered, helm):
    s3 = {c["name"]: c for c in pod_spec(rendered["gpu"])["initContainers"]}["fetch-repository"]["command"]
    assert s3.index("--exclude=*/[0-9]*/*") < s3.index("--include=*/12/*") < len(s3) - 2
    gcs = {c["name"]: c for c in pod_spec(rendered["gcs"])["initContainers"]}["fetch-repository"]["command"]
    assert "--exclude=^[^/]+/(?!7/)[0-9]+/" in gcs
    pattern = re.compile("^[^/]+/(?!7/)[0-9]+/")
    assert pattern.match("session_encoder/6/model.onnx") and not pattern.match("session_encoder/7/model.onnx")
    assert not pattern.match("recommend/configs/gpu.pbtxt") and not pattern.match("session_recommender/warmup/K")
    unpinned = helm.render(SCENARIOS["s3"], set_values=("model.version=",))
    command = {c["name"]: c for c in pod_spec(unpinned)["initContainers"]}["fetch-repository"]["command"]
    assert not any(arg.startswith("--exclude") for arg in command)  # which version is live is only known after


def test_no_env_var_that_nothing_reads(rendered):
    for scenario, docs in rendered.items():
        names = {e["name"] for e in triton(docs)["env"]}
        assert not names & {"SESSIONREC_ENGINE_CACHE", "SESSIONREC_MODEL_VERSION", "SESSIONREC_PROBE_REQUEST"}, scenario


def test_native_plans_persist_in_the_engine_cache(rendered):
    build = {c["name"]: c for c in pod_spec(rendered["gpu"])["initContainers"]}["build-engine"]
    assert "--engine-cache=/engine-cache/plans" in build["args"]
    assert {m["name"]: m["mountPath"] for m in build["volumeMounts"]}["engine-cache"] == "/engine-cache"


# 12. PodDisruptionBudget -----------------------------------------------------------------------

def test_pdb_options_and_no_pdb_at_one_replica(helm):
    docs = helm.render(SCENARIOS["s3"])
    pdb = one(docs, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    pdb = one(helm.render(SCENARIOS["s3"], set_values=("podDisruptionBudget.minAvailable=50%",)), "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == "50%" and "maxUnavailable" not in pdb
    assert not find(helm.render(SCENARIOS["s3"], set_values=("replicaCount=1",)), "PodDisruptionBudget")
    assert not find(helm.render(SCENARIOS["keda"]), "PodDisruptionBudget")  # minReplicas 1
    assert find(helm.render(SCENARIOS["hpa"], set_values=("replicaCount=1",)), "PodDisruptionBudget")  # minReplicas 2
    assert "minReplicas drives" not in (CHART / "values.yaml").read_text()


# 13. Monitoring that is scraped ----------------------------------------------------------------

def test_additional_labels_reach_monitor_rule_and_dashboard(rendered):
    for kind in ("ServiceMonitor", "PrometheusRule", "ConfigMap"):
        assert one(rendered["hpa"], kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind
    for kind in ("PodMonitor", "PrometheusRule"):
        assert one(rendered["keda"], kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind


def test_monitor_relabelings_and_target_labels(helm):
    docs = helm.render(SCENARIOS["hpa"], set_values=(
        "metrics.monitor.relabelings[0].action=labeldrop", "metrics.monitor.relabelings[0].regex=instance",
        "metrics.monitor.metricRelabelings[0].action=drop", "metrics.monitor.metricRelabelings[0].regex=nv_gpu_.*",
        "metrics.monitor.metricRelabelings[0].sourceLabels[0]=__name__", "metrics.monitor.targetLabels[0]=team"))
    monitor = one(docs, "ServiceMonitor")["spec"]
    endpoint = monitor["endpoints"][0]
    assert endpoint["relabelings"][-1] == {"action": "labeldrop", "regex": "instance"}
    assert endpoint["metricRelabelings"][0]["action"] == "drop"
    assert monitor["podTargetLabels"] == ["team"]


def test_notes_warn_when_nothing_would_select_the_monitors(helm):
    def notes(*assignments):
        result = helm.run("install", "recs", str(CHART), "--namespace", "recs-prod", "--dry-run=client",
                          "--values", str(SCENARIOS["hpa"]), *sum((["--set", a] for a in assignments), []))
        return result.stdout.split("\nNOTES:\n", 1)[1]
    assert "WARNING: metrics.additionalLabels is empty" not in notes()
    assert "WARNING: metrics.additionalLabels is empty" in notes("metrics.additionalLabels=null")


# 14. What users expect of a chart --------------------------------------------------------------

def test_default_soft_spread_on_the_selector_labels(rendered):
    (spread,) = pod_spec(rendered["s3"])["topologySpreadConstraints"]
    selector = one(rendered["s3"], "Deployment", FULLNAME)["spec"]["selector"]["matchLabels"]
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway" and spread["labelSelector"]["matchLabels"] == selector
    assert spread["matchLabelKeys"] == ["pod-template-hash"]
    # A scenario that writes its own keeps exactly its own.
    assert pod_spec(rendered["gpu"])["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "sessionrec"}


def test_extra_volumes_containers_env_and_common_metadata(helm):
    docs = helm.render(SCENARIOS["hpa"], set_values=(
        "extraVolumes[0].name=extra", "extraVolumes[0].emptyDir.sizeLimit=1Gi",
        "extraVolumeMounts[0].name=extra", "extraVolumeMounts[0].mountPath=/extra",
        "extraInitContainers[0].name=warm", "extraInitContainers[0].image=busybox:1.37",
        "sidecars[0].name=proxy", "sidecars[0].image=envoyproxy/envoy:v1.32.1",
        "triton.envFrom[0].configMapRef.name=triton-env",
        "commonLabels.team=recs", "commonAnnotations.owner=recs-team"))
    spec = pod_spec(docs)
    assert "extra" in [v["name"] for v in spec["volumes"]]
    assert {"name": "extra", "mountPath": "/extra"} in triton(docs)["volumeMounts"]
    assert spec["initContainers"][-1]["name"] == "warm"
    assert [c["name"] for c in spec["containers"]] == ["tritonserver", "proxy"]
    assert triton(docs)["envFrom"] == [{"configMapRef": {"name": "triton-env"}}]
    for doc in docs:
        assert doc["kind"] == "Pod" or doc["metadata"]["labels"]["team"] == "recs", doc["kind"]
        if doc["kind"] != "Pod":
            assert doc["metadata"]["annotations"]["owner"] == "recs-team", doc["kind"]


def test_global_image_registry_rewrites_every_image(helm):
    docs = helm.render(SCENARIOS["gpu"], set_values=("global.imageRegistry=mirror.internal:5000",))
    images = [c["image"] for _, spec in pod_specs(docs) for c in containers(spec)]
    assert images and all(image.startswith("mirror.internal:5000/") for image in images), images
    assert "mirror.internal:5000/sessionrec/triton:0.1.0-triton24.10" in images  # registry.example.com replaced
    assert "mirror.internal:5000/amazon/aws-cli:2.22.35" in images


def test_openshift_adapts_security_contexts(helm):
    docs = helm.render(SCENARIOS["s3"], set_values=("global.compatibility.openshift.adaptSecurityContext=force",))
    spec = pod_spec(docs)
    assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(spec["securityContext"])
    assert spec["securityContext"]["runAsNonRoot"] is True
    detected = helm.run("template", "recs", str(CHART), "-n", "recs-prod", "-f", str(SCENARIOS["s3"]),
                        "--api-versions", "security.openshift.io/v1").stdout
    spec = pod_spec([d for d in yaml.safe_load_all(detected) if d])
    assert "runAsUser" not in spec["securityContext"]
    plain = pod_spec(helm.render(SCENARIOS["s3"]))
    assert plain["securityContext"]["runAsUser"] == 1000
    assert plain["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"


def test_autoscaling_migration_is_documented():
    text = (CHART.parents[1] / "docs" / "DEPLOY.md").read_text()
    assert "Moving an existing release to autoscaling" in text


def test_gpu_smoke_script_runs_the_charts_prepare_script(rendered):
    """scripts/gpu-smoke.sh extracts prepare-repository from the template: it must be what pods run."""
    text = (CHART / "templates" / "_pod.tpl").read_text()
    body = text.split('{{- define "sessionrec.prepareScript" -}}', 1)[1].split("{{- end }}", 1)[0]
    container = {c["name"]: c for c in pod_spec(rendered["s3"])["initContainers"]}["prepare-repository"]
    assert body.strip() == container["args"][2].strip()
    assert "--model-control-mode=none" in (CHART.parents[1] / "scripts" / "gpu-smoke.sh").read_text()


def test_health_mode_replaces_the_inference_liveness(helm):
    container = triton(helm.render(SCENARIOS["cpu"], set_values=("probes.liveness.mode=health",)))
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert "exec" in container["readinessProbe"]  # readiness keeps the inference check
