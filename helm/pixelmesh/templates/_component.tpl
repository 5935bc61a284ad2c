{{/*
The one component template. Called with dict root ($), c (a resolved component, see
pixelmesh.resolveComponents) and all (every resolved component, for NetworkPolicy
peers). Renders the component's Deployment, its Service (gRPC servers that others
call, and the edge), HorizontalPodAutoscaler or KEDA ScaledObject, PodDisruptionBudget
and NetworkPolicy.
*/}}
{{- define "pixelmesh.component" -}}
{{- $root := .root -}}
{{- $c := .c -}}
{{- $all := .all -}}
{{- $V := $root.Values -}}
{{- $name := include "pixelmesh.componentName" (dict "root" $root "name" $c.name) -}}
{{- $uses := $c.uses | default list -}}
{{- $isWorker := eq $c.service "worker" -}}
{{- $kedaOn := and $isWorker $V.keda.enabled -}}
{{- $hpaOn := and (not $isWorker) $c.autoscaling.enabled -}}
{{- $callers := list -}}
{{- range $other := $all -}}
{{- if and (has $c.service ($other.calls | default list)) (not (has $other.service $callers)) -}}
{{- $callers = append $callers $other.service -}}
{{- end -}}
{{- end -}}
{{- $hasService := or $callers $c.ports.http -}}
{{- if ge (float64 $c.shutdownGraceSeconds) (float64 $c.terminationGracePeriodSeconds) -}}
{{- fail (printf "%s: shutdownGraceSeconds (%v) must be below terminationGracePeriodSeconds (%v)" $c.name $c.shutdownGraceSeconds $c.terminationGracePeriodSeconds) -}}
{{- end -}}
{{- /* ---- inline secret values this component reads, for the restart checksum ---- */ -}}
{{- $secretInputs := list -}}
{{- if eq $c.service "pricing" -}}{{- $secretInputs = concat $secretInputs (list $V.devApiKey $V.adminToken) -}}{{- end -}}
{{- if has "database" $uses -}}{{- $secretInputs = concat $secretInputs (list $V.database.url $V.database.existingSecret) -}}{{- end -}}
{{- if has "webhooks" $uses -}}{{- $secretInputs = concat $secretInputs (list $V.webhookSigningKey) -}}{{- end -}}
{{- /* the built-in SQLite of a component using the database: a file on an emptyDir (the root filesystem is read-only) */ -}}
{{- $sqliteDir := "" -}}
{{- if and (has "database" $uses) (not (include "pixelmesh.databaseSecretName" $root)) -}}{{- $sqliteDir = $V.database.sqlite.dir -}}{{- end -}}
{{- if has "s3" $uses -}}{{- $secretInputs = concat $secretInputs (list $V.s3.accessKey $V.s3.secretKey $V.s3.existingSecret) -}}{{- end -}}
{{- if $c.provider -}}{{- $secretInputs = concat $secretInputs (list $c.apiKey $c.existingSecret $c.existingSecretKey $c.accessKey $c.existingSecretAccessKey) -}}{{- end -}}
{{- /* the operator's self-hosted files (selfHosted) this component reads, from the chart's ConfigMap */ -}}
{{- $shFiles := include "pixelmesh.selfHostedFiles" (dict "root" $root "c" $c) | fromYaml -}}
{{- $credentials := $c.credentialsFile | default dict -}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "pixelmesh.componentLabels" (dict "root" $root "c" $c) | nindent 4 }}
spec:
  {{- if not (or $hpaOn $kedaOn) }}
  replicas: {{ $c.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  selector:
    matchLabels:
      {{- include "pixelmesh.selectorLabels" (dict "root" $root "c" $c) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "pixelmesh.componentLabels" (dict "root" $root "c" $c) | nindent 8 }}
        {{- with $c.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/secrets: {{ toJson $secretInputs | sha256sum }}
        {{- if $shFiles }}
        checksum/self-hosted: {{ toJson (pick ($V.selfHosted | default dict) "catalog" "prices" "comfyuiWorkflows") | sha256sum }}
        {{- end }}
        {{- if and $V.metrics.podAnnotations $c.ports.metrics }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $c.ports.metrics | quote }}
        prometheus.io/path: /metrics
        {{- end }}
        {{- with $c.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "pixelmesh.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $V.automountServiceAccountToken }}
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds }}
      {{- with $V.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $c.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ $c.service }}
          image: {{ include "pixelmesh.image" (dict "root" $root "c" $c) }}
          imagePullPolicy: {{ $V.image.pullPolicy }}
          securityContext:
            {{- toYaml $c.securityContext | nindent 12 }}
          ports:
            - name: grpc
              containerPort: {{ $c.ports.grpc }}
              protocol: TCP
            {{- if $c.ports.http }}
            - name: http
              containerPort: {{ $c.ports.http }}
              protocol: TCP
            {{- end }}
            {{- if $c.ports.metrics }}
            - name: metrics
              containerPort: {{ $c.ports.metrics }}
              protocol: TCP
            {{- end }}
          env:
            {{- include "pixelmesh.env" (dict "root" $root "c" $c "all" $all) | nindent 12 }}
          {{- range $probe := list "startup" "readiness" "liveness" }}
          {{- with index $c.probes $probe }}
          {{ $probe }}Probe:
            grpc:
              port: {{ $c.ports.grpc }}
              {{- with .service }}
              service: {{ . | quote }}
              {{- end }}
            {{- with omit . "service" }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- end }}
          {{- end }}
          resources:
            {{- toYaml $c.resources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if $sqliteDir }}
            - name: data
              mountPath: {{ $sqliteDir }}
            {{- end }}
            {{- if $shFiles }}
            - name: self-hosted
              mountPath: /etc/pixelmesh/selfhosted
              readOnly: true
            {{- end }}
            {{- if $credentials.secret }}
            - name: credentials
              mountPath: /etc/pixelmesh/credentials
              readOnly: true
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $c.tmpSizeLimit }}
        {{- if $sqliteDir }}
        - name: data
          emptyDir:
            sizeLimit: {{ $V.database.sqlite.sizeLimit }}
        {{- end }}
        {{- if $shFiles }}
        - name: self-hosted
          configMap:
            name: {{ include "pixelmesh.componentName" (dict "root" $root "name" "self-hosted") }}
            items:
              {{- range $key, $path := $shFiles }}
              - {key: {{ $key }}, path: {{ $path }}}
              {{- end }}
        {{- end }}
        {{- if $credentials.secret }}
        - name: credentials
          secret:
            secretName: {{ $credentials.secret }}
            defaultMode: 0400
            items:
              - {key: {{ $credentials.key }}, path: {{ $credentials.key }}}
        {{- end }}
      {{- if $c.spreadAcrossNodes }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "pixelmesh.selectorLabels" (dict "root" $root "c" $c) | nindent 14 }}
      {{- end }}
      {{- with $c.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- if $hasService }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels:
    {{- include "pixelmesh.componentLabels" (dict "root" $root "c" $c) | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "pixelmesh.selectorLabels" (dict "root" $root "c" $c) | nindent 4 }}
  ports:
    {{- if $callers }}
    - name: grpc
      port: {{ $c.ports.grpc }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    {{- end }}
    {{- if $c.ports.http }}
    - name: http
      port: {{ $c.ports.http }}
      targetPort: http
      protocol: TCP
      appProtocol: http
    {{- end }}
{{- end }}
{{- if $hpaOn }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  labels:
    {{- include "pixelmesh.componentLabels" (dict "root" $root "c" $c) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicas: {{ $c.autoscaling.minReplicas }}
  maxReplicas: {{ $c.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $c.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- if $kedaOn }}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ $name }}
  labels:
    {{- include "pixelmesh.componentLabels" (dict "root" $root "c" $c) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  pollingInterval: {{ $V.keda.pollingInterval }}
  cooldownPeriod: {{ $V.keda.cooldownPeriod }}
  minReplicaCount: {{ $c.keda.minReplicaCount }}
  maxReplicaCount: {{ $c.keda.maxReplicaCount }}
  triggers:
    - type: kafka
      metadata:
        bootstrapServers: {{ required "kafka.bootstrapServers is required when keda.enabled" $V.kafka.bootstrapServers | quote }}
        consumerGroup: {{ printf "pixelmesh-worker-%s" $c.provider | quote }}
        topic: {{ printf "pixelmesh.generation.requests.%s" $c.provider | quote }}
        lagThreshold: {{ $c.keda.lagThreshold | toString | quote }}
        activationLagThreshold: {{ $c.keda.activationLagThreshold | toString | quote }}
        # Workers read a new group's topic from the beginning (auto_offset_reset=earliest).
        offsetResetPolicy: earliest
      {{- with $V.keda.triggerAuthentication }}
      authenticationRef:
        name: {{ . }}
      {{- end }}
{{- end }}
{{- if $c.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  labels:
    {{- include "pixelmesh.componentLabels" (dict "root" $root "c" $c) | nindent 4 }}
spec:
  maxUnavailable: {{ $c.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "pixelmesh.selectorLabels" (dict "root" $root "c" $c) | nindent 6 }}
{{- end }}
{{- if $V.networkPolicy.enabled }}
{{- include "pixelmesh.networkPolicy" (dict "root" $root "c" $c "all" $all "callers" $callers "name" $name) }}
{{- end }}
{{- end -}}
