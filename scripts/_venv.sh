# Sourced by the scripts in this folder: make sure .venv exists and holds the
# project (editable) with the extras the caller names. Idempotent: a second run
# only checks the install (a few seconds).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${QUEUE_RUNTIME_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

ensure_venv() {
    local extras="$1"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating virtual environment in $VENV" >&2
        "$PY" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
    fi
    # an editable install of the src/ layout: a path entry for src/, so new
    # modules need no reinstall and mypy sees the package as it is imported
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -e "$ROOT[$extras]" 2>&1 \
        | grep -v -e '^WARNING: Location' -e '^\s*$' >&2 || true
    "$VENV/bin/python" -c "import queue_runtime" # fail loudly if the install did not work
}
