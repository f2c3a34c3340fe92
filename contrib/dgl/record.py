"""Record a DGL session model for `sessionrec import dgl`: its weights and a parity fixture.

Needs only torch + dgl + numpy (no sessionrec, not even the safetensors package: the files are
written in the safetensors format by `write_safetensors` below). For your own DGL model, call

    record(out_dir, model.state_dict(), item_table, encode, sessions, raw_ids, meta)

with `encode(sessions) -> (B, d)` your model's session vectors for sessions of model ids (1..N),
`item_table` (N, d) the vectors it scores items with (inner product), `raw_ids` (N,) the catalogue id
of each model id. It writes out_dir/weights.safetensors, out_dir/fixture.safetensors (sessions,
lengths, vectors, top20, raw_ids) and out_dir/fixture.json (meta, versions, date).

Run as a script, it trains the reference DGL SR-GNN (srgnn_dgl.py) for a few minutes on a click log
and records it (the fixture committed in tests/fixtures/dgl-srgnn was made so):

    runs/dgl-env/bin/python contrib/dgl/record.py sessionrec/data/diginetica-sample.csv --out tests/fixtures/dgl-srgnn
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import struct
import time
from pathlib import Path

import numpy as np
import torch

_DTYPES = {np.dtype("float32"): "F32", np.dtype("int64"): "I64"}


def write_safetensors(path: str | Path, tensors: dict[str, np.ndarray]) -> None:
    """The safetensors format (8-byte little-endian header size, JSON header, raw little-endian data)."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _DTYPES[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # aligned data, as the reference writer does
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


@torch.no_grad()
def record(out_dir, state_dict: dict, item_table: torch.Tensor, encode, sessions: list[list[int]],
           raw_ids: np.ndarray, meta: dict) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vectors = encode(sessions).float()
    top20 = (vectors @ item_table.float().T).topk(20, dim=1).indices + 1  # model ids, best first
    width = max(len(s) for s in sessions)
    padded = np.zeros((len(sessions), width), dtype=np.int64)
    for row, s in enumerate(sessions):
        padded[row, : len(s)] = s
    write_safetensors(out / "weights.safetensors", {k: v.detach().cpu().contiguous().numpy() for k, v in state_dict.items()})
    write_safetensors(out / "fixture.safetensors", {
        "sessions": padded, "lengths": np.array([len(s) for s in sessions], dtype=np.int64),
        "vectors": vectors.numpy(), "top20": top20.numpy().astype(np.int64), "raw_ids": np.asarray(raw_ids, np.int64)})
    import dgl

    meta = {**meta, "format": "sessionrec-dgl-fixture", "format_version": 1, "torch": torch.__version__,
            "dgl": dgl.__version__, "recorded": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    (out / "fixture.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def read_sessions(path: str) -> list[list[int]]:
    """Sessions of raw item ids, clicks in time order, from `session_id;user_id;item_id;timeframe;...`."""
    rows = []
    with open(path) as handle:
        for r in csv.DictReader(handle, delimiter=";"):
            rows.append((int(r["session_id"]), int(r["timeframe"]), int(r["item_id"])))
    sessions: dict[int, list[int]] = {}
    for session, _, item in sorted(rows):
        sessions.setdefault(session, []).append(item)
    return [s for s in sessions.values() if len(s) >= 2]


def main() -> None:
    from srgnn_dgl import SRGNNDGL

    parser = argparse.ArgumentParser(description="train the reference DGL SR-GNN briefly and record its fixture")
    parser.add_argument("data", help="Diginetica-format click log")
    parser.add_argument("--out", required=True)
    parser.add_argument("--cell", choices=["gated", "mean"], default="gated")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--fixture-sessions", type=int, default=200)
    args = parser.parse_args()
    torch.manual_seed(0)
    raw_sessions = read_sessions(args.data)
    raw_ids = np.array(sorted({i for s in raw_sessions for i in s}), dtype=np.int64)
    number = {int(r): k + 1 for k, r in enumerate(raw_ids)}
    sessions = [[number[i] for i in s] for s in raw_sessions]
    examples = [(s[:t][-args.max_len:], s[t]) for s in sessions for t in range(1, len(s))]
    model = SRGNNDGL(len(raw_ids), args.dim, args.cell)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    started, epochs, rng = time.time(), 0, np.random.default_rng(0)
    while time.time() - started < args.minutes * 60:
        order = rng.permutation(len(examples))
        for start in range(0, len(order), 100):
            batch = [examples[i] for i in order[start : start + 100]]
            scores = model.encode([x for x, _ in batch]) @ model.item_table().T
            loss = torch.nn.functional.cross_entropy(scores, torch.tensor([y for _, y in batch]) - 1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        epochs += 1
        print(f"epoch {epochs}: loss {loss.item():.3f} ({time.time() - started:.0f} s)", flush=True)
    model.eval()
    fixture = [x for x, _ in examples[-args.fixture_sessions:]]  # the most recent prefixes, each <= max_len
    record(args.out, model.state_dict(), model.item_table(), model.encode, fixture, raw_ids, {
        "model": "srgnn-dgl", **model.config, "max_len": args.max_len, "epochs": epochs,
        "command": "contrib/dgl/record.py " + " ".join(f"{k}={v}" for k, v in vars(args).items())})
    print(f"recorded {args.out}")


if __name__ == "__main__":
    main()
