{{/*
A component's NetworkPolicy (dict root, c, all, callers, name): it selects the
component's pods, so everything not listed here is denied, in and out.
  in:  gRPC from the services that call it (their `calls`), HTTP to the edge, metrics
       scrapes;
  out: DNS, gRPC to the services it calls, Kafka, the OTLP collector, and by `uses`:
       S3 (storage), the database (pricing), the provider's API (workers), webhook
       receivers (status).
*/}}
{{- define "pixelmesh.networkPolicy" -}}
{{- $root := .root -}}
{{- $c := .c -}}
{{- $V := $root.Values -}}
{{- $np := $V.networkPolicy -}}
{{- $uses := $c.uses | default list }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ .name }}
  labels:
    {{- include "pixelmesh.componentLabels" (dict "root" $root "c" $c) | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "pixelmesh.selectorLabels" (dict "root" $root "c" $c) | nindent 6 }}
  policyTypes: [Ingress, Egress]
  {{- if not (or .callers $c.ports.http $c.ports.metrics) }}
  ingress: []
  {{- else }}
  ingress:
    {{- if .callers }}
    # gRPC from its callers
    - from:
        {{- range $caller := .callers }}
        - podSelector:
            matchLabels:
              {{- include "pixelmesh.serviceSelector" (dict "root" $root "service" $caller) | nindent 14 }}
        {{- end }}
      ports:
        - port: {{ $c.ports.grpc }}
          protocol: TCP
    {{- end }}
    {{- if $c.ports.http }}
    # the REST API (ingress controller, clients)
    - ports:
        - port: {{ $c.ports.http }}
          protocol: TCP
      {{- with $np.edgeFrom }}
      from:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
    {{- if $c.ports.metrics }}
    # Prometheus scrapes
    - ports:
        - port: {{ $c.ports.metrics }}
          protocol: TCP
      {{- with $np.metricsFrom }}
      from:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
  {{- end }}
  egress:
    # DNS
    - ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
      {{- with $np.dns.to }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- range $callee := $c.calls | default list }}
    {{- $port := 0 }}
    {{- range $other := $.all }}{{ if eq $other.service $callee }}{{ $port = $other.ports.grpc }}{{ end }}{{ end }}
    # gRPC to {{ $callee }}
    - to:
        - podSelector:
            matchLabels:
              {{- include "pixelmesh.serviceSelector" (dict "root" $root "service" $callee) | nindent 14 }}
      ports:
        - port: {{ $port }}
          protocol: TCP
    {{- end }}
    {{- $external := list }}
    {{- if has "kafka" $uses }}{{ $external = append $external (list "Kafka" $V.kafka) }}{{ end }}
    {{- if $V.otel.endpoint }}{{ $external = append $external (list "the OTLP collector" $V.otel) }}{{ end }}
    {{- if has "s3" $uses }}{{ $external = append $external (list "S3" $V.s3) }}{{ end }}
    {{- if has "database" $uses }}{{ $external = append $external (list "the database" $V.database) }}{{ end }}
    {{- if has "provider" $uses }}{{ $external = append $external (list "the provider API" ($c.providerEgress | default $np.providerEgress)) }}{{ end }}
    {{- if has "webhooks" $uses }}{{ $external = append $external (list "webhook receivers" $np.webhookEgress) }}{{ end }}
    {{- range $dep := $external }}
    {{- $what := index $dep 0 }}
    {{- $cfg := index $dep 1 }}
    # {{ $what }}
    - ports:
        {{- range $port := $cfg.ports }}
        - port: {{ $port }}
          protocol: TCP
        {{- end }}
      {{- with $cfg.to }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
{{- end -}}
