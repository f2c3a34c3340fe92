{{/*
Pieces of the pod spec, kept here so deployment.yaml reads top to bottom.
*/}}

{{/*
tritonserver and its flags, as the container's args: the image's entrypoint runs them (NGC's checks
the driver and sets up CUDA forward compatibility; a `command` would bypass it). Model control is
`none`: every model the prepared repository holds loads at start and the load/unload API is refused
(a new version arrives by a rolling update). The admin APIs left are restricted to a header key.
*/}}
{{- define "sessionrec.tritonArgs" -}}
- tritonserver
- --model-repository={{ .Values.modelRepository.mountPath }}
- --model-control-mode=none
- --strict-readiness=true
- --exit-on-error=true
- --exit-timeout-secs={{ .Values.triton.exitTimeoutSeconds }}
- --http-address=0.0.0.0
- --http-port=8000
- --grpc-address=0.0.0.0
- --grpc-port=8001
- --allow-metrics=true
- --metrics-address=0.0.0.0
- --metrics-port=8002
- --allow-gpu-metrics={{ .Values.gpu.enabled }}
{{- with include "sessionrec.modelConfigName" . }}
- --model-config-name={{ . }}
{{- end }}
{{- if .Values.triton.summaryLatencies }}
- --metrics-config=summary_latencies=true
{{- end }}
- --log-verbose={{ .Values.triton.logVerbose }}
- --backend-config=python,shm-default-byte-size={{ int64 .Values.triton.python.shmDefaultByteSize }}
- --backend-config=python,shm-growth-byte-size={{ int64 .Values.triton.python.shmGrowthByteSize }}
{{- with .Values.triton.restrictedApis }}
- --http-restricted-api={{ join "," . }}:sessionrec-admin=$(SESSIONREC_ADMIN_KEY)
- --grpc-restricted-protocol={{ join "," . }}:sessionrec-admin=$(SESSIONREC_ADMIN_KEY)
{{- end }}
{{- if and .Values.service.headless.enabled (gt (int .Values.triton.grpc.maxConnectionAgeMs) 0) }}
{{- /* Clients of the headless Service resolve DNS once per connection: closing connections after an
age makes them re-resolve and reach pods added by a scale-out (grpc issue 12295). */}}
- --grpc-max-connection-age={{ int64 .Values.triton.grpc.maxConnectionAgeMs }}
- --grpc-max-connection-age-grace={{ int64 .Values.triton.grpc.maxConnectionAgeGraceMs }}
{{- end }}
{{- if .Values.tls.enabled }}
- --grpc-use-ssl=true
- --grpc-server-cert=/etc/sessionrec/tls/tls.crt
- --grpc-server-key=/etc/sessionrec/tls/tls.key
{{- if .Values.tls.mutual }}
- --grpc-use-ssl-mutual=true
- --grpc-root-cert=/etc/sessionrec/tls/ca.crt
{{- end }}
{{- end }}
{{- with include "sessionrec.tracingArgs" . }}
{{ . }}
{{- end }}
{{- with .Values.triton.extraArgs }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Container resources: the values' requests and limits, plus the GPU limit when GPUs are on
(extended resources are requested at their limit).
*/}}
{{- define "sessionrec.resources" -}}
{{- $resources := deepCopy .Values.resources }}
{{- if .Values.gpu.enabled }}
{{- $_ := set $resources.limits .Values.gpu.resourceName (int .Values.gpu.count) }}
{{- end }}
{{- toYaml $resources }}
{{- end }}

{{/*
Environment shared by the containers that run the project image. HOME and the caches point at
the /tmp emptyDir because the root filesystem is read-only.
*/}}
{{/*
The front's way to its retrieval shards (retrievalShards; sessionrec.serving.shards): one gRPC
address per shard Service, shard 0 first, and the fan-out's deadline.
*/}}
{{- define "sessionrec.shardsEnv" -}}
{{- if .Values.retrievalShards.enabled }}
{{- $fullname := include "sessionrec.fullname" . }}
{{- $addresses := list }}
{{- range $shard := until (int .Values.retrievalShards.count) }}
{{- $addresses = append $addresses (printf "%s-shard-%d:8001" $fullname $shard) }}
{{- end }}
- name: SESSIONREC_SHARD_ADDRESSES
  value: {{ join "," $addresses | quote }}
