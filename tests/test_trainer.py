"""The shared trainer: exact resume, NaN stop, best checkpoint, run files, CLI, multi-process eval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

from tasks.common.checkpoint import read_trainer_state
from tasks.data.sampling import EpochSeededSampler, sample_seed, split_key
from tasks.common.summary import load_summary
from tasks.common.trainer import NonFiniteLossError
from conftest import free_port, make_toy_trainer, read_metrics, reset_accelerate_state, trainer_weights

REPO = Path(__file__).resolve().parents[1]


# -- sampler ----------------------------------------------------------------------------------------
def test_epoch_seeded_sampler_is_a_pure_function_of_seed_and_epoch():
    sampler = EpochSeededSampler(11, seed=3)
    first = list(sampler)
    assert sorted(i for i, _ in first) == list(range(11))  # a permutation: every index once
    again = EpochSeededSampler(11, seed=3)
    assert list(again) == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert [i for i, _ in second] != [i for i, _ in first]  # reshuffled per epoch
    assert [s for _, s in EpochSeededSampler(11, seed=4)] != [s for _, s in first]
    # The sample seed depends on (seed, epoch, index) only, not on the position in the order.
    assert dict(second)[5] == sample_seed(3, 1, 5) != dict(first)[5] == sample_seed(3, 0, 5)
    assert [i for i, _ in EpochSeededSampler(5, seed=0, shuffle=False)] == [0, 1, 2, 3, 4]
    assert split_key((7, 99)) == (7, 99) and split_key(7) == (7, None)
    with pytest.raises(ValueError, match="non-empty"):
        EpochSeededSampler(0)


def test_seeded_dataset_makes_global_rng_augmentation_a_function_of_the_key():
    import random

    import numpy as np

    from tasks.data.sampling import SeededDataset

    class GlobalRandom(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return index, float(torch.rand(1)), float(np.random.rand()), random.random()

    data = SeededDataset(GlobalRandom())
    torch.manual_seed(5)
    before = torch.get_rng_state()
    first = data[(1, 42)]
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is untouched
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    assert data[(1, 42)] == first and data[(1, 43)] != first and first[0] == 1
    assert len(data) == 3 and data[2][0] == 2


# -- resume -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("global_rng_data", [False, True], ids=["sample-seeds", "global-rng-data"])
def test_resumed_run_reaches_bit_identical_weights(tmp_path, global_rng_data):
    make = lambda *args, **kwargs: make_toy_trainer(*args, global_rng_data=global_rng_data, **kwargs)  # noqa: E731
    straight = make(tmp_path / "straight")
    straight.fit()
    expected = trainer_weights(straight)

    def kill(call):  # the process dies during step 13; the last checkpoint is step 10 (mid-epoch)
        if call == 13:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make(tmp_path / "resumed", loss_hook=kill).fit()
    assert read_trainer_state(tmp_path / "resumed" / "checkpoints" / "last")["step"] == 10
    resumed = make(tmp_path / "resumed", resume=True)
    summary = resumed.fit()
    got = trainer_weights(resumed)

    assert resumed.steps_per_epoch == 8 and summary["steps"] == 20
    assert resumed.tracker.run_id == read_trainer_state(tmp_path / "resumed" / "checkpoints" / "last")["tracker_run_id"]
    initial = trainer_weights(make(tmp_path / "unused", max_steps=1))
    assert any(not torch.equal(expected[k], initial[k]) for k in expected)  # training moved the weights
    # Augmentation noise is fresh for every sample (training: 20 steps x 5 samples; eval adds none
    # in the global-RNG case since evaluation runs on a fork).
    drawn = straight.train_loader.dataset.drawn
    assert len(set(drawn)) == len(drawn) >= 100
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    # Evaluations after the resume point are identical too, and the history has no duplicates.
    evals = lambda run: [(m["step"], m["mae"]) for m in read_metrics(tmp_path / run) if m["split"] == "eval"]
    assert evals("straight") == evals("resumed") and [s for s, _ in evals("resumed")] == [5, 10, 15, 20]
    train_steps = [m["step"] for m in read_metrics(tmp_path / "resumed") if m["split"] == "train"]
    assert train_steps == sorted(set(train_steps))


def test_a_task_takes_its_own_step_with_a_second_loss_term_and_network(tmp_path):
    """The step belongs to the task: a second loss term from a second network with its own
    optimiser (here a critic of the outputs, as a GAN's discriminator would be) needs nothing of
    the shared loop but TrainingStep's backward and update, and its state is checkpointed."""
    critic = nn.Linear(1, 1)
    critic_optimizer = torch.optim.SGD(critic.parameters(), lr=0.1)

    class Critic:  # what the trainer keeps for the step: a state dict of tensors
        def state_dict(self):
            return critic.state_dict()

        def load_state_dict(self, state):
            critic.load_state_dict(state)

    def step(run, batch):
        x, y = batch
        prediction = run.model(x)
        pixel = nn.functional.mse_loss(prediction, y)
        adversarial = critic(prediction).mean()
        run.backward(pixel + 0.01 * adversarial)
        logs = run.update()
        critic_optimizer.zero_grad()  # the generator's step left gradients in the critic
        run.backward(-critic(prediction.detach()).mean())
        run.update(critic_optimizer)
        return {**logs, "pixel": pixel.item(), "adversarial": adversarial.item()}

    trainer = make_toy_trainer(tmp_path / "run", max_steps=6, eval_every=3)
    before = critic.weight.detach().clone()
    trainer.state, trainer.step_fn = {"critic": Critic()}, step
    trainer.fit()
    assert not torch.equal(critic.weight, before)  # the second network trained too
    logged = [m for m in read_metrics(tmp_path / "run") if m["split"] == "train"][-1]
    assert {"pixel", "adversarial", "loss"} <= set(logged)
    saved = load_file(str(tmp_path / "run" / "checkpoints" / "last" / "critic.safetensors"))
    assert torch.equal(saved["weight"], critic.weight.detach())


def test_data_loading_does_not_touch_the_training_rng(tmp_path):
    # Loading draws from its own stream: the global RNG seen by training is unaffected by it.
    # No dropout: training draws only the randn(7) below, so its stream is predictable at every
    # step (10 steps: more than one epoch of 8 batches, so the epoch change is covered too).
    trainer = make_toy_trainer(tmp_path / "run", max_steps=10, global_rng_data=True, eval_every=4, dropout=0.0)
    states = []
    original = trainer.loss_fn

    def loss_fn(model, batch):
        states.append(torch.get_rng_state().clone())
        torch.randn(7)  # training consumes its own stream
        return original(model, batch)

    trainer.loss_fn = loss_fn
    trainer.fit()
    torch.manual_seed(0)  # set_seed(0) on process 0 is what the trainer starts training from
    expected = []
    for _ in range(10):
        expected.append(torch.get_rng_state().clone())
        torch.randn(7)
    assert len(states) == 10 and all(torch.equal(a, b) for a, b in zip(states, expected))
    assert len(set(trainer.train_loader.dataset.drawn)) >= 50  # and the data set did draw from the global RNG


def test_data_loading_stream_is_not_the_shuffling_stream():
    # The global RNG that data loading runs on must not replay the draws that shuffled the epoch.
    from tasks.common.rng import DataRNG

    stream = DataRNG(3, 0)
    with stream.active():
        drawn = torch.randperm(50).numpy()
    assert list(drawn) != list(EpochSeededSampler(50, seed=3).order())


def test_different_seed_gives_different_weights(tmp_path):
    # Guards the test above: the data order and dropout really depend on the seed.
    first = make_toy_trainer(tmp_path / "a", max_steps=6, seed=0)
    first.fit()
    reset_accelerate_state()
    second = make_toy_trainer(tmp_path / "b", max_steps=6, seed=1)
    second.fit()
    a, b = trainer_weights(first), trainer_weights(second)
    assert any(not torch.equal(a[k], b[k]) for k in a)


# -- non-finite loss ------------------------------------------------------------------------------
def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    saved = {}

    def evaluate(model, accelerator, step):
        saved["weights"] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"mae": 1.0}

    trainer = make_toy_trainer(run_dir, evaluate_fn=evaluate)
    original_loss, calls = trainer.loss_fn, [0]

    def diverging_loss(model, batch):  # the 7th step's loss is NaN
        calls[0] += 1
        loss, extras = original_loss(model, batch)
        return (loss * float("nan") if calls[0] == 7 else loss), extras

    trainer.loss_fn = diverging_loss

    with pytest.raises(NonFiniteLossError) as error:
        trainer.fit()
    message = str(error.value)
    assert "step 7" in message and "nan" in message and "learning rate" in message
    assert str(run_dir / "checkpoints" / "last") in message

    last = run_dir / "checkpoints" / "last"
    assert read_trainer_state(last)["step"] == 5
    stored = load_file(str(last / "model.safetensors"))
    for key, value in saved["weights"].items():
        assert torch.equal(stored[key], value)
        assert torch.isfinite(stored[key]).all()
    summary = load_summary(run_dir)
    assert summary["status"] == "failed: non-finite loss" and summary["steps"] == 6


