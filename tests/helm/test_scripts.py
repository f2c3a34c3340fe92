"""The shell scripts the chart embeds, extracted from the rendered manifests and run here:
prepare-repository (bash, on a fake model repository) and the `helm test` pod (sh + curl, against
a stand-in for Triton's HTTP v2 API on 127.0.0.1).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sessionrec.export.configs import FUSED, MODELS, STEPS, ServingConfig, all_configs
from tests.helm.conftest import FULLNAME, one


def init_container(docs: list[dict], name: str) -> dict:
    spec = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    (container,) = [c for c in spec["initContainers"] if c["name"] == name]
    return container


def fake_repository(root: Path, versions=(11, 12), pinned: int = 12) -> None:
    """A repository laid out as `sessionrec export` publishes it: configs from the project's own
    generator (every ensemble step pinned to `pinned`, configs/gpu.pbtxt beside config.pbtxt) and
    numbered version folders."""
    for relative, text in all_configs(ServingConfig(), version=pinned).items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    for model in MODELS:
        for version in versions:
            (root / model / str(version)).mkdir()
            (root / model / str(version) / "payload").write_text(f"{model} {version}\n")
            (root / model / str(version) / "manifest.json").write_text(json.dumps(
                {"version": version, "serving": {"max_len": 16, "dim": 8}}, indent=2))
        if model == "session_encoder":
            for version in versions:
                (root / model / str(version) / "model.onnx").write_bytes(f"weights of version {version}".encode())


GPU_PRODUCT = "NVIDIA L4"


def fake_nvidia_smi(folder: Path, product: str = GPU_PRODUCT) -> Path:
    """A stand-in for nvidia-smi naming one GPU, as the driver's would inside a GPU container."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncase \"$*\" in *query-gpu*) echo '{product}' ;; *) echo 'GPU 0: {product} (UUID: GPU-1)' ;; esac\n")
    script.chmod(0o755)
    return folder


def run_prepare(docs: list[dict], repository: Path, **env: str) -> subprocess.CompletedProcess:
    container = init_container(docs, "prepare-repository")
    assert "command" not in container and container["args"][:2] == ["bash", "-c"]
    variables = {e["name"]: e["value"] for e in container["env"]}
    scratch = repository.parent / f"{repository.name}-pod"
    variables.update(REPOSITORY=str(repository), PROBE_DIR=str(scratch / "probe"), **env)
    if "ENGINE_CACHE" in variables and "ENGINE_CACHE" not in env:
        variables["ENGINE_CACHE"] = str(scratch / "engine-cache")
    if "SOURCE_DIR" in variables and "SOURCE_DIR" not in env:
        raise AssertionError("pass SOURCE_DIR for the pvc scenario")
    path = variables.pop("PATH", f"{fake_nvidia_smi(scratch / 'bin')}:/usr/bin:/bin")
    return subprocess.run(["bash", "-c", container["args"][2]], env={"PATH": path, **variables},
                          capture_output=True, text=True, timeout=30)


def versions(root: Path) -> dict[str, list[str]]:
    return {model.name: sorted(p.name for p in model.iterdir() if p.is_dir() and p.name.isdigit())
            for model in sorted(root.iterdir())}


def configs(root: Path, model: str) -> list[str]:
    return sorted(p.name for p in (root / model / "configs").iterdir())


GPU_MODELS = (*STEPS, "recommend")  # what the GPU ensemble runs; the fused CPU step is dropped
ONLY_12 = {model: ["12"] for model in sorted(GPU_MODELS)}


def test_prepare_serves_exactly_the_requested_version(rendered, tmp_path):
    fake_repository(tmp_path)
    result = run_prepare(rendered["tls"], tmp_path)  # model.version "12", GPU config
    assert result.returncode == 0, result.stderr
    assert versions(tmp_path) == ONLY_12  # version 11 is not loaded next to it
    assert "config gpu" in result.stdout
    assert configs(tmp_path, "preprocess") == ["gpu.pbtxt"]


def test_prepare_refuses_a_version_the_repository_does_not_serve(rendered, tmp_path):
    """A pod started before the new version is published (or after a rollback) stops here."""
    fake_repository(tmp_path, versions=(11, 12, 13), pinned=13)
    result = run_prepare(rendered["tls"], tmp_path)  # still asks for 12
    assert result.returncode == 1
    assert "model.version=12, but s3://sessionrec-models/gpu/repository serves version 13" in result.stderr


def test_prepare_without_a_version_serves_the_pinned_one(rendered, tmp_path):
    fake_repository(tmp_path, pinned=11)  # e.g. after `sessionrec rollback`
    result = run_prepare(rendered["tls"], tmp_path, MODEL_VERSION="")
    assert result.returncode == 0, result.stderr
    assert versions(tmp_path) == {model: ["11"] for model in sorted(GPU_MODELS)}