- name: SESSIONREC_SHARD_TIMEOUT_MS
  value: {{ .Values.retrievalShards.timeoutMs | quote }}
{{- end }}
{{- end }}

{{- define "sessionrec.commonEnv" -}}
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /tmp/.cache
- name: CUDA_CACHE_PATH
  value: /tmp/.nv/ComputeCache
# numpy's OpenBLAS would start (and spin) a thread per node core in every python stub; nothing on the
# serving path uses it (sessionrec.serving.launcher.server_environment).
- name: OPENBLAS_NUM_THREADS
  value: "1"
{{- end }}

{{/*
The probe command: an inference to every python step the ensemble runs, straight to the step (not
through `recommend`, so probes stay out of the SLO series), with the request bodies prepare-repository
wrote to /tmp/sessionrec-probe (<step>.<kind>.json). The liveness probe first counts each python
step's live stub processes against its instance count (<step>.stubs): with two instances of a step
one dead stub leaves the other answering, so a request alone may never reach the dead one, and
tritonserver 2.51 does not restart it (tests/reliability/test_two_instances.py). Call with (dict "root" . "kind" "live"|"ready"
"timeout" N). Liveness bodies ask for the top priority level of the steps' dynamic batchers, so a
probe overtakes queued traffic and overload alone does not fail it; readiness bodies queue like any
request, so an overloaded pod leaves rotation. No body file: the probe fails.
*/}}
{{- define "sessionrec.probeCommand" -}}
- sh
- -c
- >-
  {{ if eq .kind "ready" }}curl --silent --show-error --fail --max-time {{ .timeout }}
  http://127.0.0.1:8000/v2/models/{{ .root.Values.model.readinessModel }}/ready > /dev/null &&
  {{ end }}{{ if eq .kind "live" }}for want in /tmp/sessionrec-probe/*.stubs; do
  [ -f "$want" ] || continue; step=$(basename "$want" .stubs);
  count=$(sed -n 1p "$want"); path=$(sed -n 2p "$want");
  have=$(grep -lasF "$path" /dev/null $(grep -las '[t]riton_python_backend_stub' /proc/[0-9]*/cmdline) | wc -l);
  [ "$have" -ge "$count" ] || { echo "$step: $have of $count python backend stubs alive" >&2; exit 1; }; done;
  {{ end }}for body in /tmp/sessionrec-probe/*.{{ .kind }}.json; do
  step=$(basename "$body" .{{ .kind }}.json);
  curl --silent --show-error --fail --max-time {{ .timeout }} -H 'Content-Type: application/json'
  -d @"$body" "http://127.0.0.1:8000/v2/models/$step/infer" > /dev/null || exit 1; done
{{- end }}

{{/*
prepare-repository, run with bash from the project image; tests/helm runs it on fake repositories.
1. (pvc) copy the claim into the pod-local repository.
2. Find the version the ensemble serves: `sessionrec export` pins every step of
   <ensemble>/config.pbtxt to the live version N ("model_version: N"; -1 in a template means latest).
   With model.version set, it must be that N: a pod never serves another version than the one the
   release asks for (a pod started while the bucket is half updated stops here instead).
3. Keep only that version of every model, so Triton loads one version (not the previous one the
   steps' version_policy would also load).
4. Keep only the models the ensemble runs with that config: the GPU layout's three steps
   (preprocess, session_encoder, retrieval), or the CPU layout's one (session_recommender); Triton
   loads every model left (model control none), and an unused one would cost a stub and its memory.
   The CPU layout's step reads the three steps' artifacts: their version folders move into
   session_recommender/<N>/steps/ (sessionrec.serving.pipeline reads them there).
5. Check every model has the config Triton will read (--model-config-name): configs/gpu.pbtxt on
   GPU nodes; for native TensorRT plans, configs/tensorrt.pbtxt, which build-engine writes for
   ENGINE_MODEL and which the other models take from their gpu config.
6. (GPU) Key the onnxruntime TensorRT engine cache: trt_engine_cache_path becomes
   ENGINE_CACHE/ort/v<N>-<sha256 of the ONNX files>-<GPU product>-<image>. onnxruntime names cached
   engines by file and tensor names and library versions, not by weights (onnxruntime issues 6455,
   32254): without the key a shared cache serves version N's engine after the rollout to N+1.
7. Write the probe request bodies, one pair per python step: <step>.ready.json and
   <step>.live.json (the latter at the top priority level), into PROBE_DIR.
*/}}
{{- define "sessionrec.prepareScript" -}}
set -eu
fail() { echo "prepare-repository: $*" >&2; exit 1; }
if [ -n "${SOURCE_DIR:-}" ]; then
  echo "copying ${SOURCE_URI} into ${REPOSITORY}"
  cp -R "${SOURCE_DIR}/." "${REPOSITORY}/"
