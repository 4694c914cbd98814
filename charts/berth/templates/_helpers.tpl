{{/* The chart's name, or nameOverride. */}}
{{- define "berth.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The full name of the objects: fullnameOverride, else <release>-<name>, or just
<release> when it already contains the name. Also the leader-election Lease's name.
*/}}
{{- define "berth.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "berth.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the operator pods. */}}
{{- define "berth.selectorLabels" -}}
app.kubernetes.io/name: {{ include "berth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Labels of every object. */}}
{{- define "berth.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "berth.selectorLabels" . }}
app.kubernetes.io/part-of: berth
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The operator's ServiceAccount. */}}
{{- define "berth.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "berth.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference from {repository, tag, digest}; the default tag is v<appVersion>. */}}
{{- define "berth.image" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default (printf "v%s" $root.Chart.AppVersion) $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The namespace of the default Registry. */}}
{{- define "berth.defaultRegistryNamespace" -}}
{{- default .Release.Namespace .Values.defaultRegistry.namespace -}}
{{- end -}}

{{/* A duration such as 1m30s in milliseconds (the schema allows h, m, s and ms). */}}
{{- define "berth.milliseconds" -}}
{{- $total := 0 -}}
{{- range regexFindAll "[0-9]+(ms|s|m|h)" . -1 -}}
{{- $n := int64 (regexFind "^[0-9]+" .) -}}
{{- $unit := regexReplaceAll "^[0-9]+" . "" -}}
{{- $factor := get (dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000) $unit -}}
{{- $total = add $total (mul $n $factor) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/*
Rules between values that a JSON schema cannot express; each failure says
which values conflict and what to change.
*/}}
{{- define "berth.validate" -}}
{{- $lease := include "berth.milliseconds" .Values.leaderElection.leaseDuration | int64 -}}
{{- $deadline := include "berth.milliseconds" .Values.leaderElection.renewDeadline | int64 -}}
{{- $renew := include "berth.milliseconds" .Values.leaderElection.renewInterval | int64 -}}
{{- if ge $deadline $lease -}}
{{- fail (printf "leaderElection.renewDeadline (%s) must be shorter than leaderElection.leaseDuration (%s), or a leader that cannot renew may still lead when another takes over" .Values.leaderElection.renewDeadline .Values.leaderElection.leaseDuration) -}}
{{- end -}}
{{- if or (le $renew 0) (ge $renew $deadline) -}}
{{- fail (printf "leaderElection.renewInterval (%s) must be shorter than leaderElection.renewDeadline (%s), or the leader gives up between renewals" .Values.leaderElection.renewInterval .Values.leaderElection.renewDeadline) -}}
{{- end -}}
{{- with .Values.metrics.serviceMonitor -}}
{{- if and .enabled (gt (include "berth.milliseconds" .scrapeTimeout | int64) (include "berth.milliseconds" .interval | int64)) -}}
{{- fail (printf "metrics.serviceMonitor.scrapeTimeout (%s) must not be longer than metrics.serviceMonitor.interval (%s)" .scrapeTimeout .interval) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.defaultRegistry.enabled .Values.watchNamespace (ne (include "berth.defaultRegistryNamespace" .) .Values.watchNamespace) -}}
{{- fail (printf "defaultRegistry.namespace (%s) is not watched: the operator watches only watchNamespace (%s); set both to the same namespace" (include "berth.defaultRegistryNamespace" .) .Values.watchNamespace) -}}
{{- end -}}
{{- end -}}
