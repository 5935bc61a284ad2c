{{/*
A component's environment (dict root, c, all): the variables the services' settings
read (each service's settings.py, libs/svckit, libs/bus). Secrets come only through
secretKeyRef, never as plain values.
*/}}
{{- define "pixelmesh.env" -}}
{{- $root := .root -}}
{{- $c := .c -}}
{{- $V := $root.Values -}}
{{- $uses := $c.uses | default list -}}
- name: SERVICE_NAME
  value: {{ $c.service | quote }}
- name: LOG_LEVEL
  value: {{ $V.logLevel | quote }}
- name: GRPC_HOST
  value: {{ $V.bindHost | quote }}
- name: GRPC_PORT
  value: {{ $c.ports.grpc | quote }}
- name: METRICS_PORT
  value: {{ $c.ports.metrics | default 0 | quote }}
- name: SHUTDOWN_GRACE_SECONDS
  value: {{ $c.shutdownGraceSeconds | quote }}
- name: PYTHONUNBUFFERED
  value: "1"
{{- /* ---- addresses of the services it calls ---- */}}
{{- range $callee := $c.calls | default list }}
{{- $target := dict }}
{{- range $other := $.all }}{{ if eq $other.service $callee }}{{ $target = $other }}{{ end }}{{ end }}
{{- if not $target }}
{{- fail (printf "%s: calls %q, which is not a gRPC service of this chart (edge, routing, pricing, storage, status)" $c.name $callee) }}
{{- end }}
- name: {{ printf "%s_ADDR" (upper $callee) }}
  value: {{ include "pixelmesh.addr" (dict "root" $root "service" $callee "port" $target.ports.grpc) | quote }}
{{- end }}
{{- /* ---- Kafka ---- */}}
{{- if and (has "kafka" $uses) $V.kafka.bootstrapServers }}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ $V.kafka.bootstrapServers | quote }}
- name: KAFKA_REPLICATION_FACTOR
  value: {{ $V.kafka.replicationFactor | quote }}
- name: KAFKA_PARTITIONS
  value: {{ $V.kafka.partitions | quote }}
{{- end }}
{{- /* ---- OpenTelemetry ---- */}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE),service.version=%s%s" (include "pixelmesh.imageTag" (dict "root" $root "c" $c)) (ternary (printf ",pixelmesh.provider=%s" $c.provider) "" (ne $c.provider "")) | quote }}
{{- with $V.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- range $k := keys ($V.otel.env | default dict) | sortAlpha }}
- name: {{ $k }}
  value: {{ index $V.otel.env $k | toString | quote }}
{{- end }}
{{- /* ---- edge ---- */}}
{{- if $c.ports.http }}
- name: EDGE_HTTP_HOST
  value: {{ $V.bindHost | quote }}
- name: EDGE_HTTP_PORT
  value: {{ $c.ports.http | quote }}
{{- end }}
{{- /* ---- routing: the provider pools that have workers ---- */}}
{{- if eq $c.service "routing" }}
- name: ROUTING_PROVIDERS
  value: {{ include "pixelmesh.enabledProviders" $root | quote }}
{{- end }}
{{- /* ---- pricing ---- */}}
{{- if eq $c.service "pricing" }}
{{- include "pixelmesh.settingEnv" (dict "root" $root "name" "PRICING_DEV_API_KEY" "block" "devApiKey") | nindent 0 }}
{{- end }}
{{- /* ---- the operator token: pricing's admin RPCs, status's reads of every account ---- */}}
{{- if has $c.service (list "pricing" "status") }}
{{- with include "pixelmesh.settingEnv" (dict "root" $root "name" "PRICING_ADMIN_TOKEN" "block" "adminToken") }}
{{- . | nindent 0 }}
{{- end }}
{{- end }}
{{- /* ---- the SQL database (pricing's ledger, routing's idempotency keys: each its own tables) ---- */}}
{{- if has "database" $uses }}
{{- $dbVar := printf "%s_DATABASE_URL" (upper $c.service) }}
{{- with include "pixelmesh.databaseSecretName" $root }}
{{- include "pixelmesh.secretEnv" (dict "name" $dbVar "secret" . "key" (ternary $V.database.existingSecretKey "database-url" (ne $V.database.existingSecret ""))) | nindent 0 }}
{{- else }}
- name: {{ $dbVar }}
  value: {{ include "pixelmesh.sqliteUrl" (dict "root" $root "service" $c.service) | quote }}
{{- end }}
{{- end }}
{{- /* ---- webhooks (status) ---- */}}
{{- if has "webhooks" $uses }}
{{- include "pixelmesh.settingEnv" (dict "root" $root "name" "WEBHOOK_SIGNING_KEY" "block" "webhookSigningKey") | nindent 0 }}
{{- end }}
{{- /* ---- S3 (storage) ---- */}}
{{- if has "s3" $uses }}
{{- with $V.s3.endpoint }}
- name: STORAGE_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with $V.s3.publicEndpoint }}
- name: STORAGE_PUBLIC_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: STORAGE_BUCKET
  value: {{ $V.s3.bucket | quote }}
