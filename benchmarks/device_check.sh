#!/usr/bin/env bash
# BAM's cost on one GPU in one command: benchmarks/bench.py at the GPU sizes, its output in
# OUTPUT_DIR/bench.txt (and on the screen).
#
#   benchmarks/device_check.sh OUTPUT_DIR [bench.py options, e.g. --modes eager]
#
# Needs torch, torchvision, numpy and pillow; no network, no wandb. T91 and Set14 come from
# $BAM_DATA_ROOT, else the repository's datasets/ folder, which ships them. The run stops after
# DEVICE_CHECK_LIMIT_S seconds (default 480); every line printed by then is in bench.txt.
set -euo pipefail
if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: $0 OUTPUT_DIR [bench.py options]" >&2
    exit 2
fi
out="$1"
shift
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$out"
timeout --signal=INT --kill-after=20 "${DEVICE_CHECK_LIMIT_S:-480}" \
    "${PYTHON:-python}" -u "$repo/benchmarks/bench.py" --device cuda "$@" 2>&1 | tee "$out/bench.txt"
