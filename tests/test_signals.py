"""A scheduler's signal (SIGTERM, SIGUSR1) or Ctrl-C (SIGINT) saves the run at the step it reached,
records that step, exits with 128 + the signal, and the same command with --resume ends with the
weights of an uninterrupted run: in the trainer (mid-step and mid-evaluation), through the SR
command in one process, and in two gloo processes under `accelerate launch`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tasks.common.checkpoint import read_trainer_state
from tasks.common.side_by_side import side_by_side_possible
from tasks.common.stopping import RunInterrupted
from tasks.common.summary import load_summary
from conftest import SR_TINY, free_port, make_toy_trainer, mae_evaluate, read_metrics, trainer_weights

REPO = Path(__file__).resolve().parents[1]
SIGNALS = [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT]


def _signal_at_step(signum: int, step: int):
    def hook(call: int) -> None:  # the loss of step `call`: the signal lands inside the step
        if call == step:
            os.kill(os.getpid(), signum)
    return hook


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_mid_step_saves_that_step_and_resumes_bit_for_bit(tmp_path, signum):
    straight = make_toy_trainer(tmp_path / "straight")
    straight.fit()
    with pytest.raises(RunInterrupted) as stop:
        make_toy_trainer(tmp_path / "run", loss_hook=_signal_at_step(signum, 7)).fit()
    assert stop.value.exit_code == 128 + signum
    assert "step 7 of 20" in str(stop.value) and "--resume" in str(stop.value)
    assert read_trainer_state(tmp_path / "run" / "checkpoints" / "last")["step"] == 7  # not the step-5 checkpoint
    summary = load_summary(tmp_path / "run")
    assert summary["steps"] == 7 and summary["status"] == f"interrupted by {signal.Signals(signum).name}"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are given back
    resumed = make_toy_trainer(tmp_path / "run", resume=True)
    assert resumed.fit()["status"] == "completed"
    expected, got = trainer_weights(straight), trainer_weights(resumed)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_a_signal_mid_evaluation_saves_the_trained_steps_first(tmp_path):
    straight = make_toy_trainer(tmp_path / "straight")
    straight.fit()
    plain = mae_evaluate(straight.train_loader.dataset)
    evaluated = []

    def evaluate(model, accelerator, step):
        evaluated.append(step)
        if step == 10:  # SIGTERM arrives while the step-10 evaluation runs: it is abandoned
            os.kill(os.getpid(), signal.SIGTERM)
            pytest.fail("the evaluation went on after the signal")
        return plain(model, accelerator, step)

    with pytest.raises(RunInterrupted):
        make_toy_trainer(tmp_path / "run", evaluate_fn=evaluate).fit()
    state = read_trainer_state(tmp_path / "run" / "checkpoints" / "last")
    assert (state["step"], state["last_eval_step"]) == (10, 5)  # the weights of step 10, not yet scored
    resumed = make_toy_trainer(tmp_path / "run", resume=True)
    resumed.fit()  # scores step 10 first, then goes on
    expected, got = trainer_weights(straight), trainer_weights(resumed)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    evals = lambda run: [(m["step"], m["mae"]) for m in read_metrics(tmp_path / run) if m["split"] == "eval"]  # noqa: E731
    assert evals("run") == evals("straight")


# -- through the command line ----------------------------------------------------------------------
def _sr_arguments(data: dict, out: Path, *extra: str) -> list[str]:
    return [*SR_TINY, "--max-steps", "120", "--eval-every", "40", "--train-dir", str(data["train"]), "--sets",
            str(data["bench"]), "--output-dir", str(out), "--run-name", "run", "--wandb", "disabled",
            "--num-pictures", "0", *extra]


def _environment() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "",
            "WANDB_MODE": "disabled", "BAM_COMPILE_BACKEND": ""}


def _steps_logged(run: Path) -> int:
    try:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return max((row["step"] for row in rows), default=0)


def _interrupt(command: list[str], run: Path, signum: int, after_step: int, group: bool = False):
    """Start ``command``, send ``signum`` once the run has logged ``after_step``, wait for the end."""
    process = subprocess.Popen(command, env=_environment(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=group)
    while _steps_logged(run) < after_step and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before the signal was sent"
    (os.killpg if group else os.kill)(process.pid, signum)  # a group: what Ctrl-C in a terminal reaches
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last" / "network.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_the_sr_command_stops_on_a_signal_and_resumes_to_the_uninterrupted_weights(sr_crops, tmp_path, signum):
    launcher = [sys.executable, str(REPO / "launch" / "sr.py")]
    straight = subprocess.run([*launcher, *_sr_arguments(sr_crops, tmp_path / "straight")], env=_environment(),
                              cwd=REPO, capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    # With a data-loading worker: Ctrl-C reaches it too, and must not print its own traceback.
    arguments = _sr_arguments(sr_crops, tmp_path / "cut", "--num-workers", "1")
    code, _, err = _interrupt([*launcher, *arguments], tmp_path / "cut" / "run", signum, after_step=30,
                              group=signum == signal.SIGINT)
    assert code == 128 + signum, err[-2000:]
    summary = load_summary(tmp_path / "cut" / "run")
    state = read_trainer_state(tmp_path / "cut" / "run" / "checkpoints" / "last")
    assert summary["status"].startswith("interrupted by") and summary["steps"] == state["step"] < 120
    assert "Traceback" not in err and f"at step {state['step']} of 120" in err and "--resume" in err
    resumed = subprocess.run([*launcher, *arguments, "--resume"], env=_environment(), cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected, got = _final_weights(tmp_path / "straight" / "run"), _final_weights(tmp_path / "cut" / "run")
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def _launch(out: Path, data: dict, *extra: str, machines: int = 1, rank: int = 0, port: int = 0) -> list[str]:
    """Two gloo processes under `accelerate launch`: on one machine, or one on each of two
    "machines" that meet on loopback (the multi-node path)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", str(machines), "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
            "--main_process_port", str(port or free_port()), "--mixed_precision", "no", "--dynamo_backend", "no",
            str(REPO / "launch" / "sr.py"), *_sr_arguments(data, out, "--batch-size", "4", *extra)]


