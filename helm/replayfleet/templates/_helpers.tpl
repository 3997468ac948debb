{{/*
Names, labels, the shared pod parts and the checks the values schema cannot express.
*/}}

{{- define "replayfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "replayfleet.fullname" -}}
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

{{/* A component's object name: <fullname>-<component>, at most 63 characters. */}}
{{- define "replayfleet.componentName" -}}
{{- $full := include "replayfleet.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-" }}
{{- printf "%s-%s" $full .component }}
{{- end }}

{{- define "replayfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "replayfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "replayfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "replayfleet.labels" -}}
helm.sh/chart: {{ include "replayfleet.chart" . }}
{{ include "replayfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: replayfleet
{{- end }}

{{- define "replayfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "replayfleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "replayfleet.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The lease TTL in whole seconds, and as a duration for --lease-ttl and fleet.lease_ttl. */}}
{{- define "replayfleet.leaseTtlSeconds" -}}
{{- int64 .Values.backfill.fleet.lease_ttl_seconds }}
{{- end }}

{{- define "replayfleet.leaseTtl" -}}
{{- printf "%ss" (include "replayfleet.leaseTtlSeconds" .) }}
{{- end }}

{{/* How long a stopping worker finishes the shards in hand (--drain-timeout, seconds). */}}
{{- define "replayfleet.drainTimeoutSeconds" -}}
{{- if and (hasKey .Values.workers "drainTimeoutSeconds") (not (kindIs "invalid" .Values.workers.drainTimeoutSeconds)) }}
{{- int64 .Values.workers.drainTimeoutSeconds }}
{{- else }}
{{- include "replayfleet.leaseTtlSeconds" . }}
{{- end }}
{{- end }}

{{/* The workers' grace period: above the lease TTL and the drain timeout, so that a
stopping worker finishes or gives back the lease it holds before the kubelet kills it. */}}
{{- define "replayfleet.workerGracePeriod" -}}
{{- $ttl := int64 (include "replayfleet.leaseTtlSeconds" .) }}
{{- $drain := int64 (include "replayfleet.drainTimeoutSeconds" .) }}
{{- $grace := add $ttl (int64 .Values.workers.gracePeriodMarginSeconds) }}
{{- if and (hasKey .Values.workers "terminationGracePeriodSeconds") (not (kindIs "invalid" .Values.workers.terminationGracePeriodSeconds)) }}
{{- $grace = int64 .Values.workers.terminationGracePeriodSeconds }}
{{- if le $grace $ttl }}
{{- fail (printf "workers.terminationGracePeriodSeconds (%d) must be above the lease TTL backfill.fleet.lease_ttl_seconds (%d): a stopping worker needs the TTL to finish or give back its lease" $grace $ttl) }}
{{- end }}
{{- end }}
{{- if le $grace $drain }}
{{- fail (printf "the workers' terminationGracePeriodSeconds (%d) must be above workers.drainTimeoutSeconds (%d): the kubelet would kill a worker before it gives its leases back" $grace $drain) }}
{{- end }}
{{- $grace }}
{{- end }}

{{/* Checks across values, run by every workload template. */}}
{{- define "replayfleet.validate" -}}
{{- $replicasSet := and (hasKey .Values.workers "replicas") (not (kindIs "invalid" .Values.workers.replicas)) }}
{{- if and .Values.keda.enabled $replicasSet }}
{{- fail "workers.replicas and keda.enabled are mutually exclusive: KEDA scales the worker Deployment on the lease consumer's lag. Unset workers.replicas, or set keda.enabled=false for a fixed replica count." }}
{{- end }}
{{- if and .Values.keda.enabled (not .Values.nats.monitoringEndpoint) }}
{{- fail "keda.enabled needs nats.monitoringEndpoint (host:port of the NATS server's HTTP monitoring endpoint), where the nats-jetstream scaler reads the lease consumer's lag." }}
{{- end }}
{{- if and (not .Values.nats.url) (not .Values.nats.urlFromSecret.name) }}
{{- fail "no NATS server: set nats.url (nats://host:4222) or nats.urlFromSecret.name." }}
{{- end }}
{{- if and .Values.nats.credentials.secretName .Values.nats.nkey.secretName }}
{{- fail "set either nats.credentials.secretName or nats.nkey.secretName, not both." }}
{{- end }}
{{- if and .Values.nats.url .Values.nats.urlFromSecret.name }}
{{- fail "set either nats.url or nats.urlFromSecret.name, not both." }}
{{- end }}
{{- if .Values.config.existingConfigMap }}
{{- if not .Values.config.contractKeys }}
{{- fail (printf "config.contractKeys must list the contract files of ConfigMap %s: ConfigMaps are flat, and the chart mounts those keys under contracts/" .Values.config.existingConfigMap) }}
{{- end }}
{{- else if not .Values.contracts }}
{{- fail "contracts is empty: give the catalog's files (file name: YAML), or use config.existingConfigMap." }}
{{- end }}
{{- range $store := list "source" "target" }}
{{- range $option, $_ := (index $.Values.backfill $store).options }}
{{- if has (lower $option | trimPrefix "aws_") (list "access_key_id" "secret_access_key" "session_token" "token" "account_key" "client_secret" "service_account_key" "password") }}
{{- fail (printf "backfill.%s.options.%s is a secret: secrets come only from an existing Secret (storage.existingSecret, storage.%sEnvFromSecret), never from values" $store $option $store) }}
{{- end }}
{{- end }}
{{- end }}
{{- $_ := include "replayfleet.workerGracePeriod" . }}
{{- end }}

{{/* The NATS URL as the environment variable NATS_URL. */}}
{{- define "replayfleet.natsUrlEnv" -}}
- name: NATS_URL
{{- if .Values.nats.urlFromSecret.name }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.nats.urlFromSecret.name }}
      key: {{ .Values.nats.urlFromSecret.key }}
{{- else }}
  value: {{ .Values.nats.url | quote }}
{{- end }}
{{- end }}

{{- define "replayfleet.natsCredsPath" -}}
/var/run/secrets/replayfleet/nats/{{ .Values.nats.credentials.key }}
{{- end }}
{{- define "replayfleet.natsNkeyPath" -}}
/var/run/secrets/replayfleet/nats-nkey/{{ .Values.nats.nkey.key }}
{{- end }}
{{- define "replayfleet.natsCaPath" -}}
/var/run/secrets/replayfleet/nats-ca/{{ .Values.nats.tls.caKey }}
{{- end }}

{{/* Environment shared by both roles: logs and object-store credentials. */}}
{{- define "replayfleet.commonEnv" -}}
- name: REPLAYFLEET_LOG
  value: {{ .Values.log.level | quote }}
- name: REPLAYFLEET_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
- name: TMPDIR
  value: /tmp
{{- with .Values.storage }}
{{- if .existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .secretAccessKeyKey }}
{{- if .sessionTokenKey }}
- name: AWS_SESSION_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .sessionTokenKey }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "replayfleet.envFrom" -}}
{{- with .Values.storage }}
{{- if .sourceEnvFromSecret }}
- secretRef:
    name: {{ .sourceEnvFromSecret }}
{{- end }}
{{- if .targetEnvFromSecret }}
- secretRef:
    name: {{ .targetEnvFromSecret }}
{{- end }}
{{- range .extraEnvFromSecrets }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Secret volumes for NATS credentials and TLS, and their mounts. */}}
{{- define "replayfleet.natsVolumes" -}}
{{- if .Values.nats.credentials.secretName }}
- name: nats-creds
  secret:
    secretName: {{ .Values.nats.credentials.secretName }}
    defaultMode: 288 # 0440
    items:
      - key: {{ .Values.nats.credentials.key }}
        path: {{ .Values.nats.credentials.key }}
{{- end }}
{{- if .Values.nats.nkey.secretName }}
- name: nats-nkey
  secret:
    secretName: {{ .Values.nats.nkey.secretName }}
    defaultMode: 288 # 0440
    items:
      - key: {{ .Values.nats.nkey.key }}
        path: {{ .Values.nats.nkey.key }}
{{- end }}
{{- if .Values.nats.tls.caSecretName }}
- name: nats-ca
  secret:
    secretName: {{ .Values.nats.tls.caSecretName }}
    defaultMode: 292 # 0444
    items:
      - key: {{ .Values.nats.tls.caKey }}
        path: {{ .Values.nats.tls.caKey }}
{{- end }}
{{- if .Values.nats.tls.clientSecretName }}
- name: nats-client-tls
  secret:
    secretName: {{ .Values.nats.tls.clientSecretName }}
    defaultMode: 288 # 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- end }}

{{- define "replayfleet.natsVolumeMounts" -}}
{{- if .Values.nats.credentials.secretName }}
- name: nats-creds
  mountPath: /var/run/secrets/replayfleet/nats
  readOnly: true
{{- end }}
{{- if .Values.nats.nkey.secretName }}
- name: nats-nkey
  mountPath: /var/run/secrets/replayfleet/nats-nkey
  readOnly: true
{{- end }}
{{- if .Values.nats.tls.caSecretName }}
- name: nats-ca
  mountPath: /var/run/secrets/replayfleet/nats-ca
  readOnly: true
{{- end }}
{{- if .Values.nats.tls.clientSecretName }}
- name: nats-client-tls
  mountPath: /var/run/secrets/replayfleet/nats-tls
  readOnly: true
{{- end }}
{{- end }}

{{/* prometheus.io annotations for a plain Prometheus's pod discovery. */}}
{{- define "replayfleet.scrapeAnnotations" -}}
{{- if .Values.metrics.podAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* A TOML string: a literal string ('...') when it can be one, else a basic string. */}}
{{- define "replayfleet.tomlString" -}}
{{- $s := toString . }}
{{- if regexMatch "^[^'[:cntrl:]]*$" $s }}
{{- printf "'%s'" $s }}
{{- else }}
{{- toJson $s }}
{{- end }}
{{- end }}

{{/* A TOML inline value (a [source.columns] entry): a string, boolean, integer, list or
table, tables inline with quoted keys (map keys such as record names may hold dots). */}}
{{- define "replayfleet.tomlInline" -}}
{{- if kindIs "map" . -}}
{ {{- $first := true }}{{ range $k, $v := . }}{{ if not $first }},{{ end }}{{ $first = false }} {{ include "replayfleet.tomlString" $k }} = {{ include "replayfleet.tomlInline" $v }}{{ end }} }
{{- else if kindIs "slice" . -}}
[{{ range $i, $v := . }}{{ if $i }}, {{ end }}{{ include "replayfleet.tomlInline" $v }}{{ end }}]
{{- else if kindIs "bool" . -}}
{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) -}}
{{ int64 . }}
{{- else -}}
{{ include "replayfleet.tomlString" . }}
{{- end -}}
{{- end }}

{{/* A TOML array of strings. */}}
{{- define "replayfleet.tomlStrings" -}}
[{{ range $i, $v := . }}{{ if $i }}, {{ end }}{{ include "replayfleet.tomlString" $v }}{{ end }}]
{{- end }}

{{/* A TOML float: always with a decimal point or an exponent. */}}
{{- define "replayfleet.tomlFloat" -}}
{{- $f := toString (float64 .) }}
{{- if regexMatch "[.eE]" $f }}{{ $f }}{{ else }}{{ $f }}.0{{ end }}
{{- end }}

{{/* backfill.toml rendered from .Values.backfill (docs/CONFIG.md), key for key. */}}
{{- define "replayfleet.backfillToml" -}}
{{- $b := .Values.backfill -}}
# backfill.toml rendered by the replayfleet chart from the release's values (`backfill`).
# Keys and meanings: docs/CONFIG.md. The NATS settings come from the environment
# (REPLAYFLEET_FLEET__*), the contracts and the SQL from files next to this one.

[run]
name = {{ include "replayfleet.tomlString" $b.run.name }}

[source]
url = {{ include "replayfleet.tomlString" $b.source.url }}
{{- if hasKey $b.source "contiguous_seq" }}
contiguous_seq = {{ $b.source.contiguous_seq }}
{{- end }}
{{- with $b.source.key_pattern }}
key_pattern = {{ include "replayfleet.tomlInline" . }}
{{- end }}
{{- with $b.source.segments }}
segments = {{ include "replayfleet.tomlString" . }}
{{- end }}
{{- with $b.source.options }}

[source.options]
{{- range $k, $v := . }}
{{ include "replayfleet.tomlString" $k }} = {{ include "replayfleet.tomlString" $v }}
{{- end }}
{{- end }}
{{- with $b.source.columns }}

[source.columns]
{{- range $k, $v := . }}
{{ include "replayfleet.tomlString" $k }} = {{ include "replayfleet.tomlInline" $v }}
{{- end }}
{{- end }}

[contracts]
dir = "contracts"

[projection]
name = {{ include "replayfleet.tomlString" $b.projection.name }}
key = {{ include "replayfleet.tomlStrings" $b.projection.key }}
sql_file = "projection.sql"

[target]
url = {{ include "replayfleet.tomlString" $b.target.url }}
{{- with $b.target.options }}

[target.options]
{{- range $k, $v := . }}
{{ include "replayfleet.tomlString" $k }} = {{ include "replayfleet.tomlString" $v }}
{{- end }}
{{- end }}
{{- with $b.shards }}

[shards]
{{- if hasKey . "target_events" }}
target_events = {{ int64 .target_events }}
{{- end }}
{{- end }}
{{- with $b.window }}

[window]
{{- if hasKey . "partitions" }}
partitions = {{ .partitions | toJson }}
{{- end }}
{{- if hasKey . "until_seq" }}
until_seq = {{ int64 .until_seq }}
{{- end }}
{{- if hasKey . "until_time" }}
until_time = {{ include "replayfleet.tomlString" .until_time }}
{{- end }}
{{- end }}
{{- with $b.checks }}

[checks]
{{- if hasKey . "invariants" }}
invariants = {{ include "replayfleet.tomlStrings" .invariants }}
{{- end }}
{{- with .anomalies }}

[checks.anomalies]
{{- range $k := list "no_upcast_path" "unknown_type" "unknown_version" "invalid_payload" "upcast_failed" "conflicting_duplicate" "gap" "undecodable" }}
{{- if hasKey $.Values.backfill.checks.anomalies $k }}
{{ $k }} = {{ include "replayfleet.tomlString" (index $.Values.backfill.checks.anomalies $k) }}
{{- end }}
{{- end }}
{{- if hasKey . "max_quarantined_ratio" }}
max_quarantined_ratio = {{ include "replayfleet.tomlFloat" .max_quarantined_ratio }}
{{- end }}
{{- end }}
{{- with .baseline }}

[checks.baseline]
{{- if hasKey . "max_changed_ratio" }}
max_changed_ratio = {{ include "replayfleet.tomlFloat" .max_changed_ratio }}
{{- end }}
{{- end }}
{{- end }}
{{- with $b.pacing }}

[pacing]
{{- if hasKey . "events_per_second" }}
events_per_second = {{ int64 .events_per_second }}
{{- end }}
{{- end }}

[fleet]
lease_ttl = {{ include "replayfleet.tomlString" (include "replayfleet.leaseTtl" .) }}
{{- if hasKey $b.fleet "max_attempts" }}
max_attempts = {{ int64 $b.fleet.max_attempts }}
{{- end }}
{{- with $b.lineage }}
{{- if .url }}

[lineage]
url = {{ include "replayfleet.tomlString" .url }}
{{- end }}
{{- end }}
{{- with $b.limits }}

[limits]
{{- if hasKey . "memory" }}
memory = {{ if kindIs "string" .memory }}{{ include "replayfleet.tomlString" .memory }}{{ else }}{{ int64 .memory }}{{ end }}
{{- end }}
{{- end }}
{{- end }}
