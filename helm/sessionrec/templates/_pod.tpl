{{/*
Pieces of the pod spec, kept here so deployment.yaml reads top to bottom.
*/}}

{{/*
tritonserver flags. Models load explicitly, all of them, at start (never the `poll` mode: a new
model version arrives by a rolling update, so every pod serves the same version).
*/}}
{{- define "sessionrec.tritonArgs" -}}
- --model-repository={{ .Values.modelRepository.mountPath }}
- --model-control-mode=explicit
- --load-model=*
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
{{- if .Values.tls.enabled }}
- --grpc-use-ssl=true
- --grpc-server-cert=/etc/sessionrec/tls/tls.crt
- --grpc-server-key=/etc/sessionrec/tls/tls.key
{{- if .Values.tls.mutual }}
- --grpc-use-ssl-mutual=true
- --grpc-root-cert=/etc/sessionrec/tls/ca.crt
{{- end }}
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
{{- define "sessionrec.commonEnv" -}}
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /tmp/.cache
- name: CUDA_CACHE_PATH
  value: /tmp/.nv/ComputeCache
- name: SESSIONREC_ENGINE_CACHE
  value: {{ .Values.engineCache.mountPath | quote }}
- name: SESSIONREC_MODEL_VERSION
  value: {{ include "sessionrec.modelVersion" . | quote }}
# numpy's OpenBLAS would start (and spin) a thread per node core in every python stub; nothing on the
# serving path uses it (sessionrec.serving.launcher.server_environment).
- name: OPENBLAS_NUM_THREADS
  value: "1"
{{- end }}

{{/*
The liveness probe's request: item id -1 is never in a catalogue (raw ids are non-negative), so the
answer is the popular-items fallback, yet the request passes every step of the ensemble.
*/}}
{{- define "sessionrec.probeRequest" -}}
{{- $inputs := list
      (dict "name" "ITEMS" "datatype" "INT64" "shape" (list 1 1) "data" (list -1))
      (dict "name" "K" "datatype" "INT32" "shape" (list 1 1) "data" (list 1))
      (dict "name" "EXCLUDE_SEEN" "datatype" "BOOL" "shape" (list 1 1) "data" (list false)) -}}
{{- toJson (dict "inputs" $inputs "outputs" (list (dict "name" "ITEM_IDS"))) -}}
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
   loads every model left (--load-model=*), and an unused one would cost a stub and its memory.
5. Check every model has the config Triton will read (--model-config-name): configs/gpu.pbtxt on
   GPU nodes; for native TensorRT plans, configs/tensorrt.pbtxt, which build-engine writes for
   ENGINE_MODEL and which the other models take from their gpu config.
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
for model in "${REPOSITORY}"/*/; do
  name=$(basename "${model%/}")
  if [ "${name}" != "${ENSEMBLE}" ] && [ "${name}" != "${CANDIDATE_ENSEMBLE:-}" ] \
      && ! printf '%s\n' "${steps}" | grep -qx "${name}"; then
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
echo "repository ready: version ${live:-as published}, config ${CONFIG_NAME:-config.pbtxt}, models: $(ls "${REPOSITORY}" | tr '\n' ' ')"
{{- end }}

{{/*
Init containers: fetch (s3 / gcs), prepare (copy from pvc, select the version), and the optional
TensorRT plan build on the node's own GPU.
*/}}
{{- define "sessionrec.initContainers" -}}
{{- $source := .Values.modelRepository.source }}
{{- $repo := .Values.modelRepository }}
{{- if eq $source "s3" }}
- name: fetch-repository
  image: "{{ $repo.s3.image.repository }}:{{ $repo.s3.image.tag }}"
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
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: model-repository
      mountPath: {{ $repo.mountPath }}
    - name: tmp
      mountPath: /tmp
{{- else if eq $source "gcs" }}
- name: fetch-repository
  image: "{{ $repo.gcs.image.repository }}:{{ $repo.gcs.image.tag }}"
  imagePullPolicy: {{ $repo.gcs.image.pullPolicy }}
  command:
    - gcloud
    - storage
    - rsync
    - --recursive
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
    {{- toYaml .Values.securityContext | nindent 4 }}
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
  command:
    - bash
    - -c
    - |
      {{- include "sessionrec.prepareScript" . | nindent 6 }}
  env:
    - name: REPOSITORY
      value: {{ $repo.mountPath | quote }}
    - name: SOURCE_URI
      value: {{ include "sessionrec.repositoryUri" . | quote }}
    - name: MODEL_VERSION
      value: {{ include "sessionrec.modelVersion" . | quote }}
    - name: ENSEMBLE
      value: {{ .Values.model.readinessModel | quote }}
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
    {{- toYaml $repo.initResources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: model-repository
      mountPath: {{ $repo.mountPath }}
    - name: tmp
      mountPath: /tmp
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
  image: "{{ .Values.engineBuild.image.repository }}:{{ default .Chart.AppVersion .Values.engineBuild.image.tag }}"
  imagePullPolicy: {{ .Values.engineBuild.image.pullPolicy }}
  command:
    {{- toYaml .Values.engineBuild.command | nindent 4 }}
  env:
    {{- include "sessionrec.commonEnv" . | nindent 4 }}
  resources:
    {{- include "sessionrec.resources" . | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
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
    sizeLimit: 10Gi
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- end }}
