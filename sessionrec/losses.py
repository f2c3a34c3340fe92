"""The training loss, fused: cross-entropy of `session @ table.T` over the full catalogue.

Mathematically the same as `F.cross_entropy(session @ table.T, targets)` (tests/core/test_losses.py
compares losses and gradients), but it does fewer passes over the (B, N) score matrix, which is the
largest tensor of a step (batch 512 x 43,097 items = 88 MB of float32):

- forward: scores, row max, exp in place, row sum; the loss needs only the target column and the
  row's log-sum-exp. The exponentials are kept for backward (as log_softmax keeps its output).
- backward: d loss / d scores = (softmax - onehot) / B is never formed. With E the exponentials and
  Z their row sums, softmax = E / Z, so
      d session = (E @ table) / Z - table[targets]          (row scalings of a (B, d) matrix)
      d table   = E.T @ (session / Z) - onehot.T @ session  (an index_add of B rows)
  both scaled by grad / B. Autograd's path instead writes a zeroed (B, N) gradient for the picked
  scores, then a (B, N) log-softmax gradient, before the same two matrix products.

The score matrix is also written into one buffer kept from step to step (per device and dtype)
instead of a fresh allocation: glibc serves any block above 32 MB with its own mmap and unmaps it on
free, so a fresh 88 MB tensor page-faults all of its 21,000 pages again every step, which measured
slower than the exp pass itself on this machine (docs/BENCHMARKS.md section 1). Reuse is safe:
the buffer is saved for backward, so autograd's version check raises if a second forward
overwrites it before the first one's backward ran (tests/core/test_losses.py).
"""

from __future__ import annotations

import torch


_buffers: dict[tuple, torch.Tensor] = {}  # (device, dtype) -> flat score buffer, grown as needed


def _score_buffer(rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
    key = (like.device, like.dtype)
    flat = _buffers.get(key)
    if flat is None or flat.numel() < rows * cols:
        flat = _buffers[key] = torch.empty(rows * cols, dtype=like.dtype, device=like.device)
    return flat[: rows * cols].view(rows, cols)


class _FullSoftmaxCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, session, table, targets):
        scores = torch.mm(session, table.T, out=_score_buffer(session.shape[0], table.shape[0], session))  # (B, N)
        picked = scores.gather(1, targets.unsqueeze(1))  # (B, 1), read before the in-place exp
        top = scores.amax(dim=1, keepdim=True)  # (B, 1): shift so exp cannot overflow
        exps = scores.sub_(top).exp_()  # (B, N), in place: no second 88 MB buffer
        total = exps.sum(dim=1, keepdim=True)  # (B, 1)
        loss = (top + total.log() - picked).mean()
        ctx.save_for_backward(session, table, targets, exps, total)
        return loss

    @staticmethod
    def backward(ctx, grad):
        session, table, targets, exps, total = ctx.saved_tensors
        weight = grad / session.shape[0]  # mean over the batch
        grad_session = grad_table = None
        if ctx.needs_input_grad[0]:
            grad_session = ((exps @ table) / total - table[targets]) * weight
        if ctx.needs_input_grad[1]:
            scaled = session * weight
            grad_table = (exps.T @ (scaled / total)).index_add_(0, targets, scaled, alpha=-1)
        return grad_session, grad_table, None


def full_softmax_cross_entropy(session: torch.Tensor, table: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of `session @ table.T` (session (B, d), table (N, d)) against `targets`
    (B,) column indices in 0..N-1. Equal to F.cross_entropy(session @ table.T, targets)."""
    if session.dim() != 2 or table.dim() != 2 or session.shape[1] != table.shape[1]:
        raise ValueError(f"need session (B, d) and table (N, d), got {tuple(session.shape)} and {tuple(table.shape)}")
    if targets.shape != (session.shape[0],):
        raise ValueError(f"need targets of shape ({session.shape[0]},), got {tuple(targets.shape)}")
    return _FullSoftmaxCrossEntropy.apply(session, table, targets)


class _UnitRows(torch.autograd.Function):
    """x / max(||x||, eps) row by row, with a backward in three passes over the table instead of
    autograd's dozen for F.normalize (its division, negation, masking and norm backward each pass
    over all N x d entries). For a row y = x / n: d x = (g - y (g . y)) / n, and d x = g / n where
    the norm was clamped to eps (then n does not depend on x)."""

    @staticmethod
    def forward(ctx, x, eps):
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        clamped = norm <= eps
        inverse = norm.clamp_min(eps).reciprocal_()
        y = x * inverse
        ctx.save_for_backward(y, inverse, clamped)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, inverse, clamped = ctx.saved_tensors
        along = torch.linalg.vecdot(grad, y, dim=-1).unsqueeze(-1).masked_fill_(clamped, 0)  # (N, 1)
        return torch.addcmul(grad, y, along, value=-1).mul_(inverse), None


def unit_rows(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """F.normalize(x, dim=-1) with a cheaper backward (training's whole-table NISER normalisation;
    equal within float rounding: y = x * (1 / n) instead of x / n, tests/core/test_losses.py)."""
    return _UnitRows.apply(x, eps)
