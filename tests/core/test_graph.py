"""Golden tests of the session-graph builder on hand-worked sessions."""

import numpy as np
import pytest

from sessionrec.graph import build_batch, build_graph


def test_docstring_example():
    items, alias, adj_in, adj_out, mask = build_graph([5, 3, 5, 7], max_len=5)
    assert items.tolist() == [3, 5, 7, 0, 0]
    assert alias.tolist() == [1, 0, 1, 2, 0]
    assert mask.tolist() == [1, 1, 1, 1, 0]
    np.testing.assert_array_equal(adj_in[:3, :3], [[0, 1, 0], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(adj_out[:3, :3], [[0, 1, 0], [0.5, 0, 0.5], [0, 0, 0]])
    assert not adj_in[3:].any() and not adj_in[:, 3:].any() and not adj_out[3:].any()


def test_repeated_transition_counts_once_and_self_loop():
    # 4 -> 4 (self loop), 4 -> 9 twice (one edge), 9 -> 4
    items, alias, adj_in, adj_out, mask = build_graph([4, 4, 9, 4, 9], max_len=5)
    assert items.tolist()[:2] == [4, 9]
    assert alias.tolist() == [0, 0, 1, 0, 1]
    # in-degree: 4 <- {4, 9} = 2, 9 <- {4} = 1 ; out-degree: 4 -> {4, 9} = 2, 9 -> {4} = 1
    np.testing.assert_allclose(adj_in[:2, :2], [[0.5, 0.5], [1, 0]])
    np.testing.assert_allclose(adj_out[:2, :2], [[0.5, 0.5], [1, 0]])


def test_length_one_and_empty():
    items, alias, adj_in, adj_out, mask = build_graph([8], max_len=3)
    assert items.tolist() == [8, 0, 0] and alias.tolist() == [0, 0, 0] and mask.tolist() == [1, 0, 0]
    assert not adj_in.any() and not adj_out.any()
    items, alias, adj_in, adj_out, mask = build_graph([], max_len=3)
    assert not items.any() and not mask.any()


def test_longer_than_max_len_keeps_the_last_clicks():
    items, alias, _, adj_out, mask = build_graph([1, 2, 3, 4, 5, 6], max_len=3)
    assert items.tolist() == [4, 5, 6] and mask.tolist() == [1, 1, 1]
    np.testing.assert_array_equal(adj_out, [[0, 1, 0], [0, 0, 1], [0, 0, 0]])


def test_matches_srgnn_reference_formula():
    """Compare with SR-GNN's get_slice formulation (u_A / colsum, u_A.T / rowsum, transposed)."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        seq = rng.integers(1, 8, size=rng.integers(1, 12)).tolist()
        items, alias, adj_in, adj_out, mask = build_graph(seq, max_len=12)
        node = np.unique(seq)
        u_A = np.zeros((12, 12))
        for a, b in zip(seq[:-1], seq[1:]):
            u_A[np.where(node == a)[0][0]][np.where(node == b)[0][0]] = 1
        s_in = u_A.sum(0); s_in[s_in == 0] = 1
        s_out = u_A.sum(1); s_out[s_out == 0] = 1
        A = np.concatenate([u_A / s_in, (u_A.T / s_out)]).T
        np.testing.assert_allclose(adj_in, A[:, :12], atol=1e-6)
        np.testing.assert_allclose(adj_out, A[:, 12:], atol=1e-6)
        assert alias[: len(seq)].tolist() == [np.where(node == i)[0][0] for i in seq]


def test_batch_padding():
    batch = build_batch([[1, 2], [3, 4, 5, 6]], max_len=10, pad_to_longest=True)
    assert batch.items.shape == (2, 4) and batch.adj_in.shape == (2, 4, 4)
    assert build_batch([[1, 2]], max_len=10).items.shape == (1, 10)
    assert build_batch([], max_len=10).items.shape == (0, 10)
    with pytest.raises(ValueError):
        build_graph([1, 2, 3], max_len=3, pad_to=2)


def test_vectorised_batch_equals_stacking_the_single_session_builder():
    """build_graphs (training's batch builder) gives exactly build_graph's arrays, session by session:
    repeats, self-loops, sessions longer than max_len, empty sessions, several paddings."""
    from sessionrec.graph import build_graphs

    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(200):
        max_len = int(rng.integers(1, 12))
        sessions = [list(rng.integers(1, int(rng.integers(2, 15)), size=int(rng.integers(0, 20))))
                    for _ in range(int(rng.integers(1, 20)))]
        longest = max(1, max(min(len(s), max_len) for s in sessions))
        for pad_to in {longest, max_len}:
            got = build_graphs(sessions, max_len, pad_to)
            want = [np.stack(column) for column in zip(*(build_graph(s, max_len, pad_to) for s in sessions))]
            for g, w in zip(got, want):
                assert g.dtype == w.dtype and g.shape == w.shape
                np.testing.assert_array_equal(g, w)
            checked += 1
    assert checked >= 200
    assert [a.shape for a in build_graphs([], 4, 4)] == [(0, 4), (0, 4), (0, 4, 4), (0, 4, 4), (0, 4)]
    with pytest.raises(ValueError, match="pad_to=2 is shorter"):
        build_graphs([[1, 2, 3]], 5, 2)
