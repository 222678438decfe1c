# Sourced by the scripts in this folder: make sure .venv exists and holds the
# project (editable) with the extras the caller names. Idempotent: a second run
# only re-links the source tree (a few seconds).
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
    # strict editable mode links each file under its import name
    # (queue_runtime/...), which mypy and every import hook understand.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --config-settings editable_mode=strict -e "$ROOT[$extras]" 2>&1 \
        | grep -v -e '^WARNING: Location' -e '^\s*$' -e '!!' -e 'WheelFile' >&2 || true
    "$VENV/bin/python" -c "import queue_runtime" # fail loudly if the install did not work
}
