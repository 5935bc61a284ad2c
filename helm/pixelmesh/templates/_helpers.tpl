{{/*
Names, labels, and the resolution of `defaults` + `components` / `worker` + `providers`
into one settings dict per component. templates/_component.tpl renders a component.
*/}}

{{- define "pixelmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pixelmesh.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of a component's objects: <fullname>-<component>, e.g. pm-pixelmesh-worker-openai. */}}
{{- define "pixelmesh.componentName" -}}
{{- printf "%s-%s" (include "pixelmesh.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pixelmesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pixelmesh.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The chart's own Secret (inline credentials and the generated dev API key). */}}
{{- define "pixelmesh.secretName" -}}
{{- include "pixelmesh.fullname" . -}}
{{- end -}}

{{- define "pixelmesh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "pixelmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pixelmesh
{{- end -}}

{{/* Pods of every component of the release that run service .service (all workers share "worker"). */}}
{{- define "pixelmesh.serviceSelector" -}}
app.kubernetes.io/name: {{ include "pixelmesh.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
pixelmesh.dev/service: {{ .service }}
{{- end -}}

{{/* Selector of one component's pods (dict root, c). */}}
{{- define "pixelmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pixelmesh.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .c.name }}
{{- end -}}

{{/* Labels of one component's objects and pods (dict root, c). */}}
{{- define "pixelmesh.componentLabels" -}}
{{ include "pixelmesh.labels" .root }}
app.kubernetes.io/component: {{ .c.name }}
pixelmesh.dev/service: {{ .c.service }}
{{- if .c.provider }}
pixelmesh.dev/provider: {{ .c.provider }}
{{- end }}
{{- end -}}

{{/* The image tag of a component (dict root, c): its own, the chart-wide one, or appVersion. */}}
{{- define "pixelmesh.imageTag" -}}
{{- $override := .c.image | default dict -}}
{{- toString ($override.tag | default .root.Values.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{- define "pixelmesh.image" -}}
{{- $img := .root.Values.image -}}
{{- $override := .c.image | default dict -}}
{{- $repo := $override.repository | default (printf "%s%s" $img.repositoryPrefix .c.service) -}}
{{- if $img.registry -}}{{- $repo = printf "%s/%s" $img.registry $repo -}}{{- end -}}
{{- printf "%s:%s" $repo (include "pixelmesh.imageTag" .) -}}
{{- end -}}

{{/*
Overlay layer .from onto dict .into (in place). A key replaces the same key whole,
except these blocks, which merge one level down so `autoscaling: {maxReplicas: 3}`
keeps the other autoscaling settings.
*/}}
{{- define "pixelmesh.overlay" -}}
{{- $into := .into -}}
{{- $blocks := list "autoscaling" "keda" "podDisruptionBudget" "ports" "probes" "env" "podAnnotations" "podLabels" -}}
{{- range $k, $v := .from -}}
{{- $cur := get $into $k -}}
{{- if and (has $k $blocks) (kindIs "map" $v) (kindIs "map" $cur) -}}
{{- $merged := dict -}}
{{- range $k2, $v2 := $cur }}{{ $_ := set $merged $k2 $v2 }}{{ end -}}
{{- range $k2, $v2 := $v }}{{ $_ := set $merged $k2 $v2 }}{{ end -}}
{{- $_ := set $into $k $merged -}}
{{- else -}}
{{- $_ := set $into $k $v -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Names of the enabled providers, sorted. */}}
{{- define "pixelmesh.enabledProviders" -}}
{{- $out := list -}}
{{- range $name := keys .Values.providers | sortAlpha -}}
{{- if (index $.Values.providers $name).enabled -}}{{- $out = append $out $name -}}{{- end -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/*
All components as resolved settings, appended to .state.list (dict root, state): the
five services, then one worker per enabled provider. Each gets name (edge,
worker-openai), service (edge, worker) and provider ("" or the provider). Use:
  {{- $state := dict "list" list -}}
  {{- include "pixelmesh.resolveComponents" (dict "root" $ "state" $state) -}}
*/}}
{{- define "pixelmesh.resolveComponents" -}}
{{- $root := .root -}}
{{- $services := list "edge" "routing" "pricing" "storage" "status" -}}
{{- range $name := $services -}}
{{- $c := dict -}}
{{- include "pixelmesh.overlay" (dict "into" $c "from" $root.Values.defaults) -}}
{{- include "pixelmesh.overlay" (dict "into" $c "from" (index $root.Values.components $name)) -}}
{{- $_ := set $c "name" $name -}}
{{- $_ := set $c "service" $name -}}
{{- $_ := set $c "provider" "" -}}
{{- $_ := set $.state "list" (append $.state.list $c) -}}
{{- end -}}
{{- range $provider := keys $root.Values.providers | sortAlpha -}}
{{- $p := index $root.Values.providers $provider -}}
{{- if $p.enabled -}}
{{- if not (regexMatch "^[a-z][a-z0-9_]{0,19}$" $provider) -}}
{{- fail (printf "providers.%s: a provider name is lower-case letters, digits and underscores (it names a topic, a consumer group, variables and, with dashes for underscores, Kubernetes objects)" $provider) -}}
{{- end -}}
{{- $c := dict -}}
{{- include "pixelmesh.overlay" (dict "into" $c "from" $root.Values.defaults) -}}
{{- include "pixelmesh.overlay" (dict "into" $c "from" $root.Values.worker) -}}
{{- include "pixelmesh.overlay" (dict "into" $c "from" $p) -}}
{{- $_ := set $c "name" (printf "worker-%s" (replace "_" "-" $provider)) -}}
{{- $_ := set $c "service" "worker" -}}
{{- $_ := set $c "provider" $provider -}}
{{- $_ := set $.state "list" (append $.state.list $c) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* host:port of service .service (dict root, service, port). */}}
{{- define "pixelmesh.addr" -}}
{{- printf "%s:%v" (include "pixelmesh.componentName" (dict "root" .root "name" .service)) .port -}}
{{- end -}}

{{/* secretKeyRef env entry: dict name, secret, key. */}}
{{- define "pixelmesh.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end -}}

{{/* Where a provider's API key lives: dict secret, key ("" when it has none). */}}
{{- define "pixelmesh.providerKeyRef" -}}
{{- $p := .c -}}
{{- if $p.existingSecret -}}
secret: {{ $p.existingSecret }}
key: {{ $p.existingSecretKey | default (printf "%s-api-key" $p.provider) }}
{{- else if $p.apiKey -}}
secret: {{ include "pixelmesh.secretName" .root }}
key: {{ printf "%s-api-key" $p.provider }}
{{- end -}}
{{- end -}}

{{/* The S3 credentials' Secret and keys, or nothing when none are configured. */}}
{{- define "pixelmesh.s3SecretName" -}}
{{- if .Values.s3.existingSecret -}}
{{- .Values.s3.existingSecret -}}
{{- else if and .Values.s3.accessKey .Values.s3.secretKey -}}
{{- include "pixelmesh.secretName" . -}}
{{- end -}}
{{- end -}}

{{- define "pixelmesh.databaseSecretName" -}}
{{- if .Values.database.existingSecret -}}
{{- .Values.database.existingSecret -}}
{{- else if .Values.database.url -}}
{{- include "pixelmesh.secretName" . -}}
{{- end -}}
{{- end -}}

{{/*
Where a chart-level secret setting lives (dict root, v (its values block: value,
existingSecret, existingSecretKey), key (its key in the chart's Secret), generated
(the chart's Secret always has one)): "secret: ...\nkey: ...", or nothing when unset.
*/}}
{{- define "pixelmesh.valueRef" -}}
{{- if .v.existingSecret -}}
secret: {{ .v.existingSecret }}
key: {{ .v.existingSecretKey }}
{{- else if or .v.value .generated -}}
secret: {{ include "pixelmesh.secretName" .root }}
key: {{ .key }}
{{- end -}}
{{- end -}}

{{/* The secret settings of the chart's values: block name, key in the chart's Secret, generated when unset, prefix of a generated value. */}}
{{- define "pixelmesh.secretSettings" -}}
- {block: devApiKey, key: dev-api-key, generated: true, prefix: pm-}
- {block: adminToken, key: admin-token, generated: false, prefix: ""}
- {block: webhookSigningKey, key: webhook-signing-key, generated: true, prefix: ""}
{{- end -}}

{{/* env entry of a secret setting (dict root, name (variable), block): nothing when unset. */}}
{{- define "pixelmesh.settingEnv" -}}
{{- $root := .root -}}
{{- $block := .block -}}
{{- range $s := include "pixelmesh.secretSettings" $root | fromYamlArray -}}
{{- if eq $s.block $block -}}
{{- $ref := include "pixelmesh.valueRef" (dict "root" $root "v" (index $root.Values $block) "key" $s.key "generated" $s.generated) | fromYaml -}}
{{- if $ref.secret -}}
{{- include "pixelmesh.secretEnv" (dict "name" $.name "secret" $ref.secret "key" $ref.key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A service's built-in SQLite file (no database configured; dict root, service), on the emptyDir at database.sqlite.dir. */}}
{{- define "pixelmesh.sqliteUrl" -}}
{{- printf "sqlite+aiosqlite:///%s/%s.db" .root.Values.database.sqlite.dir .service -}}
{{- end -}}

{{/* The selfHosted ConfigMap's keys a component mounts, key -> file name (dict root, c). */}}
{{- define "pixelmesh.selfHostedFiles" -}}
{{- $sh := .root.Values.selfHosted | default dict -}}
{{- $files := dict -}}
{{- if and (eq .c.service "routing") $sh.catalog -}}{{- $_ := set $files "catalog.yaml" "catalog.yaml" -}}{{- end -}}
{{- if and (eq .c.service "pricing") $sh.prices -}}{{- $_ := set $files "prices.yaml" "prices.yaml" -}}{{- end -}}
{{- if eq .c.provider "comfyui" -}}
{{- range $model, $_ := $sh.comfyuiWorkflows | default dict -}}{{- $_ := set $files (printf "comfyui-%s.json" $model) (printf "%s.json" $model) -}}{{- end -}}
{{- end -}}
{{- toYaml $files -}}
{{- end -}}
