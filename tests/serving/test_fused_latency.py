"""The fused step's low-latency path (issue 15): one encoder batch padded to its longest session, no
dynamic-batcher wait, only the requested outputs; answers unchanged. Real tritonserver where served."""

import numpy as np
import pytest

from sessionrec.serving.pipeline import LocalPipeline, PipelineRequest
from sessionrec.serving.preprocess import RequestError


def _reference(pipeline: LocalPipeline, raw: np.ndarray, k: int, exclude: bool):
    """The answer as before: the request alone, padded to max_len (Preprocessor.process's default)."""
    graph = pipeline.preprocessor.process(raw[None, :])
    assert graph["items"].shape[1] == pipeline.preprocessor.max_len
    vectors = pipeline.encoder(graph)
    (ids, scores), = pipeline.retriever.retrieve(vectors, graph["items"], graph["fallback"], np.array([k]), np.array([exclude]))
    return ids, scores, int(graph["unknown_count"][0, 0]), bool(graph["fallback"][0, 0])


def test_a_mixed_batch_padded_to_its_longest_session_answers_as_each_request_alone(exported_repository):
    pipeline = LocalPipeline(exported_repository, 1, one_click=False)
    raw = pipeline.preprocessor.id_map.raw_ids
    rng = np.random.default_rng(3)
    sessions = [rng.choice(raw[1:], size=n) for n in (2, 5, 3, 9, 2)]
    sessions.append(np.array([raw[4], 10**12, raw[7]]))  # one unknown id, dropped and counted
    sessions.append(np.array([10**12 + 1]))  # nothing known: popular items
    widths = []
    real_encoder = pipeline.encoder

    def spy(batch):
        widths.append(batch["items"].shape[1])
        return real_encoder(batch)

    pipeline.encoder = spy
    requests = [PipelineRequest(s[None, :], np.array([[20]]), np.array([[i % 2 == 1]])) for i, s in enumerate(sessions)]
    answers = pipeline.recommend_many(requests)
    longest = max(np.unique(s[np.isin(s, raw[1:])]).size for s in sessions)  # graph nodes: unique known items
    assert widths == [longest] and longest < pipeline.preprocessor.max_len
    pipeline.encoder = real_encoder
    for i, (session, answer) in enumerate(zip(sessions, answers)):
        ids, scores, unknown, fallback = _reference(pipeline, session, 20, i % 2 == 1)
        assert answer.item_ids[0].tolist() == ids.tolist(), i
        np.testing.assert_allclose(answer.scores[0], scores, rtol=1e-5, atol=1e-5)
        assert (int(answer.unknown_count[0, 0]), bool(answer.fallback[0, 0])) == (unknown, fallback)
    assert (answers[-2].unknown_count[0, 0], answers[-1].fallback[0, 0]) == (1, True)


def test_bad_requests_are_refused_before_the_batch_is_built(exported_repository):
    pipeline = LocalPipeline(exported_repository, 1, one_click=False)
    good = PipelineRequest(pipeline.preprocessor.id_map.raw_ids[1:4][None, :], np.array([[5]]), np.array([[False]]))
    empty = PipelineRequest(np.zeros((1, 0), np.int64), np.array([[5]]), np.array([[False]]))
    floats = PipelineRequest(np.array([[1.5, 2.0]]), np.array([[5]]), np.array([[False]]))
    answers = pipeline.recommend_many([empty, good, floats])
    assert isinstance(answers[0], RequestError) and "ITEMS is empty" in str(answers[0])
    assert isinstance(answers[2], RequestError) and "int64" in str(answers[2])
    assert answers[1].item_ids.shape == (1, 5)


@pytest.fixture(scope="module")
def grpc(embedded_server):
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(embedded_server.server.grpc_url) as client:
        yield client, grpcclient


def _inputs(grpcclient, items, k=20):
    items = np.asarray(items, dtype=np.int64)[None, :]
    out = [grpcclient.InferInput("ITEMS", list(items.shape), "INT64"), grpcclient.InferInput("K", [1, 1], "INT32"),
           grpcclient.InferInput("EXCLUDE_SEEN", [1, 1], "BOOL")]
    out[0].set_data_from_numpy(items)
    out[1].set_data_from_numpy(np.array([[k]], dtype=np.int32))
    out[2].set_data_from_numpy(np.array([[False]]))
    return out


def test_served_step_has_no_queue_delay_and_answers_only_what_is_asked(grpc, embedded_server, exported_repository):
    client, grpcclient = grpc
    config = client.get_model_config("session_recommender", as_json=True)["config"]
    assert int(config["dynamic_batching"].get("max_queue_delay_microseconds", 0)) == 0
    pipeline = LocalPipeline(exported_repository, embedded_server.version)
    session = pipeline.preprocessor.id_map.raw_ids[[3, 9, 3, 12]].tolist()
    expected = pipeline.recommend(session, 20)
    # Through the ensemble: its four outputs, the served answer unchanged.
    through = client.infer("recommend", _inputs(grpcclient, session))
    names = {o.name for o in through.get_response().outputs}
    assert names == {"ITEM_IDS", "SCORES", "UNKNOWN_COUNT", "FALLBACK"}
    assert through.as_numpy("ITEM_IDS")[0].tolist() == expected.item_ids.tolist()
    # Straight to the step, asking for two outputs: those two, the same answer.
    wanted = [grpcclient.InferRequestedOutput("ITEM_IDS"), grpcclient.InferRequestedOutput("FALLBACK")]
    direct = client.infer("session_recommender", _inputs(grpcclient, session), outputs=wanted)
    assert {o.name for o in direct.get_response().outputs} == {"ITEM_IDS", "FALLBACK"}
    assert direct.as_numpy("ITEM_IDS")[0].tolist() == expected.item_ids.tolist()
    # Asking for nothing in particular: every output of the step, the history ones included.
    every = client.infer("session_recommender", _inputs(grpcclient, session))
    assert {o.name for o in every.get_response().outputs} >= {"ITEM_IDS", "HISTORY_LENGTH", "HISTORY_STATE"}
    assert every.as_numpy("HISTORY_STATE")[0, 0] == b"not_stored"
