#!/usr/bin/env bash
# Create the project's virtualenv and install streamproc (editable) with its test tools.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "streamproc needs Python 3.11+: '$python' was not found (set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "streamproc needs Python 3.11+, '$python' is $("$python" -V 2>&1) (set PYTHON=...)" >&2
  exit 2
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating virtualenv $venv"
  "$python" -m venv "$venv"
fi
echo "==> installing streamproc and its test tools into $venv (first time takes a minute)"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e '.[test]'
