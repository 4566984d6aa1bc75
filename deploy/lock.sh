#!/usr/bin/env bash
# Regenerates the hashed locks of the image (deploy/Dockerfile installs them with
# `pip install --require-hashes --no-deps`):
#   deploy/requirements.lock        the runtime dependencies of pyproject.toml, and theirs
#   deploy/build-requirements.lock  the build backend (hatchling) that builds streamproc's wheel
# with pip-tools' pip-compile --generate-hashes: every version exact, with the sha256 of every
# file PyPI publishes for it (every platform's wheel and the sdist).
#
#   deploy/lock.sh                              keep the versions locked now, add what is missing
#   deploy/lock.sh --upgrade                    the newest versions pyproject.toml allows
#   deploy/lock.sh --upgrade-package numpy      one package only
#
# `make lock` runs it. Run it with CPython 3.11 on Linux (the image's Python): environment
# markers are evaluated for the interpreter that runs pip-compile. Needs PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PIP_TOOLS_VERSION=7.6.2

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) or sys.platform != "linux")'; then
    echo "deploy/lock.sh: $PYTHON is not CPython 3.11 on Linux, the image's Python;" \
         "set PYTHON=/path/to/python3.11" >&2
    exit 2
fi
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
"$PYTHON" -m venv "$tools"
"$tools/bin/pip" install --quiet --disable-pip-version-check "pip-tools==$PIP_TOOLS_VERSION"

compile() {  # compile OUTPUT INPUT [pip-compile options...]
    local output=$1 input=$2
    shift 2
    CUSTOM_COMPILE_COMMAND="deploy/lock.sh" "$tools/bin/pip-compile" --quiet \
        --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
        --output-file "$output" "$input" "$@"
}
compile deploy/requirements.lock pyproject.toml "$@"
compile deploy/build-requirements.lock deploy/build-requirements.in "$@"
echo "deploy/lock.sh: wrote deploy/requirements.lock and deploy/build-requirements.lock;" \
     "check them with: pytest tests/unit/test_compose.py -k lock" >&2
