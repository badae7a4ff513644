"""Two gloo CPU processes train a tiny SR and a tiny classification run: the scores logged during
the run are, to the last digit, the scores of the checkpoint it saved, evaluated afresh in one
process. Each process updates the BatchNorm statistics with its own batches; the trainer gives
every process rank 0's before evaluating and saving. The runs record the statistics each process
held just before that, to show they did differ (so these tests would catch a missing sync)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import embedded_sr_images
from conftest import COCO_BAD_IMAGES, COCO_CLEAN_IMAGES, free_port

REPO = Path(__file__).resolve().parents[1]

# Runs a launcher (launch/sr.py, launch/classify.py) with the trainer's BatchNorm sync wrapped so
# that each process writes a fingerprint of its statistics before and after every sync.
RECORDING_LAUNCHER = textwrap.dedent("""
    import json, runpy, sys
    from pathlib import Path
    import torch
    import tasks.common.trainer as trainer

    launcher, folder = sys.argv[1], Path(sys.argv[2])
    real_sync = trainer.sync_buffers

    def fingerprint(model, accelerator):
        statistics = [b for n, b in accelerator.unwrap_model(model).named_buffers() if "running_" in n]
        return [float(b.double().sum()) for b in statistics]

    def recording_sync(model, accelerator):
        before = fingerprint(model, accelerator)
        real_sync(model, accelerator)
        record = {"before": before, "after": fingerprint(model, accelerator)}
        with open(folder / f"bn_rank{accelerator.process_index}.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\\n")

    trainer.sync_buffers = recording_sync
    sys.argv = [launcher, *sys.argv[3:]]
    runpy.run_path(launcher, run_name="__main__")
""")


def _environment() -> dict:
    # One thread per process, here and in the evaluation afterwards: the same arithmetic.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "",
            "WANDB_MODE": "disabled"}


def _launch_two(tmp_path: Path, launcher: str, args: list[str]) -> None:
    script = tmp_path / "recording_launcher.py"
    script.write_text(RECORDING_LAUNCHER)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), str(script), str(REPO / launcher), str(tmp_path), *args]
    done = subprocess.run(command, capture_output=True, text=True, env=_environment(), cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _statistics_differed_before_the_last_sync(tmp_path: Path) -> None:
    ranks = [[json.loads(line) for line in (tmp_path / f"bn_rank{r}.jsonl").read_text().splitlines()]
             for r in (0, 1)]
    # The final evaluation's sync; the last record is the save's, right after it.
    first, second = ranks[0][-2], ranks[1][-2]
    assert first["before"] != second["before"]  # each process trained its statistics on its own batches
    assert first["after"] == second["after"] == first["before"]  # then all held rank 0's


def _run_in_one_process(arguments: list[str]) -> str:
    done = subprocess.run([sys.executable, *arguments], capture_output=True, text=True, env=_environment(),
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_two_process_sr_run_logs_the_scores_of_its_checkpoint(tmp_path, write_sr_crops):
    train = write_sr_crops(tmp_path / "train", embedded_sr_images("train"), 40, 8)
    bench = write_sr_crops(tmp_path / "bench", embedded_sr_images("test"), 36, 3)  # odd: uneven shares
    run = tmp_path / "runs" / "two"
    _launch_two(tmp_path, "launch/sr.py", [
        "--preset", "quick", "--attention", "bam", "--no-global-residual", "--num-blocks", "2", "--channels", "8",
        "--attention-interval", "1", "--patch-size", "24", "--batch-size", "4", "--num-workers", "0",
        "--max-steps", "4", "--eval-every", "2", "--num-pictures", "0", "--wandb", "disabled",
        "--train-dir", str(train), "--sets", str(bench), "--output-dir", str(tmp_path / "runs"), "--run-name", "two"])
    _statistics_differed_before_the_last_sync(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config"]["num_processes"] == 2 and summary["steps"] == 4
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last_eval = [row for row in logged if row["split"] == "eval"][-1]
    output = _run_in_one_process(["-m", "tasks.sr.evaluate", "--checkpoint", str(run / "checkpoints" / "last"),
                                  "--sets", str(bench), "--json", "--device", "cpu"])
    scores = json.loads(output.strip().splitlines()[-1])["bench"]
    assert last_eval["step"] == 4
    assert (scores["psnr"], scores["ssim"]) == (last_eval["psnr/bench"], last_eval["ssim/bench"])
    assert (scores["psnr"], scores["ssim"]) == (summary["final"]["psnr/bench"], summary["final"]["ssim/bench"])


CLASSIFY_EVALUATION = textwrap.dedent("""
    import json, sys
    import torch
    from torch.utils.data import Subset
    from tasks.classify.train import make_evaluate_fn
    from tasks.common.distributed import make_accelerator
    from tasks.common.model_io import load_model
    from tasks.data.digits import Digits

    model, _ = load_model(sys.argv[1], task="classify")
    evaluate = make_evaluate_fn(Subset(Digits(train=False), range(int(sys.argv[2]))), int(sys.argv[3]), 0)
    with torch.no_grad():
        scores = evaluate(model.eval(), make_accelerator("no", cpu=True), 0)
    scores.pop("per_sample")  # per-sample correctness: compared through the logged metrics
    print(json.dumps(scores))
