#!/usr/bin/env bash
# The tools that check the Kubernetes chart and the Prometheus rules offline (tests/unit/
# test_helm.py, tests/unit/test_monitoring.py): helm, kubeconform and promtool, each built from
# its Go module at a pinned version with `go install` (the Go module proxy; no release binary
# is downloaded) into a cache shared by every checkout:
#
#   $STREAMPROC_CACHE_DIR/tools/<name>-<version>/<name>   (default ~/.cache/streamproc)
#
#   deploy/local/ops-tools.sh                 all three
#   deploy/local/ops-tools.sh helm promtool   only those
#
# Prints `name=path` for each tool. Idempotent: a tool already built is not built again. The
# first build takes minutes (helm and promtool bring large dependency trees: about 10 to 25
# minutes on a busy 2-core machine, once); Go's module and build caches make later ones quick.
# Needs Go 1.24 or newer (`go version`). The Kubernetes JSON schemas kubeconform checks against
# come from the kubernetes-validate package of the test extra (pyproject.toml), not the network.
set -euo pipefail
cache=${STREAMPROC_CACHE_DIR:-$HOME/.cache/streamproc}
cache=${cache/#\~/$HOME}
TOOLS=(
  "helm v4.3.2 helm.sh/helm/v4/cmd/helm"
  "kubeconform v0.8.0 github.com/yannh/kubeconform/cmd/kubeconform"
  # Prometheus 3.x's Go module versions are v0.3XX.Y (v0.316.0 is Prometheus 3.16.0). Without
  # the service discoveries but DNS (Prometheus's own build tags): the cloud SDKs they bring
  # would triple the build, and the rules and our scrape configuration need none of them.
  "promtool v0.316.0 github.com/prometheus/prometheus/cmd/promtool remove_all_sd,enable_dns_sd"
)
if ! command -v go >/dev/null 2>&1; then
  echo "deploy/local/ops-tools.sh: needs Go 1.24+ to build helm, kubeconform and promtool" \
       "(https://go.dev/doc/install, or Debian's golang-go when it is recent enough)" >&2
  exit 2
fi
wanted=" $* "
for entry in "${TOOLS[@]}"; do
  read -r name version package tags <<<"$entry"
  if [ $# -gt 0 ] && [[ $wanted != *" $name "* ]]; then
    continue
  fi
  dir="$cache/tools/$name-$version"
  if [ ! -x "$dir/$name" ]; then
    echo "==> building $name $version with go install (first time only; takes minutes)" >&2
    mkdir -p "$dir"
    if ! GOBIN="$dir" go install ${tags:+-tags "$tags"} "$package@$version" >&2; then
      echo "deploy/local/ops-tools.sh: go install $package@$version failed (above)" >&2
      exit 2
    fi
  fi
  echo "$name=$dir/$name"
  wanted=${wanted/ $name / }
done
if [ $# -gt 0 ] && [ -n "${wanted// /}" ]; then
  echo "deploy/local/ops-tools.sh: unknown tool(s):$wanted (helm, kubeconform, promtool)" >&2
  exit 2
fi
