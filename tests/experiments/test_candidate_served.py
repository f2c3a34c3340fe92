"""Two versions side by side in one real tritonserver: recommend on N, recommend_candidate on M."""

from __future__ import annotations

import re
import urllib.request

import pytest

from sessionrec.clients import RecommendClient
from sessionrec.clients.assignment import Experiment
from sessionrec.clients.experiment import ExperimentClient
from sessionrec.export import candidate as cand
from sessionrec.export.configs import parse
from sessionrec.export.exporter import ExportOptions, export_version
from sessionrec.export.repository import RepositoryError, candidate_version, current_version, rollback
from sessionrec.serving.artifacts import read_manifest
from sessionrec.serving.embedded import EmbeddedServer

pytestmark = pytest.mark.server


class Sink:
    def __init__(self):
        self.events = []

    def emit(self, event):
        self.events.append(event)
        return True


def metric(text: str, name: str, model: str) -> float:
    found = re.search(rf'^{name}{{[^}}]*model="{model}"[^}}]*}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_both_variants_answer_with_their_own_version_and_canaries(fresh_repository, sample_path, other_checkpoint,
                                                                   tmp_path):
    repo = fresh_repository
    control = current_version(repo)
    result = export_version(other_checkpoint, repo, ExportOptions(data=str(sample_path), candidate=True),
                            progress=False)
    candidate = result.version
    # published beside, not switched to: recommend still pins the control version
    assert current_version(repo) == control and candidate_version(repo) == candidate
    pins = {s.model_version for s in parse((repo / "recommend" / "config.pbtxt").read_text()).ensemble_scheduling.step}
    assert pins == {control}
    with pytest.raises(RepositoryError, match="pinned as the experiment's candidate"):
        export_version(other_checkpoint, repo, ExportOptions(data=str(sample_path)), progress=False)
    with pytest.raises(RepositoryError, match="a rollback"):
        rollback(repo)

    server = EmbeddedServer(repo, watch_seconds=0, candidate=True, log_file=tmp_path / "triton.log")
    server.start()  # raises unless both ensembles replay their own export-time canaries
    try:
        assert server.version == control and server.candidate_version == candidate
        assert any("candidate version" in e and "canaries ok" in e for e in server.events)
        sink = Sink()
        exp = Experiment("side-by-side", salt="side-by-side-test", ramp_bp=10_000)
        clients = {"control": RecommendClient(server.grpc_url),
                   "candidate": RecommendClient(server.grpc_url, model="recommend_candidate")}
        canary = read_manifest(repo / "recommend_candidate" / str(candidate))["canaries"][0]
        with ExperimentClient(exp, clients, sink=sink) as client:
            answers = [client.recommend(f"guest-{i}", canary["items"], k=canary["k"],
                                        exclude_seen=canary["exclude_seen"]) for i in range(60)]
        by_variant = {a.variant: a for a in answers}
        assert set(by_variant) == {"control", "candidate"}
        assert (by_variant["control"].model, by_variant["control"].model_version) == ("recommend", str(control))
        assert (by_variant["candidate"].model, by_variant["candidate"].model_version) == \
            ("recommend_candidate", str(candidate))
        assert by_variant["candidate"].recommendation.item_ids == canary["expected_ids"]
        assert len({a.request_id for a in answers}) == 60
        assert len(sink.events) == 60 and all(e["model_version"] in (str(control), str(candidate))
                                              for e in sink.events)
        # per-variant counters from Triton itself, under each ensemble's model label
        text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
        n_candidate = sum(a.variant == "candidate" for a in answers)
        assert metric(text, "nv_inference_request_success", "recommend_candidate") >= n_candidate
        assert metric(text, "nv_inference_request_success", "recommend") >= 60 - n_candidate

        # promotion: the candidate becomes live, the server switches and unloads the second ensemble
        assert cand.promote_candidate(repo) == candidate
        assert server.sync() and server.sync_candidate()
        assert server.version == candidate and server.candidate_version is None
        with RecommendClient(server.grpc_url) as plain:
            rec = plain.recommend(canary["items"], k=canary["k"], exclude_seen=canary["exclude_seen"])
        assert rec.item_ids == canary["expected_ids"] and rec.model_version == str(candidate)
    finally:
        server.stop()


def test_a_candidate_outside_the_two_newest_versions_gets_specific_step_versions(fresh_repository, sample_path,
                                                                                  trained_checkpoint,
                                                                                  other_checkpoint, tmp_path):
    repo = fresh_repository
    oldest = current_version(repo)
    export_version(other_checkpoint, repo, ExportOptions(data=str(sample_path)), progress=False)
    live = export_version(trained_checkpoint, repo, ExportOptions(data=str(sample_path)), progress=False).version
    # re-test the oldest version against the live one: latest 2 would load only the two newest
    plan = cand.pin_candidate(repo, oldest)
    assert plan.specific_steps and (plan.control, plan.candidate) == (live, oldest)
    step = parse((repo / "session_recommender" / "config.pbtxt").read_text())
    assert list(step.version_policy.specific.versions) == sorted([oldest, live])
    with EmbeddedServer(repo, watch_seconds=0, candidate=True, log_file=tmp_path / "triton.log") as server:
        assert server.version == live and server.candidate_version == oldest
        with RecommendClient(server.grpc_url, model="recommend_candidate") as client:
            assert client.recommend([1, 2, 3], k=5).model_version == str(oldest)
    with pytest.raises(RepositoryError, match="older than live"):
        cand.promote_candidate(repo)
    assert cand.drop_candidate(repo) == oldest
    step = parse((repo / "session_recommender" / "config.pbtxt").read_text())
    assert step.version_policy.latest.num_versions == 2 and candidate_version(repo) is None
    assert (repo / "session_recommender" / str(oldest)).is_dir()  # a live version is not retired by a drop
