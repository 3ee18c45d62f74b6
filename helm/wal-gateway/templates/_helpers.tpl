{{- define "wal-gateway.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wal-gateway.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "wal-gateway.instance" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "wal-gateway.selector" -}}
{{ include "wal-gateway.instance" . }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "wal-gateway.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/* One TOML value; empty strings and nulls are left out by the callers. */}}
{{- define "wal-gateway.tomlValue" -}}
{{- toJson . -}}
{{- end -}}

{{/* Renders a map as TOML: scalar and list keys first, then one table per nested map. */}}
{{- define "wal-gateway.toml" -}}
{{- range $k, $v := . }}
{{- if and (not (kindIs "map" $v)) (not (kindIs "invalid" $v)) (not (and (kindIs "string" $v) (eq $v ""))) }}
{{ $k }} = {{ include "wal-gateway.tomlValue" $v }}
{{- end }}
{{- end }}
{{- range $k, $v := . }}
{{- if kindIs "map" $v }}

[{{ $k }}]
{{- range $k2, $v2 := $v }}
{{- if and (not (kindIs "invalid" $v2)) (not (and (kindIs "string" $v2) (eq $v2 ""))) }}
{{ $k2 }} = {{ include "wal-gateway.tomlValue" $v2 }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}
