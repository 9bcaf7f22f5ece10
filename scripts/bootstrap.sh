# Sourced by demo.sh and test.sh: creates/updates the venv, installs the plugin, configures a
# self-contained Scipion home and provisions the backend environments.  Safe to run again.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SCIPION_RECIPROCAL_VENV:-$ROOT/.venv}"
export SCIPION_HOME="${SCIPION_HOME:-$ROOT/.scipion-home}"

pick_python() {
    for candidate in "${PYTHON:-}" python3.11 python3; do
        if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1; then
            echo "$candidate"; return 0
        fi
    done
    return 1
}

if [ ! -x "$VENV/bin/python" ]; then
    PY="$(pick_python)" || { echo "bootstrap: no python3 found (Python 3.11 with Tk needed)" >&2; exit 1; }
    if ! "$PY" -c "import tkinter" 2>/dev/null; then
        echo "bootstrap: $PY has no tkinter; Scipion needs it (Debian: apt-get install python3-tk)" >&2
        exit 1
    fi
    echo "bootstrap: creating $VENV with $PY"
    "$PY" -m venv "$VENV"
fi
echo "bootstrap: installing scipion-reciprocal and its dependencies into $VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test]" 2>&1 \
    | grep -v "^WARNING: Location .* is ignored" || true
"$VENV/bin/python" -c "import scipion_reciprocal, pwem" \
    || { echo "bootstrap: the installation failed (see pip's messages above)" >&2; exit 1; }

eval "$("$VENV/bin/scipion-reciprocal" env)"

if [ "${SCIPION_RECIPROCAL_SKIP_BACKENDS:-0}" != "1" ]; then
    echo "bootstrap: backend environments (python -m scipion installb recovar classifier)"
    python -m scipion installb recovar classifier
    # installb ignores exit statuses; the marker files tell whether the installs completed.
    scipion-reciprocal install-backend --list
    if scipion-reciprocal install-backend --list | grep -q "not installed"; then
        echo "bootstrap: a backend environment failed to install (see above)" >&2
        exit 1
    fi
fi
