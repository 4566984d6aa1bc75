#!/usr/bin/env bash
# Pins every image streamproc pulls to its current digest: the base of deploy/Dockerfile
# (ARG PYTHON_IMAGE) and each `image:` of docker-compose.yml except our own build. Each reference
# becomes name:tag@sha256:<digest of the tag's multi-platform index, now>; the tag stays for
# people, the digest is what Docker pulls. Needs access to the registry and one of
# `crane` or `docker buildx`:
#
#   deploy/pin-images.sh            renew every digest (after a base image's security release)
#   deploy/pin-images.sh --check    print each image's digest now against the pinned one; exit 1
#                                   when one differs (a newer build of the tag was published)
#
# tests/unit/test_compose.py fails when an image is not pinned. Review the diff, rebuild
# (`docker compose build`), run the tests, commit.
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=(deploy/Dockerfile docker-compose.yml)

digest_of() {  # the registry's digest of name:tag now
    local ref=$1 digest
    if command -v crane > /dev/null; then
        digest=$(crane digest "$ref")
    elif docker buildx version > /dev/null 2>&1; then
        digest=$(docker buildx imagetools inspect --format '{{.Manifest.Digest}}' "$ref")
    else
        echo "deploy/pin-images.sh: needs crane or docker buildx (and the registry)" >&2
        exit 2
    fi
    if [[ ! $digest =~ ^sha256:[0-9a-f]{64}$ ]]; then
        echo "deploy/pin-images.sh: no digest for $ref (got: $digest)" >&2
        exit 2
    fi
    echo "$digest"
}

# name:tag[@sha256:...] after `ARG PYTHON_IMAGE=` and `image:`; ${...} (our own image) skipped.
mapfile -t refs < <(grep -hoE '^(ARG PYTHON_IMAGE=|[[:space:]]*image:[[:space:]]*)[^$[:space:]]+' \
                        "${FILES[@]}" | sed -E 's/^(ARG PYTHON_IMAGE=|[[:space:]]*image:[[:space:]]*)//' \
                        | sort -u)
status=0
for ref in "${refs[@]}"; do
    tagged=${ref%@*}
    pinned=""
    [[ $ref == *@* ]] && pinned=${ref#*@}
    digest=$(digest_of "$tagged")
    if [[ ${1:-} == --check ]]; then
        if [[ $digest == "$pinned" ]]; then
            echo "$tagged: pinned to the current $digest"
        else
            echo "$tagged: pinned ${pinned:-(none)}, the tag is now $digest"
            status=1
        fi
        continue
    fi
    escaped=$(printf '%s' "$tagged" | sed 's/[.[\*^$/]/\\&/g')
    sed -i -E "/^(ARG PYTHON_IMAGE=|[[:space:]]*image:)/s#${escaped}(@sha256:[0-9a-f]{64})?([[:space:]]|\$)#${tagged}@${digest}\\2#" \
        "${FILES[@]}"
    echo "$tagged -> $digest"
done
exit $status
