{{/* Chart name, truncated to 63 characters (the DNS label limit). */}}
{{- define "tagstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; components append "-<component>", so keep room for it. */}}
{{- define "tagstream.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of one component's resources: pass (dict "root" $ "component" "tagger"). */}}
{{- define "tagstream.componentName" -}}
{{- printf "%s-%s" (include "tagstream.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tagstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tagstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tagstream.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tagstream.labels" -}}
helm.sh/chart: {{ include "tagstream.chart" .root }}
{{ include "tagstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: tagstream
{{- end }}

{{- define "tagstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tagstream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tagstream.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Settings every service reads (services/runtime/settings.py); secrets only from existingSecret. */}}
{{- define "tagstream.commonEnv" -}}
{{- if and .Values.kafka.saslMechanism (not .Values.existingSecret) }}
{{- fail "kafka.saslMechanism is set: the SASL password comes from existingSecret (key secretKeys.kafkaSaslPassword); set existingSecret" }}
{{- end }}
{{- if and .Values.redis.auth (not .Values.existingSecret) }}
{{- fail "redis.auth is true: the Redis password comes from existingSecret (key secretKeys.redisPassword); set existingSecret" }}
{{- end }}
- name: TAGSTREAM_SHOP__TIMEZONE
  value: {{ .Values.shop.timezone | quote }}
- name: TAGSTREAM_KAFKA__BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: TAGSTREAM_KAFKA__SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- with .Values.kafka.saslMechanism }}
- name: TAGSTREAM_KAFKA__SASL_MECHANISM
  value: {{ . | quote }}
{{- end }}
{{- with .Values.kafka.saslUsername }}
- name: TAGSTREAM_KAFKA__SASL_USERNAME
  value: {{ . | quote }}
{{- end }}
- name: TAGSTREAM_KAFKA__PARTITIONS
  value: {{ include "tagstream.envValue" .Values.kafka.partitions }}
- name: TAGSTREAM_KAFKA__REPLICATION_FACTOR
  value: {{ include "tagstream.envValue" .Values.kafka.replicationFactor }}
- name: TAGSTREAM_REDIS__URL
  value: {{ .Values.redis.url | quote }}
- name: TAGSTREAM_REDIS__KEY_PREFIX
  value: {{ .Values.redis.keyPrefix | quote }}
{{- if .Values.existingSecret }}
{{- if .Values.kafka.saslMechanism }}
- name: TAGSTREAM_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.existingSecret }}
      key: {{ .Values.secretKeys.kafkaSaslPassword }}
{{- end }}
{{- if .Values.redis.auth }}
- name: TAGSTREAM_REDIS__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.existingSecret }}
      key: {{ .Values.secretKeys.redisPassword }}
{{- end }}
{{- end }}
{{- range $name, $value := .Values.extraEnv }}
- name: {{ $name }}
  value: {{ include "tagstream.envValue" $value }}
{{- end }}
{{- end }}

{{/* Extra TAGSTREAM_<SECTION>__* settings of one component: pass (dict "section" "TAGGER" "settings" .Values.tagger.settings). */}}
{{- define "tagstream.sectionEnv" -}}
{{- range $name, $value := .settings }}
- name: {{ printf "TAGSTREAM_%s__%s" $.section (upper $name) }}
  value: {{ include "tagstream.envValue" $value }}
{{- end }}
{{- end }}

{{/*
An environment variable's value from a values scalar, quoted. Numbers print whole: a values file
reaches the templates as float64, which `quote` and `{{ }}` print in scientific notation from 1e6 on
("1e+07", which an integer setting refuses); toJson prints 10000000 and 0.01 as written.
*/}}
{{- define "tagstream.envValue" -}}
{{- if kindIs "string" . }}{{ . | quote }}{{ else }}{{ toJson . | quote }}{{ end }}
{{- end }}

{{- define "tagstream.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "tagstream.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* HTTP probes of a service's web port: pass (dict "probes" .Values.x.probes). */}}
{{- define "tagstream.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 5
  failureThreshold: {{ int64 .probes.startupFailureThreshold }}
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end }}

{{/* Volumes every pod gets so the root filesystem can stay read-only. */}}
{{- define "tagstream.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end }}

{{/*
One NetworkPolicy egress rule from a values block {to: [peers], ports: [numbers]}.
*/}}
{{- define "tagstream.egressRule" -}}
- to:
    {{- toYaml .to | nindent 4 }}
  ports:
    {{- range .ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
{{- end }}
