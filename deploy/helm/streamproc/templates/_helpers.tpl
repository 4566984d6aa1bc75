{{/* The release's base name: <release>-streamproc, or the release name when it holds "streamproc". */}}
{{- define "streamproc.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "streamproc.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "worker") */}}
{{- define "streamproc.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* name:tag@sha256:..., refused without a digest (images are pinned, as in docker-compose.yml). */}}
{{- define "streamproc.image" -}}
{{- $digest := required "image.digest is required: pin the image by digest (sha256:...), e.g. --set image.digest=$(crane digest <repository>:<tag>)" .Values.image.digest -}}
{{- if not (regexMatch "^sha256:[0-9a-f]{64}$" $digest) -}}
{{- fail (printf "image.digest must look like sha256:<64 hex digits>, not %q" $digest) -}}
{{- end -}}
{{- printf "%s:%s@%s" .Values.image.repository .Values.image.tag $digest -}}
{{- end -}}

{{/* The env of one component's secrets: STREAMPROC_<NAME>_FILE for each entry of secret.<component>. */}}
{{- define "streamproc.secretEnv" -}}
{{- range $name, $key := index .root.Values.secret .component }}
- name: STREAMPROC_{{ $name }}_FILE
  value: /run/secrets/streamproc/{{ $key }}
{{- end }}
{{- end -}}

{{/* Pod-level parts shared by every component: (dict "root" $ "component" "worker" "values" .Values.worker) */}}
{{- define "streamproc.podCommon" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ .values.terminationGracePeriodSeconds }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  # The image's STREAMPROC_STACK_DIR (/tmp/streamproc) on a read-only root filesystem.
  - name: tmp
    emptyDir: {}
  {{- $keys := index .root.Values.secret .component }}
  {{- if $keys }}
  - name: secrets
    secret:
      secretName: {{ required "secret.name is required: the Secret holding the model secret, Redis URL and API tokens" .root.Values.secret.name }}
      # Readable by the pod's group (fsGroup), the image's unprivileged user; nobody else.
      defaultMode: 0440
      items:
        {{- range $name, $key := $keys }}
        - key: {{ $key }}
          path: {{ $key }}
        {{- end }}
  {{- end }}
{{- end -}}

{{/* Container-level parts shared by every component. */}}
{{- define "streamproc.containerCommon" -}}
image: {{ include "streamproc.image" .root }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
envFrom:
  - configMapRef:
      name: {{ include "streamproc.fullname" .root }}
securityContext:
  {{- toYaml .root.Values.securityContext | nindent 2 }}
resources:
  {{- toYaml .values.resources | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  {{- if index .root.Values.secret .component }}
  - name: secrets
    mountPath: /run/secrets/streamproc
    readOnly: true
  {{- end }}
{{- end -}}
