{{/* The chart's name, release-qualified names and labels. */}}
{{- define "openanomaly.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "openanomaly.fullname" -}}
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

{{- define "openanomaly.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "openanomaly.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: pass (dict "ctx" $ "component" "api"). */}}
{{- define "openanomaly.selectorLabels" -}}
app.kubernetes.io/name: {{ include "openanomaly.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "openanomaly.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "openanomaly.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "openanomaly.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "openanomaly.secretName" -}}
{{- .Values.existingSecret | default (printf "%s-secrets" (include "openanomaly.fullname" .)) }}
{{- end }}

{{/* The pod-level parts every component shares. */}}
{{- define "openanomaly.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- if .Values.pipelines.enabled }}
checksum/pipelines: {{ include (print .Template.BasePath "/pipelines-configmap.yaml") . | sha256sum }}
{{- end }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The settings of every container: the ConfigMap, then the Secret (its keys win). */}}
{{- define "openanomaly.envFrom" -}}
- configMapRef:
    name: {{ include "openanomaly.fullname" . }}-config
{{- if or .Values.secrets .Values.existingSecret }}
- secretRef:
    name: {{ include "openanomaly.secretName" . }}
{{- end }}
{{- end }}

{{- define "openanomaly.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /data
{{- if .Values.pipelines.enabled }}
- name: pipelines
  mountPath: /etc/openanomaly
  readOnly: true
{{- end }}
{{- end }}

{{- define "openanomaly.volumes" -}}
- name: tmp
  emptyDir: {}
- name: data
  emptyDir: {}
{{- if .Values.pipelines.enabled }}
- name: pipelines
  configMap:
    name: {{ include "openanomaly.fullname" . }}-pipelines
{{- end }}
{{- end }}

{{/* Probes on an HTTP path and port name: pass (dict "probe" .Values.probes.liveness "path" "/healthz" "port" "health"). */}}
{{- define "openanomaly.probe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
{{ toYaml .probe }}
{{- end }}
