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
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
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
{{- if eq .Values.autoscaling.metric "queueComputeRatio" }}
{{- dict "record" "sessionrec:queue_compute_ratio:rate1m" "custom" "sessionrec_queue_compute_ratio" "target" .Values.autoscaling.queueComputeRatioTarget | toJson }}
{{- else }}
{{- dict "record" "sessionrec:pending_requests:sum" "custom" "sessionrec_pending_requests" "target" .Values.autoscaling.pendingRequestsTarget | toJson }}
{{- end }}
{{- end }}

{{/*
A Kubernetes quantity for a (possibly fractional) target, in milli-units: 0.5 -> "500m".
*/}}
{{- define "sessionrec.milliQuantity" -}}
{{- printf "%dm" (round (mulf . 1000) 0 | int64) }}
{{- end }}

{{/*
The `job` label Prometheus gives this release's Triton metrics: the Service name for a
ServiceMonitor, <namespace>/<PodMonitor name> for a PodMonitor (Prometheus operator defaults).
*/}}
{{- define "sessionrec.metricsJob" -}}
{{- if eq .Values.metrics.monitor.kind "PodMonitor" }}
{{- printf "%s/%s" .Release.Namespace (include "sessionrec.fullname" .) }}
{{- else }}
{{- include "sessionrec.fullname" . }}
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
