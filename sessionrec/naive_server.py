"""The naive baseline for the serving benchmark: what a team would write without sessionrec.

The trained PyTorch model in eager mode behind a plain Python HTTP/JSON endpoint: per request, build
the session graph, call the model (its forward() scores the whole catalogue: normalise the item table,
encode, one matmul), take the top K. Not a straw man otherwise: the graph is padded only to the
session's length, responses keep the connection alive (HTTP/1.1) without Nagle delays, request logging
is off, and the torch thread count is settable (1 is fastest on 2 busy cores). `--cache-item-table`
is the one optimisation a careful team would add: normalise the item table once at start, then
encode + matmul per request. Same answer contract as the `recommend` ensemble (raw ids, unknown ids
dropped and counted, popular items when nothing is known).

    python -m sessionrec.naive_server runs/digi/best.pt --port 8080 --threads 1
    curl -s -d '{"items": [84051, 14513], "k": 5}' http://127.0.0.1:8080/recommend
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch

from sessionrec.checkpoint import load_checkpoint
from sessionrec.graph import build_graph


class NaiveRecommender:
    def __init__(self, checkpoint: str | Path, threads: int | None = None, cache_item_table: bool = False):
        if threads:
            torch.set_num_threads(threads)
        ckpt = load_checkpoint(checkpoint)
        self.model = ckpt.build_model()  # eval mode
        self.max_len = ckpt.model_config.max_len
        self.raw_ids = np.asarray(ckpt.raw_ids, dtype=np.int64)
        self.model_id = {int(raw): i for i, raw in enumerate(self.raw_ids) if i > 0}
        self.n_items = ckpt.model_config.n_items
        self.table = None
        if cache_item_table:
            with torch.no_grad():
                self.table = self.model._table().detach().clone()  # (N+1, d): normalised once, as at export
        counts = np.asarray(ckpt.item_counts, dtype=np.float64)
        self.popular = np.argsort(-counts[1:], kind="stable") + 1  # model ids, most clicked first
        self.share = counts / max(counts[1:].sum(), 1.0)

    def recommend(self, raw_items: list[int], k: int = 20, exclude_seen: bool = False) -> dict:
        if not raw_items:
            raise ValueError("items is empty: a session needs at least one item id")
        if not 1 <= k <= self.n_items:
            raise ValueError(f"k={k} is out of range: must be between 1 and {self.n_items}")
        known = [self.model_id[int(i)] for i in raw_items if int(i) in self.model_id]
        unknown = len(raw_items) - len(known)
        if not known:
            top = self.popular[:k]
            return self._answer(top, self.share[top], unknown, True)
        graph = build_graph(known, self.max_len, pad_to=min(len(known), self.max_len))
        tensors = [torch.from_numpy(array)[None] for array in graph]  # items, alias, adj_in, adj_out, mask
        with torch.no_grad():
            if self.table is None:
                scores = self.model(*tensors)  # (1, N): forward() scores the whole catalogue
            else:
                scores = self.model.encode(*tensors, table=self.table) @ self.table[1:].T  # (1, N)
            if exclude_seen:
                scores[0, torch.tensor(known) - 1] = float("-inf")
            values, index = torch.topk(scores[0], k)
        return self._answer(index.numpy() + 1, values.numpy(), unknown, False)

    def _answer(self, model_ids, scores, unknown: int, fallback: bool) -> dict:
        return {"item_ids": self.raw_ids[model_ids].tolist(), "scores": [float(s) for s in scores],
                "unknown_count": unknown, "fallback": fallback}


def make_server(recommender: NaiveRecommender, port: int = 8080, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection per client, as the gRPC channel has
        # Headers and body go out in two writes: with Nagle on, the second waits for the client's
        # delayed ACK and every answer takes ~40 ms more (measured here before this line).
        disable_nagle_algorithm = True

        def do_GET(self):
            if self.path == "/health":
                self._send(200, {"status": "ok"})
            else:
                self._send(404, {"error": f"no route {self.path}"})

        def do_POST(self):
            if self.path != "/recommend":
                self._send(404, {"error": f"no route {self.path}"})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                answer = recommender.recommend(body["items"], int(body.get("k", 20)), bool(body.get("exclude_seen", False)))
            except (ValueError, KeyError, TypeError) as exc:
                self._send(400, {"error": str(exc)})
                return
            self._send(200, answer)

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # one stderr line per request would cost more than the model
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):  # clients hanging up (end of a load test) are normal
            if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
                super().handle_error(request, client_address)

    return Server((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument("--cache-item-table", action="store_true",
                        help="normalise the item table once at start instead of in every forward()")
    args = parser.parse_args(argv)
    recommender = NaiveRecommender(args.checkpoint, threads=args.threads or None, cache_item_table=args.cache_item_table)
    server = make_server(recommender, args.port, args.host)
    print(f"naive server on http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def serve_in_thread(recommender: NaiveRecommender, port: int = 0) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """For tests: serve on a free loopback port in a daemon thread; stop with server.shutdown()."""
    server = make_server(recommender, port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


if __name__ == "__main__":
    raise SystemExit(main())
