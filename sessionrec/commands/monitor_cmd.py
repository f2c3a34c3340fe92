"""`sessionrec monitor`: batch jobs over the event log (live quality, drift report)."""

from __future__ import annotations

import http.server
import json
import time
from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser("monitor", help="live quality and drift from the event log (batch jobs)",
                            description="Batch jobs over events.jsonl (what `sessionrec ingest` writes). Example: "
                                        "sessionrec monitor live-quality --events runs/events/events.jsonl "
                                        "--repository model_repository --out runs/live")
    jobs = parser.add_subparsers(dest="job", required=True, metavar="JOB")
    live = jobs.add_parser("live-quality", help="next-click HR@20/MRR@20, CTR, conversion, coverage per version and variant")
    live.add_argument("--events", nargs="+", required=True, help="events.jsonl file(s)")
    live.add_argument("--repository", required=True, help="the model repository (offline numbers from its manifests)")
    live.add_argument("--out", required=True, help="folder for live-quality.json and live-quality.prom")
    live.add_argument("--serve", type=int, help="then serve live-quality.prom over HTTP on this port (127.0.0.1)")
    live.set_defaults(run=run_live)
    drift = jobs.add_parser("drift-report", help="sampled PSI of the clicks' popularity buckets per version")
    drift.add_argument("--events", nargs="+", required=True)
    drift.add_argument("--repository", required=True)
    drift.add_argument("--sample", type=int, default=100_000, help="exposures sampled per version (default 100000)")
    drift.add_argument("--seed", type=int, default=0)
    drift.set_defaults(run=run_drift)


def _manifests(repository: Path, versions) -> dict[str, dict]:
    from sessionrec.serving.artifacts import read_manifest

    out = {}
    for version in versions:
        folder = repository / "preprocess" / version
        if folder.is_dir():
            out[version] = read_manifest(folder)
    return out


def run_live(args) -> int:
    from sessionrec.experiments.readout import read_events
    from sessionrec.monitoring.live_quality import live_quality, offline_numbers, prometheus_text

    events = read_events(args.events)
    repository = Path(args.repository)
    versions = {str(e.get("model_version", "")) for e in events if e.get("type") == "exposure"}
    manifests = _manifests(repository, versions)
    n_items = max((m["serving"]["n_items"] for m in manifests.values()), default=None)
    rows = live_quality(events, n_items=n_items)
    offline = {v: offline_numbers(m) for v, m in manifests.items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "live-quality.json").write_text(json.dumps({"rows": rows, "offline": offline}, indent=2))
    prom = out / "live-quality.prom"
    tmp = prom.with_suffix(".prom.tmp")
    tmp.write_text(prometheus_text(rows, offline, time.time()))
    tmp.replace(prom)  # the textfile collector never reads half a file
    print(json.dumps({"rows": rows, "offline": offline}, indent=2))
    if args.serve:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                body = prom.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

        http.server.HTTPServer(("127.0.0.1", args.serve), Handler).serve_forever()
    return 0


def run_drift(args) -> int:
    from sessionrec.experiments.readout import read_events
    from sessionrec.monitoring.drift_report import drift_report

    print(json.dumps(drift_report(read_events(args.events), args.repository, args.sample, args.seed), indent=2))
    return 0