fi
ensemble="${REPOSITORY}/${ENSEMBLE}"
[ -f "${ensemble}/config.pbtxt" ] || fail "${SOURCE_URI} has no ${ENSEMBLE}/config.pbtxt: not a sessionrec model repository"
pinned=$(find "${ensemble}" -maxdepth 2 \( -path "${ensemble}/config.pbtxt" -o -path "${ensemble}/configs/*.pbtxt" \) \
  -exec sed -n 's/^ *model_version: *\([0-9][0-9]*\) *$/\1/p' {} + | sort -u)
[ "$(printf '%s\n' "${pinned}" | grep -c .)" -le 1 ] || fail "${ENSEMBLE}'s configs pin several versions: $(echo ${pinned})"
if [ -n "${MODEL_VERSION}" ] && [ -n "${pinned}" ] && [ "${pinned}" != "${MODEL_VERSION}" ]; then
  fail "model.version=${MODEL_VERSION}, but ${SOURCE_URI} serves version ${pinned} (pinned by ${ENSEMBLE}'s config): publish ${MODEL_VERSION} there first, or set model.version=${pinned}"
fi
live="${MODEL_VERSION:-${pinned}}"
if [ -n "${live}" ]; then
  for model in "${REPOSITORY}"/*/; do
    model="${model%/}"
    numbered=0
    for version in "${model}"/*/; do
      name=$(basename "${version}")
      case "${name}" in *[!0-9]*) continue ;; esac
      numbered=1
      if [ "${name}" != "${live}" ] && [ "${name}" != "${CANDIDATE_VERSION:-}" ]; then
        rm -rf "${version}"
        echo "dropped $(basename "${model}")/${name} (serving version ${live})"
      fi
    done
    if [ -n "${CANDIDATE_VERSION:-}" ] && [ "${numbered}" = 1 ] && [ "$(basename "${model}")" != "${ENSEMBLE}" ] \
        && [ ! -d "${model}/${CANDIDATE_VERSION}" ]; then
      fail "$(basename "${model}") has no candidate version ${CANDIDATE_VERSION} under ${SOURCE_URI}: publish it with sessionrec export --candidate"
    fi
    # the experiment's ensemble holds the candidate's version only (kept or dropped below)
    if [ "$(basename "${model}")" = recommend_candidate ]; then continue; fi
    if [ "${numbered}" = 1 ] && [ ! -d "${model}/${live}" ]; then
      fail "$(basename "${model}") has no version ${live} under ${SOURCE_URI}: the export is incomplete"
    fi
  done
fi
ensemble_config="${ensemble}/config.pbtxt"
if [ -n "${CONFIG_NAME}" ]; then
  for candidate in "${ensemble}/configs/${CONFIG_NAME}.pbtxt" "${ensemble}/configs/${CONFIG_FALLBACK:-${CONFIG_NAME}}.pbtxt"; do
    if [ -f "${candidate}" ]; then ensemble_config="${candidate}"; break; fi
  done
fi
steps=$(sed -n 's/^ *model_name: *"\([^"]*\)" *$/\1/p' "${ensemble_config}" | sort -u)
[ -n "${steps}" ] || fail "${ensemble_config} names no ensemble step"
for step in ${steps}; do
  [ -d "${REPOSITORY}/${step}" ] || fail "${ENSEMBLE} runs ${step}, which ${SOURCE_URI} lacks: the export is incomplete"
