"""Scene parsing and detection as two gloo CPU processes under `accelerate launch`, beside Hugging
Face's `datasets` (which Accelerate imports in multi-process runs, and which nothing of this
repository may shadow). SR and classification have their own two-process tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import COCO_CLEAN_IMAGES, free_port

REPO = Path(__file__).resolve().parents[1]


def _launch_two(launcher: str, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), str(REPO / "launch" / launcher), *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_scene_parsing_trains_as_two_processes(tmp_path, write_tiny_ade20k):
    root = write_tiny_ade20k(tmp_path / "data", sizes=((64, 80), (80, 64), (64, 80), (72, 72)))
    done = _launch_two("parse.py", "--data-root", str(root), "--output-dir", str(tmp_path / "runs"),
                       "--run-name", "two", "--attention", "bam", "--backbone", "resnet18",
                       "--decoder-channels", "16", "--short-sides", "64", "--max-long-side", "96",
                       "--num-workers", "0", "--macs-size", "64", "--max-steps", "2", "--eval-every", "2",
                       "--batch-size", "4", "--num-pictures", "0", "--wandb", "disabled", cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "two" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["config"]["num_processes"] == 2
    assert summary["config"]["effective_batch_size"] == 4 and "miou" in summary["final"]


@pytest.mark.slow
def test_detection_trains_as_two_processes(tmp_path, write_tiny_coco):
    pytest.importorskip("pycocotools")
    root = tmp_path / "data"
    more = [(f"00000000001{i}.jpg", width, height, boxes)
            for i, (_, width, height, boxes) in enumerate(COCO_CLEAN_IMAGES)]
    write_tiny_coco(root, "train", images=COCO_CLEAN_IMAGES + more, seed=1)  # 6 images: a batch of 4 = 2 x 2 processes
    write_tiny_coco(root, "val", seed=2)
    done = _launch_two("detect.py", "--data-root", str(root), "--output-dir", str(tmp_path / "runs"),
                       "--run-name", "two", "--attention", "bam", "--fpn", "--max-steps", "1", "--batch-size", "4",
                       "--min-size", "96", "--max-size", "96", "--rois-per-image", "8", "--warmup-steps", "1",
                       "--eval-every", "0", "--num-workers", "0", "--num-pictures", "0", "--wandb", "disabled", cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "two" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["config"]["num_processes"] == 2
    assert summary["config"]["total_batch"] == 4 and "mAP" in summary["final"]
