"""End to end: the real tritonserver answers exactly what the PyTorch model answers.

Every test runs for both model families (the `graph` and the `sequence` input schema): the SR-GNN
model on the session-wide server, the SASRec-style model on a server of this module's own.
"""

from dataclasses import dataclass

from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from sessionrec.checkpoint import load_checkpoint
from sessionrec.data import prefixes, validation_split
from sessionrec.families import model_inputs
from sessionrec.serving.embedded import infer_recommend

pytestmark = pytest.mark.server


@dataclass
class Served:
    family: str
    server: object
    checkpoint: Path
    repository: Path


@pytest.fixture(scope="module")
def sasrec_server(sasrec_repository, tmp_path_factory):
    from sessionrec.serving.embedded import EmbeddedServer

    log = tmp_path_factory.mktemp("logs-sasrec") / "tritonserver.log"
    with EmbeddedServer(sasrec_repository, watch_seconds=0, log_file=log) as server:
        yield server


@pytest.fixture(scope="module", params=["srgnn", "sasrec"])
def served(request) -> Served:
    names = {"srgnn": ("embedded_server", "trained_checkpoint", "exported_repository"),
             "sasrec": ("sasrec_server", "sasrec_checkpoint", "sasrec_repository")}[request.param]
    return Served(request.param, *(request.getfixturevalue(name) for name in names))


@pytest.fixture(scope="module")
def client(served):
    return grpcclient.InferenceServerClient(served.server.grpc_url)


@pytest.fixture(scope="module")
def reference(served, sample_dataset):
    """A few hundred real sessions (every test prefix, then validation prefixes) with PyTorch's top-20."""
    ckpt = load_checkpoint(served.checkpoint)
    assert ckpt.family == served.family
    model = ckpt.build_model()
    test_x, _ = prefixes(sample_dataset.test)
    _, valid = validation_split(sample_dataset.train)
    valid_x, _ = prefixes(valid)
    sessions = (test_x + valid_x)[:300]
    with torch.no_grad():
        scores = model(*model_inputs(model, sessions))  # the family's own schema, padded as served
        top = scores.topk(20, dim=1)
    raw = ckpt.raw_ids
    return [(raw[np.asarray(s)], raw[(i + 1).numpy()], v.numpy()) for s, i, v in zip(sessions, top.indices, top.values)]


def test_served_top20_equals_pytorch(client, reference):
    assert len(reference) >= 240  # every sample test prefix (99) + validation prefixes
    mismatched = 0
    for items, expected_ids, expected_scores in reference:
        result = infer_recommend(client, items, 20, False)
        ids, scores = result.as_numpy("ITEM_IDS")[0], result.as_numpy("SCORES")[0]
        mismatched += ids.tolist() != expected_ids.tolist()
        np.testing.assert_allclose(np.sort(scores)[::-1], expected_scores, atol=1e-4)
        assert result.as_numpy("UNKNOWN_COUNT")[0, 0] == 0 and not result.as_numpy("FALLBACK")[0, 0]
    assert mismatched == 0


def test_exclude_seen_and_k(client, reference):
    items, _, _ = reference[0]
    result = infer_recommend(client, items, 7, True)
    ids = result.as_numpy("ITEM_IDS")[0]
    assert len(ids) == 7 and not set(ids.tolist()) & set(items.tolist())


def test_unknown_ids_are_dropped_and_counted(client, reference):
    items, expected, _ = reference[0]
    unknown = [-5, 10**15]
    result = infer_recommend(client, np.concatenate([[unknown[0]], items, [unknown[1]]]), 20, False)
    assert result.as_numpy("UNKNOWN_COUNT")[0, 0] == 2
    assert result.as_numpy("ITEM_IDS")[0].tolist() == expected.tolist()


def test_all_unknown_falls_back_to_popular_items(client, served):
    ckpt = load_checkpoint(served.checkpoint)
    result = infer_recommend(client, [-1, -2, -3], 5, False)
    assert result.as_numpy("FALLBACK")[0, 0] and result.as_numpy("UNKNOWN_COUNT")[0, 0] == 3
    popular = ckpt.raw_ids[np.argsort(-ckpt.item_counts[1:], kind="stable")[:5] + 1]
    assert result.as_numpy("ITEM_IDS")[0].tolist() == popular.tolist()


def test_over_long_session_keeps_the_last_max_len(client, reference, served):
    max_len = load_checkpoint(served.checkpoint).model_config.max_len
    items = np.concatenate([item for item, _, _ in reference[:40]])[: 5 * max_len]
    long = infer_recommend(client, items, 20, False).as_numpy("ITEM_IDS")[0]
    tail = infer_recommend(client, items[-max_len:], 20, False).as_numpy("ITEM_IDS")[0]
    assert long.tolist() == tail.tolist()