""")


@pytest.mark.slow
def test_two_process_classification_run_logs_the_scores_of_its_checkpoint(tmp_path):
    run = tmp_path / "runs" / "two"
    # 64 evaluation images in batches of 16: both processes get whole batches, so the batches are
    # the ones a single process forms.
    _launch_two(tmp_path, "launch/classify.py", [
        "--dataset", "digits", "--arch", "resnet20", "--attention", "bam", "--max-steps", "3", "--eval-every", "3",
        "--batch-size", "8", "--max-images", "64", "--eval-batch-size", "16", "--num-workers", "0",
        "--wandb", "disabled", "--output-dir", str(tmp_path / "runs"), "--run-name", "two"])
    _statistics_differed_before_the_last_sync(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config"]["num_processes"] == 2 and summary["steps"] == 3
    script = tmp_path / "evaluate.py"
    script.write_text(CLASSIFY_EVALUATION)
    scores = json.loads(_run_in_one_process([str(script), str(run / "checkpoints" / "last"), "64", "16"]))
    assert scores["num_images"] == 64
    assert scores == {k: summary["final"][k] for k in scores}  # top-1, top-5 error and loss, every digit


@pytest.mark.slow
def test_detect_evaluate_splits_the_images_over_processes(tmp_path, write_tiny_coco):
    pytest.importorskip("pycocotools")
    import torch

    from tasks.common.model_io import ModelDescription, save_model
    from tasks.detect import evaluate as detect_evaluate

    # 5 images: uneven shares
    root = write_tiny_coco(tmp_path / "data", "val", images=COCO_CLEAN_IMAGES + COCO_BAD_IMAGES)
    kwargs = {"num_classes": 8, "attention": "bam", "fpn": True, "trainable_layers": 5, "min_size": 128,
              "max_size": 128, "frozen_bn": False, "box_batch_size_per_image": 8}
    description = ModelDescription("tasks.detect.model:fasterrcnn_resnet101", kwargs, "detect", {})
    torch.manual_seed(0)
    save_model(tmp_path / "detector", description.build(), description)
    arguments = ["--checkpoint", str(tmp_path / "detector"), "--data-root", str(root), "--batch-size", "1",
                 "--num-workers", "0", "--device", "cpu", "--json"]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", "tasks.detect.evaluate", *arguments]
    done = subprocess.run(command, capture_output=True, text=True, env=_environment(), cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    double = json.loads(done.stdout[done.stdout.index("{"):])  # one JSON document: printed by the main process
    single = detect_evaluate.evaluate_checkpoint(tmp_path / "detector", root, batch_size=1, device="cpu")
    assert double["images"] == single["images"] == 5
    assert double["metrics"] == pytest.approx(single["metrics"], abs=1e-12)
