{{/*
Chart name, overridable with nameOverride; truncated to 63 characters because Kubernetes names
(DNS-1123 labels) are limited to that.
*/}}
{{- define "sessionrec.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: <release>-<chart>, or the release name alone when it already contains
the chart name; truncated to 63 characters (DNS-1123 label limit).
*/}}
{{- define "sessionrec.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, as used by the helm.sh/chart label ("+" is not allowed in label values).
*/}}
{{- define "sessionrec.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels on every object.
*/}}
{{- define "sessionrec.labels" -}}
helm.sh/chart: {{ include "sessionrec.chart" . }}
{{ include "sessionrec.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sessionrec
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
commonAnnotations as a metadata block (empty when there are none); pass extra annotations as
(dict "root" . "extra" $map) to merge them in.
*/}}
{{- define "sessionrec.annotations" -}}
{{- $all := merge (deepCopy (default (dict) .extra)) (default (dict) .root.Values.commonAnnotations) }}
{{- with $all }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Labels of the Prometheus operator objects and the dashboard: the common labels, then
metrics.additionalLabels (what kube-prometheus-stack selects on), then the object's own labels.
Call with (dict "root" . "own" $labels).
*/}}
{{- define "sessionrec.metricsLabels" -}}
{{ include "sessionrec.labels" .root }}
{{- with merge (deepCopy (default (dict) .own)) (default (dict) .root.Values.metrics.additionalLabels) }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: the Deployment selector is immutable, so these never change on upgrade
(no version, no model version here).
*/}}
{{- define "sessionrec.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sessionrec.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of retrieval shard s's pods (templates/retrieval-shards.yaml): a name of their own,
so the front's selector (sessionrec.selectorLabels) never matches a shard pod. (dict "root" . "shard" s)
*/}}
{{- define "sessionrec.shardSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-retrieval-shard" (include "sessionrec.name" .root) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
sessionrec.io/shard: {{ .shard | quote }}
{{- end }}

{{/*
Name of the ServiceAccount the pods run as.
*/}}
{{- define "sessionrec.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sessionrec.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The project image: repository@digest when a digest is given, else repository:tag (tag defaults to
the chart appVersion, so the image is always pinned).
*/}}
{{- define "sessionrec.image" -}}
{{- include "sessionrec.imageRef" (dict "root" . "image" .Values.image "defaultTag" .Chart.AppVersion) }}
{{- end }}

{{/*
An image reference from an image block (repository, tag, optional digest), with
global.imageRegistry in front for air-gapped mirrors. A repository whose first part is a registry
host (has a dot or a port) has that host replaced by the mirror; otherwise the mirror is prefixed.
Call with (dict "root" . "image" $image "defaultTag" $tag).
*/}}
{{- define "sessionrec.imageRef" -}}
{{- $repository := .image.repository }}
{{- $registry := "" }}
{{- with .root.Values.global }}{{ $registry = default "" .imageRegistry }}{{ end }}
{{- if $registry }}
{{- $parts := splitList "/" $repository }}
{{- if and (gt (len $parts) 1) (regexMatch "[.:]|^localhost$" (first $parts)) }}
{{- $repository = join "/" (rest $parts) }}
{{- end }}
{{- $repository = printf "%s/%s" (trimSuffix "/" $registry) $repository }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repository .image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (toString (default .defaultTag .image.tag)) }}
{{- end }}
{{- end }}

{{/*
Is the cluster OpenShift, and should security contexts be adapted? global.compatibility.openshift.
adaptSecurityContext: force, disabled, or auto (the cluster serves security.openshift.io/v1).
*/}}
{{- define "sessionrec.openshift" -}}
{{- $mode := "auto" }}
{{- with .Values.global }}{{ with .compatibility }}{{ with .openshift }}{{ $mode = default "auto" .adaptSecurityContext }}{{ end }}{{ end }}{{ end }}
{{- if or (eq $mode "force") (and (eq $mode "auto") (.Capabilities.APIVersions.Has "security.openshift.io/v1")) }}true{{ end }}
{{- end }}

{{/*
A security context with the fixed IDs removed on OpenShift: its restricted-v2 SCC assigns
runAsUser / fsGroup from the namespace's range and refuses pods that ask for others.
Call with (dict "root" . "context" $context).
*/}}
{{- define "sessionrec.securityContext" -}}
{{- $context := deepCopy .context }}
{{- if include "sessionrec.openshift" .root }}
{{- $context = omit $context "runAsUser" "runAsGroup" "fsGroup" "seLinuxOptions" }}
{{- end }}
{{- toYaml $context }}
{{- end }}

{{/*
Pods that run when nothing scales the Deployment down: replicaCount, or autoscaling.minReplicas.
*/}}
{{- define "sessionrec.minPods" -}}
{{- if include "sessionrec.autoscaled" . }}{{ .Values.autoscaling.minReplicas }}{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}

{{/*
Pod name pattern of this release's Deployment (<fullname>-<replicaset hash>-<suffix>), used to
scope PromQL to this release.
*/}}
{{- define "sessionrec.podRegex" -}}
{{- printf "%s-[a-z0-9]+-[a-z0-9]+" (include "sessionrec.fullname" .) }}
{{- end }}

{{/*
Is an autoscaler in charge of the replica count?
*/}}
{{- define "sessionrec.autoscaled" -}}
{{- if or .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled }}true{{ end }}
{{- end }}

