"""Faults a real run meets, tried the way a user meets them: each gives one clear line naming the
file or setting, and nothing trained is lost. docs/reliability.md lists every trial with its test."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import embedded_sr_images
from conftest import (PARSE_TINY, SR_TINY, NoisyLinearData, cli_error, error_line, mae_evaluate,
                      make_toy_trainer)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sr_data(tmp_path_factory, write_sr_crops) -> dict:
    base = tmp_path_factory.mktemp("srdata")
    return {"train": write_sr_crops(base / "train", embedded_sr_images("train"), 40, 4),
            "bench": write_sr_crops(base / "bench", embedded_sr_images("test"), 36, 2), "base": base}


def _sr_argv(sr_data, out: Path, *extra: str, train: Path | None = None) -> list[str]:
    return [*SR_TINY, "--train-dir", str(train or sr_data["train"]), "--sets", str(sr_data["bench"]),
            "--output-dir", str(out), "--run-name", "run", "--wandb", "disabled", "--num-pictures", "0", *extra]


# -- 3. errors inside DataLoader workers -------------------------------------------------------------
def test_truncated_jpeg_in_a_worker_reads_like_without_workers(sr_data, tmp_path, capsys):
    from tasks.sr import train as sr_train

    train = tmp_path / "train"
    shutil.copytree(sr_data["train"], train)
    photo = embedded_sr_images("train")[0][:48, :48]
    Image.fromarray(photo).save(train / "broken.jpg", quality=95)
    data = (train / "broken.jpg").read_bytes()
    (train / "broken.jpg").write_bytes(data[: len(data) * 2 // 3])  # the header survives, the pixels do not
    lines = {}
    for workers in ("0", "1"):
        argv = _sr_argv(sr_data, tmp_path / f"out{workers}", "--max-steps", "4", "--num-workers", workers,
                        "--no-cache", train=train)
        lines[workers] = error_line(cli_error(capsys, sr_train.main, argv))
    assert lines["1"] == lines["0"]
    assert str(train / "broken.jpg") in lines["1"] and len(lines["1"]) < 300


def test_command_exits_after_an_error_in_a_worker(sr_data, tmp_path):
    """The workers ignore SIGTERM (the training process decides when to stop), which is how
    multiprocessing ends them at exit; the command must still end, with the one line and no
    traceback of the killed workers. The timeout only guards the test against a hang."""
    train = tmp_path / "train"
    shutil.copytree(sr_data["train"], train)
    (train / "broken.png").write_bytes((next(train.glob("*.png"))).read_bytes()[:200])
    argv = _sr_argv(sr_data, tmp_path / "out", "--max-steps", "20", "--num-workers", "1", "--no-cache", train=train)
    done = subprocess.run([sys.executable, str(REPO / "launch" / "sr.py"), *argv], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    assert str(train / "broken.png") in error_line(done.stderr)


def test_bad_ade20k_label_in_a_worker_reads_like_without_workers(tmp_path, write_tiny_ade20k, capsys):
    from tasks.parse import train as parse_train

    root = write_tiny_ade20k(tmp_path / "data")
    label_file = root / "ADEChallengeData2016/annotations/training/ADE_train_00000001.png"
    label = np.array(Image.open(label_file))
    label[3, 3] = 151  # one class more than ADE20K has
    Image.fromarray(label).save(label_file)
    lines = {}
    for workers in ("0", "1"):
        argv = ["--data-root", str(root), "--output-dir", str(tmp_path / f"out{workers}"), "--max-steps", "3",
                *PARSE_TINY, "--num-workers", workers]
        lines[workers] = error_line(cli_error(capsys, parse_train.main, argv))
    assert lines["1"] == lines["0"]
    assert str(label_file) in lines["1"] and "151" in lines["1"]


def test_worker_message_is_the_last_exception_and_debug_shows_the_traceback(monkeypatch, capsys):
    from torch.utils.data import DataLoader, Dataset

    from tasks.common.cli import run_cli

    class Broken(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            try:
                raise OSError("decoder stopped")
            except OSError as error:  # chained, as read_image does: the user reads the last one
                raise ValueError("cannot read image /data/x.jpg:\nimage file is truncated") from error

    def first_batch():
        return next(iter(DataLoader(Broken(), num_workers=1)))

    assert error_line(cli_error(capsys, run_cli, first_batch)) == \
        "error: cannot read image /data/x.jpg: image file is truncated"
    monkeypatch.setenv("BAM_DEBUG", "1")
    stderr = cli_error(capsys, run_cli, first_batch)
    assert "decoder stopped" in stderr and "__getitem__" in stderr  # the worker's own traceback
    assert stderr.splitlines()[-1] == "error: cannot read image /data/x.jpg: image file is truncated"


# -- 4. damaged checkpoints, checkpoints of another task ------------------------------------------------
def _toy_run(tmp_path: Path) -> Path:
    make_toy_trainer(tmp_path / "run", max_steps=10).fit()
    return tmp_path / "run"


@pytest.mark.parametrize("file, damage", [
    ("model.safetensors", "truncate"), ("model.safetensors", "garbage"), ("optimizer.bin", "truncate"),
    ("optimizer.bin", "flip"), ("random_states_0.pkl", "truncate"),
])
def test_resume_from_a_damaged_checkpoint_names_the_file(tmp_path, file, damage):
    run = _toy_run(tmp_path)
    path = run / "checkpoints" / "last" / file
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(bytes(range(256)) * 4)
    else:  # one flipped byte in the middle: a zip member's checksum no longer matches
        data = bytearray(data)
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.raises(ValueError) as error:
        make_toy_trainer(run, max_steps=12, resume=True).fit()
    message = str(error.value)
    assert message.startswith(f"--resume: {path} is damaged (") and "other settings" not in message


def test_resume_from_a_truncated_sr_checkpoint_is_one_line(sr_data, tmp_path, capsys):
    from tasks.sr import train as sr_train

    sr_train.main(_sr_argv(sr_data, tmp_path, "--max-steps", "2", "--eval-every", "2"))
    weights = tmp_path / "run" / "checkpoints" / "last" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    capsys.readouterr()
    line = error_line(cli_error(capsys, sr_train.main, _sr_argv(sr_data, tmp_path, "--max-steps", "3",
                                                                "--resume")))
    assert f"{weights} is damaged (not a complete safetensors file" in line


def _model_files(tmp_path: Path) -> dict[str, Path]:
    """A tiny SR model and a tiny classifier, saved as the trainer saves them (no training)."""
    from tasks.common.model_io import ModelDescription, save_model

    sr = ModelDescription("tasks.sr.model:srresnet", {"num_blocks": 1, "channels": 8}, "sr", {})
    classify = ModelDescription("tasks.classify.train:network_from_config",
                                {"arch": "resnet20", "dataset": "cifar100", "attention": "bam",
                                 "placement": "bottleneck", "num_classes": 10}, "classify",
                                {"dataset": "digits", "mean": [0.5] * 3, "std": [0.25] * 3, "image_size": 32})
    for name, description in (("sr", sr), ("classify", classify)):
        save_model(tmp_path / name, description.build(), description)
    return {"sr": tmp_path / "sr", "classify": tmp_path / "classify"}


def test_a_checkpoint_of_another_task_names_the_task_it_was_made_for(sr_data, tmp_path, capsys):
    from tasks.analysis import selectivity
    from tasks.sr import evaluate as sr_evaluate
    from tasks.sr import upscale as sr_upscale

    files = _model_files(tmp_path)
    made_for = f"{files['classify'] / 'network.json'} holds a model made for the 'classify' task"
    line = error_line(cli_error(capsys, sr_upscale.main, ["--checkpoint", str(files["classify"]), "--input",
                                                          str(sr_data["bench"]), "--output-dir", str(tmp_path / "up")]))
    assert made_for in line and "takes models of the 'sr' task" in line
    line = error_line(cli_error(capsys, sr_evaluate.main, ["--checkpoint", str(files["classify"]), "--sets",
                                                           str(sr_data["bench"]), "--device", "cpu"]))
    assert made_for in line and "takes models of the 'sr' task" in line
    line = error_line(cli_error(capsys, selectivity.main, ["--checkpoint", str(files["sr"])]))
    assert "made for the 'sr' task" in line and "takes models of the 'classify' task" in line


# -- 6. read-only or full output folders ----------------------------------------------------------------
@pytest.fixture()
def read_only(monkeypatch):
    """Make folders unwritable: permission bits, and for root (who ignores them) a refusing probe."""
    import os
    import tempfile

    folders: list[Path] = []
    real_mkstemp = tempfile.mkstemp

    def refusing_mkstemp(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own name
        if dir is not None and any(Path(dir).resolve().is_relative_to(f.resolve()) for f in folders):
            raise PermissionError(13, "Permission denied", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refusing_mkstemp)

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o555)
        folders.append(folder)
        return folder

    yield make
    for folder in folders:
        os.chmod(folder, 0o755)


def _never(what: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} ran before the output folder was checked")
    return fail


def test_read_only_output_folder_stops_before_any_work(sr_data, tmp_path, read_only, monkeypatch, capsys):
    from tasks.classify import train as classify_train
    from tasks.sr import train as sr_train
    from tasks.sr import upscale as sr_upscale

    locked = read_only(tmp_path / "locked")
    monkeypatch.setattr(sr_train.SRTask, "data", _never("loading the SR data"))
    line = error_line(cli_error(capsys, sr_train.main, _sr_argv(sr_data, locked, "--max-steps", "2")))
    assert line == f"error: --output-dir {locked} is not writable (Permission denied): choose another folder or " \
                   "fix its permissions"
    monkeypatch.setattr(classify_train.ClassifyTask, "data", _never("loading the digits"))
    argv = ["--output-dir", str(locked / "classify"), "--max-steps", "2", "--wandb", "disabled"]
    assert f"--output-dir {locked / 'classify'} is not writable" in error_line(
        cli_error(capsys, classify_train.main, argv))
    monkeypatch.setattr("tasks.common.model_io.load_model", _never("loading the model"))
    argv = ["--checkpoint", str(tmp_path / "any"), "--input", str(sr_data["bench"]), "--output-dir", str(locked / "x4")]
    assert f"--output-dir {locked / 'x4'} is not writable" in error_line(cli_error(capsys, sr_upscale.main, argv))


def test_too_little_free_space_is_found_before_training(sr_data, tmp_path, monkeypatch, capsys):
    from collections import namedtuple

    from tasks.sr import train as sr_train

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("tasks.utils.files.shutil.disk_usage", lambda path: usage(2**30, 2**30 - 2**20, 2**20))
    monkeypatch.setattr("tasks.common.trainer.Trainer.fit", _never("training"))
    line = error_line(cli_error(capsys, sr_train.main, _sr_argv(sr_data, tmp_path, "--max-steps", "2")))
    assert line.startswith(f"error: the run folder {tmp_path / 'run'} has 1 MB free, fewer than the ")
    assert "needed for a checkpoint" in line


def _fill_the_disk_at_save(monkeypatch, failing_call: int) -> None:
    """Accelerate's model.safetensors write fails as a full disk makes it fail, at call ``failing_call``."""
    import accelerate.utils.other
    from safetensors import SafetensorError

    real = accelerate.utils.other.safe_save_file
    calls = {"n": 0}

    def save_file(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == failing_call:
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                  'message: "No space left on device" })')
        return real(*args, **kwargs)

    monkeypatch.setattr(accelerate.utils.other, "safe_save_file", save_file)


