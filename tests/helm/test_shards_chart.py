"""The chart's retrievalShards section: off by default; on, one Deployment + Service per shard
(each tritonserver loading only its retrieval_shard_<s>, on the shard pool), the front pointed at
them, values checked by the schema. Manifests are validated with the other scenarios
(test_render.py, ci/shards-values.yaml)."""
from __future__ import annotations

import pytest

from tests.helm.conftest import CHART, FULLNAME, find, one, triton

CPU = CHART / "ci" / "cpu-values.yaml"
SHARDS = CHART / "ci" / "shards-values.yaml"


def env(container) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_shards_are_off_by_default(helm):
    docs = helm.render(CPU)
    assert [d["metadata"]["name"] for d in find(docs, "Deployment")] == [FULLNAME]
    assert "SESSIONREC_SHARD_ADDRESSES" not in env(triton(docs))


def test_one_deployment_and_service_per_shard_and_the_front_pointed_at_them(helm):
    docs = helm.render(SHARDS)
    front = one(docs, "Deployment", FULLNAME)
    front_selector = front["spec"]["selector"]["matchLabels"]
    for shard in range(2):
        name = f"{FULLNAME}-shard-{shard}"
        deployment, service = one(docs, "Deployment", name), one(docs, "Service", name)
        pod = deployment["spec"]["template"]
        (server,) = pod["spec"]["containers"]
        assert f"--load-model=retrieval_shard_{shard}" in server["args"] and "--model-control-mode=explicit" in server["args"]
        assert server["resources"]["requests"] == {"cpu": "1", "memory": "3Gi"}
        assert pod["spec"]["nodeSelector"] == {"node.kubernetes.io/pool": "retrieval"}
        assert pod["spec"]["tolerations"][0]["value"] == "retrieval"
        assert server["readinessProbe"]["httpGet"]["path"] == f"/v2/models/retrieval_shard_{shard}/ready"
        prepare = [c for c in pod["spec"]["initContainers"] if c["name"] == "prepare-repository"][0]
        assert env(prepare)["KEEP_MODEL"] == f"retrieval_shard_{shard}"  # the prepare step keeps it
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        assert set(service["spec"]["selector"].items()) <= set(pod["metadata"]["labels"].items())
        assert service["spec"]["ports"][0]["port"] == 8001
        # the front's selector (and Service) never matches a shard pod
        assert not set(front_selector.items()) <= set(pod["metadata"]["labels"].items())
    front_env = env(triton(docs))
    assert front_env["SESSIONREC_SHARD_ADDRESSES"] == f"{FULLNAME}-shard-0:8001,{FULLNAME}-shard-1:8001"
    assert front_env["SESSIONREC_SHARD_TIMEOUT_MS"] == "500"
    front_prepare = [c for c in front["spec"]["template"]["spec"]["initContainers"] if c["name"] == "prepare-repository"][0]
    assert "KEEP_MODEL" not in env(front_prepare)  # the front drops the shard models (never loads them)


@pytest.mark.parametrize("assignment", ["retrievalShards.count=1", "retrievalShards.timeoutMs=0",
                                        "retrievalShards.replicaCount=0", "retrievalShards.cores=2"])
def test_bad_shard_values_are_refused(helm, assignment):
    failed = helm.template(SHARDS, set_values=(assignment,), check=False)
    assert failed.returncode != 0 and "retrievalShards" in failed.stderr, (assignment, failed.stderr)
