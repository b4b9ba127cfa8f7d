{{/* Names: <release>-<chart> truncated, then -<service>. */}}
{{- define "bp.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "bp.name" -}}
{{- printf "%s-%s" (include "bp.fullname" .root) .service -}}
{{- end -}}

{{- define "bp.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .service }}
{{- end -}}

{{- define "bp.labels" -}}
{{ include "bp.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: booking-platform
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "bp.commonLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: booking-platform
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "bp.image" -}}
{{- $img := .root.Values.image -}}
{{- printf "%s/%s/%s:%s" $img.registry $img.repository .service (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}

{{- define "bp.secretName" -}}
{{- default (printf "%s-secrets" (include "bp.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "bp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bp.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Kafka bootstrap: the values', else the Strimzi cluster's. */}}
{{- define "bp.kafkaBootstrap" -}}
{{- if .Values.kafka.bootstrap -}}
{{- .Values.kafka.bootstrap -}}
{{- else if .Values.strimzi.enabled -}}
{{- printf "%s-kafka-bootstrap:9092" .Values.strimzi.clusterName -}}
{{- else -}}
{{- fail "kafka.bootstrap must be set (or strimzi.enabled)" -}}
{{- end -}}
{{- end -}}

{{/* The ports of the services, by name. */}}
{{- define "bp.port" -}}
{{- index .root.Values .service "port" -}}
{{- end -}}

{{/* Pod anti-affinity for one service. */}}
{{- define "bp.affinity" -}}
{{- $mode := .root.Values.antiAffinity -}}
{{- if ne $mode "none" }}
affinity:
  podAntiAffinity:
    {{- if eq $mode "hard" }}
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: {{ .root.Values.topologyKey }}
        labelSelector:
          matchLabels:
            {{- include "bp.selectorLabels" . | nindent 12 }}
    {{- else }}
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: {{ .root.Values.topologyKey }}
          labelSelector:
            matchLabels:
              {{- include "bp.selectorLabels" . | nindent 14 }}
    {{- end }}
{{- end }}
{{- with .root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Probes of one container: .port, .root, .readinessPath, .scheme */}}
{{- define "bp.probes" -}}
{{- $p := .root.Values.probes -}}
{{- $scheme := default "HTTP" .scheme -}}
startupProbe:
  httpGet: {path: {{ $p.startup.path }}, port: http, scheme: {{ $scheme }}}
  periodSeconds: {{ $p.startup.periodSeconds }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
livenessProbe:
  httpGet: {path: {{ $p.liveness.path }}, port: http, scheme: {{ $scheme }}}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  httpGet: {path: {{ default $p.readiness.path .readinessPath }}, port: http, scheme: {{ $scheme }}}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end -}}

{{/* The stateful services, in start order. */}}
{{- define "bp.statefulServices" -}}
inventory payment reservation mypage
{{- end -}}