def test_disk_full_during_a_save_says_where_the_last_good_checkpoint_is(sr_data, tmp_path, monkeypatch, capsys):
    from tasks.common.checkpoint import read_trainer_state
    from tasks.sr import train as sr_train

    _fill_the_disk_at_save(monkeypatch, failing_call=2)  # the save at step 2 works, the one at step 4 does not
    argv = _sr_argv(sr_data, tmp_path, "--max-steps", "4", "--eval-every", "2")
    line = error_line(cli_error(capsys, sr_train.main, argv))
    last = tmp_path / "run" / "checkpoints" / "last"
    assert line.startswith(f"error: could not write the checkpoint {last} at step 4 (SafetensorError: ")
    assert "No space left on device" in line
    assert line.endswith(f"the last complete checkpoint is {last} (step 2); make room and continue it with --resume")
    assert read_trainer_state(last)["step"] == 2 and not (last.parent / "last.tmp").exists()
    monkeypatch.undo()  # room again: the run continues from step 2
    [summary] = sr_train.main([*argv, "--resume"])
    assert summary["steps"] == 4 and summary["status"] == "completed"


def test_disk_full_while_upscaling_keeps_the_images_written(sr_data, tmp_path, monkeypatch, capsys):
    from tasks.sr import upscale as sr_upscale
    from tasks.utils.files import write_png_atomic

    written = []

    def fill_up(path, image):
        if written:
            raise OSError(28, "No space left on device")
        written.append(write_png_atomic(path, image))

    monkeypatch.setattr(sr_upscale, "write_png_atomic", fill_up)
    files = _model_files(tmp_path)
    out = tmp_path / "x4"
    line = error_line(cli_error(capsys, sr_upscale.main, ["--checkpoint", str(files["sr"]), "--input",
                                                          str(sr_data["bench"]), "--output-dir", str(out)]))
    assert line == f"error: could not write {out / 'crop1.png'} (No space left on device); the 1 image(s) before " \
                   f"it are complete in {out}"
    assert written == [out / "crop0.png"] and Image.open(written[0]).size == (144, 144)


