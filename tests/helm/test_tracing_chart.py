"""The chart's tracing section (values `tracing`): off by default; on, tritonserver gets the
OpenTelemetry flags and the step its endpoint; the rendered flags, run by the real tritonserver,
deliver spans to a real OTLP/HTTP receiver."""
from __future__ import annotations

import pytest

from tests.helm.conftest import CHART, FULLNAME, triton
from tests.tracing.otlp_receiver import OTLPReceiver

CPU = CHART / "ci" / "cpu-values.yaml"


def trace_flags(docs) -> list[str]:
    return [a for a in triton(docs)["args"] if a.startswith("--trace-config")]


def env(docs) -> dict:
    return {e["name"]: e.get("value") for e in triton(docs).get("env", [])}


def test_tracing_is_off_by_default(helm):
    docs = helm.render(CPU)
    assert trace_flags(docs) == []
    assert "SESSIONREC_TRACING_ENDPOINT" not in env(docs)


def test_tracing_points_triton_and_the_step_at_the_collector(helm, tmp_path):
    values = tmp_path / "tracing.yaml"  # a file: `--set` would pass 0.02 as a string
    values.write_text("tracing: {enabled: true, endpoint: 'http://otel.obs:4318/', sampleRate: 0.02}\n")
    docs = helm.render(CPU, values)
    assert trace_flags(docs) == [
        "--trace-config=mode=opentelemetry", "--trace-config=rate=50", "--trace-config=level=TIMESTAMPS",
        "--trace-config=opentelemetry,url=http://otel.obs:4318/v1/traces",
        f"--trace-config=opentelemetry,resource=service.name={FULLNAME}",
        "--trace-config=opentelemetry,bsp_schedule_delay=5000"]
    assert env(docs)["SESSIONREC_TRACING_ENDPOINT"] == "http://otel.obs:4318/"
    assert env(docs)["SESSIONREC_TRACING_SERVICE"] == FULLNAME


def test_bad_tracing_values_are_refused(helm):
    failed = helm.template(CPU, set_values=("tracing.enabled=true",), check=False)
    assert failed.returncode != 0 and "tracing.endpoint" in failed.stderr
    for bad in ("tracing.sampleRate=0", "tracing.sampleRate=2", "tracing.endpoint=otel:4318"):
        failed = helm.template(CPU, set_values=(bad,), check=False)
        assert failed.returncode != 0 and "tracing" in failed.stderr, bad


@pytest.mark.server
def test_rendered_flags_run_in_the_real_tritonserver(helm, exported_repository, tmp_path):
    from sessionrec.serving.embedded import infer_recommend
    from sessionrec.serving.launcher import TritonServer

    with OTLPReceiver() as receiver:
        docs = helm.render(CPU, set_values=("tracing.enabled=true", f"tracing.endpoint={receiver.endpoint}",
                                            "tracing.sampleRate=1", "tracing.exportDelayMs=200"))
        tracing_env = {k: v for k, v in env(docs).items() if k.startswith("SESSIONREC_TRACING_")}
        server = TritonServer(exported_repository, models=["session_recommender", "recommend"],
                              extra_args=trace_flags(docs), environment=tracing_env,
                              log_file=tmp_path / "tritonserver.log")
        server.start(require_models=True)
        try:
            infer_recommend(server.client(), [1, 2, 3], 5, False)
            spans = receiver.wait_for(lambda s: any(x.name == "faiss_search" for x in s), timeout=15)
        finally:
            server.stop()
    names = {(s.service, s.name) for s in spans}
    assert {(FULLNAME, "InferRequest"), (FULLNAME, "recommend"), (FULLNAME, "session_recommender"),
            (FULLNAME, "encoder"), (FULLNAME, "faiss_search")} <= names
