#!/usr/bin/env bash
# The lent accelerator's one command (torch + numpy only): bench/gpu.py's table, under 8 minutes.
# Usage: bash bench/gpu.sh [--device cpu] [--seconds N]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/gpu.py "$@"
