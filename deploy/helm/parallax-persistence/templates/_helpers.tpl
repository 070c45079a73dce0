{{/*
Helpers of parallax-persistence. The templates meant for Parallax's own chart (the parent) are the last four:
"parallax-persistence.env", ".volumeMount", ".volume" and ".checksum". They read only .Values and .Release, so
the parent passes this chart's values:

  {{- $storage := dict "Values" (index .Values "parallax-persistence") "Release" .Release }}
  env: {{- include "parallax-persistence.env" $storage | nindent 12 }}

Every one of them renders nothing when persistence.enabled is false.
*/}}

{{/* This chart's own objects: <release>-parallax-persistence, or fullnameOverride. */}}
{{- define "parallax-persistence.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "parallax-persistence" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-parallax-persistence" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "parallax-persistence.labels" -}}
app.kubernetes.io/name: parallax-persistence
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/part-of: parallax
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | quote }}
{{- end -}}

{{/*
The bundled PostgreSQL's names, computed as Bitnami's chart (version 16) computes them inside the subchart
(common.names.fullname, postgresql.v1.primary.fullname, postgresql.v1.readReplica.fullname, secretName and
userPasswordKey): <release>-postgresql unless the release name already contains "postgresql" or
nameOverride/fullnameOverride say otherwise.
*/}}
{{- define "parallax-persistence.pg.fullname" -}}
{{- $pg := .Values.postgresql -}}
{{- if $pg.fullnameOverride -}}
{{- $pg.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default "postgresql" $pg.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "parallax-persistence.pg.replication" -}}
{{- if eq (default "standalone" .Values.postgresql.architecture) "replication" -}}true{{- end -}}
{{- end -}}

{{/* The primary's Service: <fullname> (standalone) or <fullname>-primary (replication). */}}
{{- define "parallax-persistence.pg.primaryHost" -}}
{{- $full := include "parallax-persistence.pg.fullname" . -}}
{{- if include "parallax-persistence.pg.replication" . -}}
{{- printf "%s-%s" $full (dig "primary" "name" "primary" .Values.postgresql) | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $full -}}
{{- end -}}
{{- end -}}

{{/* The read replicas' Service: <fullname>-read; their StatefulSet's headless Service is <that>-hl. */}}
{{- define "parallax-persistence.pg.readService" -}}
{{- printf "%s-%s" (include "parallax-persistence.pg.fullname" .) (dig "readReplicas" "name" "read" .Values.postgresql) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Where the plugin connects, as YAML (fromYaml it): host, port, database, username, secretName, secretKey (the
Secret and key holding the password) and replicas ([{host, port}]).
*/}}
{{- define "parallax-persistence.connection" -}}
{{- if .Values.postgresql.enabled -}}
{{- $pg := .Values.postgresql -}}
{{- $auth := $pg.auth -}}
{{- $superuser := eq $auth.username "postgres" -}}
host: {{ include "parallax-persistence.pg.primaryHost" . | quote }}
port: {{ dig "primary" "service" "ports" "postgresql" 5432 $pg | int }}
database: {{ $auth.database | quote }}
username: {{ $auth.username | quote }}
{{- if $auth.existingSecret }}
secretName: {{ $auth.existingSecret | quote }}
{{- if $superuser }}
secretKey: {{ dig "secretKeys" "adminPasswordKey" "postgres-password" $auth | quote }}
{{- else }}
secretKey: {{ dig "secretKeys" "userPasswordKey" "password" $auth | quote }}
{{- end }}
{{- else }}
secretName: {{ include "parallax-persistence.pg.fullname" . | quote }}
secretKey: {{ ternary "postgres-password" "password" $superuser | quote }}
{{- end }}
{{- $count := int (dig "readReplicas" "replicaCount" 0 $pg) }}
{{- if and (gt $count 0) (include "parallax-persistence.pg.replication" .) }}
{{- $read := include "parallax-persistence.pg.readService" . }}
replicas:
{{- if eq .Values.storage.replicaEndpoints "service" }}
  - host: {{ $read | quote }}
    port: {{ dig "readReplicas" "service" "ports" "postgresql" 5432 $pg | int }}
{{- else }}
{{- range $i := until $count }}
  - host: {{ printf "%s-%d.%s-hl" $read $i $read | quote }}
    port: {{ dig "containerPorts" "postgresql" 5432 $pg | int }}
{{- end }}
{{- end }}
{{- else }}
replicas: []
{{- end }}
{{- else -}}
{{- $ext := .Values.externalDatabase -}}
host: {{ $ext.host | quote }}
port: {{ $ext.port | int }}
database: {{ $ext.database | quote }}
username: {{ $ext.username | quote }}
secretName: {{ $ext.existingSecret | quote }}
secretKey: {{ $ext.existingSecretPasswordKey | quote }}
replicas:
{{- range $ext.replicas }}
  - host: {{ .host | quote }}
    port: {{ default 5432 .port | int }}
{{- else }} []
{{- end }}
{{- end -}}
{{- end -}}

