"""A resumed run is the same run: options that change the network, the data, the loss or the seed
are refused with one line naming the option and the checkpoint's value; schedule length, cadence
and optimiser settings may change and are recorded. One process at a time trains into a run
folder, and no run carries the name of a module it does not hold."""

from __future__ import annotations

import json

import pytest

from tasks.common.stopping import RunLock
from tasks.sr import train as sr_train
from conftest import SR_TINY, cli_error, error_line


def _argv(sr_crops, out, *extra):
    return [*SR_TINY, "--train-dir", str(sr_crops["train"]), "--sets", str(sr_crops["bench"]),
            "--output-dir", str(out), "--run-name", "run", "--wandb", "disabled", "--num-pictures", "0",
            "--max-steps", "2", "--eval-every", "0", *extra]


@pytest.fixture
def finished(sr_crops, tmp_path):
    sr_train.main(_argv(sr_crops, tmp_path))
    return tmp_path


@pytest.mark.parametrize("option,field,old", [
    (["--global-residual"], "model.global_residual", "False"),
    (["--seed", "5"], "seed", "3"),
    (["--loss", "mse"], "loss", "'l1'"),
    (["--patch-size", "32"], "patch_size", "24"),
    (["--preset", "t91"], "preset", "'quick'"),
])
def test_a_change_to_the_network_data_loss_or_seed_is_refused(sr_crops, finished, capsys, option, field, old):
    config = (finished / "run" / "config.json").read_text()
    line = error_line(cli_error(capsys, sr_train.main, _argv(sr_crops, finished, "--resume", "--max-steps", "4",
                                                              *option)))
    assert f"would change {field} from {old}" in line and "checkpoints/last" in line
    assert (finished / "run" / "config.json").read_text() == config  # the record is not rewritten
    assert json.loads((finished / "run" / "summary.json").read_text())["steps"] == 2


def test_length_cadence_and_rate_may_change_and_are_recorded(sr_crops, finished):
    [summary] = sr_train.main(_argv(sr_crops, finished, "--resume", "--max-steps", "4", "--eval-every", "2",
                                    "--lr", "1e-4"))
    config = json.loads((finished / "run" / "config.json").read_text())
    assert summary["steps"] == 4
    assert config["resume_changes"] == [{"step": 2, "changed": {"eval_every": [0, 2], "max_steps": [2, 4]}}]
    assert config["optimizer_changes"][0]["changed"]["lr"] == [2e-4, 1e-4]


def test_two_processes_cannot_train_into_one_run_folder(sr_crops, finished, capsys):
    holder = RunLock(finished / "run")
    holder.acquire()  # another process, as far as the lock can tell: a second open file description
    try:
        argv = _argv(sr_crops, finished, "--resume", "--max-steps", "4")
        line = error_line(cli_error(capsys, sr_train.main, argv))
    finally:
        holder.release()
    assert f"{finished / 'run'} is in use" in line and "is training into it" in line
    [summary] = sr_train.main(_argv(sr_crops, finished, "--resume", "--max-steps", "4"))  # free again
    assert summary["steps"] == 4


def test_a_run_named_after_bam_holds_bam(sr_crops, tmp_path, capsys):
    argv = _argv(sr_crops, tmp_path, "--num-blocks", "2", "--attention-interval", "4", "--attention", "none", "bam")
    line = error_line(cli_error(capsys, sr_train.main, argv))
    assert "--attention bam" in line and "holds no bam module" in line
    assert not (tmp_path / "run-none").exists()  # refused before the pair's first run trained
