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

{{/* Security settings (values.security) as top-level TOML keys: they must come before any table. */}}
{{- define "wal-gateway.security-top" -}}
{{- $s := .Values.security -}}
listener_protocol = {{ $s.listenerProtocol | toJson }}
super_users = {{ $s.superUsers | default list | toJson }}
{{- end -}}

{{/* Security settings as TOML tables: [tls], [sasl], [acl] and one [[listeners]] per listener. */}}
{{- define "wal-gateway.security-tables" -}}
{{- $s := .Values.security -}}
{{- $root := . }}
{{- if $s.tls.existingSecret }}

[tls]
cert_file = "/etc/gateway/tls/tls.crt"
key_file = "/etc/gateway/tls/tls.key"
{{- if ne (toString $s.tls.clientAuth) "none" }}
ca_file = "/etc/gateway/tls/ca.crt"
{{- end }}
client_auth = {{ $s.tls.clientAuth | toJson }}
principal_mapping_rules = {{ $s.tls.principalMappingRules | toJson }}
{{- end }}

[sasl]
mechanisms = {{ $s.sasl.mechanisms | toJson }}
connections_max_reauth_ms = {{ int $s.sasl.connectionsMaxReauthMs }}
failed_authentication_delay_ms = {{ int $s.sasl.failedAuthenticationDelayMs }}
{{- if $s.sasl.usersSecret }}
users_file = "/etc/gateway/sasl/users.toml"
{{- end }}

[acl]
authorizer = {{ $s.acl.authorizer }}
allow_everyone_if_no_acl_found = {{ $s.acl.allowEveryoneIfNoAclFound }}
poll_ms = {{ int $s.acl.pollMs }}
{{- range $s.listeners }}

[[listeners]]
name = {{ .name | toJson }}
listen = "0.0.0.0:{{ .port }}"
advertised = "${POD_NAME}.{{ include "wal-gateway.fullname" $root }}-headless.${POD_NAMESPACE}.svc.{{ $root.Values.clusterDomain }}:{{ .port }}"
protocol = {{ .protocol | toJson }}
{{- end }}
{{- end -}}

{{/* A listener's port name (a Kubernetes port name: at most 15 lowercase characters). */}}
{{- define "wal-gateway.listenerPortName" -}}
{{ .name | lower | replace "_" "-" | trunc 15 | trimSuffix "-" }}
{{- end -}}

{{/* The Service ports of the extra listeners (both Services carry them). */}}
{{- define "wal-gateway.listenerServicePorts" -}}
{{- range .Values.security.listeners }}
    - name: {{ include "wal-gateway.listenerPortName" . }}
      port: {{ .port }}
      targetPort: {{ include "wal-gateway.listenerPortName" . }}
{{- end }}
{{- end -}}