{{/*
model.version as a string. `--set model.version=13` gives a number and YAML files give floats
(20250101 would print as 2.0250101e+07), so numbers go through int64.
*/}}
{{- define "sessionrec.modelVersion" -}}
{{- $version := .Values.model.version }}
{{- if kindIs "string" $version }}{{ $version }}{{ else }}{{ $version | int64 }}{{ end }}
{{- end }}

{{/*
The model repository URI for s3 / gcs, rendered with tpl so it may refer to .Values.model.version
(normalised to its string form first, so a number renders as written).
*/}}
{{- define "sessionrec.repositoryUri" -}}
{{- $_ := set .Values.model "version" (include "sessionrec.modelVersion" .) }}
{{- $source := .Values.modelRepository.source }}
{{- if eq $source "s3" }}
{{- tpl .Values.modelRepository.s3.uri . }}
{{- else if eq $source "gcs" }}
{{- tpl .Values.modelRepository.gcs.uri . }}
{{- else }}
{{- printf "pvc://%s/%s" .Values.modelRepository.pvc.claimName .Values.modelRepository.pvc.subPath }}
{{- end }}
{{- end }}

{{/*
Checks across values that a JSON schema states badly; each fails with a message naming the keys.
*/}}
{{- define "sessionrec.validate" -}}
{{- $repo := .Values.modelRepository }}
{{- if eq $repo.source "s3" }}
{{- $_ := required "modelRepository.s3.uri is required: set it to the exported model repository, e.g. --set modelRepository.s3.uri=s3://bucket/sessionrec/repository (or choose modelRepository.source gcs / pvc)" $repo.s3.uri }}
{{- else if eq $repo.source "gcs" }}
{{- $_ := required "modelRepository.gcs.uri is required: set it to the exported model repository, e.g. --set modelRepository.gcs.uri=gs://bucket/sessionrec/repository" $repo.gcs.uri }}
{{- else if eq $repo.source "pvc" }}
{{- $_ := required "modelRepository.pvc.claimName is required: name the PersistentVolumeClaim that holds the exported model repository" $repo.pvc.claimName }}
{{- end }}
{{- $startup := mul .Values.probes.startup.periodSeconds .Values.probes.startup.failureThreshold }}
{{- if lt (int .Values.progressDeadlineSeconds) (int $startup) }}
{{- fail (printf "progressDeadlineSeconds (%d) is below the startup probe's budget, probes.startup.periodSeconds x failureThreshold = %d s: Kubernetes would report a rollout failed while its pods are still loading (or building engines); raise it above %d" (int .Values.progressDeadlineSeconds) (int $startup) (int $startup)) }}
{{- end }}
{{- if and .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled }}
{{- fail "autoscaling.hpa.enabled and autoscaling.keda.enabled are exclusive: both would drive the Deployment's replicas" }}
{{- end }}
{{- if and .Values.engineBuild.enabled (not .Values.gpu.enabled) }}
{{- fail "engineBuild.enabled needs gpu.enabled: TensorRT plans are built on the serving GPU" }}
{{- end }}
{{- if gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if le (int .Values.terminationGracePeriodSeconds) (add .Values.preStopSleepSeconds .Values.triton.exitTimeoutSeconds | int) }}
{{- fail "terminationGracePeriodSeconds must exceed preStopSleepSeconds + triton.exitTimeoutSeconds, or in-flight requests are cut off" }}
{{- end }}
{{- end }}

{{/*
The autoscaling metric chosen by autoscaling.metric, as a dict:
  record  the recorded per-pod series (files/recording-rules.yaml), queried by KEDA
  custom  the custom-metrics API name that prometheus-adapter serves it under
          (files/prometheus-adapter-rules.yaml), read by the HPA
  target  the per-pod target value
*/}}
{{- define "sessionrec.scalingMetric" -}}
{{- if eq .Values.autoscaling.metric "queuedRequests" }}
{{- dict "record" "sessionrec:queued_requests:rate1m" "custom" "sessionrec_queued_requests" "target" .Values.autoscaling.queuedRequestsTarget | toJson }}
{{- else }}
{{- dict "record" "sessionrec:pending_requests:avg1m" "custom" "sessionrec_pending_requests" "target" .Values.autoscaling.pendingRequestsTarget | toJson }}
{{- end }}
{{- end }}

{{/*
A Kubernetes quantity for a (possibly fractional) target, in milli-units: 0.5 -> "500m".
*/}}
{{- define "sessionrec.milliQuantity" -}}
{{- printf "%dm" (round (mulf . 1000) 0 | int64) }}
{{- end }}

{{/*
The `job` label Prometheus gives this release's Triton metrics: the metrics Service's name for a
ServiceMonitor, <namespace>/<PodMonitor name> for a PodMonitor (Prometheus operator defaults).
*/}}
{{- define "sessionrec.metricsJob" -}}
{{- if eq .Values.metrics.monitor.kind "PodMonitor" }}
{{- printf "%s/%s" .Release.Namespace (include "sessionrec.fullname" .) }}
{{- else }}
{{- printf "%s-metrics" (include "sessionrec.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Which Triton config every model is served with (--model-config-name; Triton reads
<model>/configs/<name>.pbtxt, else config.pbtxt): "tensorrt" with native plans (written by
build-engine), "gpu" on GPU nodes (onnxruntime + TensorRT accelerator), none on CPU (config.pbtxt is
the CPU config). triton.modelConfigName overrides it.
*/}}
{{- define "sessionrec.modelConfigName" -}}
{{- if .Values.triton.modelConfigName }}{{ .Values.triton.modelConfigName }}
{{- else if .Values.engineBuild.enabled }}tensorrt
{{- else if .Values.gpu.enabled }}gpu
{{- end }}
{{- end }}
