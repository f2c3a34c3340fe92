#!/usr/bin/env bash
# GPU smoke test: the GPU-dependent behaviours the CPU-only CI cannot reach (docs/DEPLOY.md §8).
# Run on a GPU node inside the project image (docker/Dockerfile, NGC tritonserver 24.10), ideally
# as the chart runs it, with a read-only root filesystem:
#
#   docker run --rm --gpus 1 --read-only --tmpfs /tmp --tmpfs /dev/shm:size=2g \
#     -v "$PWD:/src:ro" registry.example.com/sessionrec/triton:0.1.0-triton24.10 \
#     bash /src/scripts/gpu-smoke.sh /tmp/gpu-smoke
#
# or from a checkout with a GPU and tritonserver on PATH: bash scripts/gpu-smoke.sh [OUT]
# It trains a tiny model on the bundled sample, exports it, prepares the repository with the chart's
# own prepare-repository script (engine-cache key included), starts tritonserver with the GPU
# configs, and writes OUT/gpu-smoke.json with:
#   engine_build_s          start to ready, first start (TensorRT engines built)
#   engine_cached_start_s   start to ready again on the same cache (engines loaded, not built)
#   first_request_ms        first request at batch 1 after start (no engine build inside it)
#   idle_queued_requests    the autoscaling metric's inputs at idle (queue us/s / 1e6), and the
#   idle_queue_compute      old queue/compute ratio for comparison, per model, over 60 s idle
#   read_only_root          whether / was read-only and the python stubs still started
set -euo pipefail
OUT=${1:-/tmp/gpu-smoke}
SRC=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
export HOME=${HOME:-/tmp} OPENBLAS_NUM_THREADS=1
PY=${PYTHON:-python3}
command -v nvidia-smi >/dev/null || { echo "gpu-smoke: nvidia-smi not found: run on a GPU node" >&2; exit 2; }
command -v tritonserver >/dev/null || { echo "gpu-smoke: tritonserver not on PATH (use the project image)" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

echo "== train + export (tiny model, bundled sample)"
"$PY" -m sessionrec.cli train "$SRC/sessionrec/data/diginetica-sample.csv" --out "$OUT/run" --epochs 1 > "$OUT/train.log" 2>&1
"$PY" -m sessionrec.cli export "$OUT/run/best.pt" --repository "$OUT/exported" > "$OUT/export.log" 2>&1

echo "== prepare-repository (the chart's script, rendered by helm or taken from the chart)"
REPO="$OUT/models"
rm -rf "$REPO"; cp -R "$OUT/exported" "$REPO"
"$PY" - "$SRC" > "$OUT/prepare.sh" <<'PYEOF'
import re, sys
text = open(f"{sys.argv[1]}/helm/sessionrec/templates/_pod.tpl").read()
body = text.split('{{- define "sessionrec.prepareScript" -}}', 1)[1].split("{{- end }}", 1)[0]
print(body)
PYEOF
REPOSITORY="$REPO" SOURCE_URI="$OUT/exported" MODEL_VERSION="" ENSEMBLE=recommend CONFIG_NAME=gpu \
  PROBE_DIR="$OUT/probe" ENGINE_CACHE="$OUT/engine-cache" ENGINE_IMAGE="${ENGINE_IMAGE:-smoke}" \
  bash "$OUT/prepare.sh" | tee "$OUT/prepare.log"

start_server() {  # $1 log file; echoes seconds to ready
  local began; began=$(date +%s.%N)
  tritonserver --model-repository="$REPO" --model-control-mode=none --model-config-name=gpu \
    --strict-readiness=true --exit-on-error=true --http-address=127.0.0.1 --grpc-address=127.0.0.1 \
    --metrics-address=127.0.0.1 --metrics-interval-ms=1000 > "$1" 2>&1 &
  echo $! > "$OUT/server.pid"
  until curl -fs 127.0.0.1:8000/v2/health/ready > /dev/null; do
    kill -0 "$(cat "$OUT/server.pid")" 2>/dev/null || { echo "gpu-smoke: tritonserver died, see $1" >&2; tail -30 "$1" >&2; exit 1; }
    sleep 0.2
  done
  echo "$(date +%s.%N) - $began" | bc
}
stop_server() { kill "$(cat "$OUT/server.pid")"; wait "$(cat "$OUT/server.pid")" 2>/dev/null || true; }

first_request_ms() {
  local began; began=$(date +%s%N)
  curl -fs -H 'Content-Type: application/json' -d '{"inputs":[{"name":"ITEMS","datatype":"INT64","shape":[1,3],"data":[214536502,214536500,214536506]},{"name":"K","datatype":"INT32","shape":[1,1],"data":[20]},{"name":"EXCLUDE_SEEN","datatype":"BOOL","shape":[1,1],"data":[false]}]}' \
    127.0.0.1:8000/v2/models/recommend/infer > /dev/null
  echo $(( ($(date +%s%N) - began) / 1000000 ))
}

read_only=false
if ! touch /.gpu-smoke-write 2>/dev/null; then read_only=true; else rm -f /.gpu-smoke-write; fi

echo "== first start (engines built)"
build_s=$(start_server "$OUT/triton-cold.log")
first_ms=$(first_request_ms)
echo "== idle metrics, 60 s (probes running every 5 s, as the chart's readiness)"
curl -fs 127.0.0.1:8002/metrics > "$OUT/metrics-idle-start.txt"
for _ in $(seq 12); do
  for body in "$OUT"/probe/*.ready.json; do
    curl -fs -H 'Content-Type: application/json' -d @"$body" "127.0.0.1:8000/v2/models/$(basename "$body" .ready.json)/infer" > /dev/null
  done
  sleep 5
done
curl -fs 127.0.0.1:8002/metrics > "$OUT/metrics-idle-end.txt"
stop_server
echo "== second start (engines from the cache)"
cached_s=$(start_server "$OUT/triton-warm.log")
stop_server

"$PY" - "$OUT" "$build_s" "$cached_s" "$first_ms" "$read_only" <<'PYEOF'
import json, re, sys
out, build, cached, first, read_only = sys.argv[1:]
def counters(path):
    values = {}
    for line in open(path):
        m = re.match(r'(nv_inference_(queue|compute_infer)_duration_us)\{.*model="([^"]+)".*\} (\S+)', line)
        if m:
            values[(m.group(1), m.group(3))] = values.get((m.group(1), m.group(3)), 0.0) + float(m.group(4))
    return values
a, b = counters(f"{out}/metrics-idle-start.txt"), counters(f"{out}/metrics-idle-end.txt")
seconds = 60.0
queued, ratio = {}, {}
for (name, model), end in b.items():
    delta = end - a.get((name, model), 0.0)
    if name == "nv_inference_queue_duration_us":
        queued[model] = delta / seconds / 1e6
        compute = b.get(("nv_inference_compute_infer_duration_us", model), 0) - a.get(("nv_inference_compute_infer_duration_us", model), 0)
        ratio[model] = delta / compute if compute else None
report = {"gpu": open(f"{out}/gpu.txt").read().strip(), "engine_build_s": float(build),
          "engine_cached_start_s": float(cached), "first_request_ms": int(first),
          "idle_queued_requests": queued, "idle_queue_compute": ratio, "read_only_root": read_only == "true",
          "engine_cache_files": sorted(p for p in __import__("os").listdir(f"{out}/engine-cache/ort"))}
json.dump(report, open(f"{out}/gpu-smoke.json", "w"), indent=2)
print(json.dumps(report, indent=2))
PYEOF