def test_non_finite_gradient_stops_before_the_weights_change(tmp_path):
    trainer = make_toy_trainer(tmp_path / "run", max_steps=6, grad_clip=1.0, eval_every=2)
    original_loss, calls = trainer.loss_fn, [0]

    def bad_gradient(model, batch):  # sqrt at 0: the loss is finite (0) but its gradient is not
        calls[0] += 1
        if calls[0] == 3:
            out = model(batch[0])
            return torch.sqrt(((out - out.detach()) ** 2).sum())
        return original_loss(model, batch)

    trainer.loss_fn = bad_gradient
    with pytest.raises(NonFiniteLossError, match="non-finite gradient norm \\(nan\\) at step 3"):
        trainer.fit()
    assert all(torch.isfinite(v).all() for v in trainer_weights(trainer).values())
    assert read_trainer_state(tmp_path / "run" / "checkpoints" / "last")["step"] == 2


def test_non_finite_weights_never_replace_the_last_good_checkpoint(tmp_path):
    # No gradient clipping: a finite loss with a NaN gradient poisons the weights unseen; the save
    # that follows (step 4 is a checkpoint step) must stop the run instead of overwriting `last`.
    trainer = make_toy_trainer(tmp_path / "run", max_steps=6, eval_every=2)
    original_loss, calls = trainer.loss_fn, [0]

    def bad_gradient(model, batch):
        calls[0] += 1
        if calls[0] == 4:
            out = model(batch[0])
            return torch.sqrt(((out - out.detach()) ** 2).sum())  # 0, with a NaN gradient
        return original_loss(model, batch)

    trainer.loss_fn = bad_gradient
    with pytest.raises(NonFiniteLossError, match="non-finite weights after step 4 \\(0.weight, 0.bias, 3.weight "
                                                 "and 1 more\\).*gradient clipping; the last good checkpoint"):
        trainer.fit()
    assert not all(torch.isfinite(v).all() for v in trainer_weights(trainer).values())  # the weights really broke
    last = tmp_path / "run" / "checkpoints" / "last"
    assert read_trainer_state(last)["step"] == 2
    assert all(torch.isfinite(v).all() for v in load_file(str(last / "model.safetensors")).values())
    assert load_summary(tmp_path / "run")["status"] == "failed: non-finite loss"


