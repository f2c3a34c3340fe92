"""The fused training loss (sessionrec.losses) learns exactly what autograd's cross-entropy does:
same loss and same gradients, for the function alone and through every model variant."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sessionrec.graph import build_batch
from sessionrec.losses import full_softmax_cross_entropy
from sessionrec.model import ModelConfig, SessionModel, graph_tensors
from sessionrec.sasrec import SASRec, SASRecConfig
from sessionrec.schemas import SCHEMAS
from tests.core.test_model import VARIANTS


def _loss_and_grads(loss_fn, session, table, targets):
    session = session.detach().clone().requires_grad_()
    table = table.detach().clone().requires_grad_()
    loss = loss_fn(session, table, targets)
    loss.backward()
    return loss.detach(), session.grad, table.grad


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_equals_cross_entropy_of_the_scores(dtype, tol):
    torch.manual_seed(0)
    session = 12 * torch.randn(64, 16, dtype=dtype)  # NISER-sized logits and larger
    table = torch.randn(500, 16, dtype=dtype)
    targets = torch.randint(0, 500, (64,))
    targets[:8] = 7  # repeated targets: their table-gradient rows add up
    want = _loss_and_grads(lambda s, t, y: F.cross_entropy(s @ t.T, y), session, table, targets)
    got = _loss_and_grads(full_softmax_cross_entropy, session, table, targets)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=tol, atol=tol)


def test_large_scores_do_not_overflow():
    """Scores in the thousands (no NISER normalisation): the max shift keeps exp finite."""
    session = torch.full((4, 2), 100.0)
    table = torch.tensor([[30.0, 0.0], [0.0, 30.0], [-30.0, 0.0]])
    targets = torch.tensor([0, 1, 2, 0])
    want = _loss_and_grads(lambda s, t, y: F.cross_entropy(s @ t.T, y), session, table, targets)
    got = _loss_and_grads(full_softmax_cross_entropy, session, table, targets)
    assert torch.isfinite(got[0])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"session \(B, d\) and table \(N, d\)"):
        full_softmax_cross_entropy(torch.zeros(3, 4), torch.zeros(5, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"targets of shape \(3,\)"):
        full_softmax_cross_entropy(torch.zeros(3, 4), torch.zeros(5, 4), torch.zeros(2, dtype=torch.long))


def _compare_model(model, inputs, targets, monkeypatch):
    """The old path (F.normalize of the table, scores, then model.loss = autograd's cross-entropy)
    against the fused one (unit_rows, full_softmax_cross_entropy), in training mode with the same
    dropout masks (same seed before each): equal loss and equal gradient on every parameter."""
    import sessionrec.model
    import sessionrec.sasrec

    model.train()
    results = []
    for fused in (False, True):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(123)
        with monkeypatch.context() as patch:
            if not fused:
                for module in (sessionrec.model, sessionrec.sasrec):
                    patch.setattr(module, "unit_rows", lambda t: F.normalize(t, dim=-1))
            loss = model(*inputs, targets=targets) if fused else model.loss(model(*inputs), targets)
            loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (old_loss, old_grads), (new_loss, new_grads) = results
    torch.testing.assert_close(new_loss, old_loss, rtol=1e-5, atol=1e-6)
    assert old_grads.keys() == new_grads.keys() and "embedding.weight" in old_grads
    for name in old_grads:
        torch.testing.assert_close(new_grads[name], old_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def _sessions(n_items, count=48, seed=0):
    rng = np.random.default_rng(seed)
    sessions = [list(rng.integers(1, n_items + 1, size=int(rng.integers(1, 9)))) for _ in range(count)]
    return sessions, torch.from_numpy(rng.integers(1, n_items + 1, size=count))


@pytest.mark.parametrize("name", VARIANTS)
def test_model_fused_loss_equals_scores_then_cross_entropy(name, monkeypatch):
    torch.manual_seed(0)
    model = SessionModel(ModelConfig(n_items=300, dim=16, max_len=8, **VARIANTS[name]))
    sessions, targets = _sessions(300)
    _compare_model(model, graph_tensors(build_batch(sessions, 8, pad_to_longest=True)), targets, monkeypatch)


def test_sasrec_fused_loss_equals_scores_then_cross_entropy(monkeypatch):
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=300, dim=16, max_len=8, heads=2))
    sessions, targets = _sessions(300)
    batch = SCHEMAS["sequence"].batch(sessions, 8, pad_to_longest=True)
    _compare_model(model, [torch.from_numpy(batch[name]) for name in SCHEMAS["sequence"].input_names], targets,
                   monkeypatch)


def test_reused_score_buffer_cannot_corrupt_a_pending_backward():
    """The (B, N) scores live in one reused buffer: a second forward before the first backward
    must fail loudly (autograd's version check), never give the first loss a wrong gradient."""
    torch.manual_seed(0)
    session = torch.randn(8, 4, requires_grad=True)
    table = torch.randn(30, 4, requires_grad=True)
    targets = torch.randint(0, 30, (8,))
    first = full_softmax_cross_entropy(session, table, targets)
    second = full_softmax_cross_entropy(session * 2, table, targets)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        first.backward()
    second.backward()  # the latest one is intact
    want = _loss_and_grads(lambda s, t, y: F.cross_entropy(s @ t.T, y), session * 2, table, targets)
    torch.testing.assert_close(second.detach(), want[0])


def test_unit_rows_equals_normalize_with_its_gradient():
    """The training-time table normalisation: F.normalize's values and gradients, a zero row included
    (its norm is clamped to eps, as F.normalize does)."""
    from sessionrec.losses import unit_rows

    torch.manual_seed(0)
    x = torch.randn(200, 16, dtype=torch.float64)
    x[3] = 0.0
    weights = torch.randn(200, 16, dtype=torch.float64)
    results = []
    for fn in (lambda t: F.normalize(t, dim=-1), unit_rows):
        leaf = x.clone().requires_grad_()
        y = fn(leaf)
        (y * weights).sum().backward()
        results.append((y.detach(), leaf.grad))
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(unit_rows, (torch.randn(5, 3, dtype=torch.float64, requires_grad=True),))


def test_training_and_evaluation_tables_agree():
    model = SessionModel(ModelConfig(n_items=50, dim=8))
    train_table = model.train()._table()
    with torch.no_grad():
        eval_table = model.eval()._table()
    torch.testing.assert_close(train_table.detach(), eval_table, rtol=1e-6, atol=1e-7)
