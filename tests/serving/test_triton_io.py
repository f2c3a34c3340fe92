"""Helpers of the python-backend model.py files that run without Triton."""

import os
import threading

import faiss
import numpy as np
import pytest

from sessionrec.serving import triton_io as io
from sessionrec.serving.preprocess import IdMap
from sessionrec.serving.retrieval import Retriever


def test_loading_runs_at_the_lowest_priority_in_its_own_thread_only():
    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def load(a, b=0):
        return threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), a + b

    tid, niceness, value = io.load_at_low_priority(load, 2, b=3)
    assert value == 5 and tid != threading.get_native_id()
    assert niceness == io.LOAD_NICENESS
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before  # the serving thread


def test_a_failed_load_raises_in_the_caller():
    def load():
        raise FileNotFoundError("items.faiss is missing")

    with pytest.raises(FileNotFoundError, match="items.faiss"):
        io.load_at_low_priority(load)


def test_retriever_searches_single_threaded_in_whichever_thread_searches():
    """OpenMP's thread count is per thread: a retriever loaded in the loading thread must still
    search with one thread in the serving thread."""
    vectors = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # unit vectors: each is its own best match
    index = faiss.IndexFlatIP(8)
    index.add(vectors)
    retriever = io.load_at_low_priority(Retriever, index, IdMap(np.arange(-1, 50)), np.ones(51))
    faiss.omp_set_num_threads(2)
    rows = retriever.retrieve(vectors[:1], np.array([[1]]), [[False]], [[5]], [[False]])
    assert faiss.omp_get_max_threads() == 1
    assert rows[0][0][0] == 0  # raw id of model id 1 = row 0: its own best match
