{{/*
Model monitoring (issue 17): the serving step's switch, read by the fused step at load
(sessionrec/monitoring/signals.py, SESSIONREC_MONITORING).
*/}}
{{- define "sessionrec.monitoringEnv" -}}
- name: SESSIONREC_MONITORING
  value: {{ ternary "on" "off" .Values.monitoring.enabled | quote }}
{{- end }}
