"""The chart's `redis:` section (session history for recommend_session): env from values and Secrets,
an optional egress NetworkPolicy, and a schema that refuses an incomplete or unsafe setting."""
from __future__ import annotations

import kubernetes_validate
import pytest

from tests.helm.conftest import FULLNAME, KUBE_VERSION, SCENARIOS, find, one, triton

ENABLED = ("redis.enabled=true", "redis.host=redis-master.cache.svc.cluster.local", "redis.port=6380",
           "redis.database=2", "redis.tls.enabled=true", "redis.auth.existingSecret=redis-auth",
           "redis.hmac.existingSecret=session-hmac", "redis.ttlSeconds=900", "redis.timeoutMs=15")


def env(container: dict) -> dict:
    return {item["name"]: item for item in container.get("env", [])}


def test_off_by_default_sets_nothing(rendered):
    for scenario, docs in rendered.items():
        assert not any(name.startswith("SESSIONREC_REDIS") for name in env(triton(docs))), scenario
        assert not find(docs, "NetworkPolicy", f"{FULLNAME}-egress"), scenario


def test_enabled_sets_the_history_environment_from_values_and_secrets(helm):
    docs = helm.render(SCENARIOS["cpu"], set_values=ENABLED)
    variables = env(triton(docs))
    assert variables["SESSIONREC_REDIS_URL"]["value"] == "rediss://redis-master.cache.svc.cluster.local:6380/2"
    assert variables["SESSIONREC_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "redis-auth", "key": "redis-password"}
    assert variables["SESSIONREC_SESSION_HMAC_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "session-hmac", "key": "session-hmac-key"}
    assert variables["SESSIONREC_HISTORY_TTL_S"]["value"] == "900" and variables["SESSIONREC_REDIS_TIMEOUT_MS"]["value"] == "15"
    assert "value" not in variables["SESSIONREC_REDIS_PASSWORD"]  # never a literal password
    assert variables["SESSIONREC_HISTORY_SPECULATE"]["value"] == "0"  # off by default
    on = env(triton(helm.render(SCENARIOS["cpu"], set_values=ENABLED + ("redis.speculate=true",))))
    assert on["SESSIONREC_HISTORY_SPECULATE"]["value"] == "1"


def test_egress_policy_allows_dns_redis_and_extra(helm):
    docs = helm.render(SCENARIOS["cpu"], set_values=ENABLED + (
        "redis.egress.enabled=true", "redis.egress.to[0].podSelector.matchLabels.app=redis",
        "redis.egress.extra[0].ports[0].port=443", "redis.egress.extra[0].to[0].ipBlock.cidr=10.9.0.0/16"))
    policy = one(docs, "NetworkPolicy", f"{FULLNAME}-egress")
    kubernetes_validate.validate(policy, KUBE_VERSION, strict=True)
    assert policy["spec"]["policyTypes"] == ["Egress"]
    dns, redis, extra = policy["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert redis["ports"] == [{"port": 6380, "protocol": "TCP"}] and redis["to"] == [{"podSelector": {"matchLabels": {"app": "redis"}}}]
    assert extra["to"][0]["ipBlock"]["cidr"] == "10.9.0.0/16"


@pytest.mark.parametrize("assignments, words", [
    (("redis.enabled=true", "redis.hmac.existingSecret=s"), ["host"]),  # nowhere to connect
    (("redis.enabled=true", "redis.host=r"), ["existingSecret"]),  # no shared HMAC key
    (("redis.timeoutMs=5000",), ["timeoutMs"]),  # redis-py's 5 s default would stall every request
    (("redis.hots=r",), ["hots"]),
])
def test_schema_refuses_incomplete_or_unsafe_settings(helm, assignments, words):
    result = helm.template(SCENARIOS["cpu"], set_values=assignments, check=False)
    assert result.returncode != 0 and "schema" in result.stderr.lower()
    for word in words:
        assert word in result.stderr


@pytest.mark.parametrize("scenario, kept", [
    ("cpu", {"session_recommender", "recommend", "recommend_session"}),
    ("gpu", {"preprocess", "session_encoder", "retrieval", "recommend", "recommend_session", "session_history"}),
])
def test_prepare_keeps_recommend_session_and_its_steps(helm, tmp_path, scenario, kept):
    from tests.helm.test_scripts import fake_repository, run_prepare, versions

    docs = helm.render(SCENARIOS[scenario], set_values=ENABLED)
    fake_repository(tmp_path)
    result = run_prepare(docs, tmp_path, MODEL_VERSION="12")
    assert result.returncode == 0, result.stderr
    assert set(versions(tmp_path)) == kept


def test_prepare_refuses_an_export_without_recommend_session(helm, tmp_path):
    import shutil

    from tests.helm.test_scripts import fake_repository, run_prepare

    docs = helm.render(SCENARIOS["cpu"], set_values=ENABLED)
    fake_repository(tmp_path)
    shutil.rmtree(tmp_path / "recommend_session")
    result = run_prepare(docs, tmp_path, MODEL_VERSION="12")
    assert result.returncode != 0 and "has no recommend_session" in result.stderr


def test_documented_trial_redis_is_valid_kubernetes():
    """docs/examples/redis-trial.yaml (docs/SESSION_HISTORY.md, "Redis on a cluster") matches the schemas."""
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[2] / "docs" / "examples" / "redis-trial.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert {d["kind"] for d in docs} == {"Deployment", "Service"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
