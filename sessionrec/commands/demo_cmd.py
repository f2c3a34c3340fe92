"""`sessionrec demo`: the whole product on the bundled sample, on the embedded default.

train (small model, bundled Diginetica sample) -> export (verified version 1) -> serve (real
tritonserver on 127.0.0.1, canaries checked) -> a few gRPC recommendations printed -> one guest
session click by click through `recommend_session` (history in a throwaway redis-server, where
redis-server is installed) -> stop.
"""

from __future__ import annotations

import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "diginetica-sample.csv"


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "demo",
        help="train -> export -> serve -> recommend on the bundled sample (a few minutes)",
        description="Runs the whole pipeline end to end on the bundled Diginetica sample with the "
                    "embedded tritonserver, then stops. Example: sessionrec demo --out runs/demo",
    )
    parser.add_argument("--out", default="runs/demo", help="working folder (default runs/demo; replaced)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.set_defaults(run=run)


def run(args) -> int:
    import shutil

    import tritonclient.grpc as grpcclient

    from sessionrec.checkpoint import load_checkpoint
    from sessionrec.data import load_dataset
    from sessionrec.export.exporter import ExportOptions, export_version
    from sessionrec.model import ModelConfig
    from sessionrec.serving.embedded import EmbeddedServer, infer_recommend
    from sessionrec.serving.redis_local import LocalRedis, redis_server_binary
    from sessionrec.train import TrainConfig, train

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    print(f"[1/4] training on {SAMPLE.name} (Diginetica sample, CIKM Cup 2016) ...", flush=True)
    result = train(SAMPLE, out / "model", ModelConfig(dim=64), TrainConfig(epochs=args.epochs, batch_size=50, patience=2))
    print(f"      best epoch {result.best_epoch}: validation HR@20 {result.valid_metrics['HR@20']:.2f} "
          f"MRR@20 {result.valid_metrics['MRR@20']:.2f}  (curves: {out / 'model' / 'training.png'})", flush=True)

    print("[2/4] exporting: ONNX + parity gate, FP16/INT8 measured, FAISS, manifest, canaries ...", flush=True)
    exported = export_version(result.best_path, out / "repository", ExportOptions(data=str(SAMPLE)))
    parity = exported.manifest["parity"]
    print(f"      version {exported.version}: ONNX vs PyTorch max abs diff {parity['max_abs_diff']:.1e}, "
          f"top-20 agreement {parity['top20_agreement']:.3f}", flush=True)

    print("[3/4] starting tritonserver on 127.0.0.1 (canaries must match before it counts as healthy) ...", flush=True)
    dataset = load_dataset(SAMPLE)
    raw = load_checkpoint(result.best_path).raw_ids
    # A throwaway redis-server (scripts/setup.sh installs Debian's) for the click-by-click part.
    redis = LocalRedis().start() if redis_server_binary() else None
    environment = {"SESSIONREC_REDIS_URL": redis.socket_url} if redis else {}
    with EmbeddedServer(out / "repository", watch_seconds=0, log_file=out / "tritonserver.log",
                        environment=environment) as server:
        print(f"      healthy: gRPC {server.grpc_url}, version {server.version}", flush=True)
        client = grpcclient.InferenceServerClient(server.grpc_url)
        print("[4/4] recommendations over gRPC (raw Diginetica item ids):", flush=True)
        cases = [(raw[s[:3]].tolist(), False) for s in dataset.test[:3]]
        cases.append((raw[dataset.test[0][:3]].tolist() + [999999999], True))
        for items, exclude in cases:
            t = time.perf_counter()
            answer = infer_recommend(client, items, 5, exclude)
            ms = (time.perf_counter() - t) * 1000
            ids = answer.as_numpy("ITEM_IDS")[0].tolist()
            scores = answer.as_numpy("SCORES")[0]
            note = f" unknown={int(answer.as_numpy('UNKNOWN_COUNT')[0, 0])}" + (" exclude_seen" if exclude else "")
            print(f"      session {items} ->{note}", flush=True)
            print("        " + "  ".join(f"{i} ({s:.2f})" for i, s in zip(ids, scores)) + f"   [{ms:.1f} ms]", flush=True)
        fallback = infer_recommend(client, [123456789], 3, False)
        print(f"      all-unknown session -> popular items {fallback.as_numpy('ITEM_IDS')[0].tolist()} "
              f"(FALLBACK={bool(fallback.as_numpy('FALLBACK')[0, 0])})", flush=True)
        if redis is not None:
            click_by_click(server.grpc_url, raw[dataset.test[1][:4]].tolist())
        else:
            print("      (redis-server not installed: the click-by-click part through recommend_session is left out; "
                  "scripts/setup.sh installs it)", flush=True)
    if redis is not None:
        redis.close()
    print(f"done in {time.perf_counter() - started:.0f} s; server stopped. Repository: {out / 'repository'}", flush=True)
    return 0


def click_by_click(url: str, clicks: list[int]) -> None:
    """One guest session sent one click at a time; the server keeps the session in Redis."""
    from sessionrec.clients import RecommendClient

    print("      one guest, click by click (recommend_session: the page sends only the item just viewed):", flush=True)
    with RecommendClient(url) as client:
        for item in clicks:
            t = time.perf_counter()
            rec = client.click("demo-guest", item, k=5)
            ms = (time.perf_counter() - t) * 1000
            print(f"        click {item:>7} -> history {rec.history_length} clicks ({rec.state}): "
                  f"{rec.item_ids}   [{ms:.1f} ms]", flush=True)
        retry = client.click("demo-guest", clicks[-1], k=5, seq=rec.seq)
        print(f"        the last click sent again (a retry, same seq) -> {retry.state}, history "
              f"{retry.history_length} clicks", flush=True)
