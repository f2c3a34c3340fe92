"""Input schemas: one builder each, shared by training, export, preprocess and tests."""

import numpy as np
import pytest
import torch

from sessionrec.schemas import SCHEMAS, SchemaError, get_schema
from sessionrec.sequence import build_sequence
from sessionrec.serving.preprocess import IdMap, Preprocessor


def test_sequence_worked_example_from_the_docstring():
    items, mask = build_sequence([5, 3, 5, 7], max_len=6)
    assert items.tolist() == [5, 3, 5, 7, 0, 0] and mask.tolist() == [1, 1, 1, 1, 0, 0]
    assert items.dtype == np.int64 and mask.dtype == np.float32


def test_sequence_keeps_the_last_max_len_clicks_in_order():
    items, mask = build_sequence(list(range(1, 11)), max_len=4)
    assert items.tolist() == [7, 8, 9, 10] and mask.sum() == 4
    with pytest.raises(ValueError, match="pad_to=2 is shorter"):
        build_sequence([1, 2, 3], max_len=4, pad_to=2)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_batch_shapes_dtypes_and_padding_to_longest(name):
    schema = get_schema(name)
    full = schema.batch([[1, 2], [3, 4, 5, 3]], max_len=8)
    short = schema.batch([[1, 2], [3, 4, 5, 3]], max_len=8, pad_to_longest=True)
    empty = schema.batch([], max_len=8)
    schema.check(full)
    for spec in schema.inputs:
        assert full[spec.name].shape == (2,) + (8,) * spec.rank
        assert short[spec.name].shape == (2,) + (4,) * spec.rank
        assert empty[spec.name].shape == (0,) + (8,) * spec.rank and empty[spec.name].dtype == spec.dtype
    assert list(full) == list(schema.input_names)


def test_graph_schema_is_the_graph_builder():
    from sessionrec.graph import build_batch

    sessions = [[5, 3, 5, 7], [2]]
    graphs = build_batch(sessions, max_len=6)
    arrays = get_schema("graph").batch(sessions, max_len=6)
    for name in arrays:
        np.testing.assert_array_equal(arrays[name], getattr(graphs, name))


def test_unknown_schema_and_version_are_refused_with_the_known_ones_named():
    with pytest.raises(SchemaError, match="'bag' is not known.*graph, sequence"):
        get_schema("bag")
    with pytest.raises(SchemaError, match="version 7 is not supported"):
        get_schema("sequence", 7)


def test_check_names_the_tensor():
    schema = get_schema("sequence")
    with pytest.raises(SchemaError, match="needs tensor 'mask'"):
        schema.check({"items": np.zeros((1, 4), np.int64)})
    with pytest.raises(SchemaError, match="tensor 'items' of schema 'sequence' must be int64"):
        schema.check({"items": np.zeros((1, 4), np.float32), "mask": np.zeros((1, 4), np.float32)})


def test_preprocessor_follows_the_schema():
    ids = IdMap(np.array([-1, 100, 200, 300]))
    sequence = Preprocessor(ids, max_len=4, schema="sequence").process(np.array([[300, 999, 100, 300]]))
    assert sorted(sequence) == ["fallback", "items", "mask", "unknown_count"]
    assert sequence["items"].tolist() == [[3, 1, 3, 0]] and sequence["unknown_count"].tolist() == [[1]]
    graph = Preprocessor(ids, max_len=4).process(np.array([[300, 999, 100, 300]]))
    assert graph["items"].tolist() == [[1, 3, 0, 0]] and "adj_in" in graph
    with pytest.raises(SchemaError):
        Preprocessor(ids, max_len=4, schema="bag")


def test_sasrec_is_causal_and_ignores_padding():
    """The session vector depends on the clicks only: not on padding width, and a later click changes it."""
    from sessionrec.families import model_inputs
    from sessionrec.sasrec import SASRec, SASRecConfig

    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=20, dim=16, max_len=8, dropout=0.0)).eval()
    with torch.no_grad():
        padded = model.encode(*model_inputs(model, [[3, 4, 5]]))
        tight = model.encode(*model_inputs(model, [[3, 4, 5]], pad_to_longest=True))
        longer = model.encode(*model_inputs(model, [[3, 4, 5, 6]]))
    torch.testing.assert_close(padded, tight, atol=1e-5, rtol=0)
    assert (padded - longer).abs().max() > 1e-3
    assert padded.shape == (1, 16)