def _two_machines(out: Path, data: dict, *extra: str) -> list[subprocess.Popen]:
    port = free_port()
    return [subprocess.Popen(_launch(out, data, *extra, machines=2, rank=rank, port=port), env=_environment(),
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for rank in (0, 1)]


@pytest.mark.slow
def test_two_machines_stop_together_on_sigterm_and_resume_to_the_one_machine_weights(sr_crops, tmp_path):
    """SLURM signals the launcher on every node; each node's processes finish the step, all save one
    checkpoint together, and the requeued command (--resume) ends where an uninterrupted run ends."""
    straight = subprocess.run(_launch(tmp_path / "straight", sr_crops), env=_environment(), cwd=REPO,
                              capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]
    run = tmp_path / "cut" / "run"
    machines = _two_machines(tmp_path / "cut", sr_crops)
    while _steps_logged(run) < 30 and all(m.poll() is None for m in machines):
        time.sleep(0.05)
    assert all(m.poll() is None for m in machines), "the run ended before the signal was sent"
    for machine in machines:
        machine.send_signal(signal.SIGTERM)
    outputs = [machine.communicate(timeout=120) for machine in machines]
    assert [m.returncode for m in machines] == [128 + signal.SIGTERM] * 2, outputs[0][1][-3000:]
    state = read_trainer_state(run / "checkpoints" / "last")
    assert load_summary(run)["steps"] == state["step"] < 120 and state["num_processes"] == 2
    machines = _two_machines(tmp_path / "cut", sr_crops, "--resume")
    outputs = [machine.communicate(timeout=600) for machine in machines]
    assert [m.returncode for m in machines] == [0, 0], outputs[0][1][-3000:]
    expected, got = _final_weights(tmp_path / "straight" / "run"), _final_weights(run)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_the_slurm_script_is_valid_bash_and_requeues_on_the_stop_codes():
    script = REPO / "launch" / "slurm.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "--resume" in text and "--requeue" in text and "--signal=USR1@" in text
    assert "-eq 138" in text and "-eq 143" in text and "SIGUSR1" in text


@pytest.mark.slow
@pytest.mark.skipif(not side_by_side_possible(2), reason="runs side by side need two cores and no GPU")
def test_runs_side_by_side_train_as_one_after_the_other_and_stop_together(sr_crops, tmp_path):
    """--side-by-side (the CPU main job's default): each run in a process of its own gives the
    weights of the same runs one after the other; SIGTERM to the command saves both runs, and
    --resume ends them with those same weights and writes the comparison."""
    launcher = [sys.executable, str(REPO / "launch" / "sr.py")]

    def arguments(out: Path, *extra: str) -> list[str]:
        return [*_sr_arguments(sr_crops, out, "--attention", "none", "bam"), *extra]

    straight = subprocess.run([*launcher, *arguments(tmp_path / "straight", "--no-side-by-side")],
                              env=_environment(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    runs = {attention: tmp_path / "cut" / f"run-{attention}" for attention in ("none", "bam")}
    process = subprocess.Popen([*launcher, *arguments(tmp_path / "cut", "--side-by-side")], env=_environment(),
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while min(_steps_logged(run) for run in runs.values()) < 30 and process.poll() is None:
        time.sleep(0.05)  # both runs are training at once
    assert process.poll() is None, "the runs ended before the signal was sent"
    process.send_signal(signal.SIGTERM)  # to the command alone, as `kill` or a scheduler does
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err and "--resume" in err
    steps = [read_trainer_state(run / "checkpoints" / "last")["step"] for run in runs.values()]
    assert all(load_summary(run)["status"] == "interrupted by SIGTERM" for run in runs.values())
    # The faster run may already be in its final evaluation (step 120) when the signal comes; the
    # slower one is cut in training, so the resume has steps left to take.
    assert min(steps) >= 30 and min(steps) < 120, steps
    resumed = subprocess.run([*launcher, *arguments(tmp_path / "cut", "--side-by-side", "--resume")],
                             env=_environment(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for attention, run in runs.items():
        expected = _final_weights(tmp_path / "straight" / f"run-{attention}")
        got = _final_weights(run)
        assert all(torch.equal(expected[k], got[k]) for k in expected), attention
    assert list((tmp_path / "cut").glob("*-comparison/comparison.md"))