done
# redis.enabled: recommend_session stays too, with its steps (the fused one it shares on CPU nodes,
# session_history in front of the three steps on GPU nodes).
if [ -n "${SESSION_ENSEMBLE:-}" ]; then
  session_config="${REPOSITORY}/${SESSION_ENSEMBLE}/config.pbtxt"
  if [ -n "${CONFIG_NAME}" ]; then
    for candidate in "${REPOSITORY}/${SESSION_ENSEMBLE}/configs/${CONFIG_NAME}.pbtxt" \
        "${REPOSITORY}/${SESSION_ENSEMBLE}/configs/${CONFIG_FALLBACK:-${CONFIG_NAME}}.pbtxt"; do
      if [ -f "${candidate}" ]; then session_config="${candidate}"; break; fi
    done
  fi
  [ -f "${session_config}" ] || fail "redis.enabled, but ${SOURCE_URI} has no ${SESSION_ENSEMBLE}: export it with a sessionrec that writes it"
  session_steps=$(sed -n 's/^ *model_name: *"\([^"]*\)" *$/\1/p' "${session_config}" | sort -u)
  for step in ${session_steps}; do
    [ -d "${REPOSITORY}/${step}" ] || fail "${SESSION_ENSEMBLE} runs ${step}, which ${SOURCE_URI} lacks: the export is incomplete"
  done
  steps=$(printf '%s\n%s\n%s\n' "${steps}" "${SESSION_ENSEMBLE}" "${session_steps}" | sort -u)
fi
for model in "${REPOSITORY}"/*/; do
  name=$(basename "${model%/}")
  # A retrieval shard pod (retrievalShards) keeps its shard model where Triton loads it.
  if [ "${name}" = "${KEEP_MODEL:-}" ]; then continue; fi
  if [ "${name}" != "${ENSEMBLE}" ] && [ "${name}" != "${CANDIDATE_ENSEMBLE:-}" ] \
      && ! printf '%s\n' "${steps}" | grep -qx "${name}"; then
    if printf '%s\n' "${steps}" | grep -qx session_recommender; then
      # The fused step reads these folders' artifacts: keep each version inside the fused step's
      # version folder (<N>/steps/<step>/<N>), where Triton does not load them as models.
      for version in "${model}"*/; do
        number=$(basename "${version}")
        case "${number}" in *[!0-9]*) continue ;; esac
        if [ -d "${REPOSITORY}/session_recommender/${number}" ]; then
          mkdir -p "${REPOSITORY}/session_recommender/${number}/steps/${name}"
          mv "${version%/}" "${REPOSITORY}/session_recommender/${number}/steps/${name}/${number}"
        fi
      done
    fi
    rm -rf "${model}"
    echo "dropped ${name} (not a step of $(basename "${ensemble_config}"))"
  fi
done
if [ -n "${CONFIG_NAME}" ]; then
  for model in "${REPOSITORY}"/*/; do
    model="${model%/}"
    name=$(basename "${model}")
    wanted="${model}/configs/${CONFIG_NAME}.pbtxt"
    if [ ! -f "${wanted}" ] && [ -n "${CONFIG_FALLBACK:-}" ] && [ "${name}" != "${ENGINE_MODEL:-}" ] \
        && [ -f "${model}/configs/${CONFIG_FALLBACK}.pbtxt" ]; then
      cp "${model}/configs/${CONFIG_FALLBACK}.pbtxt" "${wanted}"
      echo "${name}: serving configs/${CONFIG_FALLBACK}.pbtxt as configs/${CONFIG_NAME}.pbtxt"
    fi
    if [ ! -f "${wanted}" ] && [ "${name}" != "${ENGINE_MODEL:-}" ]; then
      fail "${name} has no configs/${CONFIG_NAME}.pbtxt, so Triton would fall back to its CPU config.pbtxt: deploy a repository exported for GPU, or set gpu.enabled=false"
    fi
  done
fi
if [ -n "${ENGINE_CACHE:-}" ]; then
  encoder="${REPOSITORY}/session_encoder"
  served="${encoder}/configs/${CONFIG_NAME}.pbtxt"
  [ -f "${served}" ] || served="${encoder}/config.pbtxt"
  if [ -f "${served}" ] && grep -q '"trt_engine_cache_path"' "${served}"; then
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1) || gpu=""
    [ -n "${gpu}" ] || fail "nvidia-smi cannot name the GPU: the engine cache is keyed by the GPU product (is a GPU allocated to this container?)"
    mig=$(nvidia-smi -L 2>/dev/null | sed -n 's/.*(\(MIG [^ ]*\) .*/\1/p' | head -n 1) || mig=""
    weights=$(find "${encoder}" -mindepth 2 -maxdepth 2 -type f -name 'model*.onnx*' | sort | xargs cat | sha256sum | cut -c1-16)
    key=$(printf 'v%s-%s-%s%s-%s' "${live:-unpinned}" "${weights}" "${gpu}" "${mig:+-${mig}}" "${ENGINE_IMAGE}" | tr -c 'A-Za-z0-9._-' '_')
    cache="${ENGINE_CACHE}/ort/${key}"
    mkdir -p "${cache}"
    sed -i '/key: "trt_engine_cache_path"/{n;s#value: ".*"#value: "'"${cache}"'"#}' "${served}"
    echo "engine cache: ${cache}"
  fi