# -- best checkpoint --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, best_step", [("max", 4), ("min", 2)])
def test_best_checkpoint_follows_the_metric_and_mode(tmp_path, mode, best_step):
    scores = iter([1.0, 3.0, 2.0])
    snapshots = {}

    def evaluate(model, accelerator, step):
        score = next(scores)
        snapshots[score] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"score": score, "other": -score}

    trainer = make_toy_trainer(tmp_path / "run", max_steps=6, eval_every=2, evaluate_fn=evaluate,
                           best_metric="score", best_mode=mode)
    summary = trainer.fit()
    best_score = {2: 1.0, 4: 3.0}[best_step]
    assert summary["best_step"] == best_step
    assert summary["best"] == {"score": best_score, "other": -best_score}
    assert summary["final"] == {"score": 2.0, "other": -2.0}
    checkpoints = tmp_path / "run" / "checkpoints"
    assert read_trainer_state(checkpoints / "best")["step"] == best_step
    assert read_trainer_state(checkpoints / "last")["step"] == 6
    stored = load_file(str(checkpoints / "best" / "model.safetensors"))
    assert all(torch.equal(stored[k], v) for k, v in snapshots[best_score].items())
    assert not (checkpoints / "best.tmp").exists() and not (checkpoints / "last.old").exists()


