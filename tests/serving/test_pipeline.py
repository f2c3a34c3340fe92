"""The fused pipeline's batch path, as the session_recommender stub runs it."""

import numpy as np

from sessionrec.serving.pipeline import LocalPipeline, PipelineRequest
from sessionrec.serving.preprocess import RequestError


def test_warm_up_answers_the_largest_batch_and_changes_no_answer(exported_repository):
    pipeline = LocalPipeline(exported_repository, 1)
    session = pipeline.preprocessor.id_map.raw_ids[1:6].tolist()
    before = pipeline.recommend(session, 20)
    pipeline.warm_up(64)
    after = pipeline.recommend(session, 20)
    assert after.item_ids.tolist() == before.item_ids.tolist()
    np.testing.assert_allclose(after.scores, before.scores, rtol=1e-6)


def test_a_bad_request_in_a_batch_gets_its_error_and_the_others_their_answers(exported_repository):
    pipeline = LocalPipeline(exported_repository, 1)
    items = pipeline.preprocessor.id_map.raw_ids[1:4]
    good = PipelineRequest(items[None, :], np.array([[5]]), np.array([[False]]))
    bad_k = PipelineRequest(items[None, :], np.array([[0]]), np.array([[False]]))
    two_rows = PipelineRequest(np.stack([items, items]), np.array([[5], [3]]), np.array([[False], [True]]))
    answers = pipeline.recommend_many([good, bad_k, good, two_rows])
    assert isinstance(answers[1], RequestError) and "K=0 is out of range" in str(answers[1])
    assert isinstance(answers[3], RequestError) and "different numbers of items" in str(answers[3])
    assert answers[0].item_ids.shape == (1, 5) and answers[2].item_ids.tolist() == answers[0].item_ids.tolist()
    assert answers[0].item_ids.tolist()[0] == pipeline.recommend(items, 5).item_ids.tolist()


def test_retriever_warm_up_searches_the_deepest_batch_and_changes_no_answer(exported_repository):
    """The GPU layout's retrieval stub warms up alone (no preprocess or encoder in its process)."""
    from sessionrec.serving.artifacts import load_retriever

    retriever = load_retriever(exported_repository / "retrieval" / "1")
    assert retriever.max_len == LocalPipeline(exported_repository, 1).preprocessor.max_len
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3, retriever.index.d)).astype(np.float32)
    items = np.array([[1, 2, 0], [3, 0, 0], [4, 5, 6]])
    args = (vectors, items, np.array([False, True, False]), np.array([7, 7, 7]), np.array([True, False, True]))
    before = retriever.retrieve(*args)
    retriever.warm_up(64)
    after = retriever.retrieve(*args)
    for (ids_a, scores_a), (ids_b, scores_b) in zip(before, after):
        assert ids_a.tolist() == ids_b.tolist()
        np.testing.assert_allclose(scores_a, scores_b, rtol=1e-6)


def test_warm_ups_search_on_one_thread_and_traffic_after_them_on_two(exported_repository, monkeypatch):
    # A new version warms up while the serving one answers traffic on the same cores: its deepest
    # searches must leave one core alone; a live batch of 16+ sessions still gets two threads.
    import faiss

    from sessionrec.serving import retrieval

    seen = []
    real_search = retrieval.search

    def spy(index, queries, k):
        seen.append((len(queries), faiss.omp_get_max_threads()))
        return real_search(index, queries, k)

    monkeypatch.setattr(retrieval, "search", spy)
    pipeline = LocalPipeline(exported_repository, 1)
    pipeline.retriever.batch_threads = 2
    pipeline.warm_up(64)
    pipeline.retriever.warm_up(64)
    assert seen and all(threads == 1 for _, threads in seen), seen
    seen.clear()
    session = pipeline.preprocessor.id_map.raw_ids[1:6]
    pipeline.recommend_many([PipelineRequest(session[None, :], np.array([[20]]), np.array([[False]]))] * 32)
    assert seen == [(32, 2)]
