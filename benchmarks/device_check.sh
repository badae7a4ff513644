#!/usr/bin/env bash
# Issue 7's targets in one short GPU run: BAM's cost, base and BAM in one process, Markdown tables
# (summary.md: every target PASS/FAIL with its figures and the card) written to OUTPUT_DIR.
#
#   benchmarks/device_check.sh OUTPUT_DIR [--data-root DIR] [--jobs sr16,sr64,resnet50] [--budget-s S]
#   benchmarks/device_check.sh OUTPUT_DIR --tiny      # a CPU, tiny sizes: the same code paths (CI)
#
# Needs torch, torchvision, accelerate, numpy, pillow (no wandb, no network). The T91 and Set14
# images come from --data-root, else $BAM_DATA_ROOT, else the repository's datasets/ folder.
# A hard stop after DEVICE_CHECK_LIMIT_S seconds (default 420 = 7 minutes): SIGINT first, so that
# the check writes what it measured, then SIGKILL 20 s later.
set -euo pipefail
case "${1:-}" in
    -h|--help) ;;
    ""|-*) echo "usage: $0 OUTPUT_DIR [--tiny] [--data-root DIR] [--jobs ...] [--budget-s S] (see --help)" >&2
           exit 2 ;;
esac
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's packages, installed or not
exec timeout --signal=INT --kill-after=20 "${DEVICE_CHECK_LIMIT_S:-420}" \
    "${PYTHON:-python}" "$repo/benchmarks/device_check.py" "$@"