def test_resume_restores_a_best_checkpoint_that_a_kill_left_behind(tmp_path):
    scores = iter([1.0, 2.0, 3.0])

    def evaluate(model, accelerator, step):
        return {"score": next(scores, 3.0)}

    make_toy_trainer(tmp_path / "run", max_steps=6, eval_every=2, evaluate_fn=evaluate, best_metric="score",
                 best_mode="max").fit()
    checkpoints = tmp_path / "run" / "checkpoints"
    import shutil

    # Killed after `last` (step 6, recorded as the best) was written, before `best` was updated.
    shutil.rmtree(checkpoints / "best")
    shutil.copytree(checkpoints / "last", checkpoints / "best")
    state = read_trainer_state(checkpoints / "best")
    (checkpoints / "best" / "trainer_state.json").write_text(json.dumps({**state, "step": 4}))
    reset_accelerate_state()
    summary = make_toy_trainer(tmp_path / "run", max_steps=6, eval_every=2, evaluate_fn=evaluate, best_metric="score",
                           best_mode="max", resume=True).fit()
    assert summary["best_step"] == 6 and read_trainer_state(checkpoints / "best")["step"] == 6


def test_per_class_metrics_reach_the_summary_but_not_the_history(tmp_path):
    def evaluate(model, accelerator, step):
        return {"miou": torch.tensor(0.25), "iou_per_class": torch.tensor([0.5, 0.0]), "pixel_acc": 0.75}

    summary = make_toy_trainer(tmp_path / "run", max_steps=2, eval_every=2, evaluate_fn=evaluate,
                           best_metric="miou").fit()
    assert summary["final"] == {"miou": 0.25, "iou_per_class": [0.5, 0.0], "pixel_acc": 0.75}
    assert summary["best"] == summary["final"]
    evals = [r for r in read_metrics(tmp_path / "run") if r["split"] == "eval"]
    assert evals == [{"step": 2, "split": "eval", "miou": 0.25, "pixel_acc": 0.75}]
    markdown = (tmp_path / "run" / "summary.md").read_text()
    assert "| **miou** | 0.2500 | 0.2500 |" in markdown and "iou_per_class" not in markdown


def test_unknown_best_metric_is_a_clear_error(tmp_path):
    trainer = make_toy_trainer(tmp_path / "run", max_steps=2, eval_every=2, best_metric="psnr")
    with pytest.raises(ValueError, match="best_metric 'psnr' is not among the evaluation metrics \\(mae, count\\)"):
        trainer.fit()


def test_a_bad_grad_clip_is_named(tmp_path):
    # The other settings come from options that argparse checks (positive_int, choices).
    with pytest.raises(ValueError, match="--grad-clip must be positive, got 0.0"):
        make_toy_trainer(tmp_path / "run", grad_clip=0.0)


# -- run files --------------------------------------------------------------------------------------
def test_run_writes_config_metrics_and_summary(tmp_path):
    run_dir = tmp_path / "run"
    from tasks.common.model_io import DESCRIPTION_FILE, WEIGHTS_FILE, ModelDescription

    description = ModelDescription("tasks.sr.model:srresnet", {"num_blocks": 1}, "toy")
    trainer = make_toy_trainer(run_dir, max_steps=6, eval_every=3, grad_clip=1.0, description=description)
    started = time.perf_counter()
    summary = trainer.fit()
    took = time.perf_counter() - started

    config = json.loads((run_dir / "config.json").read_text())
    assert config["arch"] == "mlp" and config["max_steps"] == 6 and config["seed"] == 0
    records = read_metrics(run_dir)
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [3, 6]
    assert {"loss", "lr", "abs_mean", "grad_norm", "samples_per_s", "steps_per_s"} <= set(train[0])
    assert all(r["samples_per_s"] / r["steps_per_s"] == pytest.approx(5) for r in train)  # batch 5
    assert train[0]["lr"] == pytest.approx(1e-2) and train[1]["lr"] == pytest.approx(1e-2)
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6] and all(r["count"] == 37 for r in evals)

    expected_keys = {"task", "name", "group", "arch", "attention", "dataset", "seed", "config", "git_commit",
                     "hardware", "params", "macs", "final", "best", "best_step", "steps", "wall_time_s",
                     "history_file", "primary_metric", "primary_mode", "status"}
    assert expected_keys <= set(summary)
    assert load_summary(run_dir) == json.loads(json.dumps(summary))
    assert summary["params"] == 4 * 16 + 16 + 16 + 1
    assert summary["final"]["mae"] == evals[-1]["mae"] and summary["status"] == "completed"
    assert summary["primary_metric"] == "mae" and summary["primary_mode"] == "min"
    assert 0 < summary["wall_time_s"] <= took  # the run's own time, whatever the machine's speed
    markdown = (run_dir / "summary.md").read_text()
    assert "| **mae** |" in markdown and "| status | completed |" in markdown and "## Config" in markdown
    # Every checkpoint holds the network file for the evaluation tools, written before it is complete.
    for name in ("last", "best"):
        folder = run_dir / "checkpoints" / name
        assert json.loads((folder / DESCRIPTION_FILE).read_text())["builder"] == "tasks.sr.model:srresnet"
        stored = load_file(str(folder / WEIGHTS_FILE))
        assert stored.keys() == load_file(str(folder / "model.safetensors")).keys()
    final = load_file(str(run_dir / "checkpoints" / "last" / WEIGHTS_FILE))
    assert all(torch.equal(final[k], v) for k, v in trainer_weights(trainer).items())