fi
mkdir -p "${PROBE_DIR}"
rm -f "${PROBE_DIR}"/*.json "${PROBE_DIR}"/*.stubs
probe_body() {  # $1 step, $2 inputs JSON
  printf '{"inputs":[%s]}\n' "$2" > "${PROBE_DIR}/$1.ready.json"
  printf '{"inputs":[%s],"parameters":{"priority":1}}\n' "$2" > "${PROBE_DIR}/$1.live.json"
}
tensor() { printf '{"name":"%s","datatype":"%s","shape":[%s],"data":[%s]}' "$1" "$2" "$3" "$4"; }
for step in ${steps}; do
  config="${REPOSITORY}/${step}/configs/${CONFIG_NAME:-none}.pbtxt"
  [ -f "${config}" ] || config="${REPOSITORY}/${step}/config.pbtxt"
  grep -q '^backend: *"python"' "${config}" || continue  # only python stubs die silently
  # Stubs the step runs: its instance_group count (one version is kept in the pod), for the liveness probe.
  stubs=$(sed -n '/instance_group/,/}/s/^ *count: *\([0-9][0-9]*\).*/\1/p' "${config}" | head -n 1)
  # Line 2: the step's folder as its stubs' command lines name it (model.py's path), so only this
  # server's stubs count.
  printf '%s\n%s\n' "${stubs:-1}" "${REPOSITORY}/${step}/" > "${PROBE_DIR}/${step}.stubs"
  case "${step}" in
    session_recommender)
      probe_body "${step}" "$(tensor ITEMS INT64 1,1 -1),$(tensor K INT32 1,1 1),$(tensor EXCLUDE_SEEN BOOL 1,1 false)" ;;
    preprocess)
      probe_body "${step}" "$(tensor ITEMS INT64 1,1 -1)" ;;
    session_encoder)
      probe_body "${step}" "$(tensor items INT64 1,1 1),$(tensor alias INT64 1,1 0),$(tensor adj_in FP32 1,1,1 0),$(tensor adj_out FP32 1,1,1 0),$(tensor mask FP32 1,1 1)" ;;
    retrieval)
      manifest=""
      for folder in "${REPOSITORY}/retrieval"/*/; do
        case "$(basename "${folder}")" in *[!0-9]*) ;; *) manifest="${folder}manifest.json" ;; esac
      done
      dim=$(sed -n 's/.*"dim": *\([0-9][0-9]*\).*/\1/p' "${manifest}" 2>/dev/null | head -n 1)
      [ -n "${dim}" ] || fail "${manifest} gives no serving dim: cannot write the retrieval probe"
      zeros=$(printf '0,%.0s' $(seq 1 "${dim}")); zeros="${zeros%,}"
      probe_body "${step}" "$(tensor session_embedding FP32 1,${dim} "${zeros}"),$(tensor items INT64 1,1 0),$(tensor fallback BOOL 1,1 true),$(tensor K INT32 1,1 1),$(tensor EXCLUDE_SEEN BOOL 1,1 false)" ;;
    session_history)
      # Not probed: its requests record clicks in Redis, and a probe would write there. A dead
      # history stub fails recommend_session requests while recommend keeps answering (known gap).
      continue ;;
    *) fail "no probe request for python step ${step}" ;;
  esac
done
echo "repository ready: version ${live:-as published}, config ${CONFIG_NAME:-config.pbtxt}, models: $(ls "${REPOSITORY}" | tr '\n' ' ')"
{{- end }}