def test_prepare_accepts_an_unpinned_template_repository(rendered, tmp_path):
    fake_repository(tmp_path, pinned=-1)  # steps at -1 (latest), as in model_repository/
    result = run_prepare(rendered["tls"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert versions(tmp_path) == ONLY_12


def test_prepare_fails_on_an_incomplete_export(rendered, tmp_path):
    fake_repository(tmp_path)
    shutil.rmtree(tmp_path / "retrieval" / "12")
    result = run_prepare(rendered["tls"], tmp_path)
    assert result.returncode == 1
    assert "retrieval has no version 12" in result.stderr


def test_prepare_refuses_a_cpu_export_on_gpu_nodes(rendered, tmp_path):
    fake_repository(tmp_path)
    (tmp_path / "session_encoder" / "configs" / "gpu.pbtxt").unlink()
    result = run_prepare(rendered["tls"], tmp_path)
    assert result.returncode == 1
    assert "session_encoder has no configs/gpu.pbtxt" in result.stderr
    cpu_repo = tmp_path / "cpu"
    cpu_repo.mkdir()
    fake_repository(cpu_repo)
    (cpu_repo / "session_encoder" / "configs" / "gpu.pbtxt").unlink()
    cpu = run_prepare(rendered["cpu"], cpu_repo, MODEL_VERSION="12")  # CPU: config.pbtxt is the one
    assert cpu.returncode == 0, cpu.stderr


def test_prepare_keeps_only_the_models_the_ensemble_runs(rendered, tmp_path):
    """CPU nodes serve the fused step alone; GPU nodes the three steps (Triton loads all that is left)."""
    fake_repository(tmp_path)
    cpu = run_prepare(rendered["cpu"], tmp_path, MODEL_VERSION="12")
    assert cpu.returncode == 0, cpu.stderr
    assert versions(tmp_path) == {FUSED: ["12"], "recommend": ["12"]}
    assert "dropped session_encoder" in cpu.stdout


def test_prepare_fails_when_an_ensemble_step_is_missing(rendered, tmp_path):
    fake_repository(tmp_path)
    shutil.rmtree(tmp_path / FUSED)  # e.g. a repository exported before the fused step existed
    result = run_prepare(rendered["cpu"], tmp_path, MODEL_VERSION="12")
    assert result.returncode == 1
    assert f"recommend runs {FUSED}, which" in result.stderr and "the export is incomplete" in result.stderr


def test_prepare_sets_up_tensorrt_configs_for_the_engine_build(rendered, tmp_path):
    """With native plans Triton runs --model-config-name=tensorrt: build-engine writes the encoder's,
    the other models serve their gpu config under that name."""
    fake_repository(tmp_path)
    result = run_prepare(rendered["gpu"], tmp_path)
    assert result.returncode == 0, result.stderr
    for model in ("preprocess", "retrieval", "recommend"):
        assert configs(tmp_path, model) == ["gpu.pbtxt", "tensorrt.pbtxt"]
        assert (tmp_path / model / "configs" / "tensorrt.pbtxt").read_text() == \
            (tmp_path / model / "configs" / "gpu.pbtxt").read_text()
    assert configs(tmp_path, "session_encoder") == ["gpu.pbtxt"]  # left to build-engine


def test_prepare_copies_from_the_claim(rendered, tmp_path):
    source, local = tmp_path / "claim", tmp_path / "local"
    source.mkdir()
    local.mkdir()
    fake_repository(source, versions=(4, 5), pinned=5)
    result = run_prepare(rendered["pvc"], local, SOURCE_DIR=str(source))  # model.version "5"
    assert result.returncode == 0, result.stderr
    assert versions(local) == {model: ["5"] for model in sorted(GPU_MODELS)}
    assert versions(source)["session_encoder"] == ["4", "5"]  # the claim is never modified


class FakeTriton(BaseHTTPRequestHandler):
    """Answers /v2/models/recommend/{ready,infer} like Triton's HTTP v2 JSON API."""

    answer_count = 10  # how many ids to return (set per test)
    requests: list[dict] = []

    def do_GET(self):  # noqa: N802
        self.send_response(200 if self.path == "/v2/models/recommend/ready" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeTriton.requests.append(body)
        ids = list(range(1000, 1000 + self.answer_count))
        answer = {"model_name": "recommend", "model_version": "1", "outputs": [
            {"name": "ITEM_IDS", "datatype": "INT64", "shape": [1, len(ids)], "data": ids},
            {"name": "SCORES", "datatype": "FP32", "shape": [1, len(ids)], "data": [0.5] * len(ids)},
            {"name": "FALLBACK", "datatype": "BOOL", "shape": [1, 1], "data": [False]},
        ]}
        payload = json.dumps(answer, separators=(",", ":")).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_triton():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeTriton)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeTriton.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_test_pod(docs: list[dict], url: str) -> subprocess.CompletedProcess:
    (container,) = one(docs, "Pod")["spec"]["containers"]
    assert container["command"][:2] == ["sh", "-c"]
    env = {e["name"]: e["value"] for e in container["env"]}
    env.update(TRITON_URL=url, PATH="/usr/bin:/bin")
    return subprocess.run(["sh", "-c", container["command"][2]], env=env, capture_output=True,
                          text=True, timeout=60)


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


@needs_curl
def test_helm_test_pod_passes_on_k_item_ids(rendered, fake_triton):
    FakeTriton.answer_count = 10
    result = run_test_pod(rendered["gpu"], fake_triton)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 10 item ids" in result.stdout
    (request,) = FakeTriton.requests
    inputs = {tensor["name"]: tensor for tensor in request["inputs"]}
    assert inputs["ITEMS"] == {"name": "ITEMS", "datatype": "INT64", "shape": [1, 3],
                               "data": [214536502, 214536500, 214536506]}
    assert inputs["K"] == {"name": "K", "datatype": "INT32", "shape": [1, 1], "data": [10]}
    assert inputs["EXCLUDE_SEEN"] == {"name": "EXCLUDE_SEEN", "datatype": "BOOL", "shape": [1, 1], "data": [True]}


@needs_curl
def test_helm_test_pod_fails_on_too_few_ids(rendered, fake_triton):
    FakeTriton.answer_count = 9
    result = run_test_pod(rendered["gpu"], fake_triton)
    assert result.returncode == 1
    assert "expected 10 distinct item ids in ITEM_IDS, got 9" in result.stderr