def test_resume_into_another_network_names_the_checkpoint(tmp_path):
    make_toy_trainer(tmp_path / "run", max_steps=2, eval_every=2).fit()
    reset_accelerate_state()
    last = tmp_path / "run" / "checkpoints" / "last"
    with pytest.raises(ValueError, match=f"--resume: {last} does not fit this run's model.*size mismatch"):
        make_toy_trainer(tmp_path / "run", max_steps=4, eval_every=2, resume=True, hidden=8).fit()


def test_wall_time_accumulates_across_resumes(tmp_path):
    first = make_toy_trainer(tmp_path / "run", max_steps=4, eval_every=4)
    first.fit()
    state = read_trainer_state(tmp_path / "run" / "checkpoints" / "last")
    state["wall_time_s"] = 1000.0  # pretend the first segment took long
    (tmp_path / "run" / "checkpoints" / "last" / "trainer_state.json").write_text(json.dumps(state))
    reset_accelerate_state()
    resumed = make_toy_trainer(tmp_path / "run", max_steps=6, eval_every=4, resume=True)
    started = time.perf_counter()
    summary = resumed.fit()
    took = time.perf_counter() - started
    # the stored 1000 s plus this segment's own time, whatever the machine's speed
    assert summary["steps"] == 6 and 1000.0 < summary["wall_time_s"] <= 1000.0 + took


# -- CLI --------------------------------------------------------------------------------------------
def test_run_args_and_run_dir(tmp_path):
    import argparse

    from tasks.common.cli import add_run_args, run_dir_for

    parser = add_run_args(argparse.ArgumentParser(), defaults={"max_steps": 100, "eval_every": 10})
    args = parser.parse_args(["--output-dir", str(tmp_path)])
    assert (args.max_steps, args.eval_every, args.resume, args.wandb, args.mixed_precision) == (100, 10, False, "auto", None)
    assert args.wandb_project == "bam" and args.seed == 0 and args.data_root is None
    assert parser.parse_args(["--resume"]).resume is True
    assert parser.parse_args(["--resume", "runs/x"]).resume == "runs/x"
    with pytest.raises(SystemExit):
        parser.parse_args(["--mixed-precision", "fp8"])

    assert run_dir_for(args, "srresnet") == tmp_path / "srresnet"
    (tmp_path / "srresnet").mkdir()
    (tmp_path / "srresnet" / "summary.json").write_text("{}")
    assert run_dir_for(args, "srresnet") == tmp_path / "srresnet-2"  # never overwrite a run silently
    args.resume = True
    assert run_dir_for(args, "srresnet") == tmp_path / "srresnet"
    args.resume = str(tmp_path / "other" / "checkpoints" / "last")
    assert run_dir_for(args, "srresnet") == tmp_path / "other"


def test_mixed_precision_setting(monkeypatch):
    from tasks.common.distributed import make_accelerator

    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        make_accelerator("fp16", cpu=True)
    with pytest.raises(ValueError, match="must be no, fp16 or bf16, got 'fp8'"):
        make_accelerator("fp8")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    assert make_accelerator(None, cpu=True).mixed_precision == "bf16"
    # One process, a second command with another precision (a notebook): a fresh Accelerate state.
    assert make_accelerator("no", cpu=True).mixed_precision == "no"