# -- 5. annotations checked before training; a failing evaluation keeps the trained steps ---------------
def test_coco_validation_boxes_without_area_stop_before_the_first_step(tmp_path, write_tiny_coco, monkeypatch,
                                                                       capsys):
    pytest.importorskip("pycocotools")
    from tasks.detect import train as detect_train

    root = tmp_path / "data"
    write_tiny_coco(root, "train", seed=1)
    write_tiny_coco(root, "val", seed=2)
    val = root / "coco" / "annotations" / "instances_val2017.json"
    content = json.loads(val.read_text())
    for annotation in content["annotations"]:
        annotation.pop("area")
    val.write_text(json.dumps(content))
    monkeypatch.setattr("tasks.common.trainer.Trainer.fit", _never("training"))
    argv = ["--data-root", str(root), "--output-dir", str(tmp_path / "runs"), "--max-steps", "2", "--batch-size", "2",
            "--min-size", "128", "--max-size", "128", "--num-workers", "0", "--wandb", "disabled"]
    line = error_line(cli_error(capsys, detect_train.main, argv))
    assert line.startswith(f"error: {val}, image id 1: annotation 1 has no 'area' (COCO evaluation needs")


def test_a_failing_final_evaluation_keeps_the_trained_steps(tmp_path):
    from tasks.common.checkpoint import read_trainer_state

    scores = mae_evaluate(NoisyLinearData())

    def evaluate(model, accelerator, step):
        if step == 8:  # e.g. ground truth the metric cannot read, found only now
            raise KeyError("area")
        return scores(model, accelerator, step)

    run = tmp_path / "run"
    with pytest.raises(KeyError) as error:
        make_toy_trainer(run, max_steps=8, eval_every=5, evaluate_fn=evaluate).fit()
    last = run / "checkpoints" / "last"
    assert read_trainer_state(last)["step"] == 8  # written although the evaluation failed
    assert error.value.__notes__ == [f"(evaluation at step 8 failed; the weights of step 8 are saved in {last}: fix "
                                     "the cause and run the same command with --resume to evaluate them)"]
    summary = make_toy_trainer(run, max_steps=8, eval_every=5, resume=True).fit()  # the cause fixed: only evaluates
    assert summary["steps"] == 8 and summary["final"]["count"] == 37 and summary["status"] == "completed"


