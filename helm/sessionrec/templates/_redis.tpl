{{/*
Session history (redis.*): the environment sessionrec.serving.history reads in the python stubs.
The password and the HMAC key come from Secrets, never from values; the URL carries no password.
*/}}
{{- define "sessionrec.redisEnv" -}}
{{- $redis := .Values.redis }}
{{- if $redis.enabled }}
- name: SESSIONREC_REDIS_URL
  value: {{ printf "%s://%s:%d/%d" (ternary "rediss" "redis" $redis.tls.enabled) $redis.host (int $redis.port) (int $redis.database) | quote }}
{{- if $redis.auth.existingSecret }}
- name: SESSIONREC_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $redis.auth.existingSecret }}
      key: {{ $redis.auth.passwordKey }}
{{- end }}
- name: SESSIONREC_SESSION_HMAC_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $redis.hmac.existingSecret }}
      key: {{ $redis.hmac.key }}
- name: SESSIONREC_HISTORY_KEY_PREFIX
  value: {{ $redis.keyPrefix | quote }}
- name: SESSIONREC_HISTORY_TTL_S
  value: {{ $redis.ttlSeconds | quote }}
- name: SESSIONREC_HISTORY_MAX_LEN
  value: {{ $redis.maxLen | quote }}
- name: SESSIONREC_REDIS_TIMEOUT_MS
  value: {{ $redis.timeoutMs | quote }}
- name: SESSIONREC_HISTORY_SPECULATE
  value: {{ ternary "1" "0" (eq $redis.speculate true) | quote }}
{{- end }}
{{- end }}