def test_mixed_precision_trains_in_bf16_and_evaluates_in_float32(tmp_path):
    """Mixed precision is a training speed-up: the steps compute in bf16, but what is evaluated
    and saved computes in float32, from the first evaluation on (Accelerate's prepare() wraps
    the forward in autocast, and saving used to remove that wrapper only after the first one)."""
    from tasks.common.distributed import make_accelerator

    seen = {"train": set(), "eval": set()}

    def evaluate(model, accelerator, step):
        seen["eval"].add(model(torch.randn(3, 4)).dtype)
        return {"mae": float(step)}

    trainer = make_toy_trainer(tmp_path, max_steps=6, eval_every=3, evaluate_fn=evaluate,
                               accelerator=make_accelerator("bf16", cpu=True))
    toy_loss = trainer.loss_fn

    def loss_fn(model, batch):
        seen["train"].add(model(batch[0]).dtype)
        return toy_loss(model, batch)

    trainer.loss_fn = loss_fn
    trainer.fit()
    assert seen == {"train": {torch.bfloat16}, "eval": {torch.float32}}


def test_run_cli_turns_expected_errors_into_one_line(capsys):
    from tasks.common.cli import run_cli

    def bad_input():
        raise FileNotFoundError("missing folder: /data/sr/Set5")

    def diverged():
        raise NonFiniteLossError("non-finite training loss (nan) at step 3:\nlower the learning rate")

    for function, text in ((bad_input, "error: missing folder: /data/sr/Set5"),
                           (diverged, "error: non-finite training loss (nan) at step 3: lower the learning rate")):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(function)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip() == text
    assert run_cli(lambda x: x + 1, 1) == 2
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_cli(lambda: 1 / 0)


# -- two processes ------------------------------------------------------------------------------------
TWO_PROCESS_SCRIPT = """
import json
import sys
import torch
from torch.utils.data import DataLoader, Dataset
from tasks.common.distributed import prepare_eval_loader
from tasks.common.trainer import TrainConfig, Trainer, loss_step

class Numbers(Dataset):  # 37 items: an odd length, so the processes get uneven shares
    def __len__(self):
        return 37
    def __getitem__(self, index):
        return torch.tensor([float(index)]), torch.tensor(index)

def evaluate(model, accelerator, step):
    outputs, indices = [], []
    for x, index in prepare_eval_loader(accelerator, DataLoader(Numbers(), batch_size=4)):
        out, index = accelerator.gather_for_metrics((model(x), index))
        outputs.append(out), indices.append(index)
    outputs, indices = torch.cat(outputs), torch.cat(indices)
    return {"count": len(indices), "index_sum": int(indices.sum()), "unique": len(set(indices.tolist())),
            "output_sum": float(outputs.double().sum())}

model = torch.nn.Linear(1, 1)
with torch.no_grad():
    model.weight.fill_(0.5), model.bias.fill_(0.25)
optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # weights stay put: eval must match exactly
loader = DataLoader(Numbers(), batch_size=2, shuffle=True)
seen = []

def loss_fn(model, batch):
    seen.extend(batch[1].tolist())
    return model(batch[0]).mean()

# One epoch: 37 items in batches of 2 per process = 10 steps (the last ones padded from the start).
trainer = Trainer(model, optimizer, loader, loss_step(loss_fn), TrainConfig(max_steps=10, eval_every=10, progress=False),
                  sys.argv[1], evaluate_fn=evaluate)
trainer.fit()
from argparse import Namespace
from accelerate.utils import gather_object
from tasks.common.cli import run_dir_for
everything = gather_object([seen])
# The run folder name is decided once: "taken" exists, so every process must get "taken-2".
chosen = gather_object([str(run_dir_for(Namespace(output_dir=sys.argv[2], run_name=None, resume=False), "taken"))])
# A bad --resume path is found by the main process alone; every process must stop with its message.
try:
    Trainer(model, optimizer, loader, loss_step(loss_fn),
            TrainConfig(max_steps=1, progress=False, resume=sys.argv[2] + "/nowhere"), sys.argv[1] + "-again",
            accelerator=trainer.accelerator).fit()
    error = None
except FileNotFoundError as caught:
    error = str(caught)
errors = gather_object([error])
try:  # likewise a run folder that the main process cannot use: here a file in its place
    run_dir_for(Namespace(output_dir=sys.argv[2], run_name="a-file", resume=False), "taken")
    error = None
except NotADirectoryError as caught:
    error = str(caught)
errors += gather_object([error])
if trainer.accelerator.is_main_process:
    json.dump({"seen": everything, "run_dirs": chosen, "errors": errors}, open(sys.argv[1] + "/seen.json", "w"))
from tasks.common.distributed import shutdown_distributed
shutdown_distributed()
"""


