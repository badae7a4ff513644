"""benchmarks/bench.py runs every code path at tiny sizes on the CPU. Nothing is timed here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_tiny_run_prints_base_and_bam_for_every_network_and_mode(sr_data_root):
    # One thread: two on a busy two-core machine wait on each other for minutes. aot_eager traces
    # the same graphs as Inductor without a C++ build.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BAM_DATA_ROOT": str(sr_data_root), "BAM_COMPILE_BACKEND": "aot_eager"}
    command = [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--tiny", "--workers", "1", "--repeats", "1",
               "--steps", "1"]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    steps = {tuple(line.split()[i] for i in (1, 5, 6)) for line in lines if line.startswith("step ")}
    assert steps == {(network, mode, variant) for network in ("srresnet-main", "resnet50")
                     for mode in ("eager", "compile") for variant in ("base", "bam")}
    modules = [line for line in lines if line.startswith("module ")]
    assert len(modules) == 4 and all(f" {name} " in line for line in modules for name in ("plain", "bam", "se", "cbam"))
    assert any(line.startswith("metrics  Set14 (14 images)") for line in lines)
    assert sum(line.startswith("data  T91") for line in lines) == 2
