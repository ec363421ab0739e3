{{/* Names and labels. */}}
{{- define "zipkit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* At most 45 characters, so that the longest object name made from it
("<fullname>-migrate-<8 hex>", 62) stays within Kubernetes' 63 for any release name Helm
accepts (53). */}}
{{- define "zipkit.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else if contains (include "zipkit.name" .) .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "zipkit.name" .) | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "zipkit.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "zipkit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component (api, worker, migrate). */}}
{{- define "zipkit.selector" -}}
app.kubernetes.io/name: {{ include "zipkit.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "zipkit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "zipkit.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "zipkit.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
{{- end }}

{{/* Labels of a component's pods: the chart's, the component, and podLabels. dict root, component */}}
{{- define "zipkit.podLabels" -}}
{{ include "zipkit.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- with .root.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "zipkit.secretName" -}}
{{- default (include "zipkit.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* The key ids whose keys the Secret holds. */}}
{{- define "zipkit.keyIds" -}}
{{- if .Values.secrets.existingSecret }}
{{- join "," .Values.crypto.keyIds }}
{{- else }}
{{- join "," (keys .Values.secrets.cryptoKeys | sortAlpha) }}
{{- end }}
{{- end }}

{{/* The queue workers consume (zipkit_runtime::broker: "<queue_prefix>.jobs"). */}}
{{- define "zipkit.jobsQueue" -}}
{{- printf "%s.jobs" (.Values.config.broker.queue_prefix | default "zipkit") }}
{{- end }}

{{/* The settings ConfigMap's content, also hashed into pod annotations so pods roll on change. */}}
{{- define "zipkit.configData" -}}
ZIPKIT_ENV: production
ZIPKIT__API__HOST: "0.0.0.0"
ZIPKIT__API__PORT: {{ .Values.api.port | quote }}
ZIPKIT__WORKER__HTTP_HOST: "0.0.0.0"
ZIPKIT__WORKER__HTTP_PORT: {{ .Values.worker.port | quote }}
ZIPKIT__CRYPTO__ACTIVE_KEY: {{ .Values.crypto.activeKey | quote }}
ZIPKIT__CRYPTO__KEYS_DIR: /etc/zipkit/crypto-keys
{{- if or .Values.tls.extraCA.configMap .Values.tls.extraCA.secret }}
# The public CA set and the operator's CA (rustls-native-certs reads both variables).
SSL_CERT_FILE: /etc/ssl/certs/ca-certificates.crt
SSL_CERT_DIR: /etc/zipkit/ca
{{- end }}
{{- with .Values.telemetry.otlpEndpoint }}
ZIPKIT__TELEMETRY__OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
{{- with .Values.telemetry.environment }}
ZIPKIT__TELEMETRY__ENVIRONMENT: {{ . | quote }}
{{- end }}
{{- range $section, $settings := .Values.config }}
{{- range $key, $value := $settings }}
{{ printf "ZIPKIT__%s__%s" ($section | upper) ($key | upper) }}: {{ if kindIs "slice" $value }}{{ join "," $value | quote }}{{ else }}{{ $value | toString | quote }}{{ end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Secret variables every zipkit container gets; dict: root, secretName. */}}
{{- define "zipkit.secretEnv" -}}
- name: ZIPKIT__DATABASE__URL
  valueFrom: {secretKeyRef: {name: {{ .secretName }}, key: database-url}}
- name: ZIPKIT__BROKER__URL
  valueFrom: {secretKeyRef: {name: {{ .secretName }}, key: broker-url}}
- name: ZIPKIT__TELEMETRY__OTLP_HEADERS
  valueFrom: {secretKeyRef: {name: {{ .secretName }}, key: otlp-headers, optional: true}}
{{- with .root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volumes of every zipkit pod: the crypto keys as files named by their ids (an id such as
prod-2026 cannot be an environment variable's name), an operator's CA, extraVolumes.
dict: root, secretName. */}}
{{- define "zipkit.volumes" -}}
- name: crypto-keys
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
    items:
      {{- range $id := splitList "," (include "zipkit.keyIds" .root) }}
      {{- if $id }}
      - {key: {{ printf "crypto-key-%s" $id | quote }}, path: {{ $id | quote }}}
      {{- end }}
      {{- end }}
{{- with .root.Values.tls.extraCA }}
{{- if .configMap }}
- name: extra-ca
  configMap:
    name: {{ .configMap }}
    items: [{key: {{ .key | quote }}, path: ca.crt}]
{{- else if .secret }}
- name: extra-ca
  secret:
    secretName: {{ .secret }}
    items: [{key: {{ .key | quote }}, path: ca.crt}]
{{- end }}
{{- end }}
{{- with .root.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "zipkit.volumeMounts" -}}
- name: crypto-keys
  mountPath: /etc/zipkit/crypto-keys
  readOnly: true
{{- if or .Values.tls.extraCA.configMap .Values.tls.extraCA.secret }}
- name: extra-ca
  mountPath: /etc/zipkit/ca
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* envFrom of every zipkit container. dict: root, configMapName. */}}
{{- define "zipkit.envFrom" -}}
- configMapRef:
    name: {{ .configMapName }}
{{- with .root.Values.extraEnvFrom }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod annotations that roll pods when settings or chart-made secrets change. */}}
{{- define "zipkit.checksums" -}}
checksum/config: {{ include "zipkit.configData" . | sha256sum }}
{{- if not .Values.secrets.existingSecret }}
checksum/secret: {{ include "zipkit.secretData" . | sha256sum }}
{{- end }}
{{- end }}

{{- define "zipkit.secretData" -}}
database-url: {{ .Values.secrets.databaseUrl | b64enc | quote }}
broker-url: {{ .Values.secrets.brokerUrl | b64enc | quote }}
{{- with .Values.secrets.managementUrl }}
management-url: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.secrets.otlpHeaders }}
otlp-headers: {{ . | b64enc | quote }}
{{- end }}
{{- range $id, $key := .Values.secrets.cryptoKeys }}
{{ printf "crypto-key-%s" $id }}: {{ $key | b64enc | quote }}
{{- end }}
{{- end }}

{{/* The restricted security context of every container, unless securityContext replaces it. */}}
{{- define "zipkit.containerSecurityContext" -}}
{{- if .Values.securityContext }}
{{- toYaml .Values.securityContext }}
{{- else -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}
{{- end }}

{{- define "zipkit.podSecurityContext" -}}
{{- if .Values.podSecurityContext }}
{{- toYaml .Values.podSecurityContext }}
{{- else -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}
{{- end }}

{{/* The migration Job's spec, shared by the hook and the GitOps (no hooks) forms; dict: root,
serviceAccountName, configMapName, secretName. */}}
{{- define "zipkit.migrateJobSpec" -}}
{{- $root := .root -}}
backoffLimit: {{ $root.Values.migrations.backoffLimit }}
activeDeadlineSeconds: {{ $root.Values.migrations.activeDeadlineSeconds }}
template:
  metadata:
    labels:
      {{- include "zipkit.selector" (dict "root" $root "component" "migrate") | nindent 6 }}
      {{- with $root.Values.podLabels }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
  spec:
    restartPolicy: Never
    serviceAccountName: {{ .serviceAccountName }}
    automountServiceAccountToken: false
    {{- with $root.Values.imagePullSecrets }}
    imagePullSecrets:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    securityContext:
      {{- include "zipkit.podSecurityContext" $root | nindent 6 }}
    containers:
      - name: migrate
        image: {{ include "zipkit.image" $root }}
        imagePullPolicy: {{ $root.Values.image.pullPolicy }}
        command: [zipkit-api]
        args: [--output, json, migrate]
        envFrom:
          {{- include "zipkit.envFrom" (dict "root" $root "configMapName" .configMapName) | nindent 10 }}
        env:
          {{- include "zipkit.secretEnv" (dict "root" $root "secretName" .secretName) | nindent 10 }}
        volumeMounts:
          {{- include "zipkit.volumeMounts" $root | nindent 10 }}
        resources:
          {{- toYaml $root.Values.migrations.resources | nindent 10 }}
        securityContext:
          {{- include "zipkit.containerSecurityContext" $root | nindent 10 }}
    volumes:
      {{- include "zipkit.volumes" (dict "root" $root "secretName" .secretName) | nindent 6 }}
{{- end }}