@pytest.mark.slow
def test_two_processes_give_the_same_evaluation_as_one(tmp_path):
    script = tmp_path / "two_process.py"
    script.write_text(textwrap.dedent(TWO_PROCESS_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), str(script), str(tmp_path / "run"), str(tmp_path / "out")]
    (tmp_path / "out" / "taken").mkdir(parents=True)
    (tmp_path / "out" / "taken" / "summary.json").write_text("{}")
    (tmp_path / "out" / "a-file").write_text("not a folder")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = load_summary(tmp_path / "run")
    assert summary["hardware"]["num_processes"] == 2 and summary["config"]["num_processes"] == 2
    # One process would see every sample once: 37 items, indices 0..36, outputs 0.5 * i + 0.25.
    assert summary["final"] == {"count": 37, "index_sum": 666, "unique": 37,
                                "output_sum": pytest.approx(0.5 * 666 + 0.25 * 37, abs=1e-9)}
    # Training: both processes shuffle alike and take disjoint shares of one permutation.
    seen = json.loads((tmp_path / "run" / "seen.json").read_text())
    assert seen["run_dirs"] == [str(tmp_path / "out" / "taken-2")] * 2
    assert seen["errors"][:2] == [f"--resume: checkpoint not found: {tmp_path / 'out' / 'nowhere'}"] * 2
    assert len(seen["errors"]) == 4 and seen["errors"][2] == seen["errors"][3] and "a-file" in seen["errors"][2]
    first, second = seen["seen"]
    assert len(first) == len(second) == 20
    assert sorted(set(first + second)) == list(range(37)) and len(set(first) & set(second)) <= 3
    last = tmp_path / "run" / "checkpoints" / "last"
    assert (last / "random_states_0.pkl").is_file() and (last / "random_states_1.pkl").is_file()


def test_resume_with_another_length_warns_that_the_schedule_keeps_its_own(tmp_path, capsys):
    make_toy_trainer(tmp_path / "run", max_steps=10).fit()
    capsys.readouterr()
    make_toy_trainer(tmp_path / "run", max_steps=15, resume=True).fit()
    assert "run of 10 steps, this one has 15" in capsys.readouterr().err


def test_per_sample_results_stay_with_the_weights_they_scored(tmp_path):
    from tasks.common.per_sample import load_per_sample

    scores = iter([3.0, 1.0, 2.0])  # at steps 2, 4, 6: the best is step 2

    def evaluate(model, accelerator, step):
        score = next(scores)
        return {"score": score, "per_sample": {"score": torch.full((4,), score), "name": ["a", "b", "c", "d"]}}

    summary = make_toy_trainer(tmp_path / "run", max_steps=6, eval_every=2, evaluate_fn=evaluate, best_metric="score",
                           best_mode="max", wandb_mode="offline").fit()
    assert summary["final"] == {"score": 2.0} and summary["best"] == {"score": 3.0}  # not a metric
    checkpoints = tmp_path / "run" / "checkpoints"
    assert load_per_sample(checkpoints / "best")["score"].tolist() == [3.0] * 4
    assert load_per_sample(checkpoints / "last")["score"].tolist() == [2.0] * 4
    final = load_per_sample(tmp_path / "run")
    assert final["score"].tolist() == [2.0] * 4 and final["name"].tolist() == ["a", "b", "c", "d"]
    evals = [r for r in read_metrics(tmp_path / "run") if r["split"] == "eval"]
    assert all(set(r) == {"step", "split", "score"} for r in evals)
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*/files/per_sample.npz"))  # and in the W&B run
