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

from tests.helm.conftest import FULLNAME, one


def init_container(docs: list[dict], name: str) -> dict:
    spec = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    (container,) = [c for c in spec["initContainers"] if c["name"] == name]
    return container


def fake_repository(root: Path) -> None:
    for model, versions in {"preprocess": ["11", "12"], "session_encoder": ["11", "12"],
                            "retrieval": ["11", "12"], "recommend": ["1"]}.items():
        (root / model).mkdir(parents=True)
        (root / model / "config.pbtxt").write_text(f'name: "{model}"\n')
        for version in versions:
            (root / model / version).mkdir()
            (root / model / version / "model.py").write_text("# stub\n")


def run_prepare(docs: list[dict], repository: Path, **env: str) -> subprocess.CompletedProcess:
    container = init_container(docs, "prepare-repository")
    assert container["command"][:2] == ["bash", "-c"]
    variables = {e["name"]: e["value"] for e in container["env"]}
    variables.update(REPOSITORY=str(repository), **env)
    if "SOURCE_DIR" in variables and "SOURCE_DIR" not in env:
        raise AssertionError("pass SOURCE_DIR for the pvc scenario")
    return subprocess.run(["bash", "-c", container["command"][2]], env={"PATH": "/usr/bin:/bin", **variables},
                          capture_output=True, text=True, timeout=30)


def versions(root: Path) -> dict[str, list[str]]:
    return {model.name: sorted(p.name for p in model.iterdir() if p.is_dir()) for model in sorted(root.iterdir())}


def test_prepare_keeps_exactly_the_requested_version(rendered, tmp_path):
    fake_repository(tmp_path)
    result = run_prepare(rendered["gpu"], tmp_path)  # model.version "12"
    assert result.returncode == 0, result.stderr
    assert versions(tmp_path) == {"preprocess": ["12"], "recommend": ["1"], "retrieval": ["12"],
                                  "session_encoder": ["12"]}
    assert (tmp_path / "session_encoder" / "config.pbtxt").exists()


def test_prepare_rolls_back_to_an_older_version(rendered, tmp_path):
    fake_repository(tmp_path)
    result = run_prepare(rendered["gpu"], tmp_path, MODEL_VERSION="11")
    assert result.returncode == 0, result.stderr
    assert versions(tmp_path)["session_encoder"] == ["11"]


def test_prepare_fails_when_the_version_was_not_published(rendered, tmp_path):
    fake_repository(tmp_path)
    result = run_prepare(rendered["gpu"], tmp_path, MODEL_VERSION="13")
    assert result.returncode == 1
    assert "model.version=13" in result.stderr and "s3://sessionrec-models/gpu/repository" in result.stderr


def test_prepare_without_a_version_keeps_everything(rendered, tmp_path):
    fake_repository(tmp_path)
    result = run_prepare(rendered["gpu"], tmp_path, MODEL_VERSION="")
    assert result.returncode == 0, result.stderr
    assert versions(tmp_path)["session_encoder"] == ["11", "12"]


def test_prepare_copies_from_the_claim(rendered, tmp_path):
    source, local = tmp_path / "claim", tmp_path / "local"
    fake_repository(source)
    (source / "session_encoder" / "5").mkdir()
    local.mkdir()
    result = run_prepare(rendered["pvc"], local, SOURCE_DIR=str(source))  # model.version "5"
    assert result.returncode == 0, result.stderr
    assert versions(local)["session_encoder"] == ["5"]
    assert versions(source)["session_encoder"] == ["11", "12", "5"]  # the claim is never modified


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
