{{/*
Tracing (issue 17, sessionrec/serving/tracing.py): tritonserver's OpenTelemetry mode exports each
traced request's spans over OTLP/HTTP to the collector; the python step adds its stage spans
(SESSIONREC_TRACING_ENDPOINT), as children of Triton's. Triton traces 1 request in round(1/sampleRate).
*/}}
{{- define "sessionrec.tracingEnabled" -}}
{{- if and .Values.tracing.enabled (not .Values.tracing.endpoint) }}
{{- fail "tracing.enabled needs tracing.endpoint (the collector's OTLP/HTTP base URL, e.g. http://otel-collector.observability:4318)" }}
{{- end }}
{{- if .Values.tracing.enabled }}true{{ end }}
{{- end }}

{{- define "sessionrec.tracingService" -}}
{{- .Values.tracing.serviceName | default (include "sessionrec.fullname" .) }}
{{- end }}

{{- define "sessionrec.tracingArgs" -}}
{{- if include "sessionrec.tracingEnabled" . }}
- --trace-config=mode=opentelemetry
- --trace-config=rate={{ int (round (divf 1 .Values.tracing.sampleRate) 0) }}
- --trace-config=level=TIMESTAMPS
- --trace-config=opentelemetry,url={{ trimSuffix "/" .Values.tracing.endpoint }}/v1/traces
- --trace-config=opentelemetry,resource=service.name={{ include "sessionrec.tracingService" . }}
- --trace-config=opentelemetry,bsp_schedule_delay={{ int .Values.tracing.exportDelayMs }}
{{- end }}
{{- end }}

{{- define "sessionrec.tracingEnv" -}}
{{- if include "sessionrec.tracingEnabled" . }}
- name: SESSIONREC_TRACING_ENDPOINT
  value: {{ .Values.tracing.endpoint | quote }}
- name: SESSIONREC_TRACING_SERVICE
  value: {{ include "sessionrec.tracingService" . | quote }}
{{- end }}
{{- end }}