{{/* Refuses values that would deploy something broken, with a message naming the keys. Renders nothing. */}}
{{- define "parallax-persistence.validate" -}}
{{- $pg := .Values.postgresql -}}
{{- $ext := .Values.externalDatabase -}}
{{- if not .Values.persistence.enabled -}}
{{- if $pg.enabled -}}
{{- fail "persistence.enabled is false but postgresql.enabled is true: Bitnami's chart would still deploy a PostgreSQL that nothing uses. Set postgresql.enabled=false as well." -}}
{{- end -}}
{{- else if $pg.enabled -}}
{{- if $ext.host -}}
{{- fail (printf "externalDatabase.host is %q but postgresql.enabled is true (the bundled PostgreSQL): choose one. For an external database set postgresql.enabled=false." $ext.host) -}}
{{- end -}}
{{- if not $pg.auth.username -}}
{{- fail "postgresql.auth.username is empty: set the user Parallax connects as (the documented default is parallax)." -}}
{{- end -}}
{{- if not $pg.auth.database -}}
{{- fail "postgresql.auth.database is empty: set the database Parallax uses (the documented default is parallax)." -}}
{{- end -}}
{{- $count := int (dig "readReplicas" "replicaCount" 0 $pg) -}}
{{- if and (gt $count 0) (not (include "parallax-persistence.pg.replication" .)) -}}
{{- fail (printf "postgresql.readReplicas.replicaCount is %d but postgresql.architecture is %q: Bitnami's chart deploys read replicas only with postgresql.architecture=replication. Set it, or set replicaCount to 0." $count (default "standalone" $pg.architecture)) -}}
{{- end -}}
{{- else -}}
{{- if not $ext.host -}}
{{- fail "externalDatabase.host is required when postgresql.enabled is false (an external database): set it to the PostgreSQL server's host name." -}}
{{- end -}}
{{- if not $ext.existingSecret -}}
{{- fail "externalDatabase.existingSecret is required with an external database: the name of a Secret holding the password under externalDatabase.existingSecretPasswordKey (default \"password\"), e.g. kubectl create secret generic postgres-credentials --from-literal=password=... The chart never takes the password as a value." -}}
{{- end -}}
{{- end -}}
{{- $global := dig "postgresql" (dict) (default (dict) .Values.global) -}}
{{- if or (dig "fullnameOverride" "" $global) (dig "auth" "username" "" $global) (dig "auth" "database" "" $global) (dig "auth" "existingSecret" "" $global) (dig "service" "ports" "postgresql" "" $global) -}}
{{- fail "global.postgresql.* (fullnameOverride, auth.username, auth.database, auth.existingSecret, service.ports.postgresql) would change Bitnami's chart without this chart knowing: set them under postgresql.* instead." -}}
{{- end -}}
{{- range $key := list "host" "port" "database" "username" "primary" "replicas" "readPreference" "url" "password" -}}
{{- if hasKey $.Values.storage.postgresql $key -}}
{{- if has $key (list "url" "password") -}}
{{- fail (printf "storage.postgresql.%s: the password reaches Parallax only from a Secret (postgresql.auth or externalDatabase.existingSecret), so neither a password nor a url may be set in values." $key) -}}
{{- else -}}
{{- fail (printf "storage.postgresql.%s is set by the chart from postgresql.* or externalDatabase.* (and storage.readPreference); remove it from storage.postgresql." $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and .Values.backup.enabled (not .Values.backup.image.repository) -}}
{{- fail "backup.image.repository is required with backup.enabled: an image with bash, pg_dump (the server's major version or newer), gzip and the aws CLI (the chart README, \"The backup image\")." -}}
{{- end -}}
{{- if and .Values.maintenance.enabled (not .Values.maintenance.image.repository) -}}
{{- fail "maintenance.image.repository is required with maintenance.enabled: Parallax's image, with the parallax CLI and the storage plugin." -}}
{{- end -}}
{{- end -}}

{{/* The `storage:` section of parallax.config.yaml (YAML, no password). */}}
{{- define "parallax-persistence.storageConfig" -}}
{{- include "parallax-persistence.validate" . -}}
{{- $c := include "parallax-persistence.connection" . | fromYaml -}}
{{- $pg := dict "host" $c.host "port" (int $c.port) "database" $c.database "username" $c.username -}}
{{- if $c.replicas -}}
{{- $_ := set $pg "replicas" $c.replicas -}}
{{- $_ := set $pg "readPreference" .Values.storage.readPreference -}}
{{- end -}}
{{- $pg = merge $pg (deepCopy .Values.storage.postgresql) -}}
{{- $storage := dict "type" "postgresql" "postgresql" $pg -}}
{{- with .Values.storage.retention -}}
{{- $retention := deepCopy . -}}
{{- if $.Values.maintenance.enabled -}}
{{- $_ := set $retention "runSchedule" false -}}
{{- end -}}
{{- $_ := set $storage "retention" $retention -}}
{{- end -}}
{{- with .Values.storage.metrics -}}
{{- $_ := set $storage "metrics" (deepCopy .) -}}
{{- end -}}
{{- toYaml (dict "storage" $storage) -}}
{{- end -}}

{{/* Where the ConfigMap's parallax.config.yaml is mounted (volumeMount) and PARALLAX_CONFIG points. */}}
{{- define "parallax-persistence.configDir" -}}/etc/parallax/storage{{- end -}}

{{/*
The control plane's environment: exactly the variables the storage host reads (plugin/host/src/config.rs:
PARALLAX_CONFIG, PARALLAX_STORAGE_TYPE, PARALLAX_DATABASE_HOST, _PORT, _NAME, _USER, _PASSWORD), the password
from the bundled chart's Secret or externalDatabase.existingSecret.
*/}}
{{- define "parallax-persistence.env" -}}
{{- if .Values.persistence.enabled -}}
{{- include "parallax-persistence.validate" . -}}
{{- $c := include "parallax-persistence.connection" . | fromYaml -}}
- name: PARALLAX_CONFIG
  value: {{ printf "%s/parallax.config.yaml" (include "parallax-persistence.configDir" .) | quote }}
- name: PARALLAX_STORAGE_TYPE
  value: postgresql
- name: PARALLAX_DATABASE_HOST
  value: {{ $c.host | quote }}
- name: PARALLAX_DATABASE_PORT
  value: {{ int $c.port | quote }}
- name: PARALLAX_DATABASE_NAME
  value: {{ $c.database | quote }}
- name: PARALLAX_DATABASE_USER
  value: {{ $c.username | quote }}
- name: PARALLAX_DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $c.secretName | quote }}
      key: {{ $c.secretKey | quote }}
{{- end -}}
{{- end -}}

{{- define "parallax-persistence.volumeMount" -}}
{{- if .Values.persistence.enabled -}}
- name: parallax-storage-config
  mountPath: {{ include "parallax-persistence.configDir" . }}
  readOnly: true
{{- end -}}
{{- end -}}

{{- define "parallax-persistence.volume" -}}
{{- if .Values.persistence.enabled -}}
- name: parallax-storage-config
  configMap:
    name: {{ include "parallax-persistence.fullname" . }}
{{- end -}}
{{- end -}}

{{/* A pod annotation value that changes with the storage settings, so the control plane restarts with them. */}}
{{- define "parallax-persistence.checksum" -}}
{{- if .Values.persistence.enabled -}}
{{- include "parallax-persistence.storageConfig" . | sha256sum -}}
{{- end -}}
{{- end -}}