- name: STORAGE_REGION
  value: {{ $V.s3.region | quote }}
- name: STORAGE_SECURE
  value: {{ $V.s3.secure | quote }}
- name: STORAGE_URL_EXPIRY_SECONDS
  value: {{ $V.s3.urlExpirySeconds | quote }}
{{- with include "pixelmesh.s3SecretName" $root }}
{{- include "pixelmesh.secretEnv" (dict "name" "STORAGE_ACCESS_KEY" "secret" . "key" $V.s3.accessKeyKey) | nindent 0 }}
{{- include "pixelmesh.secretEnv" (dict "name" "STORAGE_SECRET_KEY" "secret" . "key" $V.s3.secretKeyKey) | nindent 0 }}
{{- end }}
{{- end }}
{{- /* ---- provider worker ---- */}}
{{- if $c.provider }}
- name: WORKER_PROVIDER
  value: {{ $c.provider | quote }}
- name: WORKER_MAX_IN_FLIGHT
  value: {{ $c.maxInFlight | quote }}
{{- $credentials := $c.credentialsFile | default dict }}
{{- if $credentials.secret }}
- name: {{ $credentials.env }}
  value: {{ printf "/etc/pixelmesh/credentials/%s" $credentials.key | quote }}
{{- end }}
{{- if $c.apiKeyEnv }}
{{- $ref := include "pixelmesh.providerKeyRef" (dict "root" $root "c" $c) | fromYaml }}
{{- if $ref.secret }}
{{- include "pixelmesh.secretEnv" (dict "name" $c.apiKeyEnv "secret" $ref.secret "key" $ref.key) | nindent 0 }}
{{- else if and $c.apiKeyRequired $credentials.env (not $credentials.secret) }}
{{- fail (printf "providers.%s: enabled without a credential: set providers.%s.credentialsFile.secret (a Secret holding the key file) or providers.%s.apiKey / existingSecret" $c.provider $c.provider $c.provider) }}
{{- else if and $c.apiKeyRequired (not $credentials.env) }}
{{- fail (printf "providers.%s: enabled without an API key: set providers.%s.apiKey or providers.%s.existingSecret" $c.provider $c.provider $c.provider) }}
{{- end }}
{{- end }}
{{- range $name := $c.requiredEnv | default list }}
{{- if not (index ($c.env | default dict) $name) }}
{{- fail (printf "providers.%s: enabled without %s: set providers.%s.env.%s" $c.provider $name $c.provider $name) }}
{{- end }}
{{- end }}
{{- if $c.accessKeyEnv }}
{{- if $c.existingSecret }}
{{- include "pixelmesh.secretEnv" (dict "name" $c.accessKeyEnv "secret" $c.existingSecret "key" ($c.existingSecretAccessKey | default (printf "%s-access-key" $c.provider))) | nindent 0 }}
{{- else if $c.accessKey }}
{{- include "pixelmesh.secretEnv" (dict "name" $c.accessKeyEnv "secret" (include "pixelmesh.secretName" $root) "key" (printf "%s-access-key" $c.provider)) | nindent 0 }}
{{- else if $c.apiKeyRequired }}
{{- fail (printf "providers.%s: enabled without an access key: set providers.%s.accessKey or providers.%s.existingSecret" $c.provider $c.provider $c.provider) }}
{{- end }}
{{- end }}
{{- if $c.baseUrl }}
- name: {{ printf "%s_BASE_URL" (upper $c.provider) }}
  value: {{ $c.baseUrl | quote }}
{{- else if $c.baseUrlRequired }}
{{- fail (printf "providers.%s: enabled without a baseUrl: set providers.%s.baseUrl (the %s adapter has no default upstream)" $c.provider $c.provider $c.provider) }}
{{- end }}
{{- end }}
{{- /* ---- the operator's self-hosted files, mounted from the chart's ConfigMap ---- */}}
{{- $shFiles := include "pixelmesh.selfHostedFiles" (dict "root" $root "c" $c) | fromYaml }}
{{- if hasKey $shFiles "catalog.yaml" }}
- name: ROUTING_EXTRA_CATALOGS
  value: /etc/pixelmesh/selfhosted/catalog.yaml
{{- end }}
{{- if hasKey $shFiles "prices.yaml" }}
- name: PRICING_EXTRA_PRICE_TABLES
  value: /etc/pixelmesh/selfhosted/prices.yaml
{{- end }}
{{- if eq $c.provider "comfyui" }}
{{- if not $shFiles }}
{{- fail "providers.comfyui: enabled without workflow templates: set selfHosted.comfyuiWorkflows (<catalog model id>: the template's JSON)" }}
{{- end }}
- name: COMFYUI_WORKFLOWS
  value: /etc/pixelmesh/selfhosted
{{- end }}
{{- /* ---- extra variables of this component ---- */}}
{{- range $k := keys ($c.env | default dict) | sortAlpha }}
- name: {{ $k }}
  value: {{ index $c.env $k | toString | quote }}
{{- end }}
{{- end -}}
