#!/usr/bin/env bash
# The lent accelerator's one command (torch + numpy only): bench/gpu.py's table, under 8 minutes.
# Usage: bash bench/gpu.sh [--device cpu] [--seconds N]
# Uses $PYTHON if set, else the project's .venv when there is one (CI, a checkout), else python3 (the GPU box).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then py="$PYTHON"
elif [ -x .venv/bin/python ]; then py=.venv/bin/python
else py=python3; fi
exec "$py" bench/gpu.py "$@"