# -- 7. optimiser options given with --resume ------------------------------------------------------------
def _toy_trainer(run: Path, lr: float, schedule: str, max_steps: int, resume: bool = False, momentum: float = 0.9,
                 stop_at: int | None = None):
    """A small regression run whose options include the optimiser's (as --lr and --momentum are);
    ``stop_at`` ends it early (as a kill would) on a schedule made for ``max_steps``."""
    from accelerate.utils import set_seed
    from torch import nn
    from torch.utils.data import DataLoader

    from tasks.common.trainer import TrainConfig, Trainer, loss_step
    from tasks.data.sampling import EpochSeededSampler

    set_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    schedulers = {
        "step": lambda: torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5),
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max_steps, eta_min=lr / 100),
        "one-cycle": lambda: torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max_steps),
    }
    data = NoisyLinearData()
    loader = DataLoader(data, batch_size=5, sampler=EpochSeededSampler(len(data), 0))
    settings = TrainConfig(max_steps=stop_at or max_steps, eval_every=4, best_metric="mae", best_mode="min",
                           resume=resume, log_every=1, progress=False, task="toy")
    return Trainer(model, optimizer, loader, loss_step(lambda m, b: nn.functional.mse_loss(m(b[0]), b[1])), settings, run,
                   evaluate_fn=mae_evaluate(data), scheduler=schedulers[schedule](),
                   config={"lr": lr, "momentum": momentum})


