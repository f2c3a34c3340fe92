"""The chart's in-pod experiment mode (experiment.candidateVersion): the candidate version and its
ensemble survive prepare-repository next to the live version, and a change rolls the pods."""
from __future__ import annotations

import shutil

from sessionrec.export.configs import FUSED, ServingConfig, ensemble_config, render
from tests.helm.conftest import CHART, FULLNAME, one
from tests.helm.test_scripts import fake_repository, run_prepare, versions

CPU = CHART / "ci" / "cpu-values.yaml"


def candidate_repository(root, live=12, candidate=13):
    """As `sessionrec export --candidate` leaves it: steps hold both, recommend_candidate pins the candidate."""
    fake_repository(root, versions=(11, live, candidate), pinned=live)
    shutil.rmtree(root / "recommend" / str(candidate))  # the candidate is not live
    folder = root / "recommend_candidate"
    (folder / "configs").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(render(ensemble_config(ServingConfig(), candidate, name="recommend_candidate")))
    (folder / "configs" / "gpu.pbtxt").write_text(
        render(ensemble_config(ServingConfig(), candidate, gpu=True, name="recommend_candidate")))
    (folder / str(candidate)).mkdir()


def test_prepare_keeps_the_candidate_beside_the_live_version(helm, tmp_path):
    docs = helm.render(CPU, set_values=("model.version=12", "experiment.candidateVersion=13"))
    annotations = one(docs, "Deployment", FULLNAME)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["sessionrec.io/candidate-version"] == "13"
    candidate_repository(tmp_path)
    result = run_prepare(docs, tmp_path)
    assert result.returncode == 0, result.stderr
    assert versions(tmp_path) == {FUSED: ["12", "13"], "recommend": ["12"], "recommend_candidate": ["13"]}


def test_prepare_refuses_a_candidate_the_repository_lacks(helm, tmp_path):
    docs = helm.render(CPU, set_values=("model.version=12", "experiment.candidateVersion=14"))
    candidate_repository(tmp_path)
    result = run_prepare(docs, tmp_path)
    assert result.returncode == 1
    assert "has no candidate version 14" in result.stderr and "sessionrec export --candidate" in result.stderr


def test_without_a_candidate_nothing_changes(helm, tmp_path):
    docs = helm.render(CPU, set_values=("model.version=12",))
    annotations = one(docs, "Deployment", FULLNAME)["spec"]["template"]["metadata"]["annotations"]
    assert "sessionrec.io/candidate-version" not in annotations
    candidate_repository(tmp_path)
    result = run_prepare(docs, tmp_path)
    assert result.returncode == 0, result.stderr
    assert versions(tmp_path) == {FUSED: ["12"], "recommend": ["12"]}  # recommend_candidate dropped


def test_the_schema_refuses_a_non_numeric_candidate(helm):
    result = helm.template(CPU, set_values=("experiment.candidateVersion=latest",), check=False)
    assert result.returncode != 0 and "candidateVersion" in result.stderr


HPA = CHART / "ci" / "hpa-values.yaml"  # a scenario with the Prometheus-operator monitor on


def test_two_deployment_mode_labels_pods_and_series_with_the_track(helm):
    stable = helm.render(HPA, set_values=("experiment.track=stable",))
    labels = one(stable, "Deployment", FULLNAME)["spec"]["template"]["metadata"]["labels"]
    selector = one(stable, "Deployment", FULLNAME)["spec"]["selector"]["matchLabels"]
    assert labels["sessionrec.io/track"] == "stable" and "sessionrec.io/track" not in selector
    monitor = next(d for d in stable if d["kind"] in ("ServiceMonitor", "PodMonitor"))
    endpoint = (monitor["spec"].get("endpoints") or monitor["spec"]["podMetricsEndpoints"])[0]
    assert {"sourceLabels": ["__meta_kubernetes_pod_label_sessionrec_io_track"], "targetLabel": "track"} \
        in endpoint["relabelings"]
    # the candidate is a second release: its own names and selector, so the Deployments never overlap
    args = ["template", "recs-candidate", str(CHART), "--namespace", "recs-prod", "--kube-version", "1.34.0",
            "--values", str(HPA), "--set", "experiment.track=candidate", "--set", "model.version=4"]
    from tests.helm.conftest import parse

    candidate = parse(helm.run(*args).stdout)
    deployment = one(candidate, "Deployment", "recs-candidate-sessionrec")
    assert deployment["spec"]["template"]["metadata"]["labels"]["sessionrec.io/track"] == "candidate"
    assert deployment["spec"]["selector"]["matchLabels"] != selector
    names = {d["metadata"]["name"] for d in candidate if d["kind"] == "Service"}
    assert "recs-candidate-sessionrec-headless" in names


def test_the_schema_refuses_an_unknown_track(helm):
    result = helm.template(CPU, set_values=("experiment.track=canary",), check=False)
    assert result.returncode != 0 and "track" in result.stderr
