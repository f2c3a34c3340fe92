"""A user's own session encoder, outside sessionrec: STAMP (Liu et al., KDD 2018) on the `sequence` schema.

The worked example of README "Bring your own model": nothing here imports sessionrec. The module
takes the `sequence` schema's tensors (items (B, L) left-aligned model ids, 0 = padding; mask (B, L))
and returns (B, d) session vectors; an item's score is the inner product with its table row, which is
STAMP's trilinear score <h_s * h_t, x_item> written as one vector.

    python examples/stamp_encoder.py --data sessionrec/data/diginetica-sample.csv --out runs/stamp
    sessionrec export-encoder --module examples.stamp_encoder:STAMP --init runs/stamp/init.json \\
        --weights runs/stamp/model.safetensors --items runs/stamp/items.safetensors \\
        --schema sequence --max-len 16 --data sessionrec/data/diginetica-sample.csv --repository runs/stamp-repository
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class STAMP(nn.Module):
    def __init__(self, n_items: int, dim: int = 32):
        super().__init__()
        self.embedding = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.w1, self.w2, self.w3 = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim)
        self.w0 = nn.Linear(dim, 1, bias=False)
        self.mlp_a, self.mlp_b = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, items, mask):
        x = self.embedding(items)  # (B, L, d)
        count = mask.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1)
        memory = (x * mask.unsqueeze(-1)).sum(dim=1) / count  # (B, d) m_s: mean of the clicks
        last = (count.squeeze(1).long() - 1).clamp(min=0)
        x_t = torch.gather(x, 1, last.view(-1, 1, 1).expand(-1, 1, x.shape[-1])).squeeze(1)  # (B, d) last click
        alpha = self.w0(torch.sigmoid(self.w1(x) + self.w2(x_t).unsqueeze(1) + self.w3(memory).unsqueeze(1)))  # (B, L, 1)
        m_a = (alpha * x * mask.unsqueeze(-1)).sum(dim=1)  # (B, d)
        return torch.tanh(self.mlp_a(m_a)) * torch.tanh(self.mlp_b(x_t))  # (B, d)

    def item_table(self) -> torch.Tensor:
        return self.embedding.weight[1:]  # (N, d): row i scores model id i+1


def _sessions(path: str):
    """(item ids per session, in click order) from a `session_id,item_id,timestamp` or Diginetica log."""
    import csv

    rows = []
    with open(path) as handle:
        sample = handle.readline()
        handle.seek(0)
        delimiter = ";" if ";" in sample else ","
        reader = csv.DictReader(handle, delimiter=delimiter)
        for r in reader:
            session = r.get("session_id") or r.get("sessionId")
            item = r.get("item_id") or r.get("itemId")
            time = float(r.get("timeframe") or r.get("timestamp") or 0)
            rows.append((session, time, int(item)))
    rows.sort()
    sessions: dict = {}
    for session, _, item in rows:
        sessions.setdefault(session, []).append(item)
    return [s for s in sessions.values() if len(s) >= 2]


def main() -> None:
    parser = argparse.ArgumentParser(description="train STAMP for a minute (own loop, no sessionrec) and save it")
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    from safetensors.torch import save_file

    sessions = _sessions(args.data)
    raw_ids = sorted({i for s in sessions for i in s})
    model_id = {raw: k + 1 for k, raw in enumerate(raw_ids)}
    examples = [([model_id[i] for i in s[:t]][-args.max_len:], model_id[s[t]]) for s in sessions for t in range(1, len(s))]
    torch.manual_seed(0)
    model = STAMP(len(raw_ids), args.dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(args.epochs):
        for start in range(0, len(examples), 64):
            batch = examples[start : start + 64]
            items = torch.zeros(len(batch), args.max_len, dtype=torch.long)
            for row, (prefix, _) in enumerate(batch):
                items[row, : len(prefix)] = torch.tensor(prefix)
            mask = (items > 0).float()
            scores = model(items, mask) @ model.item_table().T
            loss = F.cross_entropy(scores, torch.tensor([t for _, t in batch]) - 1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(out / "model.safetensors"))
    save_file({"item_table": model.item_table().detach().contiguous(), "raw_ids": torch.tensor(raw_ids, dtype=torch.int64)},
              str(out / "items.safetensors"))
    (out / "init.json").write_text(json.dumps({"n_items": len(raw_ids), "dim": args.dim}))
    print(f"wrote {out}/model.safetensors, items.safetensors, init.json (loss {loss.item():.3f})")


if __name__ == "__main__":
    main()
