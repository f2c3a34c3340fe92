"""Helpers of the python-backend model.py files that run without Triton."""

import ast
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import faiss
import numpy as np
import pytest

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


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_loading_runs_at_low_priority_and_the_caller_keeps_its_own(monkeypatch):
    monkeypatch.delenv(io.LOAD_NICENESS_ENV, raising=False)
    caller = _niceness()
    loaded_at = io.load_at_low_priority(_niceness)
    assert loaded_at == max(caller, 19) and _niceness() == caller
    monkeypatch.setenv(io.LOAD_NICENESS_ENV, "0")  # the operator's way to turn it off
    assert io.load_at_low_priority(_niceness) == caller
    monkeypatch.setenv(io.LOAD_NICENESS_ENV, "fast")
    with pytest.raises(ValueError, match="SESSIONREC_LOAD_NICENESS='fast'"):
        io.load_at_low_priority(_niceness)


def test_loading_errors_reach_the_caller():
    def broken():
        raise FileNotFoundError("retrieval/3/index.faiss")

    with pytest.raises(FileNotFoundError, match="index.faiss"):
        io.load_at_low_priority(broken, niceness=19)


@pytest.mark.parametrize("model", ["session_recommender", "retrieval", "session_encoder", "preprocess", "retrieval_shard"])
def test_model_files_import_nothing_heavy_before_loading(model):
    # onnxruntime and FAISS are imported inside load_at_low_priority: a model.py's top level runs on
    # the stub's main thread, the one that serves afterwards, at normal priority.
    source = (Path(__file__).resolve().parents[2] / "model_repository" / model / "model.py").read_text()
    imports = [ast.unparse(node) for node in ast.parse(source).body if isinstance(node, (ast.Import, ast.ImportFrom))]
    imports = [line for line in imports if "triton_python_backend_utils" not in line]  # only inside the stub
    assert imports
    code = "\n".join(imports + ["import sys", "print(sorted({'faiss', 'onnxruntime', 'torch'} & set(sys.modules)))"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_older_versions_model_py_gets_outputs_added_since_filled_in():
    """session_history's `canary` output (monitoring) came after versions were exported; under the
    shared new config, an older version's copied model.py answers it false instead of failing."""
    import numpy as np

    from sessionrec.serving import triton_io as io

    class Tensor:  # the stub's pb_utils exists only inside Triton: the two constructors response() uses
        def __init__(self, name, array):
            self.name, self.array = name, array

    pb = type("pb", (), {"Tensor": Tensor, "InferenceResponse": lambda output_tensors: output_tensors})
    dtypes = {"HISTORY_LENGTH": np.dtype(np.int32), "canary": np.dtype(bool)}
    old = io.response(pb, {"HISTORY_LENGTH": np.array([[3]])}, dtypes)  # what an older model.py sends
    assert {t.name: t.array.tolist() for t in old} == {"HISTORY_LENGTH": [[3]], "canary": [[False]]}
    new = io.response(pb, {"HISTORY_LENGTH": np.array([[3]]), "canary": np.array([[True]])}, dtypes)
    assert {t.name: t.array.tolist() for t in new}["canary"] == [[True]]
    with pytest.raises(KeyError):  # any other missing output is still the model's bug
        io.response(pb, {}, {"ITEM_IDS": np.dtype(np.int64)})
