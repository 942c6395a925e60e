#!/usr/bin/env bash
# GPU readiness of omniflex.flex in one run (under 10 minutes on a CUDA machine): the flex
# tests with their cuda cases, compiled-vs-reference and device-vs-host Autoflex bit-exactness
# on the GPU, host syncs per training step, `bench flex` and `bench model` ratios. Prints one
# JSON summary on stdout (progress on stderr). See benchmarks/gpu_check.py for the sections.
#
#   benchmarks/gpu_check.sh                 # on a CUDA machine
#   benchmarks/gpu_check.sh --tiny --device cpu   # toy sizes: checks the script on a CPU
#
# PYTHON picks the interpreter (default: python3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec timeout -k 20 590 "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
