#!/usr/bin/env bash
# Refetch Apache ECharts (the dashboard's charting library) from the npm registry and verify it
# against the checksum recorded in streamproc/api/static/vendor/ECHARTS.txt. The dashboard
# loads it from the package itself: the browser may have no internet.
#   deploy/local/vendor-echarts.sh            fetch the recorded version, verify, install
#   deploy/local/vendor-echarts.sh 5.6.1      fetch another version (then record its sha256)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
vendor="$root/streamproc/api/static/vendor"
recorded="$(sed -n 's/^version: //p' "$vendor/ECHARTS.txt")"
want_sha="$(sed -n 's/^sha256 dist\/echarts.min.js: //p' "$vendor/ECHARTS.txt")"
version="${1:-$recorded}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "echarts@$version" >/dev/null && tar xzf "echarts-$version.tgz")
got_sha="$(sha256sum "$tmp/package/dist/echarts.min.js" | cut -d' ' -f1)"
if [ "$version" = "$recorded" ] && [ "$got_sha" != "$want_sha" ]; then
  echo "echarts $version: sha256 $got_sha differs from the recorded $want_sha" >&2
  exit 1
fi
cp "$tmp/package/dist/echarts.min.js" "$vendor/echarts.min.js"
cp "$tmp/package/LICENSE" "$vendor/ECHARTS-LICENSE"
cp "$tmp/package/NOTICE" "$vendor/ECHARTS-NOTICE"
if [ "$version" != "$recorded" ]; then
  echo "echarts $version installed (sha256 $got_sha): update version and sha256 in" \
       "$vendor/ECHARTS.txt" >&2
else
  echo "echarts $version verified (sha256 $got_sha)"
fi
