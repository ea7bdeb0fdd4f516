#!/usr/bin/env bash
# The one install recipe, run by `make setup` (the development virtualenv) and by the Dockerfile
# (the pipeline's container image), so that the image holds exactly what development and the tests
# run on; tests/test_image.py checks that both run this and nothing else.
#
#   requirements/install.sh dependencies PYTHON           the lock, then the no-deps list
#   requirements/install.sh package PYTHON [--editable]   musicrec itself (editable for development)
#
# PYTHON is the interpreter whose environment receives the packages.
set -euo pipefail

# uv does every install (a few seconds for the whole lock); pinned so that every environment
# resolves and links the same way.
UV_VERSION=0.13.9
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() { echo "usage: $0 dependencies PYTHON | package PYTHON [--editable]" >&2; exit 2; }
[[ $# -ge 2 && $# -le 3 ]] || usage
step=$1 python=$2 editable=${3:-}
[[ -z $editable || $editable == --editable ]] || usage

uv_install() { "$python" -m uv pip install -q --python "$python" "$@"; }

case $step in
  dependencies)
    "$python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
    uv_install -r "$ROOT/requirements/lock.txt"
    # Their declared dependencies cannot be met on this stack (why: in the file); what they
    # actually import is in the lock.
    uv_install --no-deps -r "$ROOT/requirements/nodeps.txt"
    ;;
  package)
    uv_install --no-deps ${editable:+--editable} "$ROOT"
    ;;
  *) usage ;;
esac