def _logged_rates(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["lr"] for row in rows if row["split"] == "train"}


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_a_new_rate_on_resume_is_applied_and_recorded(tmp_path, schedule, capsys):
    _toy_trainer(tmp_path / "fresh", lr=0.02, schedule=schedule, max_steps=10).fit()
    _toy_trainer(tmp_path / "run", lr=0.01, schedule=schedule, max_steps=10, stop_at=4).fit()
    capsys.readouterr()
    summary = _toy_trainer(tmp_path / "run", lr=0.02, schedule=schedule, max_steps=10, momentum=0.5,
                           resume=True).fit()
    note = next(line for line in capsys.readouterr().err.splitlines()
                if line.startswith("note: --resume with other optimiser settings"))
    assert "momentum 0.9 -> 0.5" in note and "lr 0.01 -> 0.02" in note and note.endswith(
        "from step 4 on (recorded in config.json as optimizer_changes)")
    changes = [{"step": 4, "changed": {"momentum": [0.9, 0.5], "lr": [0.01, 0.02]}}]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["optimizer_changes"] == changes and config["lr"] == 0.02
    assert summary["config"]["optimizer_changes"] == changes
    # From the resumed step on, the schedule is the one a run started at the new rate follows.
    resumed, fresh = _logged_rates(tmp_path / "run"), _logged_rates(tmp_path / "fresh")
    assert [resumed[s] for s in range(1, 5)] == pytest.approx([fresh[s] / 2 for s in range(1, 5)], rel=1e-12)
    assert [resumed[s] for s in range(5, 11)] == pytest.approx([fresh[s] for s in range(5, 11)], rel=1e-12)
    # A second resume without changes keeps the record of the first one.
    _toy_trainer(tmp_path / "run", lr=0.02, schedule=schedule, max_steps=12, momentum=0.5, resume=True).fit()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["optimizer_changes"] == changes


def test_a_new_rate_under_a_schedule_that_cannot_take_it_is_refused(tmp_path):
    _toy_trainer(tmp_path / "run", lr=0.01, schedule="one-cycle", max_steps=10, stop_at=4).fit()
    # (OneCycleLR starts at max_lr / 25: 0.0004 for 0.01)
    with pytest.raises(ValueError, match=r"--resume: this run asks for a learning rate of 0.0008, but .*last was "
                                         r"trained with 0.0004 and its OneCycleLR schedule cannot take a new rate"):
        _toy_trainer(tmp_path / "run", lr=0.02, schedule="one-cycle", max_steps=10, resume=True).fit()
    # The same options as before resume as ever.
    assert _toy_trainer(tmp_path / "run", lr=0.01, schedule="one-cycle", max_steps=10, resume=True).fit()["steps"] == 10


def test_sr_lr_on_resume_is_the_rate_used_and_recorded(sr_data, tmp_path):
    from tasks.sr import train as sr_train

    common = ("--eval-every", "2", "--lr-schedule", "constant")
    sr_train.main(_sr_argv(sr_data, tmp_path, "--max-steps", "2", *common, "--lr", "0.001"))
    sr_train.main(_sr_argv(sr_data, tmp_path, "--max-steps", "4", *common, "--lr", "0.0005", "--resume"))
    run = tmp_path / "run"
    assert _logged_rates(run) == {1: 0.001, 2: 0.001, 3: 0.0005, 4: 0.0005}
    config = json.loads((run / "config.json").read_text())
    assert config["lr"] == 0.0005 and config["optimizer_changes"] == [{"step": 2, "changed": {"lr": [0.001, 0.0005]}}]


# -- docs/reliability.md ---------------------------------------------------------------------------------
def test_every_row_of_the_reliability_table_names_tests_that_exist():
    import re

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "docs" / "reliability.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| fault")]
    assert len(rows) >= 20
    for row in rows:
        named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", row.rsplit("|", 2)[-2])
        assert named, f"a row without a test: {row[:80]}"
        for file, name in named:
            assert re.search(rf"^def {name}\(", (repo / file).read_text(), re.M), f"{file}::{name} does not exist"
    for file, name in re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text):  # the ones below the table too
        assert re.search(rf"^def {name}\(", (repo / file).read_text(), re.M), f"{file}::{name} does not exist"
