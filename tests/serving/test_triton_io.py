"""Helpers of the python-backend model.py files that run without Triton."""

import json
import threading

import faiss
import numpy as np

from sessionrec.serving import triton_io as io
from sessionrec.serving.preprocess import IdMap
from sessionrec.serving.retrieval import Retriever


def test_retriever_searches_single_threaded_in_whichever_thread_searches():
    """OpenMP's thread count is per thread: a retriever built in one thread (Triton's loading thread)
    must still search with one thread in another (the serving thread)."""
    vectors = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # unit vectors: each is its own best match
    index = faiss.IndexFlatIP(8)
    index.add(vectors)
    built = []
    loader = threading.Thread(target=lambda: built.append(Retriever(index, IdMap(np.arange(-1, 50)), np.ones(51))))
    loader.start()
    loader.join()
    retriever = built[0]
    faiss.omp_set_num_threads(2)
    rows = retriever.retrieve(vectors[:1], np.array([[1]]), [[False]], [[5]], [[False]])
    assert faiss.omp_get_max_threads() == 1
    assert rows[0][0][0] == 0  # raw id of model id 1 = row 0: its own best match


def test_model_config_readers():
    args = {"model_config": json.dumps({"max_batch_size": 64,
                                        "parameters": {"intra_op_threads": {"string_value": "2"}}})}
    assert io.max_batch_size(args) == 64
    assert io.parameter(args, "intra_op_threads", "1") == "2"
    assert io.parameter(args, "missing", "1") == "1"
    assert io.max_batch_size({"model_config": json.dumps({"max_batch_size": 0})}) == 1  # no batching: one
