"""The chart's liveness probe notices what Triton's health endpoints miss: a dead python stub.

The probe command is taken from the rendered Deployment and run here (sh + curl) against the real
embedded tritonserver, before and after a python-backend stub is killed. Triton keeps reporting the
server live and every model ready; the probe's inference fails, so the kubelet restarts the pod.
"""

import os
import shutil
import subprocess
import time
import urllib.request

import pytest

from sessionrec.reliability.faults import kill_stub
from sessionrec.serving.embedded import EmbeddedServer
from tests.helm.conftest import SCENARIOS, triton

pytestmark = [pytest.mark.server]


@pytest.fixture(autouse=True)
def curl():
    assert shutil.which("curl"), "curl is missing: scripts/setup.sh installs it (the probe's only tool)"


def probe(container: dict, http_url: str) -> subprocess.CompletedProcess:
    command = container["livenessProbe"]["exec"]["command"]
    script = command[2].replace("http://127.0.0.1:8000", http_url)  # the pod's port -> this server's
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    return subprocess.run([*command[:2], script], env={"PATH": os.environ["PATH"], **env},
                          capture_output=True, text=True, timeout=30)


def test_default_liveness_is_an_inference_and_health_mode_remains(rendered, helm):
    container = triton(rendered["cpu"])
    command = container["livenessProbe"]["exec"]["command"]
    assert command[:2] == ["sh", "-c"] and "/v2/models/recommend/infer" in command[2]
    assert container["livenessProbe"]["timeoutSeconds"] >= 5
    docs = helm.render(SCENARIOS["cpu"], set_values=("probes.liveness.mode=health",))
    assert triton(docs)["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


def test_probe_passes_on_a_healthy_server_and_fails_once_a_stub_dies(rendered, fresh_repository, tmp_path):
    container = triton(rendered["cpu"])
    with EmbeddedServer(fresh_repository, watch_seconds=0, log_file=tmp_path / "triton.log") as server:
        healthy = probe(container, server.http_url)
        assert healthy.returncode == 0, healthy.stderr
        victim = server.steps[-1]
        kill_stub(server.server.pid, victim)
        time.sleep(1.0)
        with urllib.request.urlopen(f"{server.http_url}/v2/health/live", timeout=5) as live:
            assert live.status == 200  # what an httpGet liveness probe would have seen
        dead = probe(container, server.http_url)
        assert dead.returncode != 0
        assert server.heal() == victim  # (what `sessionrec serve` does instead of a restart)
        assert probe(container, server.http_url).returncode == 0