{{/*
Init containers: fetch (s3 / gcs), prepare (copy from pvc, select the version), and the optional
TensorRT plan build on the node's own GPU.
*/}}
{{- define "sessionrec.initContainers" -}}
{{- $source := .Values.modelRepository.source }}
{{- $repo := .Values.modelRepository }}
{{- $version := include "sessionrec.modelVersion" . }}
{{- $securityContext := include "sessionrec.securityContext" (dict "root" . "context" .Values.securityContext) }}
{{- if eq $source "s3" }}
- name: fetch-repository
  image: {{ include "sessionrec.imageRef" (dict "root" . "image" $repo.s3.image) | quote }}
  imagePullPolicy: {{ $repo.s3.image.pullPolicy }}
  command:
    - aws
    - s3
    - sync
    - --only-show-errors
    - --no-progress
    {{- with $repo.s3.endpointUrl }}
    - --endpoint-url={{ . }}
    {{- end }}
    {{- if $version }}
    # Only the served version's folders (and the model-level configs): not every version ever published.
    - --exclude=*/[0-9]*/*
    - --include=*/{{ $version }}/*
    {{- end }}
    - {{ include "sessionrec.repositoryUri" . | quote }}
    - {{ $repo.mountPath | quote }}
  env:
    - name: HOME
      value: /tmp
    {{- with $repo.s3.region }}
    - name: AWS_REGION
      value: {{ . | quote }}
    {{- end }}
  {{- with $repo.s3.credentialsSecret }}
  envFrom:
    - secretRef:
        name: {{ . }}
  {{- end }}
  resources:
    {{- toYaml $repo.initResources | nindent 4 }}
  securityContext:
    {{- $securityContext | nindent 4 }}
  volumeMounts:
    - name: model-repository
      mountPath: {{ $repo.mountPath }}
    - name: tmp
      mountPath: /tmp
{{- else if eq $source "gcs" }}
- name: fetch-repository
  image: {{ include "sessionrec.imageRef" (dict "root" . "image" $repo.gcs.image) | quote }}
  imagePullPolicy: {{ $repo.gcs.image.pullPolicy }}
  command:
    - gcloud
    - storage
    - rsync
    - --recursive
    {{- if $version }}
    # Only the served version's folders (a Python regex on the relative path).
    - --exclude=^[^/]+/(?!{{ $version }}/)[0-9]+/
    {{- end }}
    - {{ include "sessionrec.repositoryUri" . | quote }}
    - {{ $repo.mountPath | quote }}
  env:
    - name: HOME
      value: /tmp
    - name: CLOUDSDK_CONFIG
      value: /tmp/gcloud
    {{- if $repo.gcs.credentialsSecret }}
    - name: CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE
      value: /var/run/secrets/gcs/key.json
    {{- end }}
  resources:
    {{- toYaml $repo.initResources | nindent 4 }}
  securityContext:
    {{- $securityContext | nindent 4 }}
  volumeMounts:
    - name: model-repository
      mountPath: {{ $repo.mountPath }}
    - name: tmp
      mountPath: /tmp
    {{- if $repo.gcs.credentialsSecret }}
    - name: gcs-credentials
      mountPath: /var/run/secrets/gcs
      readOnly: true
    {{- end }}
{{- end }}
- name: prepare-repository
  image: {{ include "sessionrec.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - bash
    - -c
    - |
      {{- include "sessionrec.prepareScript" . | nindent 6 }}
  env:
    - name: PROBE_DIR
      value: /tmp/sessionrec-probe
    {{- if .Values.gpu.enabled }}
    # The engine cache key: this mount, and the image (its tag pins TensorRT, CUDA and onnxruntime).
    - name: ENGINE_CACHE
      value: {{ .Values.engineCache.mountPath | quote }}
    - name: ENGINE_IMAGE
      value: {{ include "sessionrec.image" . | splitList "/" | last | quote }}
    {{- end }}
    - name: REPOSITORY
      value: {{ $repo.mountPath | quote }}
    {{- with .shardModel }}
    # set by templates/retrieval-shards.yaml for a shard pod: the one model it serves
    - name: KEEP_MODEL
      value: {{ . | quote }}
    {{- end }}
    - name: SOURCE_URI
      value: {{ include "sessionrec.repositoryUri" . | quote }}
    - name: MODEL_VERSION
      value: {{ include "sessionrec.modelVersion" . | quote }}
    - name: ENSEMBLE
      value: {{ .Values.model.readinessModel | quote }}
    - name: SESSION_ENSEMBLE
      value: {{ ternary "recommend_session" "" .Values.redis.enabled | quote }}
    - name: CONFIG_NAME
      value: {{ include "sessionrec.modelConfigName" . | quote }}
    {{- with .Values.experiment.candidateVersion | toString }}
    # The experiment's candidate (docs/EXPERIMENTS.md): its version and ensemble are kept as well.
    - name: CANDIDATE_VERSION
      value: {{ . | quote }}
    - name: CANDIDATE_ENSEMBLE
      value: recommend_candidate
    {{- end }}
    {{- if .Values.engineBuild.enabled }}
    # build-engine writes ENGINE_MODEL's configs/tensorrt.pbtxt; the others serve their gpu config.
    - name: CONFIG_FALLBACK
      value: gpu
    - name: ENGINE_MODEL
      value: session_encoder
    {{- end }}
    {{- if eq $source "pvc" }}
    - name: SOURCE_DIR
      value: /repository-source
    {{- end }}
  resources:
    {{- $resources := deepCopy $repo.initResources }}
    {{- if .Values.gpu.enabled }}
    {{- /* nvidia-smi names the GPU for the engine cache key. The kubelet hands devices allocated to
    init containers on to the app containers, so this asks for no extra GPU. */}}
    {{- $limits := default (dict) $resources.limits }}
    {{- $_ := set $limits .Values.gpu.resourceName (int .Values.gpu.count) }}
    {{- $_ := set $resources "limits" $limits }}
    {{- end }}
    {{- toYaml $resources | nindent 4 }}
  securityContext:
    {{- $securityContext | nindent 4 }}
  volumeMounts:
    - name: model-repository
      mountPath: {{ $repo.mountPath }}
    - name: tmp
      mountPath: /tmp
    {{- if .Values.gpu.enabled }}
    - name: engine-cache
      mountPath: {{ .Values.engineCache.mountPath }}
    {{- end }}
    {{- if eq $source "pvc" }}
    - name: repository-source
      mountPath: /repository-source
      readOnly: true
      {{- with $repo.pvc.subPath }}
      subPath: {{ . }}
      {{- end }}
    {{- end }}
{{- if .Values.engineBuild.enabled }}
- name: build-engine
  image: {{ include "sessionrec.imageRef" (dict "root" . "image" .Values.engineBuild.image "defaultTag" .Chart.AppVersion) | quote }}
  imagePullPolicy: {{ .Values.engineBuild.image.pullPolicy }}
  # args, not command: the TensorRT image's entrypoint checks the driver first.
  args:
    {{- toYaml .Values.engineBuild.args | nindent 4 }}
    - --engine-cache={{ .Values.engineCache.mountPath }}/plans
  env:
    {{- include "sessionrec.commonEnv" . | nindent 4 }}
  resources:
    {{- include "sessionrec.resources" . | nindent 4 }}
  securityContext:
    {{- $securityContext | nindent 4 }}
  volumeMounts:
    - name: model-repository
      mountPath: {{ $repo.mountPath }}
    - name: engine-cache
      mountPath: {{ .Values.engineCache.mountPath }}
    - name: tmp
      mountPath: /tmp
    - name: shm
      mountPath: /dev/shm
{{- end }}
{{- end }}

{{/*
Pod volumes.
*/}}
{{- define "sessionrec.volumes" -}}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
- name: model-repository
  emptyDir:
    sizeLimit: {{ .Values.modelRepository.sizeLimit }}
{{- if eq .Values.modelRepository.source "pvc" }}
- name: repository-source
  persistentVolumeClaim:
    claimName: {{ .Values.modelRepository.pvc.claimName }}
    readOnly: true
{{- end }}
{{- if and (eq .Values.modelRepository.source "gcs") .Values.modelRepository.gcs.credentialsSecret }}
- name: gcs-credentials
  secret:
    secretName: {{ .Values.modelRepository.gcs.credentialsSecret }}
    defaultMode: 0440
{{- end }}
# Memory-backed: python-backend tensors cross between Triton and the stub processes here.
- name: shm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.shm.sizeLimit }}
- name: tmp
  emptyDir:
    sizeLimit: 2Gi
- name: engine-cache
{{- if .Values.engineCache.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-engine-cache" (include "sessionrec.fullname" .)) .Values.engineCache.persistence.existingClaim }}
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.engineCache.sizeLimit }}
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- end }}
