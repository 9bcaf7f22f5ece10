#!/usr/bin/env bash
# The one-command GPU check: runs the plugin's GPU paths at real size and prints per phase the
# wall time and peak GPU memory, and the correctness figures (README, section "GPU check").
# Never part of CI.
#
#   scripts/gpu-check.sh                  GPU machine with network access: creates the CUDA
#                                         builds of both backend environments (the plugin's
#                                         install hook, as bootstrap.sh), then runs everything
#                                         through a Scipion project and the protocols
#   scripts/gpu-check.sh --prepare DIR    on a machine with network access: gathers RECOVAR
#                                         1.0.5 and what a JAX machine lacks as wheels for
#                                         Python 3.12 / manylinux x86_64 (under 60 MB)
#   scripts/gpu-check.sh --wheels DIR     GPU machine without network access that has JAX with
#                                         CUDA: installs DIR into a private folder and runs
#                                         RECOVAR on the machine's own JAX, without Scipion
#
# Options: --out DIR       where each run's folder goes (default benchmarks/output/gpu-check)
#          --budget S      seconds for all phases after the installation (default 600)
#          --no-install    use the current environment as it is (no bootstrap)
#          --allow-cpu --tiny   developer check of the logic on a CPU with CI-sized data
# PYTHON=...  the Python for --prepare and --wheels (default python3).
# Exit status: 0 every phase succeeded, 1 no GPU or a phase failed, 2 bad arguments.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODULE=scipion_reciprocal.workflows.gpu_check

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
    exit 2
}

PREPARE="" WHEELS="" OUT_BASE="$ROOT/benchmarks/output/gpu-check" INSTALL=1
DEV_FLAGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --prepare) [ $# -ge 2 ] || usage; PREPARE="$2"; shift 2 ;;
        --wheels) [ $# -ge 2 ] || usage; WHEELS="$2"; shift 2 ;;
        --out) [ $# -ge 2 ] || usage; OUT_BASE="$2"; shift 2 ;;
        --budget) [ $# -ge 2 ] || usage; DEV_FLAGS+=(--budget "$2"); shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        --allow-cpu|--tiny) DEV_FLAGS+=("$1"); shift ;;
        -h|--help) usage ;;
        *) echo "gpu-check: unknown argument '$1'" >&2; usage ;;
    esac
done
if [ -n "$PREPARE" ] && [ -n "$WHEELS" ]; then
    echo "gpu-check: --prepare and --wheels are for two different machines; give one" >&2
    exit 2
fi

if [ -n "$PREPARE" ]; then
    # Needs network access (PyPI), not a GPU.
    PYTHONPATH="$ROOT" exec "${PYTHON:-python3}" -m "$MODULE" prepare "$PREPARE"
fi

allow_cpu=0
for flag in "${DEV_FLAGS[@]+"${DEV_FLAGS[@]}"}"; do [ "$flag" = "--allow-cpu" ] && allow_cpu=1; done
if ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q "^GPU"; }; then
    if [ "$allow_cpu" = 0 ]; then
        echo "gpu-check: no GPU found (nvidia-smi is missing or lists no GPU). This check runs" \
             "the plugin's GPU paths and needs an NVIDIA GPU." >&2
        exit 1
    fi
    echo "gpu-check: no GPU; running on the CPU because of --allow-cpu (a developer check)"
fi

RUN_DIR="$OUT_BASE/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RUN_DIR"
# The backends allocate GPU memory as they need it, so the peaks measured are their own.
export XLA_PYTHON_CLIENT_PREALLOCATE=false TF_FORCE_GPU_ALLOW_GROWTH=true

if [ -n "$WHEELS" ]; then
    PY="${PYTHON:-python3}"
    if ! "$PY" -c "import jax" 2>/dev/null; then
        echo "gpu-check: $PY has no JAX; --wheels runs RECOVAR on the machine's own JAX" >&2
        exit 1
    fi
    SITE="$RUN_DIR/site"
    PYTHONPATH="$ROOT" "$PY" -m "$MODULE" install "$WHEELS" --site "$SITE"
    PYTHONPATH="$SITE:$ROOT" exec "$PY" -m "$MODULE" offline --out "$RUN_DIR" --site "$SITE" \
        --python "$PY" "${DEV_FLAGS[@]+"${DEV_FLAGS[@]}"}"
fi

INSTALL_ARGS=()
if [ "$INSTALL" = 0 ] && ! python -c "import scipion_reciprocal, pyworkflow, pandas" 2>/dev/null; then
    echo "gpu-check: --no-install runs in the current environment, and its python lacks the" \
         "plugin or Scipion; activate it first: eval \"\$(.venv/bin/scipion-reciprocal env)\"" >&2
    exit 2
fi
if [ "$INSTALL" = 1 ]; then
    started=$(date +%s)
    # The venv, the plugin, a self-contained Scipion home and `python -m scipion installb
    # recovar classifier` (CUDA builds where nvidia-smi finds a GPU).
    source "$ROOT/scripts/bootstrap.sh"
    INSTALL_ARGS=(--install-seconds "$(( $(date +%s) - started ))")
fi
exec python -m "$MODULE" scipion --out "$RUN_DIR" "${INSTALL_ARGS[@]+"${INSTALL_ARGS[@]}"}" \
    "${DEV_FLAGS[@]+"${DEV_FLAGS[@]}"}"