@pytest.mark.parametrize(
    "items, k, message",
    [
        ([], 20, "ITEMS is empty"),
        (list(range(1, 1200)), 20, "over the limit of 1000"),
        ([1, 2], 0, "K=0 is out of range"),
        ([1, 2], -3, "K=-3 is out of range"),
        ([1, 2], 10**6, "is out of range"),
    ],
)
def test_bad_requests_get_invalid_argument_and_server_stays_up(client, reference, items, k, message):
    with pytest.raises(InferenceServerException) as err:
        infer_recommend(client, items, k, False)
    assert "INVALID_ARGUMENT" in str(err.value.status()) and message in err.value.message()
    good, expected, _ = reference[1]
    assert infer_recommend(client, good, 20, False).as_numpy("ITEM_IDS")[0].tolist() == expected.tolist()


def test_wrong_dtype_is_rejected_by_the_server(client):
    inputs = [grpcclient.InferInput("ITEMS", [1, 2], "FP32"), grpcclient.InferInput("K", [1, 1], "INT32"),
              grpcclient.InferInput("EXCLUDE_SEEN", [1, 1], "BOOL")]
    inputs[0].set_data_from_numpy(np.array([[1.5, 2.0]], dtype=np.float32))
    inputs[1].set_data_from_numpy(np.array([[5]], dtype=np.int32))
    inputs[2].set_data_from_numpy(np.array([[False]]))
    with pytest.raises(InferenceServerException, match="(?i)data.?type|dtype|expected"):
        client.infer("recommend", inputs)
    assert client.is_server_live() and client.is_model_ready("recommend")


def test_three_step_layout_answers_the_same(served, reference, tmp_path):
    """`ServingConfig(fused_cpu=False)`: preprocess -> session_encoder -> retrieval as three python
    models (the GPU layout's wiring, CPU backends) answers exactly what the fused step answers. The
    preprocess -> encoder tensors are the schema's (graph: 5 tensors, sequence: items + mask)."""
    import shutil

    from sessionrec.export.configs import STEPS, ServingConfig
    from sessionrec.export.repository import write_configs
    from sessionrec.reliability.procs import python_stubs
    from sessionrec.schemas import get_schema
    from sessionrec.serving.embedded import EmbeddedServer

    repository = tmp_path / "repository"
    shutil.copytree(served.repository, repository)
    schema = get_schema(load_checkpoint(served.checkpoint).schema)
    write_configs(repository, ServingConfig(fused_cpu=False, schema=schema.name), version=1)
    with EmbeddedServer(repository, watch_seconds=0, log_file=tmp_path / "triton.log") as server:
        assert server.steps == STEPS and set(python_stubs(server.server.pid)) == set(STEPS)
        client = grpcclient.InferenceServerClient(server.grpc_url)
        encoder_inputs = [t.name for t in client.get_model_config("session_encoder").config.input]
        assert encoder_inputs == list(schema.input_names)
        for items, ids, scores in reference[:60]:
            result = infer_recommend(client, items, 20, False)
            assert result.as_numpy("ITEM_IDS")[0].tolist() == ids.tolist()
            np.testing.assert_allclose(result.as_numpy("SCORES")[0], scores, atol=1e-3)


def test_no_stub_thread_serves_at_low_priority(served, client, reference):
    # Stubs import and load in a thread at niceness 19 (sessionrec.serving.triton_io.load_at_low_priority).
    # A thread started meanwhile keeps that priority (onnxruntime's import starts one that stays idle):
    # none of them may do any of the serving, or requests would wait behind everything else.
    from sessionrec.reliability.procs import python_stubs

    def threads() -> dict[str, tuple[int, int]]:
        found = {}
        for pid in (p for pids in python_stubs(served.server.server.pid).values() for p in pids):
            for task in Path(f"/proc/{pid}/task").iterdir():
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                found[f"{pid}/{task.name}"] = (int(fields[16]), int(fields[11]) + int(fields[12]))  # nice, CPU ticks
        return found

    for items, _, _ in reference[:5]:
        infer_recommend(client, items, 20, False)  # whatever the first requests start exists now
    before = threads()
    assert before and any(nice == 0 for nice, _ in before.values())
    for items, _, _ in reference[:200]:
        infer_recommend(client, items, 20, False)
    after = threads()
    serving = {name for name in after if after[name][1] > before.get(name, (0, 0))[1]}
    assert serving, "no stub thread used CPU for 200 requests?"
    assert all(after[name][0] == 0 for name in serving), {name: after[name] for name in serving}
